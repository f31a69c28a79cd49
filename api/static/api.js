// Talking to the JSON API under /v1, and showing what went wrong beside the control that asked.

import { $ } from "./dom.js";

// The API's reply as { status, body }; a refusal throws an Error with the API's `detail` as its
// message, and its `status` and `code` (the API's `error`).
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err; // a newer request replaced this one
    throw new Error(`The server cannot be reached (${err.message}).`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
    const error = new Error(detail);
    error.status = response.status;
    error.code = body && body.error;
    throw error;
  }
  return { status: response.status, body };
}

// The API's refusals of the options are shown beside the options, any other beside the control
// that sent the picture (the board or the file).
export function isOptionError(err) {
  const aboutOptions = /^(labels|expected_length)\b/.test(err.message); // the API's words
  return err.option || err.code === "invalid_labels" || aboutOptions;
}

// Errors appear beside the control that caused them: each section has its own alert area.
export function showError(message, where = "error") {
  $(where).textContent = message;
  $(where).hidden = false;
}

export function clearError(where = "error") {
  $(where).textContent = "";
  $(where).hidden = true;
}

// Wraps a control's handler: clears its section's error area and shows what went wrong there;
// the button stays disabled (busy) until the reply, so a double click sends one request.
// `after` (if any) runs once the button is enabled again, whatever the outcome: a control whose
// enabled state depends on more than being busy sets it there.
export function action(handler, where = "error", { after = null } = {}) {
  return async (event) => {
    const button = event && event.currentTarget instanceof HTMLButtonElement ? event.currentTarget : null;
    if (button && button.getAttribute("aria-busy") === "true") return;
    clearError(where);
    button?.setAttribute("aria-busy", "true");
    if (button) button.disabled = true;
    try {
      await handler(event);
    } catch (err) {
      if (err.name !== "AbortError") showError(err.message, where);
    } finally {
      button?.removeAttribute("aria-busy");
      if (button) button.disabled = false;
      if (after) after();
    }
  };
}
