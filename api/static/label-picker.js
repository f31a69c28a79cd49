// One label picker wherever a label is given (the right label when teaching a drawing, an
// upload's label): a field where it is typed, or chosen from the active model's labels, one
// list (`<datalist id="label-choices">`) offered by every such field.

import { $, el } from "./dom.js";

// The active model's labels, for every picker.
export function fillLabelChoices(labelSet) {
  $("label-choices").replaceChildren(...[...labelSet].map((label) => el("option", { value: label })));
}

// The class a picker's label stands for, as the API resolves it (a lowercase letter the set
// merges stands for its capital); "" when it is empty or not one of `labels` (with no labels
// known yet, any one character).
export function pickedLabel(field, labels) {
  const label = field.value.trim();
  if (label.length !== 1) return "";
  if (!labels || labels.includes(label)) return label;
  return labels.includes(label.toUpperCase()) ? label.toUpperCase() : "";
}
