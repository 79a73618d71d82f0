// The enrolment form: POST /users (multipart user_id + files) answers 202, then GET /users/{id} is polled for
// {"status": "enrolling" | "ready" | "failed", "progress", "error"} until the person is ready or failed.

import { api } from "./api.js";

const POLL_MS = 1000;

function fraction(progress) {
  if (typeof progress !== "number" || !Number.isFinite(progress)) return null;
  return progress > 1 ? progress / 100 : progress; // accept 0..1 or a percentage
}

/** Wire the form; `onReady(userId)` runs once the new person can be generated, `onError(exc)` shows failures. */
export function setUpEnrolment(form, { onReady, onError }) {
  const userInput = form.querySelector("#enrol-user");
  const filesInput = form.querySelector("#enrol-files");
  const colormap = form.querySelector("#enrol-colormap"); // "auto": the server detects the map
  const submit = form.querySelector("#enrol-submit");
  const bar = form.querySelector("#enrol-progress");
  const status = form.querySelector("#enrol-status");

  const show = (text, value) => {
    status.textContent = text;
    bar.hidden = value === undefined;
    if (value === null) bar.removeAttribute("value"); // indeterminate
    else if (value !== undefined) bar.value = value;
  };

  async function poll(userId) {
    for (;;) {
      const s = await api(`/users/${encodeURIComponent(userId)}`);
      const f = fraction(s.progress);
      if (s.status === "ready") {
        show(`${userId} is enrolled and ready.`, 1);
        return true;
      }
      if (s.status === "failed") {
        show(`Enrolment of ${userId} failed: ${s.error || "no reason given"}`);
        return false;
      }
      show(`Enrolling ${userId}${f === null ? "" : `: ${Math.round(f * 100)}%`}`, f);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = userInput.value.trim();
    const body = new FormData();
    body.append("user_id", userId);
    if (colormap && colormap.value && colormap.value !== "auto") body.append("colormap", colormap.value);
    for (const file of filesInput.files) body.append("files", file, file.name);
    submit.disabled = true;
    show(`Uploading ${filesInput.files.length} recordings of ${userId}`, null);
    try {
      await api("/users", { method: "POST", body }); // 202 {"user_id", "status"}
      const ready = await poll(userId);
      if (ready) {
        form.reset();
        await onReady(userId);
      }
    } catch (exc) {
      show(`Enrolment of ${userId} failed: ${exc.message}`);
      onError(exc);
    } finally {
      submit.disabled = false;
    }
  });
}
