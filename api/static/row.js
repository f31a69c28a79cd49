// A row of characters: the wide board or a picture of a row, the API's reading with a box around
// each character, and the corrections of the characters read wrong.

import { action, api, clearError, isOptionError, showError } from "./api.js";
import { boardKeys, drawingBoard, showMarkerSize } from "./board.js";
import { $, el } from "./dom.js";
import { percent, plural } from "./format.js";

const PICTURE_HEIGHT = 280; // CSS px the picture read is shown at, at most

function rowOptions(form) {
  const only = $("row-labels").value.replace(/\s+/g, "");
  if (only) form.append("labels", only);
  const count = $("row-length").value.trim();
  const whole = Number.isInteger(Number(count)) && Number(count) >= 1;
  if ($("row-length").validity.badInput || (count && !whole)) {
    const error = new Error("Number of characters: a whole number, 1 or more (or leave it empty).");
    error.option = true;
    throw error;
  }
  if (count) form.append("expected_length", count);
}

function confidenceInWords(probability) {
  if (probability >= 0.9) return "sure";
  if (probability >= 0.6) return "fairly sure";
  if (probability >= 0.3) return "unsure";
  return "doubtful";
}

function describeStored(corrected) {
  if (!corrected.length) {
    return "Saved. Nothing new to learn from: as stored, every label is the one read.";
  }
  const each = corrected.map((c) => `#${c.sample.id} “${c.label}” (read as “${c.read}”)`);
  let message =
    `${plural(corrected.length, "character")} stored as ` +
    `${corrected.length === 1 ? "a sample" : "samples"} to learn from: ${each.join(", ")}.`;
  const held = corrected.filter((c) => c.sample.status === "suspect").length;
  if (held) {
    message +=
      ` ${held === 1 ? "One is" : `${held} are`} kept out of training until an admin confirms ` +
      "the label: the NIST examples nearest to it are another character.";
  }
  return message;
}

// `loadStats()` refreshes the samples' counts once corrections are stored.
export function mountRow({ state, loadStats }) {
  const rowBoard = drawingBoard($("row-board"), $("row-marker-size"));

  async function readRow(image, filename, description) {
    clearError("row-options-error");
    const form = new FormData();
    form.append("image", image, filename);
    let reading;
    try {
      rowOptions(form);
      reading = (await api("/v1/readings", { method: "POST", body: form })).body;
    } catch (err) {
      if (!isOptionError(err)) throw err;
      showError(err.message, "row-options-error");
      return;
    }
    showReading(reading, URL.createObjectURL(image), description);
  }

  async function readDrawnRow() {
    if (!rowBoard.dirty) throw new Error("Write a row of characters on the board first.");
    await readRow(await rowBoard.blob(), "row.png", "The drawing read");
  }

  async function readRowFile() {
    const file = $("row-file").files[0];
    if (!file) throw new Error("Choose a picture of a row first.");
    await readRow(file, file.name, `The picture read (${file.name})`);
  }

  function showReading(reading, picture, description) {
    if (state.rowReading) URL.revokeObjectURL(state.rowReading.picture);
    state.rowReading = {
      reading,
      picture,
      corrections: reading.characters.map(() => null),
      selected: null,
      saved: false,
    };
    const count = reading.characters.length;
    // The boxes are placed in shares of the picture, so they follow it at any displayed size.
    const frame = $("row-frame");
    frame.style.aspectRatio = `${reading.width} / ${reading.height}`;
    frame.style.width = `min(100%, ${(PICTURE_HEIGHT * reading.width) / reading.height}px)`;
    $("row-picture").src = picture;
    $("row-picture").alt =
      `${description}, with a box around each of the ${plural(count, "character")} found`;
    $("row-confidence").textContent =
      `How sure it is of the whole text: ${confidenceInWords(reading.confidence)} ` +
      `(${percent(reading.confidence)}). Model version ${reading.model_version}.`;
    const doubtful = reading.characters.filter((c) => c.low_confidence).length;
    $("row-doubt").textContent =
      `${doubtful} of ${plural(count, "character")} ${doubtful === 1 ? "is" : "are"} doubtful ` +
      `(orange, dashed): check ${doubtful === 1 ? "it" : "them"}.`;
    $("row-doubt").hidden = !doubtful;
    $("row-reply").textContent = "";
    for (const where of ["row-draw-error", "row-file-error", "row-save-error"]) clearError(where);
    $("row-result").hidden = false;
    selectCharacter(null);
  }

  function rowLabel(index) {
    return state.rowReading.corrections[index] ?? state.rowReading.reading.characters[index].label;
  }

  function describeCharacter(index) {
    const { reading, corrections } = state.rowReading;
    const character = reading.characters[index];
    let text =
      `Character ${index + 1} of ${reading.characters.length}: “${character.label}”, ` +
      `${percent(character.confidence)} sure`;
    if (character.low_confidence) text += ", doubtful";
    if (corrections[index] !== null) text += `; corrected to “${corrections[index]}”`;
    return text;
  }

  // The boxes over the picture and the text below it, each character marked as read, doubtful,
  // corrected, or being corrected.
  function renderReading() {
    const { reading, corrections, selected, saved } = state.rowReading;
    const focused = document.activeElement?.closest?.("#row-text [data-index]")?.dataset.index;
    const boxes = [];
    const letters = [];
    reading.characters.forEach((character, index) => {
      const changed = corrections[index] !== null;
      const marks = [
        character.low_confidence ? "low" : "",
        changed ? "changed" : "",
        index === selected ? "selected" : "",
      ]
        .filter(Boolean)
        .join(" ");
      const [x, y, w, h] = character.box;
      const tag = changed ? `${character.label}→${corrections[index]}` : character.label;
      const box = el("span", { className: `box ${marks}` }, el("span", { className: "tag" }, tag));
      Object.assign(box.style, {
        left: `${(100 * x) / reading.width}%`,
        top: `${(100 * y) / reading.height}%`,
        width: `${(100 * w) / reading.width}%`,
        height: `${(100 * h) / reading.height}%`,
      });
      box.dataset.index = index;
      boxes.push(box);
      if (character.space_before && index > 0) letters.push(el("span", { className: "space" }));
      const letter = el("button", { type: "button", className: marks }, rowLabel(index));
      letter.disabled = saved; // a reading is corrected once
      letter.dataset.index = index;
      letter.setAttribute("aria-label", describeCharacter(index));
      if (index === selected) letter.setAttribute("aria-current", "true");
      letters.push(letter);
    });
    $("row-boxes").replaceChildren(...boxes);
    $("row-text").replaceChildren(...letters);
    if (focused !== undefined && !saved) {
      $("row-text").querySelector(`[data-index="${focused}"]`).focus(); // kept on its character
    }
    const changed = corrections.filter((c) => c !== null).length;
    const note = changed && !saved ? `${plural(changed, "character")} changed.` : "";
    $("row-changes").textContent = note;
  }

  // The character to correct: the field beside the text takes its right label, or one of the
  // labels the model found most likely.
  function selectCharacter(index) {
    const shown = state.rowReading;
    shown.selected = shown.saved ? null : index;
    renderReading();
    const field = $("row-fix");
    if (shown.selected === null) {
      $("row-fix-label").textContent = shown.saved
        ? "Saved: read another row to correct more"
        : "Click a character to correct it";
      field.value = "";
      field.placeholder = "";
      field.disabled = true;
      field.hidden = shown.saved; // nothing more to type in
      $("row-picks").replaceChildren();
      return;
    }
    const character = shown.reading.characters[index];
    $("row-fix-label").textContent =
      `Character ${index + 1}, read as “${character.label}” (${percent(character.confidence)}), is`;
    field.disabled = false;
    field.value = shown.corrections[index] ?? "";
    field.placeholder = character.label;
    $("row-picks").replaceChildren(
      ...character.top.map(({ label, probability }) => {
        const pick = el("button", { type: "button" }, label, el("small", {}, percent(probability)));
        pick.dataset.label = label;
        pick.setAttribute("aria-label", `${label}, ${percent(probability)} likely`);
        return pick;
      })
    );
    field.focus();
    field.select();
  }

  function correctCharacter(value) {
    const { reading, selected } = state.rowReading;
    const label = value.trim();
    const asRead = !label || label === reading.characters[selected].label;
    state.rowReading.corrections[selected] = asRead ? null : label;
    $("row-reply").textContent = "";
    clearError("row-save-error");
    renderReading();
  }

  function clickedCharacter(event) {
    const target = event.target.closest("[data-index]");
    const shown = state.rowReading;
    if (target && shown && !shown.saved) selectCharacter(Number(target.dataset.index));
  }

  function fixKeys(event) {
    const { selected, reading } = state.rowReading;
    if (event.key === "Enter") {
      // On to the next character; after the last, to Save.
      event.preventDefault();
      if (selected + 1 < reading.characters.length) selectCharacter(selected + 1);
      else $("row-save").focus();
    } else if (event.key === "Escape") {
      $("row-text").querySelector(`[data-index="${selected}"]`).focus();
    }
  }

  function pickLabel(event) {
    const pick = event.target.closest("[data-label]");
    if (!pick) return;
    $("row-fix").value = pick.dataset.label;
    correctCharacter(pick.dataset.label);
  }

  async function saveCorrections() {
    if (!state.rowReading) throw new Error("Read a row first.");
    if (state.rowReading.saved) {
      throw new Error("These corrections are saved; read another row to correct more.");
    }
    const { reading, corrections } = state.rowReading;
    if (!corrections.some((c) => c !== null)) {
      throw new Error("Click a character that was read wrong and give the right one first.");
    }
    // The whole text, one character per character read.
    const text = reading.characters.map((_, index) => rowLabel(index)).join("");
    const { body } = await api(`/v1/readings/${reading.id}/correction`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
    state.rowReading.saved = true;
    selectCharacter(null);
    $("row-reply").textContent = describeStored(body.corrected);
    await loadStats();
  }

  // ---- wiring -----------------------------------------------------------------------------------

  // On a phone the row board is less wide, so that a finger has the height to write in.
  if (window.matchMedia("(max-width: 600px)").matches) rowBoard.canvas.width = 600;
  rowBoard.clear();
  rowBoard.canvas.addEventListener(
    "keydown",
    boardKeys({
      submit: () => action(readDrawnRow, "row-draw-error")(),
      clear: () => rowBoard.clear(),
      undo: () => rowBoard.undo(),
    })
  );
  showMarkerSize($("row-marker-size"), $("row-marker-size-value"));
  $("row-read").addEventListener("click", action(readDrawnRow, "row-draw-error"));
  $("row-undo").addEventListener("click", () => rowBoard.undo());
  $("row-clear").addEventListener("click", () => {
    rowBoard.clear();
    clearError("row-draw-error");
  });
  $("row-file").addEventListener("change", action(readRowFile, "row-file-error"));
  $("row-read-file").addEventListener("click", action(readRowFile, "row-file-error"));
  $("row-boxes").addEventListener("click", clickedCharacter);
  $("row-text").addEventListener("click", clickedCharacter);
  $("row-fix").addEventListener("input", () => correctCharacter($("row-fix").value));
  $("row-fix").addEventListener("keydown", fixKeys);
  $("row-picks").addEventListener("click", pickLabel);
  $("row-save").addEventListener("click", action(saveCorrections, "row-save-error"));
}
