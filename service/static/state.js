// The page state lives in the URL, so a link reproduces a view: ?user=...&seed=...&steps=...&n=...&guidance=...
// &sampler=...&cmap=...&unit=... plus one parameter per condition that GET /info lists (e.g. speed_mps).

export const FORM_KEYS = ["user", "seed", "steps", "guidance", "sampler", "n"];
export const VIEW_KEYS = ["cmap", "unit"];

/** The query parameters of the current URL, as a plain object of strings. */
export function readUrl() {
  return Object.fromEntries(new URLSearchParams(window.location.search));
}

/** Replace the query with `state` (empty values left out), without reloading or adding a history entry. */
export function writeUrl(state) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== undefined && v !== null && `${v}` !== "") params.set(k, v);
  const query = params.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
}

/** GET /info's `conditions` as [{name, type: "numeric" | "categorical", min, max, values}] (dict or list form). */
export function conditionList(conditions) {
  if (!conditions) return [];
  const entries = Array.isArray(conditions)
    ? conditions.map((c) => [c.name, c])
    : Object.entries(conditions).map(([name, c]) => [name, c || {}]);
  return entries.filter(([name]) => name).map(([name, c]) => {
    const range = Array.isArray(c.range) ? c.range : [c.min, c.max];
    const values = c.values || c.categories;
    const type = c.type === "categorical" || Array.isArray(values) ? "categorical" : "numeric";
    return { name, type, min: range[0], max: range[1], values: values || [], unit: c.unit };
  });
}

/** GET /users as [{id, enrolled}]: plain IDs, or items with an `enrolled` marker, or an `enrolled` list beside. */
export function userList(response) {
  const list = Array.isArray(response) ? response : response.users || response.items || [];
  const side = response.enrolled ?? response.enrolled_users;
  const enrolled = new Set(Array.isArray(side) ? side.map((u) => (typeof u === "string" ? u : u.user_id ?? u.id)) : []);
  return list.map((u) => {
    if (typeof u === "string") return { id: u, enrolled: enrolled.has(u) };
    const id = u.user_id ?? u.id ?? u.name;
    // {"enrolled": true}, or a field such as "kind"/"source"/"origin" whose value is "enrolled"
    const marked = u.enrolled === true ||
      Object.entries(u).some(([k, v]) => !["user_id", "id", "name"].includes(k) && v === "enrolled");
    return { id, enrolled: marked || enrolled.has(id) };
  }).filter((u) => u.id);
}
