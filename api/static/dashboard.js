// The model dashboard: the serving version and its accuracies, its charts, the versions (each
// activated with the admin token: a rollback or a promotion by hand), and the latest training run.

import { action, api } from "./api.js";
import { describeConfusionCell, drawConfusion, drawCurves, listConfusions } from "./charts.js";
import { $, el } from "./dom.js";
import { percent, plural, pointsChange, withCount } from "./format.js";

const VERSION_COLUMNS = [
  "Version",
  "Status",
  "Architecture",
  "Test accuracy",
  "What its run measured",
  "Created",
];

// One comparison its run made, on the same images for both versions.
function scoreChange(name, change, evaluationUploads) {
  const parts = [`NIST test ${pointsChange(change.test)}`];
  if (Number.isFinite(change.holdout)) parts.push(`unseen writers ${pointsChange(change.holdout)}`);
  if (Number.isFinite(change.evaluation)) {
    parts.push(`${plural(evaluationUploads, "evaluation upload")} ${pointsChange(change.evaluation)}`);
  }
  return `against ${name} ${change.against}: ${parts.join(", ")}`;
}

// A version's change against the one before and the baseline, and the uploads behind it.
function describeChange(model) {
  const change = model.change;
  if (!change) return model.training_run_id ? "–" : "installed, not trained by a run (e.g. the bundled model)";
  const said = [];
  if (change.previous) said.push(scoreChange("version", change.previous, change.evaluation_uploads));
  const sameAsPrevious = change.previous && change.baseline && change.previous.against === change.baseline.against;
  if (change.baseline && !sameAsPrevious) {
    said.push(scoreChange("baseline", change.baseline, change.evaluation_uploads));
  }
  said.push(`trained on ${plural(change.training_uploads, "upload")}`);
  return [...said, ...change.notes].join("; ");
}

// What a running run is doing, in words (its `phase`: the worker moves the bar in each one).
const PHASES = {
  loading: "loading NIST and the samples",
  calibrating: "calibrating the candidate",
  scoring: "scoring the candidate on NIST and the evaluation uploads",
  indexing: "indexing NIST for the uploads' evidence",
  judging: "comparing it with the serving model and the baseline",
  registering: "registering the new version",
};

function runPhase(run) {
  if (run.phase === "fetching") {
    const far = run.phase_detail ? ` (${run.phase_detail})` : "";
    return `fetching the NIST data, a first run's download${far}`;
  }
  if (run.phase === "training") {
    // Before its first epoch the run renders its training pictures: no "epoch 0/0".
    return run.epochs ? `training, epoch ${run.epoch}/${run.epochs}` : "preparing the training pictures";
  }
  return PHASES[run.phase] || "starting";
}

// One line beside the board: what training is doing now, or what the last run changed
// (`activeModel`: the serving version, as /v1/models/active last said).
function statusLine(run, activeModel) {
  const name = `Training run ${run.id}`;
  if (run.status === "queued") return `${name} is waiting for a worker.`;
  if (run.status === "running") {
    return `${name}: ${runPhase(run)}, ${Math.round(run.progress * 100)}%.`;
  }
  if (run.status === "failed") return `${name} failed; the serving model is unchanged.`;
  const metrics = run.metrics || {};
  if (run.decision === "promoted" && metrics.candidate && metrics.active) {
    const gain = metrics.candidate.test_accuracy - metrics.active.test_accuracy;
    const figures = `${pointsChange(gain)} on the NIST test set`;
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

// `labelsChanged(labelSet)` runs once the active model's label set (state.labels) is new;
// `loadStats()` refreshes the samples' counts. Returns `load()` (the dashboard, once) and
// `pollRuns()` (the latest training run, from then on).
export function mountDashboard({ state, withAdminToken, adminRequest, loadStats, labelsChanged }) {
  async function loadActive() {
    let model;
    try {
      model = (await api("/v1/models/active")).body;
    } catch (err) {
      if (err.status !== 404) throw err;
      $("active-version").textContent = "none";
      return;
    }
    state.activeModel = model;
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
    $("acc-evaluation").textContent = Number.isFinite(metrics.evaluation_samples_accuracy)
      ? withCount(metrics.evaluation_samples_accuracy, metrics.evaluation_samples)
      : "– (none judged this version: only evaluation uploads an admin or a labeller stored " +
        "or confirmed judge a candidate, at its training run)";
    if (model.labels !== state.labels) {
      state.labels = model.labels; // what teaching, the counts and the held queue offer
      labelsChanged(model.labels);
    }
    if (state.shownModel !== model.version) {
      state.shownModel = model.version;
      const report = model.report || {};
      const test = (report.evaluation || {}).test || {};
      state.confusionView = drawConfusion(test.confusion, model.labels);
      listConfusions(test.most_confused || []);
      drawCurves(report.history);
    }
  }

  async function loadVersions() {
    const { body: models } = await api("/v1/models");
    const rows = models.map((model) => {
      const cells = [
        model.version,
        model.status,
        model.architecture,
        percent((model.metrics || {}).test_accuracy),
        describeChange(model),
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

  async function activate(version) {
    await adminRequest(`/v1/models/${version}/activate`, { method: "POST" });
    $("sample-reply").textContent = "";
    await Promise.all([loadVersions(), loadActive()]);
    $("versions-reply").textContent = `Version ${version} now serves.`;
  }

  // The latest training run; every 2 s while one is queued or running, otherwise every 10 s.
  async function pollRuns() {
    let open = false;
    try {
      const { body: runs } = await api("/v1/training-runs?limit=1");
      const run = runs[0];
      open = Boolean(run) && (run.status === "queued" || run.status === "running");
      showRun(run);
      if (state.runWasOpen && !open) {
        await Promise.all([loadVersions(), loadActive()]);
        showRun(run); // now that the serving version is known
      }
      state.runWasOpen = open;
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
    $("status-strip").textContent = statusLine(run, state.activeModel);
  }

  // A mouse points at a cell; a finger taps it (no hover on a touch screen).
  const describeCell = (event) => describeConfusionCell(state.confusionView, event);
  $("confusion").addEventListener("pointermove", describeCell);
  $("confusion").addEventListener("pointerdown", describeCell);

  const load = action(async () => {
    await loadActive(); // first: the label set orders the per-label counts
    await Promise.all([loadVersions(), loadStats()]);
  });
  return { load, pollRuns };
}
