// Figures in words: shares as percentages, accuracies with their count, counted nouns.

export const percent = (value) => (Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "–");

// An accuracy's change in points, in words: "+0.3 points", "−1.2 points"; under 0.05 points
// "no change" (a "−0.0" reads like a loss).
export function pointsChange(delta) {
  if (!Number.isFinite(delta)) return "–";
  const points = delta * 100;
  if (Math.abs(points) < 0.05) return "no change";
  return `${points > 0 ? "+" : "−"}${Math.abs(points).toFixed(1)} points`;
}

export const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

// "88.5% of 9,120 images (95% interval 87.8–89.1%)": an accuracy means little without its
// count; the Wilson interval says how far chance alone could move it.
export function withCount(accuracy, images) {
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
