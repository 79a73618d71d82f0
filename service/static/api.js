// The public HTTP API, as the page uses it: JSON in and out, the API key from sessionStorage as X-API-Key,
// and errors carried as the API words them ({"error", "message", "details"}).

const KEY_STORAGE = "dopplergen.apiKey";

export class ApiError extends Error {
  constructor(status, reason, message, retryAfter) {
    super(message);
    this.status = status;
    this.reason = reason; // the API's machine-readable code: unauthorized, unknown_user, queue_full, ...
    this.retryAfter = retryAfter;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY_STORAGE, key) : sessionStorage.removeItem(KEY_STORAGE)),
};

/** fetch `path`; `body` is sent as JSON, or as multipart when it is a FormData. Resolves to the parsed JSON. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  let payload;
  if (body instanceof FormData) payload = body; // the browser sets the multipart boundary
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", `could not reach the server (${exc.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && (data.message || (typeof data.detail === "string" && data.detail))) ||
      `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, (data && data.error) || "http_error", message,
      response.headers.get("Retry-After"));
  }
  return data;
}
