// The API client: every /v1 call goes through `api()` with `Authorization: Bearer <key>`.
// The key is kept in this tab's sessionStorage only (gone when the tab closes) and is never
// put in a URL: downloads are fetched with the header and handed over as Blob links.

const KEY_NAME = "streamguard.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_NAME);
}

/** An answer in the API's error shape: `{"error": {code, message, field, details, request_id}}`. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.field = error.field || null;
    this.details = error.details || [];
    this.requestId = error.request_id || null;
    this.retryAfter = retryAfter;
  }

  describe() {
    const wait = this.retryAfter ? ` (retry after ${this.retryAfter} s)` : "";
    const id = this.requestId ? ` [request ${this.requestId}]` : "";
    return `${this.message}${wait}${id}`;
  }
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${getKey()}`, ...extra };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: { code: `http_${response.status}`, message: response.statusText } };
  }
  const err = new ApiError(response.status, body, response.headers.get("Retry-After"));
  if (response.status === 401) window.dispatchEvent(new CustomEvent("sg:unauthorized"));
  return err;
}

/** Call the API; JSON in (`json`) or a FormData (`form`), JSON out; ApiError on 4xx/5xx. */
export async function api(path, { method = "GET", json, form, signal, headers = {} } = {}) {
  const init = { method, signal, cache: "no-store",
    headers: authHeaders({ Accept: "application/json", ...headers }) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Every epoch record of a job (offset-paged). */
export async function allMetrics(jobId, signal) {
  const items = [];
  let offset = 0;
  while (offset !== null && offset !== undefined) {
    const page = await api(`/v1/jobs/${jobId}/metrics${query({ offset, limit: 200 })}`,
      { signal });
    items.push(...page.items);
    offset = page.next_offset;
  }
  return items;
}

/** Every step record of a job after `afterStep` (paged by `after_step`). */
export async function allSteps(jobId, afterStep, signal) {
  const items = [];
  let after = afterStep;
  for (;;) {
    const page = await api(`/v1/jobs/${jobId}/steps${query({ after_step: after, limit: 2000 })}`,
      { signal });
    items.push(...page.items);
    if (page.next_after_step === null || page.next_after_step === undefined) return items;
    after = page.next_after_step;
  }
}

/** The app's own OpenAPI document (public: no key sent), fetched once. */
let openapiPromise = null;
export function openapi() {
  if (!openapiPromise) {
    openapiPromise = fetch("/openapi.json", { cache: "no-store" }).then((r) => {
      if (!r.ok) throw new Error(`/openapi.json answered ${r.status}`);
      return r.json();
    });
    openapiPromise.catch(() => { openapiPromise = null; });
  }
  return openapiPromise;
}

/** Fetch a file with the key and hand it to the browser as a download (a Blob link). */
export async function downloadWithKey(path, filename) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : filename;
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { blob, name };
}

/** Hex sha256 of a Blob, or null where WebCrypto is unavailable (plain http off localhost). */
export async function sha256Hex(blob) {
  if (!window.crypto || !window.crypto.subtle) return null;
  const digest = await window.crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
