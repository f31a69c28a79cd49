// The boxes of a row read, as the user corrects them: each box read, split in two, merged with
// its right neighbour or skipped (not a character), with its label. Pure functions over the list
// of boxes; the page keeps the list in its state (state.rowReading.boxes).
//
// A box: { box: [x, y, w, h] in the picture's own pixels, read: the index of the reading's
// character it is (null: made by a split or a merge), label: the label the user gave (null: as
// read, or none yet for a new box), confirmed: a doubtful one said right as read, skipped }.

import { plural } from "./format.js";

export function boxesRead(reading) {
  return reading.characters.map((character, index) => ({
    box: character.box,
    read: index,
    label: null,
    confirmed: false,
    skipped: false,
  }));
}

const replaced = (items, index, count, ...boxes) => [
  ...items.slice(0, index),
  ...boxes,
  ...items.slice(index + count),
];

const made = (box) => ({ box, read: null, label: null, confirmed: false, skipped: false });

// The character a box was read as ("" for a new one).
export const readAs = (item, reading) => (item.read === null ? "" : reading.characters[item.read].label);

// Its label now: the user's, or as read ("" where a new box has none yet).
export const labelOf = (item, reading) => item.label ?? readAs(item, reading);

export function isChanged(item, reading) {
  return item.skipped || item.read === null || labelOf(item, reading) !== readAs(item, reading);
}

// Read with low confidence, and neither confirmed nor corrected since.
export function isDoubtful(item, reading) {
  return (
    item.read !== null &&
    reading.characters[item.read].low_confidence &&
    !item.confirmed &&
    !isChanged(item, reading)
  );
}

// The API's rule: a box wider than the reading's max_character_width (1.28 times the median
// height of its characters) likely holds several characters, and cannot be saved as one label.
export const holdsSeveral = (item, reading) => !item.skipped && item.box[2] > reading.max_character_width;

// The box at `index` cut in two at `cut` (a column of the picture, inside the box): both halves
// are new boxes, each needing a label. null where the cut is not inside the box.
export function split(items, index, cut) {
  const [x, y, w, h] = items[index].box;
  const at = Math.round(cut);
  if (at <= x || at >= x + w) return null;
  return replaced(items, index, 1, made([x, y, at - x, h]), made([at, y, x + w - at, h]));
}

// The box at `index` and its right neighbour as one new box around both.
export function merge(items, index) {
  const [a, b] = [items[index].box, items[index + 1].box];
  const left = Math.min(a[0], b[0]);
  const top = Math.min(a[1], b[1]);
  const right = Math.max(a[0] + a[2], b[0] + b[2]);
  const bottom = Math.max(a[1] + a[3], b[1] + b[3]);
  return replaced(items, index, 2, made([left, top, right - left, bottom - top]));
}

// The boxes are not the reading's any more: the correction sends them (`characters`).
export function boxesChanged(items, reading) {
  return items.length !== reading.characters.length || items.some((i) => i.skipped || i.read === null);
}

// The correction's body: the boxes kept, with their labels, where boxes changed; else the text.
export function correctionBody(items, reading) {
  if (!boxesChanged(items, reading)) {
    return { text: items.map((item) => labelOf(item, reading)).join("") };
  }
  const kept = items.filter((item) => !item.skipped);
  return { characters: kept.map((item) => ({ box: item.box, label: labelOf(item, reading) })) };
}

// "Character 2", "Characters 2, 3 and 5": boxes as the text below the picture numbers them.
const numbers = (indices) => {
  const named = indices.map((i) => i + 1);
  if (named.length === 1) return `Character ${named[0]}`;
  return `Characters ${named.slice(0, -1).join(", ")} and ${named.at(-1)}`;
};

// Why the corrections cannot be saved as they are (null: they can), said beside Save.
export function saveProblem(items, reading) {
  const where = (test) => items.flatMap((item, i) => (test(item) ? [i] : []));
  const several = where((item) => holdsSeveral(item, reading));
  if (several.length) {
    return (
      `${numbers(several)} ${several.length === 1 ? "looks" : "look"} like several characters ` +
      `(wider than ${reading.max_character_width} px): split ${several.length === 1 ? "it" : "them"} ` +
      "into one box per character, or skip it, before saving."
    );
  }
  const unlabelled = where((item) => !item.skipped && !labelOf(item, reading));
  if (unlabelled.length) {
    return `${numbers(unlabelled)} ${unlabelled.length === 1 ? "needs" : "need"} a label.`;
  }
  if (!items.some((item) => isChanged(item, reading))) {
    return "Nothing to save yet: click a character read wrong and give the right one.";
  }
  return null;
}

export function describeChanges(items, reading) {
  const changed = items.filter((item) => isChanged(item, reading)).length;
  return `${plural(changed, "character")} changed.`;
}
