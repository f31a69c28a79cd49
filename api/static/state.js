// What the page remembers between events: one object, made once by main.js and passed to each
// part of the page that reads or changes it. No module keeps mutable state of its own.

export function createState() {
  return {
    // The active model's label set, one character per class. Set by the dashboard from
    // /v1/models/active; read by teaching (Letters), the per-label counts and the held queue.
    labels: "",

    // ---- one character (single.js)
    drawnBlob: null, // the drawing last predicted: what "teach" and "add" send
    drawnLabel: null, // what the model read in it: "Add as sample" stores that label
    thumbnailUrl: null, // the chosen file's preview
    livePrediction: null, // { timer, controller }: the prediction asked for while drawing
    lastPredicted: null, // { image, filename }: asked again when the heat map is switched on

    // ---- a row (row.js)
    // The row shown: the API's reading, its picture (an object URL), its boxes as the user
    // corrects them (row-boxes.js), the box selected, the box being split, and whether the
    // corrections have been saved.
    rowReading: null,
    liveReading: null, // { timer, controller }: the reading asked for while drawing

    // ---- the admin token (admin.js)
    adminToken: null, // kept in memory only: never in localStorage or cookies
    pendingAdminAction: null, // what the admin form does once the token is entered

    // ---- the model dashboard (dashboard.js)
    shownModel: null, // the version the dashboard's charts show
    activeModel: null, // the serving version, as /v1/models/active last said
    confusionView: null, // what the confusion canvas shows, for its hover text
    runWasOpen: false, // the latest training run was queued or running at the last poll
  };
}
