// The queue of held uploads: samples whose label the data contradicts (their nearest NIST
// examples are another class) or that a refused training run held for pushing a class over.
// An admin or a labeller confirms, relabels or deletes several at once. An ES module: what it
// needs from the page is passed in, nothing is read from globals.

const LIMIT = 200; // the API's page size: the queue shows the 200 newest

// The group a held sample belongs to: what held it, in words.
export function groupOf(sample) {
  const run = /^held by training run (\d+)/.exec(sample.suspect_reason || "");
  if (run) return `Held by training run ${run[1]} (its candidate lost a class)`;
  const read = sample.model_label ? `, read as “${sample.model_label}”` : "";
  return `Labelled “${sample.label}”${read}: the nearest NIST examples disagree`;
}

export function groupHeld(samples) {
  const groups = new Map();
  for (const sample of samples) {
    const name = groupOf(sample);
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(sample);
  }
  return groups;
}

export function mountHeldQueue({ $, api, adminRequest, withAdminToken, el, action, labels, changed }) {
  const selected = new Set();

  function item(sample) {
    const box = el("input", { type: "checkbox", checked: selected.has(sample.id) });
    box.setAttribute("aria-label", `Select sample ${sample.id}`);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(sample.id);
      else selected.delete(sample.id);
      showSelection();
    });
    const thumb = el("img", {
      src: `/v1/samples/${sample.id}/image`,
      alt: `Sample ${sample.id}`,
      className: "thumb",
    });
    const reading =
      sample.model_label === null
        ? ""
        : ` — the model reads “${sample.model_label}” (${Math.round(sample.model_probability * 100)}%)`;
    const text = el(
      "span",
      {},
      el("b", {}, `#${sample.id} “${sample.label}”`),
      reading,
      el("small", { className: "muted" }, sample.suspect_reason || "")
    );
    return el("li", { id: `held-${sample.id}` }, box, thumb, text);
  }

  function group(name, members) {
    const all = el("input", { type: "checkbox" });
    all.setAttribute("aria-label", `Select all ${members.length}: ${name}`);
    all.addEventListener("change", () => {
      for (const sample of members) {
        if (all.checked) selected.add(sample.id);
        else selected.delete(sample.id);
      }
      render(lastShown);
    });
    const title = el("h4", {}, all, ` ${name} (${members.length})`);
    return el("section", { className: "held-group" }, title, el("ul", { className: "samples" }, ...members.map(item)));
  }

  let lastShown = [];
  function render(samples) {
    lastShown = samples;
    const groups = groupHeld(samples);
    $("held").replaceChildren(...[...groups].map(([name, members]) => group(name, members)));
    $("held-empty").hidden = samples.length > 0;
    showSelection();
  }

  function showSelection() {
    const n = selected.size;
    $("held-actions").hidden = lastShown.length === 0;
    for (const id of ["held-confirm", "held-relabel", "held-delete"]) $(id).disabled = n === 0;
    $("held-relabel").disabled = n === 0 || !$("held-label").value;
    $("held-selected").textContent = `${n} selected`;
  }

  async function load() {
    const { body } = await api(`/v1/samples?status=suspect&limit=${LIMIT}`);
    const shown = new Set(body.items.map((s) => s.id));
    for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
    render(body.items);
  }

  // One request per sample, in turn: each answers for itself (a sample deleted meanwhile is a
  // 404 for that one only), and the reply counts what was done.
  async function onSelected(verb, request, question = null) {
    const ids = [...selected].sort((a, b) => a - b);
    if (!ids.length) return;
    await withAdminToken(`${verb} ${ids.length}`, question, async () => {
      let done = 0;
      const failed = [];
      for (const id of ids) {
        try {
          await request(id);
          done += 1;
          selected.delete(id);
        } catch (err) {
          if (err.status === 401 || err.status === 403) throw err; // the token: asked again
          failed.push(`#${id}: ${err.message}`);
        }
      }
      $("held-reply").textContent =
        `${verb}: ${done} of ${ids.length}.` + (failed.length ? ` Not done: ${failed.join("; ")}` : "");
      await Promise.all([load(), changed()]);
    });
  }

  function fillLabels() {
    const options = [...labels()].map((c) => el("option", { value: c }, c));
    $("held-label").replaceChildren(el("option", { value: "" }, "label…"), ...options);
  }

  $("held-load").addEventListener("click", action(async () => {
    fillLabels();
    await load();
  }, "held-error"));
  $("held-label").addEventListener("change", showSelection);
  $("held-confirm").addEventListener(
    "click",
    action(() => onSelected("Confirmed", (id) => adminRequest(`/v1/samples/${id}/confirm`, { method: "POST" })), "held-error")
  );
  $("held-relabel").addEventListener(
    "click",
    action(() => {
      const label = $("held-label").value;
      return onSelected(`Relabelled as “${label}”`, (id) =>
        adminRequest(`/v1/samples/${id}/relabel`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ label }),
        })
      );
    }, "held-error")
  );
  $("held-delete").addEventListener(
    "click",
    action(() => {
      const question = `Delete ${selected.size} held samples? No model will train on them.`;
      const remove = (id) => adminRequest(`/v1/samples/${id}`, { method: "DELETE" });
      return onSelected("Deleted", remove, question);
    }, "held-error")
  );
  return { load };
}
