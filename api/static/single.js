// One character: the board that reads as you draw, Predict, teaching the model when it is wrong,
// and the upload of an image file (the keyboard's alternative to drawing).

import { action, api, clearError, isOptionError, showError } from "./api.js";
import { boardKeys, drawingBoard, readsAsYouDraw, showMarkerSize } from "./board.js";
import { $ } from "./dom.js";
import { percent } from "./format.js";
import { fillLabelChoices, pickedLabel } from "./label-picker.js";
import { hidePrediction, showPrediction } from "./prediction.js";

// `storeSample(image, filename, label, source, reply)` stores a sample and says so in `reply`.
// Returns `fillLabelPicker(labelSet)`, for when the dashboard learns the active model's labels.
export function mountSingle({ state, storeSample }) {
  // The board of one character: it reads as you draw.
  const board = drawingBoard($("board"), $("marker-size"), {
    onStart: () => {
      live.cancel();
      forgetDrawing();
    },
    onEnd: () => live.schedule(),
  });
  // While drawing, the newest drawing only is read.
  const live = readsAsYouDraw({
    state,
    key: "livePrediction",
    canvas: board.canvas,
    request: (signal) => predictDrawing(signal),
    where: "draw-error",
  });

  function clearBoard() {
    board.clear();
    live.cancel();
    forgetDrawing();
    clearPrediction();
  }

  function undoStroke() {
    if (!board.undo()) return;
    forgetDrawing();
    if (board.dirty) live.schedule();
    else clearPrediction();
  }

  // Once the board changes, teaching would send a drawing other than the one predicted.
  function forgetDrawing() {
    state.drawnBlob = null;
    state.drawnLabel = null;
    $("teaching").hidden = true;
  }

  // ---- predictions and teaching -------------------------------------------------------------

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
    state.lastPredicted = { image, filename };
    showPrediction(body);
    return body;
  }

  function clearPrediction() {
    hidePrediction();
    state.lastPredicted = null;
  }

  async function predictDrawing(signal = undefined) {
    if (!board.dirty) throw new Error("Draw a character on the board first.");
    $("sample-reply").textContent = "";
    const blob = await board.blob();
    const prediction = await predict(blob, "drawing.png", signal);
    // Over the board too: on a phone the Prediction panel is below the fold.
    $("board-answer").textContent = `${prediction.label} · ${percent(prediction.confidence)}`;
    $("board-answer").hidden = false;
    state.drawnBlob = blob;
    state.drawnLabel = prediction.label;
    // The right label starts empty: a correction is only sent once someone picks a label
    // other than the prediction, never one left over from an earlier drawing.
    $("teach-label").value = "";
    updateTeachButton();
    $("add-sample").textContent = `Right — add as “${prediction.label}”`;
    $("teaching").hidden = false;
  }

  function updateTeachButton() {
    const chosen = pickedLabel($("teach-label"), state.labels);
    $("teach").disabled = !chosen || chosen === state.drawnLabel;
  }

  // The labels to choose from, for teaching and the upload alike: the active model's.
  function fillLabelPicker(labelSet) {
    fillLabelChoices(labelSet);
    updateTeachButton();
  }

  async function teachDrawing() {
    if (!state.drawnBlob) throw new Error("Predict a drawing first.");
    live.cancel(); // a late one would clear the reply and the chosen label
    const label = pickedLabel($("teach-label"), state.labels);
    if (!label || label === state.drawnLabel) throw new Error("Type or choose the right label first.");
    await storeSample(state.drawnBlob, "drawing.png", label, "correction");
    readyForTheNext();
  }

  async function addDrawing() {
    if (!state.drawnBlob) throw new Error("Predict a drawing first.");
    live.cancel();
    await storeSample(state.drawnBlob, "drawing.png", state.drawnLabel, "canvas");
    readyForTheNext();
  }

  // Teaching is draw + one key: once stored, the board is empty and has the focus again.
  function readyForTheNext() {
    const stored = $("sample-reply").textContent;
    clearBoard();
    $("sample-reply").textContent = stored;
    board.canvas.focus();
  }

  // ---- an uploaded image ----------------------------------------------------------------------

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
    if (state.thumbnailUrl) URL.revokeObjectURL(state.thumbnailUrl);
    const file = $("file").files[0];
    state.thumbnailUrl = file ? URL.createObjectURL(file) : null;
    // Its place is kept while empty, so that showing it moves nothing.
    $("file-thumb").style.visibility = file ? "visible" : "hidden";
    if (file) {
      $("file-thumb").src = state.thumbnailUrl;
      await predictFile();
    }
  }

  async function storeFile() {
    const file = chosenFile();
    const label = $("file-label").value.trim();
    if (!label) throw new Error("Type or choose the character the image shows in the Label field.");
    await storeSample(file, file.name, label, "upload", "upload-reply");
  }

  // ---- wiring -----------------------------------------------------------------------------------

  // Predict (the button, Enter): this prediction replaces the one waiting after the pen lifted.
  const predictNow = action(() => {
    live.cancel();
    return predictDrawing();
  }, "draw-error");
  clearBoard();
  showMarkerSize($("marker-size"), $("marker-size-value"));
  board.canvas.addEventListener(
    "keydown",
    boardKeys({
      submit: () => predictNow(),
      clear: clearBoard,
      undo: undoStroke,
    })
  );
  $("predict").addEventListener("click", predictNow);
  $("undo").addEventListener("click", undoStroke);
  $("clear").addEventListener("click", () => {
    clearBoard();
    clearError("draw-error");
  });
  $("show-heatmap").addEventListener(
    "change",
    action(async () => {
      if (state.lastPredicted) await predict(state.lastPredicted.image, state.lastPredicted.filename);
    }, "teach-error")
  );
  // Enabled again after a reply only if a label other than the one read is still chosen.
  $("teach").addEventListener("click", action(teachDrawing, "teach-error", { after: updateTeachButton }));
  $("teach-label").addEventListener("input", updateTeachButton);
  $("add-sample").addEventListener("click", action(addDrawing, "teach-error"));
  $("file").addEventListener("change", action(fileChanged, "upload-error"));
  const restrictTo = (characters) => () => {
    $("only-labels").value = characters();
    if (board.dirty) predictNow();
  };
  $("only-any").addEventListener("click", restrictTo(() => ""));
  $("only-digits").addEventListener("click", restrictTo(() => "0123456789"));
  $("only-letters").addEventListener("click", restrictTo(() => state.labels.replace(/[^A-Za-z]/g, "")));
  // A file the browser cannot show (not a picture): no broken-image icon; the API says why.
  $("file-thumb").addEventListener("error", () => ($("file-thumb").style.visibility = "hidden"));
  $("predict-file").addEventListener("click", action(predictFile, "upload-error"));
  $("store-file").addEventListener("click", action(storeFile, "upload-error"));

  return { fillLabelPicker };
}
