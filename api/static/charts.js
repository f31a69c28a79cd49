// The dashboard's charts: the confusion matrix (with its largest errors in words) and the
// training curves. They draw what they are given and keep nothing.

import { $, el } from "./dom.js";
import { percent } from "./format.js";

// The matrix's largest errors in words: readable without a mouse, and by screen readers.
export function listConfusions(confusions) {
  const items = confusions.slice(0, 6).map((c) =>
    el("li", {}, `“${c.true}” read as “${c.predicted}”: ${c.count} times (${percent(c.share_of_true)} of “${c.true}”)`)
  );
  $("confusions").replaceChildren(...items);
}

// Row-normalised confusion matrix as a heat map (square-root colour scale shows rare mistakes).
// Returns what the canvas shows, for `describeConfusionCell` (null: no matrix).
export function drawConfusion(matrix, labelSet) {
  const canvas = $("confusion");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!Array.isArray(matrix) || matrix.length === 0) {
    ctx.fillStyle = "#5b6475";
    ctx.font = "14px sans-serif";
    ctx.fillText("No confusion matrix for this version.", 16, 30);
    return null;
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
  return { matrix, labelSet, margin, cell };
}

// The cell pointed at, in words: `view` is what `drawConfusion` returned.
export function describeConfusionCell(view, event) {
  const canvas = $("confusion");
  if (!view) return;
  const { matrix, labelSet, margin, cell } = view;
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
export function drawCurves(history) {
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
  drawPanel(ctx, box(0), "loss", [history.loss, history.val_loss], lossAxis);
  drawPanel(ctx, box(half), "accuracy", [history.accuracy, history.val_accuracy], accuracyAxis);
}

// Honest axes: a loss from 0; an accuracy over at least 20 points (a retrain's 0.88 -> 0.89 on
// a 0.88-0.90 axis looked like a leap), never past 1.
const MIN_ACCURACY_SPAN = 0.2;

function lossAxis(low, high) {
  return [0, high * 1.1 || 1];
}

function accuracyAxis(low, high) {
  const top = Math.min(1, high + 0.02);
  return [Math.max(0, Math.min(low - 0.02, top - MIN_ACCURACY_SPAN)), top];
}

function drawPanel(ctx, box, title, [training, validation], axis) {
  const series = [
    { values: training || [], dash: [], color: "#2f5fd0" },
    { values: validation || [], dash: [6, 4], color: "#d9730d" },
  ];
  const all = series.flatMap((s) => s.values).filter(Number.isFinite);
  if (all.length === 0) return;
  const [low, high] = axis(Math.min(...all), Math.max(...all));
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
