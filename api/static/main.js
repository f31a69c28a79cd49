// The web page: a drawing board, predictions, teaching, and a dashboard of the model. Plain ES
// modules and fetch, no build step; every number comes from the JSON API under /v1.
//
// This entry makes the page's one state object (state.js) and mounts each part with what it
// needs: nothing is read from globals, and no module keeps mutable state of its own.

import { mountAdmin } from "./admin.js";
import { action, api } from "./api.js";
import { mountDashboard } from "./dashboard.js";
import { $, el } from "./dom.js";
import { mountHeldQueue } from "./held.js";
import { mountModes } from "./modes.js";
import { mountRow } from "./row.js";
import { mountSamples } from "./samples.js";
import { mountSingle } from "./single.js";
import { createState } from "./state.js";

const state = createState();
const { withAdminToken, adminRequest } = mountAdmin(state);
const { loadStats, storeSample } = mountSamples({ state, withAdminToken, adminRequest });
const { fillLabelPicker } = mountSingle({ state, storeSample });
mountModes();
mountRow({ state, loadStats });
const dashboard = mountDashboard({
  state,
  withAdminToken,
  adminRequest,
  loadStats,
  labelsChanged: fillLabelPicker, // the teaching's picker offers the active model's labels
});
dashboard.load().then(dashboard.pollRuns); // the run's line names the serving version
mountHeldQueue({
  $,
  api,
  adminRequest,
  withAdminToken,
  el,
  action,
  labels: () => state.labels,
  changed: loadStats,
});
