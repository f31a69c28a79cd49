// A row of characters: the wide board (it reads as you draw) or a picture of a row, the API's
// reading with a box around each character, and its correction: a character's label, or its box
// split in two, merged with the next or skipped. What is shown is drawn by row-view.js; the
// boxes' rules are row-boxes.js's.

import { action, api, clearError, isOptionError, showError } from "./api.js";
import { boardKeys, drawingBoard, readsAsYouDraw, showMarkerSize } from "./board.js";
import { $ } from "./dom.js";
import { percent, plural } from "./format.js";
import { boxesRead, correctionBody, merge, readAs, saveProblem, split } from "./row-boxes.js";
import { renderEditor, renderReading, renderSave } from "./row-view.js";

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
  const each = corrected.map(
    (c) => `#${c.sample.id} “${c.label}” (${c.read === null ? "a new box" : `read as “${c.read}”`})`
  );
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
  const rowBoard = drawingBoard($("row-board"), $("row-marker-size"), {
    onStart: () => live.cancel(),
    onEnd: () => live.schedule(),
  });
  // The row board reads as you draw, as the board of one character does.
  const live = readsAsYouDraw({
    state,
    key: "liveReading",
    canvas: rowBoard.canvas,
    request: (signal) => readDrawnRow(signal),
    where: "row-draw-error",
  });

  async function readRow(image, filename, description, signal = undefined) {
    clearError("row-options-error");
    const form = new FormData();
    form.append("image", image, filename);
    let reading;
    try {
      rowOptions(form);
      reading = (await api("/v1/readings", { method: "POST", body: form, signal })).body;
    } catch (err) {
      if (!isOptionError(err)) throw err;
      showError(err.message, "row-options-error");
      return;
    }
    showReading(reading, URL.createObjectURL(image), description);
  }

  async function readDrawnRow(signal = undefined) {
    if (!rowBoard.dirty) throw new Error("Write a row of characters on the board first.");
    await readRow(await rowBoard.blob(), "row.png", "The drawing read", signal);
  }

  async function readRowFile() {
    const file = $("row-file").files[0];
    if (!file) throw new Error("Choose a picture of a row first.");
    live.cancel();
    await readRow(file, file.name, `The picture read (${file.name})`);
  }

  function showReading(reading, picture, description) {
    if (state.rowReading) URL.revokeObjectURL(state.rowReading.picture);
    state.rowReading = {
      reading,
      picture,
      boxes: boxesRead(reading),
      selected: null,
      cutting: null, // the box being split: the next click on the picture cuts it
      saved: false,
    };
    const count = reading.characters.length;
    const frame = $("row-frame");
    frame.style.aspectRatio = `${reading.width} / ${reading.height}`;
    frame.style.width = `min(100%, ${(PICTURE_HEIGHT * reading.width) / reading.height}px)`;
    $("row-picture").src = picture;
    $("row-picture").alt =
      `${description}, with a box around each of the ${plural(count, "character")} found`;
    $("row-confidence").textContent =
      `How sure it is of the whole text: ${confidenceInWords(reading.confidence)} ` +
      `(${percent(reading.confidence)}). Model version ${reading.model_version}.`;
    $("row-reply").textContent = "";
    for (const where of ["row-draw-error", "row-file-error", "row-save-error"]) clearError(where);
    $("row-result").hidden = false;
    selectCharacter(null);
  }

  function render() {
    renderReading(state.rowReading);
    renderEditor(state.rowReading);
  }

  // The box to correct: the field beside the text takes its right label, or one of the labels
  // the model found most likely; the buttons beside it split, merge or skip it.
  function selectCharacter(index) {
    const shown = state.rowReading;
    shown.selected = shown.saved ? null : index;
    shown.cutting = null;
    render();
    if (shown.selected !== null && !shown.boxes[index].skipped) {
      $("row-fix").focus();
      $("row-fix").select();
    }
  }

  function edited() {
    $("row-reply").textContent = "";
    clearError("row-save-error");
    render();
  }

  // A label typed or picked: the read one again confirms what was read.
  function correctCharacter(value) {
    const { reading, boxes, selected } = state.rowReading;
    const item = boxes[selected];
    const label = value.trim();
    item.confirmed = item.read !== null && label === readAs(item, reading);
    item.label = !label || item.confirmed ? null : label;
    edited();
  }

  function startCut() {
    const shown = state.rowReading;
    const index = shown.selected;
    if (shown.cutting === index) {
      selectCharacter(index); // pressed again: no cut
      return;
    }
    const [x, , w] = shown.boxes[index].box;
    Object.assign($("row-cut"), { min: x + 1, max: x + w - 1 });
    $("row-cut").value = String(Math.round(x + w / 2));
    shown.cutting = index;
    render();
  }

  function cutAt(x) {
    const shown = state.rowReading;
    const halves = split(shown.boxes, shown.cutting, x);
    if (!halves) return false;
    const first = shown.cutting;
    shown.boxes = halves;
    edited();
    selectCharacter(first); // the left half first: each needs a label
    return true;
  }

  function mergeNext() {
    const shown = state.rowReading;
    shown.boxes = merge(shown.boxes, shown.selected);
    edited();
    selectCharacter(shown.selected);
  }

  function toggleSkip() {
    const shown = state.rowReading;
    const item = shown.boxes[shown.selected];
    item.skipped = !item.skipped;
    shown.cutting = null;
    edited();
    $("row-skip").focus();
  }

  // A click on the picture: while a box is being split, where to cut it (a column of the
  // picture inside the box); else the character clicked.
  function clickedPicture(event) {
    const shown = state.rowReading;
    if (!shown || shown.saved) return;
    if (shown.cutting !== null) {
      const frame = $("row-frame").getBoundingClientRect();
      const x = ((event.clientX - frame.left) * shown.reading.width) / frame.width;
      if (cutAt(x)) return;
    }
    clickedCharacter(event);
  }

  function clickedCharacter(event) {
    const target = event.target.closest("[data-index]");
    const shown = state.rowReading;
    if (target && shown && !shown.saved) selectCharacter(Number(target.dataset.index));
  }

  function fixKeys(event) {
    const { selected, boxes } = state.rowReading;
    if (event.key === "Enter") {
      // On to the next character; after the last, to Save.
      event.preventDefault();
      if (selected + 1 < boxes.length) selectCharacter(selected + 1);
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

  // Sent as the text where the boxes are the reading's, else as the boxes kept, with labels.
  async function saveCorrections() {
    const shown = state.rowReading;
    if (!shown) throw new Error("Read a row first.");
    if (shown.saved) throw new Error("These corrections are saved; read another row to correct more.");
    const problem = saveProblem(shown.boxes, shown.reading);
    if (problem) throw new Error(problem);
    const { body } = await api(`/v1/readings/${shown.reading.id}/correction`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(correctionBody(shown.boxes, shown.reading)),
    });
    shown.saved = true;
    selectCharacter(null);
    $("row-reply").textContent = describeStored(body.corrected);
    await loadStats();
  }

  // ---- wiring -----------------------------------------------------------------------------------

  // On a phone the row board is less wide for its height, so that a finger has the height to
  // write in (and it spans the card's whole width: style.css).
  if (window.matchMedia("(max-width: 600px)").matches) {
    Object.assign(rowBoard.canvas, { width: 600, height: 280 });
  }
  rowBoard.clear();
  const readNow = action(() => {
    live.cancel(); // this reading replaces the one waiting
    return readDrawnRow();
  }, "row-draw-error");
  const undo = () => {
    if (!rowBoard.undo()) return;
    if (rowBoard.dirty) live.schedule();
    else live.cancel();
  };
  const clear = () => {
    rowBoard.clear();
    live.cancel();
    clearError("row-draw-error");
  };
  rowBoard.canvas.addEventListener("keydown", boardKeys({ submit: () => readNow(), clear, undo }));
  showMarkerSize($("row-marker-size"), $("row-marker-size-value"));
  $("row-read").addEventListener("click", readNow);
  $("row-undo").addEventListener("click", undo);
  $("row-clear").addEventListener("click", clear);
  $("row-file").addEventListener("change", action(readRowFile, "row-file-error"));
  $("row-read-file").addEventListener("click", action(readRowFile, "row-file-error"));
  $("row-frame").addEventListener("click", clickedPicture);
  $("row-text").addEventListener("click", clickedCharacter);
  $("row-fix").addEventListener("input", () => correctCharacter($("row-fix").value));
  $("row-fix").addEventListener("keydown", fixKeys);
  $("row-picks").addEventListener("click", pickLabel);
  $("row-split").addEventListener("click", startCut);
  $("row-cut").addEventListener("input", () => renderReading(state.rowReading));
  $("row-cut-here").addEventListener("click", () => cutAt(Number($("row-cut").value)));
  $("row-merge").addEventListener("click", mergeNext);
  $("row-skip").addEventListener("click", toggleSkip);
  $("row-save").addEventListener(
    "click",
    action(saveCorrections, "row-save-error", { after: () => renderSave(state.rowReading) })
  );
  renderSave(null);
}
