// The page: fills the controls from GET /info and GET /users, generates through POST /generate (format npy),
// shows the person's real recordings (GET /users/{id}/examples) beside them, and keeps its state in the URL.

import { api, ApiError, apiKey } from "./api.js";
import { COLORMAP_NAMES } from "./colormaps.js";
import { setUpEnrolment } from "./enrol.js";
import { drawColorbar } from "./plot.js";
import { panelsFrom, renderPanels } from "./results.js";
import { conditionList, FORM_KEYS, readUrl, userList, VIEW_KEYS, writeUrl } from "./state.js";

const $ = (id) => document.getElementById(id);
const page = { info: null, users: [], conditions: [], generated: [], real: [], realAxes: null, run: 0 };

// --- messages ---------------------------------------------------------------------------------------------

function showError(exc) {
  const box = $("error");
  if (!exc) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const retry = exc.retryAfter ? ` (retry after ${exc.retryAfter} s)` : "";
  box.textContent = `${exc.status ? `${exc.status}: ` : ""}${exc.message}${retry}`;
  box.hidden = false;
  if (exc.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
  }
}

const setStatus = (text) => { $("status").textContent = text; };

// --- the controls ------------------------------------------------------------------------------------------

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text ?? value;
  return o;
}

function fillControls(info) {
  const d = info.defaults || {};
  const limits = info.limits || {};
  $("model").textContent = `${info.model.name} ${info.model.version} · ${info.image_size.join("×")} · ` +
    `${info.device} (${info.dtype}) · ${info.num_users} people`;
  $("sampler").replaceChildren(...(info.schedulers || []).map((s) => option(s)));
  $("sampler").value = d.scheduler || "";
  $("steps").placeholder = d.num_inference_steps ?? "";
  $("steps").value = d.num_inference_steps ?? "";
  if (limits.max_steps) $("steps").max = limits.max_steps;
  // left empty, the server picks (models.sampling.resolve); the placeholder says what, for the chosen person
  $("guidance").value = "";
  guidancePlaceholder();
  if (limits.max_samples_per_request) $("n").max = limits.max_samples_per_request;
  $("cmap").replaceChildren(...COLORMAP_NAMES.map((c) => option(c)));
  $("cmap").value = "viridis";
  if (!info.carrier_hz) $("unit").value = "hz"; // no carrier: velocity is unknown
  $("unit").disabled = !info.carrier_hz;

  page.conditions = conditionList(info.conditions);
  const box = $("condition-fields");
  box.replaceChildren();
  for (const c of page.conditions) {
    const field = document.createElement("div");
    field.className = "field";
    const label = document.createElement("label");
    label.htmlFor = `cond-${c.name}`;
    let input;
    if (c.type === "categorical") {
      input = document.createElement("select");
      input.append(option("", "any (drawn)"), ...c.values.map((v) => option(v)));
      label.textContent = c.name;
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      if (c.min != null) input.min = c.min;
      if (c.max != null) input.max = c.max;
      input.placeholder = c.min != null && c.max != null ? `${c.min} to ${c.max}` : "any";
      label.textContent = `${c.name}${c.unit ? ` (${c.unit})` : ""}`;
    }
    input.id = `cond-${c.name}`;
    input.name = c.name;
    input.dataset.condition = c.type;
    field.append(label, input);
    box.append(field);
  }
  $("conditions").hidden = page.conditions.length === 0;
}

// What the server samples with when the field is left empty: plain guidance, identity guidance once a
// condition is set, and enrolled people's own guidance (GET /info defaults.enrolled_guidance_scale).
function guidancePlaceholder() {
  const d = (page.info && page.info.defaults) || {};
  const chosen = page.users.find((u) => u.id === $("user").value);
  if (chosen && chosen.enrolled && d.enrolled_guidance_scale != null) {
    $("guidance").placeholder = `${d.enrolled_guidance_scale} (enrolled)`;
  } else {
    $("guidance").placeholder = d.condition_guidance_scale == null ? `${d.guidance_scale ?? ""}`
      : `${d.guidance_scale}, with conditions ${d.identity_guidance_scale}`;
  }
}

function showRemove() {
  const chosen = page.users.find((u) => u.id === $("user").value);
  $("remove-user").hidden = !(chosen && chosen.enrolled);
  guidancePlaceholder();
}

async function loadUsers(select) {
  const users = userList(await api("/users"));
  page.users = users;
  const previous = select ?? $("user").value;
  $("user").replaceChildren(...users.map((u) => option(u.id, u.enrolled ? `${u.id} (enrolled)` : u.id)));
  const enrolled = users.filter((u) => u.enrolled).length;
  $("user-note").textContent = `${users.length - enrolled} trained` + (enrolled ? `, ${enrolled} enrolled` : "");
  if (previous && !users.some((u) => u.id === previous)) $("user").append(option(previous, `${previous} (not listed)`));
  if (previous) $("user").value = previous;
  showRemove();
}

async function removeUser() {
  const userId = $("user").value;
  if (!window.confirm(`Remove the enrolled person ${userId}? Their enrolment is deleted on the server.`)) return;
  try {
    await api(`/users/${encodeURIComponent(userId)}`, { method: "DELETE" });
    await loadUsers("");
    setStatus(`${userId} removed.`);
  } catch (exc) {
    showError(exc);
  }
}

/** The form as URL state (strings; empty = left out). */
function formState() {
  const state = {};
  for (const k of FORM_KEYS) state[k] = $(k).value.trim();
  for (const k of VIEW_KEYS) state[k] = $(k).value;
  for (const c of page.conditions) state[c.name] = $(`cond-${c.name}`).value.trim();
  return state;
}

function applyState(state) {
  for (const k of [...FORM_KEYS, ...VIEW_KEYS]) {
    if (state[k] === undefined) continue;
    if (k === "user" && ![...$("user").options].some((o) => o.value === state.user)) {
      $("user").append(option(state.user, `${state.user} (not listed)`));
    }
    $(k).value = state[k];
  }
  for (const c of page.conditions) if (state[c.name] !== undefined) $(`cond-${c.name}`).value = state[c.name];
  showRemove();
}

/** POST /generate's body from URL-style state; empty fields are omitted so the server's defaults apply. */
function requestBody(state) {
  const num = (v) => (v === undefined || v === "" ? undefined : Number(v));
  const body = {
    user_id: state.user, num_samples: num(state.n) ?? 1, format: "npy", seed: num(state.seed) ?? null,
    num_inference_steps: num(state.steps), guidance_scale: num(state.guidance), scheduler: state.sampler || undefined,
  };
  for (const c of page.conditions) {
    const v = state[c.name];
    if (v !== undefined && v !== "") body[c.name] = c.type === "numeric" ? Number(v) : v;
  }
  return body;
}

// --- results -----------------------------------------------------------------------------------------------

function viewOptions() {
  return { dynRange: page.info.dyn_range_db, axes: page.info, unit: $("unit").value, cmap: $("cmap").value };
}

function redraw() {
  const opts = viewOptions();
  renderPanels($("generated"), page.generated, opts);
  renderPanels($("real"), page.real, { ...opts, axes: page.realAxes || opts.axes }, "real");
  drawColorbar($("colorbar"), opts.cmap, opts.dynRange);
}

const CONDITION_TEXT = {
  speed_mps: (v) => `${v.toFixed(2)} m/s`, aspect_deg: (v) => `${v.toFixed(0)}°`, activity: (v) => `${v}`,
};

// null: the condition does not apply (a fall has no walking speed), so it is left out of the caption
function describeConditions(conditions) {
  return Object.entries(conditions || {}).filter(([k, v]) => k in CONDITION_TEXT && v !== null)
    .map(([k, v]) => (typeof v === "number" || k === "activity" ? CONDITION_TEXT[k](v) : `${v}`)).join(", ");
}

async function loadExamples(userId, n, run) {
  const note = $("real-note");
  try {
    const res = await api(`/users/${encodeURIComponent(userId)}/examples?n=${n}`);
    if (run !== page.run) return;
    page.realAxes = res.axes;
    page.real = panelsFrom(res.items, (item) => {
      const stem = item.path.replace(/\.npy$/i, "").replace(/[^\w.-]+/g, "_");
      const cond = describeConditions(item.conditions);
      const name = item.path.startsWith(`${userId}/`) ? item.path.slice(userId.length + 1) : item.path;
      return { title: `real ${name}${cond ? ` · ${cond}` : ""}`, fileStem: `real_${stem}` };
    });
    note.textContent = res.items.length && res.items[0].split === "enrolled"
      ? `${res.items.length} of the ${res.total} recordings ${userId} was enrolled from.`
      : `${res.items.length} of ${res.total} recordings of ${userId} in the server's dataset.`;
  } catch (exc) {
    if (run !== page.run) return;
    page.real = [];
    note.textContent = exc.reason === "no_dataset"
      ? "Start the server with --data <dataset folder> (DOPPLERGEN_DATA) to show real recordings beside these."
      : exc.message;
  }
  redraw();
}

async function generate() {
  const state = formState();
  if (!state.user) return;
  const run = ++page.run;
  // No seed given: pick one here rather than let the server draw one per sample, so samples are seed, seed+1, ...
  // and the link reproduces all of them.
  if (state.seed === "") $("seed").value = state.seed = `${Math.floor(Math.random() * 2 ** 31)}`;
  const body = requestBody(state);
  writeUrl(state);
  showError(null);
  $("generate").disabled = true;
  $("generated").setAttribute("aria-busy", "true");
  setStatus(`Generating ${body.num_samples} sample${body.num_samples === 1 ? "" : "s"} of ${body.user_id}…`);
  const examples = loadExamples(body.user_id, Math.min(Math.max(body.num_samples, 4), 16), run); // one row at least
  try {
    const res = await api("/generate", { method: "POST", body });
    if (run !== page.run) return;
    page.generated = panelsFrom(res.items, (item) => {
      const cond = describeConditions(item.conditions); // what was used, a drawn activity included
      return {
        title: `${body.user_id} · seed ${item.seed}${cond ? ` · ${cond}` : ""}`,
        fileStem: `${body.user_id}_seed${item.seed}_${res.num_inference_steps}steps_${res.scheduler}`,
      };
    });
    redraw();
    const t = res.timings;
    const cg = res.condition_guidance_scale == null ? "" : ` (conditions ${res.condition_guidance_scale})`;
    setStatus(`${res.items.length} samples · ${res.num_inference_steps} steps ${res.scheduler}, guidance ` +
      `${res.guidance_scale}${cg} · ${(t.total_ms / 1000).toFixed(2)} s (queue ${(t.queue_ms / 1000).toFixed(2)} s)`);
  } catch (exc) {
    if (run !== page.run) return;
    setStatus("");
    showError(exc);
  } finally {
    if (run === page.run) {
      $("generate").disabled = false;
      $("generated").setAttribute("aria-busy", "false");
    }
  }
  await examples;
}

// --- start -------------------------------------------------------------------------------------------------

async function start() {
  try {
    page.info = await api("/info");
    fillControls(page.info);
    await loadUsers();
  } catch (exc) {
    showError(exc);
    if (exc instanceof ApiError && exc.status === 503) setTimeout(start, 2000); // loading: try again
    return;
  }
  showError(null);
  const url = readUrl();
  applyState(url);
  redraw();
  if (url.user) await generate(); // a shared link generates at once
}

function wire() {
  $("gen-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("user").addEventListener("change", showRemove);
  $("remove-user").addEventListener("click", removeUser);
  $("new-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
  for (const id of ["cmap", "unit"]) {
    $(id).addEventListener("change", () => { if (page.info) { writeUrl(formState()); redraw(); } });
  }
  $("copy-link").addEventListener("click", async () => {
    writeUrl(formState());
    try {
      await navigator.clipboard.writeText(window.location.href);
      setStatus("Link copied.");
    } catch {
      setStatus(`Link: ${window.location.href}`);
    }
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey.set($("api-key").value.trim());
    $("api-key").value = "";
    $("key-form").hidden = true;
    start();
  });
  setUpEnrolment($("enrol-form"), {
    onReady: async (userId) => { await loadUsers(userId); $("user").focus(); },
    onError: showError,
  });
}

wire();
start();
