// What the row tab shows of a reading being corrected (state.rowReading): a box and a label over
// each character of the picture, the text below it, the "doubtful" banner, the editor of the
// selected box, and Save with what it would do or why it cannot. Drawn from the state alone.

import { $, el } from "./dom.js";
import { percent, plural } from "./format.js";
import {
  describeChanges,
  holdsSeveral,
  isChanged,
  isDoubtful,
  labelOf,
  readAs,
  saveProblem,
} from "./row-boxes.js";

// Where `box` ([x, y, w, h] in the picture's pixels) lies over the picture, in shares of it, so
// that it follows the picture at any displayed size.
function place(node, [x, y, w, h], reading) {
  Object.assign(node.style, {
    left: `${(100 * x) / reading.width}%`,
    top: `${(100 * y) / reading.height}%`,
    width: `${(100 * w) / reading.width}%`,
    height: `${(100 * h) / reading.height}%`,
  });
  return node;
}

function marks(shown, item, index) {
  const { reading } = shown;
  return [
    isDoubtful(item, reading) ? "low" : "",
    isChanged(item, reading) && !item.skipped ? "changed" : "",
    item.skipped ? "skipped" : "",
    holdsSeveral(item, reading) ? "several" : "",
    index === shown.selected ? "selected" : "",
  ]
    .filter(Boolean)
    .join(" ");
}

function tag(item, reading) {
  if (item.skipped) return "skipped";
  if (item.read === null) return labelOf(item, reading) || "?";
  const read = readAs(item, reading);
  return isChanged(item, reading) ? `${read}→${labelOf(item, reading)}` : read;
}

export function describeBox(shown, index) {
  const { reading, boxes } = shown;
  const item = boxes[index];
  let text = `Character ${index + 1} of ${boxes.length}: `;
  if (item.read === null) {
    text += `a new box, ${labelOf(item, reading) ? `“${labelOf(item, reading)}”` : "no label yet"}`;
  } else {
    const character = reading.characters[item.read];
    text += `“${character.label}”, ${percent(character.confidence)} sure`;
    if (isDoubtful(item, reading)) text += ", doubtful";
    if (isChanged(item, reading) && !item.skipped) text += `; corrected to “${labelOf(item, reading)}”`;
  }
  if (item.skipped) text += "; skipped, not a character";
  if (holdsSeveral(item, reading)) text += "; looks like several characters: split it";
  return text;
}

// The boxes over the picture, the text below it, the banner and Save.
export function renderReading(shown) {
  const { reading, boxes: items, saved, cutting } = shown;
  const focused = document.activeElement?.closest?.("#row-text [data-index]")?.dataset.index;
  const boxes = [];
  const letters = [];
  items.forEach((item, index) => {
    const classes = marks(shown, item, index);
    const label = el("span", { className: "tag" }, tag(item, reading));
    const box = place(el("span", { className: `box ${classes}` }, label), item.box, reading);
    box.dataset.index = index;
    boxes.push(box);
    if (item.read !== null && reading.characters[item.read].space_before && index > 0) {
      letters.push(el("span", { className: "space" }));
    }
    const text = item.skipped ? readAs(item, reading) || "?" : labelOf(item, reading) || "?";
    const letter = el("button", { type: "button", className: classes }, text);
    letter.disabled = saved; // a reading is corrected once
    letter.dataset.index = index;
    letter.setAttribute("aria-label", describeBox(shown, index));
    if (index === shown.selected) letter.setAttribute("aria-current", "true");
    letters.push(letter);
  });
  if (cutting !== null) boxes.push(cutLine(shown));
  $("row-boxes").replaceChildren(...boxes);
  $("row-text").replaceChildren(...letters);
  if (focused !== undefined && !saved) {
    $("row-text").querySelector(`[data-index="${focused}"]`)?.focus(); // kept on its character
  }
  const doubtful = items.filter((item) => isDoubtful(item, reading)).length;
  const kept = items.filter((item) => !item.skipped).length;
  $("row-doubt").textContent =
    `${doubtful} of ${plural(kept, "character")} ${doubtful === 1 ? "is" : "are"} doubtful ` +
    `(orange, dashed): check ${doubtful === 1 ? "it" : "them"}, and pick the right label ` +
    "(the first, if it was read right).";
  $("row-doubt").hidden = !doubtful || saved;
  renderSave(shown);
}

// Save is enabled only for corrections that can be saved; beside it, what they change, or why
// they cannot be saved yet.
export function renderSave(shown) {
  const problem = !shown || shown.saved ? null : saveProblem(shown.boxes, shown.reading);
  $("row-save").disabled = !shown || shown.saved || problem !== null;
  $("row-changes").textContent =
    !shown || shown.saved ? "" : (problem ?? describeChanges(shown.boxes, shown.reading));
}

// Where the box being split would be cut: a line across it at the cut's column.
function cutLine(shown) {
  const [x, y, , h] = shown.boxes[shown.cutting].box;
  const at = Number($("row-cut").value);
  return place(el("span", { className: "cut" }), [Math.max(x, at - 1), y, 2, h], shown.reading);
}

// The editor of the selected box: its label (typed, or one of the likeliest), and its actions.
export function renderEditor(shown) {
  const { reading, boxes, selected, saved, cutting } = shown;
  const field = $("row-fix");
  $("row-box-actions").hidden = selected === null;
  $("row-cutter").hidden = cutting === null;
  if (selected === null) {
    $("row-fix-label").textContent = saved
      ? "Saved: read another row to correct more"
      : "Click a character to correct it";
    field.value = "";
    field.placeholder = "";
    field.disabled = true;
    field.hidden = saved; // nothing more to type in
    $("row-picks").replaceChildren();
    return;
  }
  const item = boxes[selected];
  const character = item.read === null ? null : reading.characters[item.read];
  $("row-fix-label").textContent = item.skipped
    ? `Character ${selected + 1} is skipped (not a character)`
    : character
      ? `Character ${selected + 1}, read as “${character.label}” (${percent(character.confidence)}), is`
      : `Character ${selected + 1}, a new box, is`;
  field.disabled = item.skipped;
  field.value = item.label ?? "";
  field.placeholder = character ? character.label : "?";
  const top = character && !item.skipped ? character.top : [];
  $("row-picks").replaceChildren(
    ...top.map(({ label, probability }) => {
      const pick = el("button", { type: "button" }, label, el("small", {}, percent(probability)));
      pick.dataset.label = label;
      pick.setAttribute("aria-label", `${label}, ${percent(probability)} likely`);
      return pick;
    })
  );
  $("row-split").setAttribute("aria-pressed", String(cutting === selected));
  $("row-split").disabled = item.skipped || item.box[2] < 2;
  $("row-merge").disabled = selected + 1 >= boxes.length;
  $("row-skip").textContent = item.skipped ? "Keep it (a character)" : "Skip (not a character)";
}
