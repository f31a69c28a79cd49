// The web page: a drawing board, predictions, teaching, and a dashboard of the model.
// Plain functions and fetch; every number comes from the JSON API under /v1.
"use strict";

const $ = (id) => document.getElementById(id);

let labels = ""; // the active model's label set, one character per class
let drawnBlob = null; // the drawing last predicted: what "teach" and "add" send
let drawnLabel = null; // what the model read in it: "Add as sample" stores that label
let thumbnailUrl = null; // the chosen file's preview
let livePrediction = null; // { timer, controller }: the prediction asked for while drawing
let lastPredicted = null; // { image, filename }: asked again when the heat map is switched on
const LIVE_DELAY_MS = 300; // after the pen lifts: long enough not to ask for every stroke
let adminToken = null; // kept in memory only: never in localStorage or cookies
let pendingAdminAction = null; // what the admin form does once the token is entered
let shownModel = null; // the version the dashboard's charts show
let activeModel = null; // the serving version, as /v1/models/active last said
let confusionView = null; // what the confusion canvas shows, for its hover text
let runWasOpen = false;

// ---- talking to the API --------------------------------------------------------------------

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err; // a newer request replaced this one
    throw new Error(`The server cannot be reached (${err.message}).`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
    const error = new Error(detail);
    error.status = response.status;
    error.code = body && body.error;
    throw error;
  }
  return { status: response.status, body };
}

// Errors appear beside the control that caused them: each section has its own alert area.
function showError(message, where = "error") {
  $(where).textContent = message;
  $(where).hidden = false;
}

function clearError(where = "error") {
  $(where).textContent = "";
  $(where).hidden = true;
}

// Wraps a control's handler: clears its section's error area and shows what went wrong there;
// the button stays disabled (busy) until the reply, so a double click sends one request.
function action(handler, where = "error") {
  return async (event) => {
    const button = event && event.currentTarget instanceof HTMLButtonElement ? event.currentTarget : null;
    if (button && button.getAttribute("aria-busy") === "true") return;
    clearError(where);
    button?.setAttribute("aria-busy", "true");
    if (button) button.disabled = true;
    try {
      await handler(event);
    } catch (err) {
      if (err.name !== "AbortError") showError(err.message, where);
    } finally {
      button?.removeAttribute("aria-busy");
      if (button) button.disabled = false;
      if (button === $("teach")) updateTeachButton();
    }
  };
}

// A new element with properties and children (nodes or text).
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children); // numbers and strings become text
  return node;
}

const percent = (value) => (Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "–");

// "88.5% of 9,120 images (95% interval 87.8–89.1%)": an accuracy means little without its
// count; the Wilson interval says how far chance alone could move it.
function withCount(accuracy, images) {
  if (!Number.isFinite(accuracy)) return "–";
  if (!images) return percent(accuracy);
  const z = 1.96;
  const centre = (accuracy + (z * z) / (2 * images)) / (1 + (z * z) / images);
  const half =
    (z / (1 + (z * z) / images)) *
    Math.sqrt((accuracy * (1 - accuracy)) / images + (z * z) / (4 * images * images));
  const low = (Math.max(0, centre - half) * 100).toFixed(1);
  const high = (Math.min(1, centre + half) * 100).toFixed(1);
  const noun = images === 1 ? "image" : "images";
  return `${percent(accuracy)} of ${images.toLocaleString("en")} ${noun} (95% interval ${low}–${high}%)`;
}

// ---- the drawing boards --------------------------------------------------------------------

// A board: white ink on black, kept stroke by stroke so that undo redraws all but the last.
// Both boards (one character, a row) draw with this pen; `onStart` runs as a stroke begins,
// `onEnd` once the pen lifts.
function drawingBoard(canvas, markerSize, { onStart = () => {}, onEnd = () => {} } = {}) {
  const pen = canvas.getContext("2d");
  let strokes = [];
  let lastPoint = null; // while a pointer is drawing

  function strokeTo(point, width) {
    pen.strokeStyle = "#fff";
    pen.lineWidth = width;
    pen.lineCap = "round";
    pen.lineJoin = "round";
    pen.beginPath();
    pen.moveTo(lastPoint.x, lastPoint.y);
    pen.lineTo(point.x, point.y);
    pen.stroke();
    lastPoint = point;
  }

  function paint() {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    for (const stroke of strokes) {
      lastPoint = stroke.points[0];
      for (const point of stroke.points) strokeTo(point, stroke.width);
    }
    lastPoint = null;
  }

  function pointAt(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * canvas.height) / rect.height,
    };
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault(); // no text selection or scrolling; and so no focus by itself:
    canvas.focus({ preventScroll: true }); // the board's keys work right after drawing
    canvas.setPointerCapture(event.pointerId);
    onStart();
    const point = pointAt(event);
    strokes.push({ points: [point], width: Number(markerSize.value) });
    lastPoint = point;
    strokeTo(point, strokes.at(-1).width); // a tap leaves a dot
  });
  canvas.addEventListener("pointermove", (event) => {
    if (lastPoint === null) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const point = pointAt(each);
      strokes.at(-1).points.push(point);
      strokeTo(point, strokes.at(-1).width);
    }
  });
  const endStroke = () => {
    if (lastPoint === null) return;
    lastPoint = null;
    onEnd();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  return {
    canvas,
    get dirty() {
      return strokes.length > 0;
    },
    clear() {
      strokes = [];
      paint();
    },
    undo() {
      if (!strokes.length) return false;
      strokes.pop();
      paint();
      return true;
    },
    blob() {
      return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    },
  };
}

// The board of one character: it reads as you draw.
const board = drawingBoard($("board"), $("marker-size"), {
  onStart: () => {
    cancelLivePrediction();
    forgetDrawing();
  },
  onEnd: () => scheduleLivePrediction(),
});

function clearBoard() {
  board.clear();
  cancelLivePrediction();
  forgetDrawing();
  clearPrediction();
}

function undoStroke() {
  if (!board.undo()) return;
  forgetDrawing();
  if (board.dirty) scheduleLivePrediction();
  else clearPrediction();
}

// Once the board changes, teaching would send a drawing other than the one predicted.
function forgetDrawing() {
  drawnBlob = null;
  drawnLabel = null;
  $("teaching").hidden = true;
}

// ---- live prediction: while drawing, the newest drawing only --------------------------------

function cancelLivePrediction() {
  if (!livePrediction) return;
  clearTimeout(livePrediction.timer);
  livePrediction.controller.abort();
  livePrediction = null;
}

function scheduleLivePrediction() {
  cancelLivePrediction();
  const controller = new AbortController();
  const timer = setTimeout(
    action(() => predictDrawing(controller.signal), "draw-error"),
    LIVE_DELAY_MS
  );
  livePrediction = { timer, controller };
}

// ---- predictions and teaching --------------------------------------------------------------

async function predict(image, filename, signal = undefined) {
  const form = new FormData();
  form.append("image", image, filename);
  const only = $("only-labels").value.replace(/\s+/g, "");
  if (only) form.append("labels", only);
  const include = $("show-heatmap").checked ? "include=input&include=heatmap" : "include=input";
  clearError("only-labels-error");
  let body;
  try {
    ({ body } = await api(`/v1/predictions?${include}`, { method: "POST", body: form, signal }));
  } catch (err) {
    if (!isOptionError(err)) throw err;
    showError(err.message, "only-labels-error"); // beside the option, as on the row tab
    throw Object.assign(new Error(err.message), { name: "AbortError" }); // said once
  }
  lastPredicted = { image, filename };
  showPrediction(body);
  return body;
}

// Stale results go: after Clear, on a new file, when the board is emptied.
function clearPrediction() {
  $("board-answer").hidden = true;
  $("prediction-label").textContent = "–";
  $("prediction-confidence").textContent = "";
  $("prediction-model").textContent = "";
  $("prediction-doubt").hidden = true;
  $("top5").replaceChildren();
  $("seen").hidden = true;
  lastPredicted = null;
}

// The 28x28 picture the model saw, enlarged, with where it looked in red over it.
async function showSeen(prediction) {
  const seen = $("seen");
  const ctx = seen.getContext("2d");
  const input = await pixels(prediction.input);
  const heat = prediction.heatmap ? await pixels(prediction.heatmap) : null;
  const out = ctx.createImageData(28, 28);
  for (let i = 0; i < out.data.length; i += 4) {
    const ink = input[i];
    const h = heat ? heat[i] / 255 : 0;
    out.data[i] = Math.round(ink * (1 - h) + 255 * h);
    out.data[i + 1] = Math.round(ink * (1 - h));
    out.data[i + 2] = Math.round(ink * (1 - h));
    out.data[i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  seen.hidden = false;
  seen.dataset.heatmap = heat ? "shown" : "";
}

async function pixels(base64Png) {
  const image = new Image();
  image.src = `data:image/png;base64,${base64Png}`;
  await image.decode();
  const scratch = document.createElement("canvas");
  scratch.width = scratch.height = 28;
  const ctx = scratch.getContext("2d");
  ctx.drawImage(image, 0, 0);
  return ctx.getImageData(0, 0, 28, 28).data;
}

function showPrediction(prediction) {
  $("prediction-label").textContent = prediction.label;
  $("prediction-confidence").textContent = `${percent(prediction.confidence)} sure`;
  $("prediction-model").textContent = `model version ${prediction.model_version}`;
  $("prediction-doubt").textContent = prediction.doubt || "";
  $("prediction-doubt").hidden = !prediction.low_confidence;
  const bars = prediction.top.map(({ label, probability }) => {
    const fill = el("span", { className: "fill" });
    fill.style.width = `${Math.max(0.5, probability * 100)}%`;
    const name = el("span", { className: "name" }, label);
    const value = el("span", { className: "value" }, percent(probability));
    return el("li", {}, name, el("span", { className: "track" }, fill), value);
  });
  $("top5").replaceChildren(...bars);
  if (prediction.input) showSeen(prediction);
}

async function predictDrawing(signal = undefined) {
  if (!board.dirty) throw new Error("Draw a character on the board first.");
  $("sample-reply").textContent = "";
  const blob = await board.blob();
  const prediction = await predict(blob, "drawing.png", signal);
  // Over the board too: on a phone the Prediction panel is below the fold.
  $("board-answer").textContent = `${prediction.label} · ${percent(prediction.confidence)}`;
  $("board-answer").hidden = false;
  drawnBlob = blob;
  drawnLabel = prediction.label;
  // The right label starts empty: a correction is only sent once someone picks a label
  // other than the prediction, never one left over from an earlier drawing.
  $("teach-label").value = "";
  updateTeachButton();
  $("add-sample").textContent = `Right — add as “${prediction.label}”`;
  $("teaching").hidden = false;
}

function updateTeachButton() {
  const chosen = $("teach-label").value;
  $("teach").disabled = !chosen || chosen === drawnLabel;
}

// The reply goes beside the button that stored it (`reply`: the teaching's or the upload's).
async function storeSample(image, filename, label, source, reply = "sample-reply") {
  const form = new FormData();
  form.append("image", image, filename);
  form.append("label", label);
  form.append("source", source);
  const { status, body } = await api("/v1/samples", { method: "POST", body: form });
  let message =
    status === 201
      ? `Stored as sample #${body.id} with label “${body.label}”.`
      : `Already stored as sample #${body.id} with label “${body.label}”.`;
  if (body.label_merged) {
    message += ` “${body.submitted_label}” is merged into “${body.label}” in this label set.`;
  }
  if (body.status === "suspect") {
    message +=
      ` The NIST examples nearest to it are another character (the model reads` +
      ` “${body.model_label}”, ${percent(body.model_probability)}), so it is kept out of` +
      " training until an admin confirms the label.";
  }
  $(reply).textContent = message;
  await loadStats();
}

async function teachDrawing() {
  if (!drawnBlob) throw new Error("Predict a drawing first.");
  cancelLivePrediction(); // a late one would clear the reply and the chosen label
  const label = $("teach-label").value;
  if (!label || label === drawnLabel) throw new Error("Choose the right label first.");
  await storeSample(drawnBlob, "drawing.png", label, "correction");
  readyForTheNext();
}

async function addDrawing() {
  if (!drawnBlob) throw new Error("Predict a drawing first.");
  cancelLivePrediction();
  await storeSample(drawnBlob, "drawing.png", drawnLabel, "canvas");
  readyForTheNext();
}

// Teaching is draw + one key: once stored, the board is empty and has the focus again.
function readyForTheNext() {
  const stored = $("sample-reply").textContent;
  clearBoard();
  $("sample-reply").textContent = stored;
  board.canvas.focus();
}

function boardKeys(event) {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    action(() => predictDrawing(), "draw-error")();
  } else if (event.key === "Escape") {
    clearBoard();
  } else if ((event.key === "z" && (event.ctrlKey || event.metaKey)) || event.key === "Backspace") {
    event.preventDefault();
    undoStroke();
  }
}

function chosenFile() {
  const file = $("file").files[0];
  if (!file) throw new Error("Choose an image file first.");
  return file;
}

async function predictFile() {
  const file = chosenFile();
  $("upload-reply").textContent = "";
  forgetDrawing(); // teaching sends drawings; a file is stored with its own label
  const prediction = await predict(file, file.name);
  if (!$("file-label").value) $("file-label").value = prediction.label;
}

// A new file never inherits the label typed for the previous one: the field is cleared, the
// file shown, and the label prefilled with what the model reads in it (to check, not trust).
async function fileChanged() {
  $("file-label").value = "";
  $("upload-reply").textContent = "";
  clearPrediction();
  if (thumbnailUrl) URL.revokeObjectURL(thumbnailUrl);
  const file = $("file").files[0];
  thumbnailUrl = file ? URL.createObjectURL(file) : null;
  // Its place is kept while empty, so that showing it moves nothing.
  $("file-thumb").style.visibility = file ? "visible" : "hidden";
  if (file) {
    $("file-thumb").src = thumbnailUrl;
    await predictFile();
  }
}

async function storeFile() {
  const file = chosenFile();
  const label = $("file-label").value.trim();
  if (!label) throw new Error("Type the character the image shows in the Label field.");
  await storeSample(file, file.name, label, "upload", "upload-reply");
}

// ---- the page's modes: one character, or a row ----------------------------------------------

function selectMode(tab) {
  for (const each of document.querySelectorAll('[role="tab"]')) {
    const selected = each === tab;
    each.setAttribute("aria-selected", String(selected));
    each.tabIndex = selected ? 0 : -1; // one tab stop for the tabs; arrows move between them
    $(each.getAttribute("aria-controls")).hidden = !selected;
  }
}

function tabKeys(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const at = tabs.indexOf(event.currentTarget);
  const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  const tab = tabs[(next + tabs.length) % tabs.length];
  selectMode(tab);
  tab.focus();
}

// ---- reading a row ---------------------------------------------------------------------------

const rowBoard = drawingBoard($("row-board"), $("row-marker-size"));
// The row shown: the API's reading, its picture (an object URL), the label the user gave each
// character (null: as read), the character being corrected, and whether it has been saved.
let rowReading = null;
const PICTURE_HEIGHT = 280; // CSS px the picture read is shown at, at most

// The API's refusals of the options are shown beside the options, any other beside the control
// that sent the picture (the board or the file).
function isOptionError(err) {
  const aboutOptions = /^(labels|expected_length)\b/.test(err.message); // the API's words
  return err.option || err.code === "invalid_labels" || aboutOptions;
}

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

function confidenceInWords(probability) {
  if (probability >= 0.9) return "sure";
  if (probability >= 0.6) return "fairly sure";
  if (probability >= 0.3) return "unsure";
  return "doubtful";
}

const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

function showReading(reading, picture, description) {
  if (rowReading) URL.revokeObjectURL(rowReading.picture);
  rowReading = {
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
  return rowReading.corrections[index] ?? rowReading.reading.characters[index].label;
}

function describeCharacter(index) {
  const { reading, corrections } = rowReading;
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
  const { reading, corrections, selected, saved } = rowReading;
  const focused = document.activeElement?.closest?.("#row-text [data-index]")?.dataset.index;
  const boxes = [];
  const letters = [];
  reading.characters.forEach((character, index) => {
    const changed = corrections[index] !== null;
    const state = [
      character.low_confidence ? "low" : "",
      changed ? "changed" : "",
      index === selected ? "selected" : "",
    ]
      .filter(Boolean)
      .join(" ");
    const [x, y, w, h] = character.box;
    const tag = changed ? `${character.label}→${corrections[index]}` : character.label;
    const box = el("span", { className: `box ${state}` }, el("span", { className: "tag" }, tag));
    Object.assign(box.style, {
      left: `${(100 * x) / reading.width}%`,
      top: `${(100 * y) / reading.height}%`,
      width: `${(100 * w) / reading.width}%`,
      height: `${(100 * h) / reading.height}%`,
    });
    box.dataset.index = index;
    boxes.push(box);
    if (character.space_before && index > 0) letters.push(el("span", { className: "space" }));
    const letter = el("button", { type: "button", className: state }, rowLabel(index));
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
  rowReading.selected = rowReading.saved ? null : index;
  renderReading();
  const field = $("row-fix");
  if (rowReading.selected === null) {
    $("row-fix-label").textContent = rowReading.saved
      ? "Saved: read another row to correct more"
      : "Click a character to correct it";
    field.value = "";
    field.placeholder = "";
    field.disabled = true;
    field.hidden = rowReading.saved; // nothing more to type in
    $("row-picks").replaceChildren();
    return;
  }
  const character = rowReading.reading.characters[index];
  $("row-fix-label").textContent =
    `Character ${index + 1}, read as “${character.label}” (${percent(character.confidence)}), is`;
  field.disabled = false;
  field.value = rowReading.corrections[index] ?? "";
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
  const { reading, selected } = rowReading;
  const label = value.trim();
  const asRead = !label || label === reading.characters[selected].label;
  rowReading.corrections[selected] = asRead ? null : label;
  $("row-reply").textContent = "";
  clearError("row-save-error");
  renderReading();
}

function clickedCharacter(event) {
  const target = event.target.closest("[data-index]");
  if (target && rowReading && !rowReading.saved) selectCharacter(Number(target.dataset.index));
}

function fixKeys(event) {
  const { selected, reading } = rowReading;
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
  if (!rowReading) throw new Error("Read a row first.");
  if (rowReading.saved) {
    throw new Error("These corrections are saved; read another row to correct more.");
  }
  const { reading, corrections } = rowReading;
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
  rowReading.saved = true;
  selectCharacter(null);
  $("row-reply").textContent = describeStored(body.corrected);
  await loadStats();
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

function rowBoardKeys(event) {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    action(readDrawnRow, "row-draw-error")();
  } else if (event.key === "Escape") {
    rowBoard.clear();
  } else if ((event.key === "z" && (event.ctrlKey || event.metaKey)) || event.key === "Backspace") {
    event.preventDefault();
    rowBoard.undo();
  }
}

// ---- the model dashboard -------------------------------------------------------------------

async function loadActive() {
  let model;
  try {
    model = (await api("/v1/models/active")).body;
  } catch (err) {
    if (err.status !== 404) throw err;
    $("active-version").textContent = "none";
    return;
  }
  activeModel = model;
  const metrics = model.metrics || {};
  $("active-version").textContent = model.version;
  $("active-architecture").textContent = model.architecture;
  const sets = (model.report || {}).evaluation || {};
  const imagesOf = (name) => (sets[name] || {}).images;
  $("acc-test").textContent = withCount(metrics.test_accuracy, imagesOf("test"));
  $("acc-holdout").textContent = withCount(
    metrics.holdout_accuracy,
    imagesOf(`holdout/${metrics.holdout_slice}`)
  );
  $("acc-evaluation").textContent = withCount(
    metrics.evaluation_samples_accuracy,
    metrics.evaluation_samples
  );
  if (model.labels !== labels) fillLabelPicker(model.labels);
  if (shownModel !== model.version) {
    shownModel = model.version;
    const report = model.report || {};
    const test = (report.evaluation || {}).test || {};
    drawConfusion(test.confusion, model.labels);
    listConfusions(test.most_confused || []);
    drawCurves(report.history);
  }
}

// The matrix's largest errors in words: readable without a mouse, and by screen readers.
function listConfusions(confusions) {
  const items = confusions.slice(0, 6).map((c) =>
    el("li", {}, `“${c.true}” read as “${c.predicted}”: ${c.count} times (${percent(c.share_of_true)} of “${c.true}”)`)
  );
  $("confusions").replaceChildren(...items);
}

function fillLabelPicker(labelSet) {
  labels = labelSet;
  const select = $("teach-label");
  const previous = select.value;
  select.replaceChildren(
    new Option("choose…", "", false, !previous),
    ...[...labelSet].map((label) => new Option(label, label, false, label === previous))
  );
  updateTeachButton();
}

// Row-normalised confusion matrix as a heat map (square-root colour scale shows rare mistakes).
function drawConfusion(matrix, labelSet) {
  const canvas = $("confusion");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!Array.isArray(matrix) || matrix.length === 0) {
    confusionView = null;
    ctx.fillStyle = "#5b6475";
    ctx.font = "14px sans-serif";
    ctx.fillText("No confusion matrix for this version.", 16, 30);
    return;
  }
  const n = matrix.length;
  const margin = 20;
  const cell = (canvas.width - margin) / n;
  ctx.font = `${Math.min(11, cell)}px sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let row = 0; row < n; row++) {
    const total = matrix[row].reduce((a, b) => a + b, 0);
    for (let col = 0; col < n; col++) {
      const share = total ? matrix[row][col] / total : 0;
      const t = Math.sqrt(share);
      ctx.fillStyle = `rgb(${255 - t * 235}, ${255 - t * 205}, ${255 - t * 135})`;
      ctx.fillRect(margin + col * cell, margin + row * cell, Math.ceil(cell), Math.ceil(cell));
    }
    ctx.fillStyle = "#1d2330";
    ctx.fillText(labelSet[row] || "?", margin / 2, margin + (row + 0.5) * cell);
    ctx.fillText(labelSet[row] || "?", margin + (row + 0.5) * cell, margin / 2);
  }
  confusionView = { matrix, labelSet, margin, cell };
}

function describeConfusionCell(event) {
  const canvas = $("confusion");
  if (!confusionView) return;
  const { matrix, labelSet, margin, cell } = confusionView;
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * canvas.width) / rect.width - margin;
  const y = ((event.clientY - rect.top) * canvas.height) / rect.height - margin;
  const row = Math.floor(y / cell);
  const col = Math.floor(x / cell);
  if (row < 0 || col < 0 || row >= matrix.length || col >= matrix.length) {
    canvas.title = "";
    return;
  }
  const total = matrix[row].reduce((a, b) => a + b, 0);
  const count = matrix[row][col];
  canvas.title = `true ${labelSet[row]} → predicted ${labelSet[col]}: ${count} of ${total}`;
  $("confusion-cell").textContent = `“${labelSet[row]}” read as “${labelSet[col]}”: ${count} of ${total}`;
}

// Training curves: loss (left) and accuracy (right); training solid blue, validation dashed orange.
function drawCurves(history) {
  const canvas = $("curves");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!history || !Array.isArray(history.loss) || history.loss.length === 0) {
    ctx.fillStyle = "#5b6475";
    ctx.font = "14px sans-serif";
    ctx.fillText("No training history for this version.", 16, 30);
    return;
  }
  const half = canvas.width / 2;
  const box = (left) => ({ x: left + 40, y: 24, w: half - 56, h: canvas.height - 60 });
  drawPanel(ctx, box(0), "loss", [history.loss, history.val_loss]);
  drawPanel(ctx, box(half), "accuracy", [history.accuracy, history.val_accuracy]);
}

function drawPanel(ctx, box, title, [training, validation]) {
  const series = [
    { values: training || [], dash: [], color: "#2f5fd0" },
    { values: validation || [], dash: [6, 4], color: "#d9730d" },
  ];
  const all = series.flatMap((s) => s.values).filter(Number.isFinite);
  if (all.length === 0) return;
  let low = Math.min(...all);
  let high = Math.max(...all);
  const pad = (high - low) * 0.1 || 0.05;
  low -= pad;
  high += pad;
  const epochs = Math.max(...series.map((s) => s.values.length));
  const x = (i) => box.x + (epochs === 1 ? box.w / 2 : (i * box.w) / (epochs - 1));
  const y = (v) => box.y + box.h - ((v - low) / (high - low)) * box.h;

  ctx.strokeStyle = "#b8bfcc";
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.fillStyle = "#1d2330";
  ctx.font = "13px sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(title, box.x + box.w / 2, box.y - 8);
  ctx.font = "11px sans-serif";
  for (let i = 0; i < epochs; i++) ctx.fillText(String(i + 1), x(i), box.y + box.h + 14);
  ctx.fillText("epoch", box.x + box.w / 2, box.y + box.h + 30);
  ctx.textAlign = "right";
  ctx.fillText(high.toFixed(2), box.x - 4, box.y + 8);
  ctx.fillText(low.toFixed(2), box.x - 4, box.y + box.h);

  ctx.lineWidth = 2;
  for (const { values, dash, color } of series) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.setLineDash(dash);
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    values.forEach((v, i) => ctx.fillRect(x(i) - 2, y(v) - 2, 4, 4));
  }
  ctx.setLineDash([]);
}

const VERSION_COLUMNS = ["Version", "Status", "Architecture", "Test accuracy", "Created"];

async function loadVersions() {
  const { body: models } = await api("/v1/models");
  const rows = models.map((model) => {
    const cells = [
      model.version,
      model.status,
      model.architecture,
      percent((model.metrics || {}).test_accuracy),
      new Date(model.created_at).toLocaleString(),
    ].map((text, column) => {
      const cell = el("td", {}, text);
      cell.dataset.label = VERSION_COLUMNS[column]; // a phone shows each row as a card
      return cell;
    });
    const actions = el("td");
    if (model.status !== "active") {
      const button = el("button", { type: "button", id: `activate-${model.version}` }, "Activate");
      button.setAttribute("aria-label", `Activate version ${model.version}`);
      button.addEventListener("click", action(() => requestActivation(model.version), "admin-error"));
      actions.append(button);
    }
    return el("tr", { className: model.status === "active" ? "active" : "" }, ...cells, actions);
  });
  $("versions").replaceChildren(...rows);
}

async function requestActivation(version) {
  // Switching the serving model changes every answer at once: asked first.
  const question = `Make version ${version} serve every prediction now?`;
  await withAdminToken(`Activate version ${version}`, question, () => activate(version));
}

// Runs `run` with the admin token, asking once: while the page has no token, the admin form
// (its button says what will happen) is the confirmation; with one, `question` (if any) is.
async function withAdminToken(label, question, run) {
  if (adminToken) {
    if (question && !window.confirm(question)) return;
    return run();
  }
  pendingAdminAction = run;
  $("admin-ok").textContent = label;
  $("admin-form").hidden = false;
  $("admin-token").focus();
}

function closeAdminForm() {
  $("admin-form").hidden = true;
  $("admin-token").value = "";
  pendingAdminAction = null;
}

async function adminRequest(path, options) {
  try {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${adminToken}` };
    return await api(path, { ...options, headers });
  } catch (err) {
    if (err.status === 401 || err.status === 403) adminToken = null; // ask again next time
    throw err;
  }
}

async function activate(version) {
  await adminRequest(`/v1/models/${version}/activate`, { method: "POST" });
  $("sample-reply").textContent = "";
  await Promise.all([loadVersions(), loadActive()]);
  $("versions-reply").textContent = `Version ${version} now serves.`;
}

// A refused token keeps the form open with the API's reason, to try again or cancel.
async function submitAdminToken(event) {
  event.preventDefault();
  adminToken = $("admin-token").value.trim() || null;
  if (!adminToken) throw new Error("Enter the admin token first.");
  try {
    if (pendingAdminAction) await pendingAdminAction();
  } catch (err) {
    if (err.status === 401 || err.status === 403) $("admin-token").select();
    else closeAdminForm();
    throw err;
  }
  closeAdminForm();
}

// ---- the newest samples ----------------------------------------------------------------------

const SOURCE_NAMES = {
  upload: "uploaded file",
  canvas: "drawing",
  correction: "correction",
  reading: "a row's correction",
};
const STATUS_NAMES = {
  accepted: "trains",
  confirmed: "confirmed by an admin",
  suspect: "held: the data contradicts the label",
};

async function loadSamples() {
  const { body } = await api("/v1/samples?limit=12");
  const items = body.items.map((sample) => {
    const thumb = el("img", {
      src: `/v1/samples/${sample.id}/image`,
      alt: `Sample ${sample.id}`,
      className: "thumb",
    });
    const use = sample.evaluation ? "kept for evaluation" : STATUS_NAMES[sample.status];
    const text = el(
      "span",
      {},
      `#${sample.id} “${sample.label}”, ${SOURCE_NAMES[sample.source] || sample.source}, ${use}`
    );
    const remove = el("button", { type: "button", id: `delete-${sample.id}` }, "Delete");
    remove.setAttribute("aria-label", `Delete sample ${sample.id}`);
    remove.addEventListener("click", action(() => requestDeletion(sample.id), "admin-error"));
    return el("li", {}, thumb, text, remove);
  });
  $("samples").replaceChildren(...items);
}

async function requestDeletion(id) {
  const question = `Delete sample #${id}? No model will train on it.`;
  await withAdminToken(`Delete sample #${id}`, question, async () => {
    await adminRequest(`/v1/samples/${id}`, { method: "DELETE" });
    $("samples-reply").textContent = `Sample #${id} deleted.`;
    await loadStats();
  });
}

async function loadStats() {
  const [{ body: stats }] = await Promise.all([api("/v1/samples/stats"), loadSamples()]);
  $("sample-count").textContent = stats.total;
  $("sample-split").textContent = `${stats.training} training, ${stats.evaluation} evaluation`;
  const missing = Math.max(0, stats.retrain_threshold - stats.new_since_last_training_run);
  $("next-retrain").textContent =
    `${missing} new sample${missing === 1 ? "" : "s"} until the next automatic retrain.`;
  const order = [...new Set([...labels, ...Object.keys(stats.by_label)])];
  const most = Math.max(1, ...Object.values(stats.by_label));
  $("by-label").replaceChildren(
    ...order.map((label) => {
      const count = stats.by_label[label] || 0;
      const bar = el("i");
      bar.style.width = `${(count / most) * 100}%`;
      const title = `${count} samples labelled ${label}`;
      return el("div", { title }, el("b", {}, label), el("span", {}, count), bar);
    })
  );
}

// The latest training run; every 2 s while one is queued or running, otherwise every 10 s.
async function pollRuns() {
  let open = false;
  try {
    const { body: runs } = await api("/v1/training-runs?limit=1");
    const run = runs[0];
    open = Boolean(run) && (run.status === "queued" || run.status === "running");
    showRun(run);
    if (runWasOpen && !open) {
      await Promise.all([loadVersions(), loadActive()]);
      showRun(run); // now that the serving version is known
    }
    runWasOpen = open;
    await loadStats();
  } catch (err) {
    $("run-status").textContent = `Could not load the training runs: ${err.message}`;
  }
  setTimeout(pollRuns, open ? 2000 : 10000);
}

function showRun(run) {
  if (!run) {
    $("run-status").textContent = "No training run yet.";
    $("run-progress").value = 0;
    $("run-decision").textContent = "";
    $("status-strip").textContent = "";
    return;
  }
  const kind = run.full_retrain ? "full retrain" : "fine-tuning";
  const doing = run.status === "running" ? `, ${runPhase(run)}` : "";
  $("run-status").textContent =
    `Run ${run.id} (${run.trigger}, ${kind}): ${run.status}${doing}, ` +
    `${Math.round(run.progress * 100)}%`;
  $("run-progress").value = run.progress;
  const checks = (run.metrics || {}).gate || [];
  if (run.decision) {
    // With the gate's checks listed below, the reason would say it all twice.
    $("run-decision").textContent = checks.length
      ? `Decision: ${run.decision}.`
      : `Decision: ${run.decision} — ${run.decision_reason || ""}`;
  } else if (run.error) {
    $("run-decision").textContent = `Error: ${run.error}`;
  } else {
    $("run-decision").textContent = "";
  }
  showGateChecks(checks);
  $("status-strip").textContent = statusLine(run);
}

// What a running run is doing, in words: before its first epoch it loads NIST and the samples
// (and on a fresh machine fetches NIST), after training the candidate is judged.
function runPhase(run) {
  if (!run.epochs) return "loading NIST and the samples";
  if (run.progress >= 0.9) return "evaluating the candidate against the serving model…";
  return `training, epoch ${run.epoch}/${run.epochs}`;
}

// One line beside the board: what training is doing now, or what the last run changed.
function statusLine(run) {
  const name = `Training run ${run.id}`;
  if (run.status === "queued") return `${name} is waiting for a worker.`;
  if (run.status === "running") {
    const phase = runPhase(run);
    const percent = run.progress < 0.9 ? `, ${Math.round(run.progress * 100)}%.` : "";
    return `${name}: ${phase}${percent}`;
  }
  if (run.status === "failed") return `${name} failed; the serving model is unchanged.`;
  const metrics = run.metrics || {};
  if (run.decision === "promoted" && metrics.candidate && metrics.active) {
    const gain = (metrics.candidate.test_accuracy - metrics.active.test_accuracy) * 100;
    const sign = gain >= 0 ? "+" : "−";
    const figures =
      Math.abs(gain) < 0.05 // "-0.0 points" reads like a loss
        ? "no change on the NIST test set"
        : `${sign}${Math.abs(gain).toFixed(1)} points on the NIST test set`;
    if (activeModel && activeModel.training_run_id === run.id) {
      return `Version ${activeModel.version} now serves (${name} promoted it: ${figures}).`;
    }
    return `${name} promoted a new version (${figures}).`;
  }
  if (run.decision === "rejected") return `${name} was not promoted; the serving model is unchanged.`;
  return "";
}

// What the gate compared: every overall figure, and the classes that failed (47 classes
// against two references would drown the page; the run's JSON has each one). Runs before the
// paired test named their class checks "class".
const isClassCheck = (check) => check.name === "class" || check.name.startsWith("class vs ");

function showGateChecks(checks) {
  const shown = checks.filter((check) => !isClassCheck(check) || !check.passed);
  const classes = checks.filter(isClassCheck);
  const items = shown.map((check) =>
    el("li", { className: check.passed ? "pass" : "fail" }, `${check.passed ? "✓" : "✗"} ${check.detail}`)
  );
  if (classes.length) {
    const failed = classes.filter((check) => !check.passed).length;
    items.push(el("li", { className: failed ? "fail" : "pass" },
      `${failed ? "✗" : "✓"} per class: ${classes.length - failed} of ${classes.length} ` +
      "comparisons of a class of the NIST test split passed"));
  }
  $("run-checks").replaceChildren(...items);
}

// ---- wiring --------------------------------------------------------------------------------

function start() {
  clearBoard();
  $("marker-size").addEventListener("input", () => {
    $("marker-size-value").textContent = $("marker-size").value;
  });
  board.canvas.addEventListener("keydown", boardKeys);
  $("predict").addEventListener("click", action(() => predictDrawing(), "draw-error"));
  $("undo").addEventListener("click", undoStroke);
  $("clear").addEventListener("click", () => {
    clearBoard();
    clearError("draw-error");
  });
  $("show-heatmap").addEventListener(
    "change",
    action(async () => {
      if (lastPredicted) await predict(lastPredicted.image, lastPredicted.filename);
    }, "teach-error")
  );
  $("teach").addEventListener("click", action(teachDrawing, "teach-error"));
  $("teach-label").addEventListener("change", updateTeachButton);
  $("add-sample").addEventListener("click", action(addDrawing, "teach-error"));
  $("file").addEventListener("change", action(fileChanged, "upload-error"));
  const restrictTo = (characters) => () => {
    $("only-labels").value = characters();
    if (board.dirty) action(() => predictDrawing(), "draw-error")();
  };
  $("only-any").addEventListener("click", restrictTo(() => ""));
  $("only-digits").addEventListener("click", restrictTo(() => "0123456789"));
  $("only-letters").addEventListener("click", restrictTo(() => labels.replace(/[^A-Za-z]/g, "")));
  // A file the browser cannot show (not a picture): no broken-image icon; the API says why.
  $("file-thumb").addEventListener("error", () => ($("file-thumb").style.visibility = "hidden"));
  $("predict-file").addEventListener("click", action(predictFile, "upload-error"));
  $("store-file").addEventListener("click", action(storeFile, "upload-error"));
  $("admin-form").addEventListener("submit", action(submitAdminToken, "admin-error"));
  $("admin-cancel").addEventListener("click", () => {
    closeAdminForm();
    clearError("admin-error");
  });
  // A mouse points at a cell; a finger taps it (no hover on a touch screen).
  $("confusion").addEventListener("pointermove", describeConfusionCell);
  $("confusion").addEventListener("pointerdown", describeConfusionCell);
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectMode(tab));
    tab.addEventListener("keydown", tabKeys);
  }
  // On a phone the row board is less wide, so that a finger has the height to write in.
  if (window.matchMedia("(max-width: 600px)").matches) rowBoard.canvas.width = 600;
  rowBoard.clear();
  rowBoard.canvas.addEventListener("keydown", rowBoardKeys);
  $("row-marker-size").addEventListener("input", () => {
    $("row-marker-size-value").textContent = $("row-marker-size").value;
  });
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
  const loadDashboard = action(async () => {
    await loadActive(); // first: the label set orders the per-label counts
    await Promise.all([loadVersions(), loadStats()]);
  });
  loadDashboard().then(pollRuns); // the run's line names the serving version
  import("/static/held.js").then(({ mountHeldQueue }) =>
    mountHeldQueue({
      $,
      api,
      adminRequest,
      withAdminToken,
      el,
      action,
      labels: () => labels,
      changed: loadStats,
    })
  );
}

start();
