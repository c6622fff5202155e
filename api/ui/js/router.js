// Every view has a URL: `#/config/app/limit` is that node, `?tab=acl` a tab
// of its pane. The hash keeps the server's routes out of the way (the UI is
// one document at /ui/) and makes any view a link that can be shared.

const listeners = new Set();

/** The current route: {segs: ['config', 'app'], params: URLSearchParams}. */
export function current() {
  return parse(location.hash);
}

export function parse(hash) {
  let h = String(hash || '').replace(/^#/, '');
  let query = '';
  const q = h.indexOf('?');
  if (q >= 0) {
    query = h.slice(q + 1);
    h = h.slice(0, q);
  }
  const segs = h
    .split('/')
    .filter((s) => s !== '')
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
  return { segs, params: new URLSearchParams(query) };
}

/** The link to a node (and optionally a tab or other parameters). */
export function href(segs, params) {
  const path = '#/' + segs.map(encodeURIComponent).join('/');
  const qs = params ? new URLSearchParams(params).toString() : '';
  return qs ? `${path}?${qs}` : path;
}

export function go(segs, params) {
  const h = href(segs, params);
  if (location.hash !== h) location.hash = h;
  else emit();
}

/** Changes the tab (or other parameters) without adding a history entry. */
export function replaceParams(params) {
  const { segs } = current();
  history.replaceState(null, '', href(segs, params));
  emit();
}

/** Records view state (a picker's choice) in the URL, so it can be shared; shows nothing new. */
export function setParams(params) {
  const { segs } = current();
  history.replaceState(null, '', href(segs, params));
}

export function onRoute(fn) {
  listeners.add(fn);
}

function emit() {
  const r = current();
  for (const fn of listeners) fn(r);
}

window.addEventListener('hashchange', emit);
