// The edge API (docs/contract.md, "Edge HTTP API") and small shared helpers.

/** An HTTP error with the edge's `{"error":{"code","message"}}` body and Retry-After. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function failure(res) {
  let code = 'http_' + res.status;
  let message = res.statusText;
  try {
    const body = await res.json();
    if (body && body.error) ({ code = code, message = message } = body.error);
  } catch { /* not JSON */ }
  const ra = Number(res.headers.get('Retry-After'));
  return new ApiError(res.status, code, message, Number.isFinite(ra) && ra > 0 ? ra : undefined);
}

/** JSON request to the edge; throws ApiError on a non-2xx answer. */
export async function api(path, { method = 'GET', body, key, timeoutMs = 10000 } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  // A request that hangs must not stall a page's loop forever: it fails and is retried.
  const res = await fetch(path, {
    method, headers, signal: AbortSignal.timeout(timeoutMs),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await failure(res);
  return res.status === 204 ? null : res.json();
}

let configPromise;
/** `GET /api/config`, once per page: the media mode comes from the edge, not from the page. */
export function config() {
  configPromise ??= api('/api/config');
  return configPromise;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The stage id (last part of a stage ARN) for display. */
export const stageId = (arn) => (arn || '').split('/').pop();

/** Makes an element: el('td', {class: 'x'}, child, 'text'). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export const badge = (state) => el('span', { class: `badge s-${state}` }, state);

/** Backoff with jitter: 1 s, 2 s, 4 s … up to `max` ms. */
export function backoff(attempt, max = 15000) {
  const base = Math.min(max, 1000 * 2 ** Math.min(attempt, 6));
  return base / 2 + Math.random() * base / 2;
}
