// The REST client: URIs, the bearer token, JSON requests and errors.
//
// The token lives in sessionStorage only (gone when the tab closes) and goes
// out in the Authorization header only, never in a URL, so it ends up in no
// history, log or Referer.

const TOKEN_KEY = 'dmtree.token';
const tokenListeners = new Set();

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lasts for this page only */
  }
  for (const fn of tokenListeners) fn(t);
}

export function onTokenChange(fn) {
  tokenListeners.add(fn);
}

export function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// --- URIs -----------------------------------------------------------------
// Inside the UI a node is named by its list of segments (the real names).
// The tree's canonical form escapes `/` and `\` inside a name as `\/` and
// `\\`; over HTTP every segment is percent-encoded.

export function uriOf(segs) {
  if (!segs.length) return '.';
  return './' + segs.map((s) => s.replace(/\\/g, '\\\\').replace(/\//g, '\\/')).join('/');
}

export function segsOf(uri) {
  let s = String(uri || '');
  if (s === '.' || s === '' || s === './') return [];
  if (s.startsWith('./')) s = s.slice(2);
  else if (s.startsWith('/')) s = s.slice(1);
  const out = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
    } else if (c === '/') {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out.filter((x) => x !== '');
}

export const restPath = (segs) => segs.map(encodeURIComponent).join('/');

// --- Requests -------------------------------------------------------------

/** A failed call: the server's {code, message, uri}, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, uri = '') {
    super(message);
    this.status = status;
    this.code = code;
    this.uri = uri;
  }
}

/**
 * One JSON request. Resolves to {status, data, etag}; rejects with ApiError
 * only (callers catch it and show it). `body` is a value to send as JSON, or
 * a string that already is JSON (kept verbatim, so big integers stay exact).
 */
export async function request(method, path, { body, headers = {}, signal } = {}) {
  const h = { Accept: 'application/json', ...authHeaders(), ...headers };
  const init = { method, headers: h, signal, cache: 'no-store' };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw new ApiError(0, 'aborted', 'request aborted');
    throw new ApiError(0, 'network_error', `the server did not answer (${e && e.message ? e.message : e})`);
  }
  let data = null;
  const text = await resp.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    const err = data && typeof data === 'object' && data.error ? data.error : null;
    throw new ApiError(
      resp.status,
      err ? err.code : `http_${resp.status}`,
      err ? err.message : (typeof data === 'string' && data) || resp.statusText || 'request failed',
      err ? err.uri : '',
    );
  }
  return { status: resp.status, data, etag: resp.headers.get('ETag') };
}

/** GET a node: depth (0, 1, …, 'unbounded') and props. */
export function getNode(segs, { depth = 1, props = false, signal } = {}) {
  const q = new URLSearchParams();
  if (depth !== 1) q.set('depth', String(depth));
  if (props) q.set('props', 'true');
  const qs = q.toString();
  return request('GET', `/tree/${restPath(segs)}${qs ? `?${qs}` : ''}`, { signal });
}

const ifMatch = (version) => (version == null ? {} : { 'If-Match': `"${version}"` });

export function putNode(segs, body, version) {
  return request('PUT', `/tree/${restPath(segs)}`, { body, headers: ifMatch(version) });
}

export function addChild(segs, body) {
  return request('POST', `/tree/${restPath(segs)}`, { body });
}

export function deleteNode(segs, version) {
  return request('DELETE', `/tree/${restPath(segs)}`, { headers: ifMatch(version) });
}

export function execNode(segs, data) {
  return request('POST', `/exec/${restPath(segs)}`, { body: data === undefined ? {} : data });
}
