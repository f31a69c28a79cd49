// The drawing boards' mechanics, the same for the board of one character and the row's: the pen,
// the strokes (for undo), reading as you draw, the board's keys and the marker size's readout.

import { action } from "./api.js";

const LIVE_DELAY_MS = 300; // after the pen lifts: long enough not to ask for every stroke

// A board: white ink on black, kept stroke by stroke so that undo redraws all but the last.
// Both boards (one character, a row) draw with this pen; `onStart` runs as a stroke begins,
// `onEnd` once the pen lifts.
export function drawingBoard(canvas, markerSize, { onStart = () => {}, onEnd = () => {} } = {}) {
  const pen = canvas.getContext("2d");
  let strokes = [];
  let lastPoint = null; // while a pointer is drawing

  function strokeTo(point, width) {
    pen.strokeStyle = "#fff";
    pen.lineWidth = width;
    pen.lineCap = "round";
    pen.lineJoin = "round";
    pen.beginPath();
    pen.moveTo(lastPoint.x, lastPoint.y);
    pen.lineTo(point.x, point.y);
    pen.stroke();
    lastPoint = point;
  }

  function paint() {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    for (const stroke of strokes) {
      lastPoint = stroke.points[0];
      for (const point of stroke.points) strokeTo(point, stroke.width);
    }
    lastPoint = null;
  }

  function pointAt(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * canvas.height) / rect.height,
    };
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault(); // no text selection or scrolling; and so no focus by itself:
    canvas.focus({ preventScroll: true }); // the board's keys work right after drawing
    canvas.setPointerCapture(event.pointerId);
    onStart();
    const point = pointAt(event);
    strokes.push({ points: [point], width: Number(markerSize.value) });
    lastPoint = point;
    strokeTo(point, strokes.at(-1).width); // a tap leaves a dot
  });
  canvas.addEventListener("pointermove", (event) => {
    if (lastPoint === null) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const point = pointAt(each);
      strokes.at(-1).points.push(point);
      strokeTo(point, strokes.at(-1).width);
    }
  });
  const endStroke = () => {
    if (lastPoint === null) return;
    lastPoint = null;
    onEnd();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  return {
    canvas,
    get dirty() {
      return strokes.length > 0;
    },
    clear() {
      strokes = [];
      paint();
    },
    undo() {
      if (!strokes.length) return false;
      strokes.pop();
      paint();
      return true;
    },
    blob() {
      return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    },
  };
}

// A board that reads as you draw: `schedule()` (as the pen lifts) runs `request(signal)`
// LIVE_DELAY_MS later, its errors shown in `where`; `cancel()` (as the pen goes down, on Clear)
// drops the one waiting and aborts the one in flight, so that only the newest drawing is read.
// What is waiting is kept in `state[key]` ({ timer, controller }); the board is aria-busy from
// the pen lifting until the reply.
export function readsAsYouDraw({ state, key, canvas, request, where }) {
  function settle(controller) {
    if (state[key]?.controller !== controller) return; // a newer one took its place
    state[key] = null;
    canvas.removeAttribute("aria-busy");
  }

  function cancel() {
    const live = state[key];
    if (!live) return;
    clearTimeout(live.timer);
    live.controller.abort();
    settle(live.controller);
  }

  function schedule() {
    cancel();
    const controller = new AbortController();
    const run = action(async () => {
      try {
        await request(controller.signal);
      } finally {
        settle(controller);
      }
    }, where);
    state[key] = { timer: setTimeout(run, LIVE_DELAY_MS), controller };
    canvas.setAttribute("aria-busy", "true");
  }

  return { schedule, cancel };
}

// The keys on a board (a keydown handler): Enter or Space sends the drawing (`submit`), Escape
// clears it, Backspace or Ctrl/Cmd+Z undoes the last stroke.
export function boardKeys({ submit, clear, undo }) {
  return (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") {
      clear();
    } else if ((event.key === "z" && (event.ctrlKey || event.metaKey)) || event.key === "Backspace") {
      event.preventDefault();
      undo();
    }
  };
}

// The marker size's number beside its slider.
export function showMarkerSize(slider, output) {
  slider.addEventListener("input", () => {
    output.textContent = slider.value;
  });
}
