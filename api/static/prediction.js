// The Prediction panel: the label, its confidence, the five most likely labels as bars, and the
// 28x28 picture the model saw (with where it looked). It only shows what it is given.

import { $, el } from "./dom.js";
import { percent } from "./format.js";

export function showPrediction(prediction) {
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

// Stale results go: after Clear, on a new file, when the board is emptied.
export function hidePrediction() {
  $("board-answer").hidden = true;
  $("prediction-label").textContent = "–";
  $("prediction-confidence").textContent = "";
  $("prediction-model").textContent = "";
  $("prediction-doubt").hidden = true;
  $("top5").replaceChildren();
  $("seen").hidden = true;
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
