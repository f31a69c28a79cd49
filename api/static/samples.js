// The samples: storing one (a drawing taught or added, an uploaded file), the counts per label,
// and the newest samples, each deleted with the admin token.

import { action, api } from "./api.js";
import { $, el } from "./dom.js";
import { percent } from "./format.js";

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

// Returns `loadStats()` (the counts and the newest samples, again) and `storeSample(...)`.
export function mountSamples({ state, withAdminToken, adminRequest }) {
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
    // In the active model's label order first (state.labels, set by the dashboard).
    const order = [...new Set([...state.labels, ...Object.keys(stats.by_label)])];
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

  return { loadStats, storeSample };
}
