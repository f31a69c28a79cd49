// The admin token: asked for by a form the first time an admin action needs it, kept in memory
// only (never in localStorage or cookies), and forgotten when the API refuses it.

import { action, api, clearError } from "./api.js";
import { $ } from "./dom.js";

// Returns `withAdminToken(label, question, run)` and `adminRequest(path, options)`.
export function mountAdmin(state) {
  // Runs `run` with the admin token, asking once: while the page has no token, the admin form
  // (its button says what will happen) is the confirmation; with one, `question` (if any) is.
  async function withAdminToken(label, question, run) {
    if (state.adminToken) {
      if (question && !window.confirm(question)) return;
      return run();
    }
    state.pendingAdminAction = run;
    $("admin-ok").textContent = label;
    $("admin-form").hidden = false;
    $("admin-token").focus();
  }

  function closeAdminForm() {
    $("admin-form").hidden = true;
    $("admin-token").value = "";
    state.pendingAdminAction = null;
  }

  async function adminRequest(path, options) {
    try {
      const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.adminToken}` };
      return await api(path, { ...options, headers });
    } catch (err) {
      if (err.status === 401 || err.status === 403) state.adminToken = null; // ask again next time
      throw err;
    }
  }

  // A refused token keeps the form open with the API's reason, to try again or cancel.
  async function submitAdminToken(event) {
    event.preventDefault();
    state.adminToken = $("admin-token").value.trim() || null;
    if (!state.adminToken) throw new Error("Enter the admin token first.");
    try {
      if (state.pendingAdminAction) await state.pendingAdminAction();
    } catch (err) {
      if (err.status === 401 || err.status === 403) $("admin-token").select();
      else closeAdminForm();
      throw err;
    }
    closeAdminForm();
  }

  $("admin-form").addEventListener("submit", action(submitAdminToken, "admin-error"));
  $("admin-cancel").addEventListener("click", () => {
    closeAdminForm();
    clearError("admin-error");
  });

  return { withAdminToken, adminRequest };
}
