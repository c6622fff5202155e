// Small DOM and formatting helpers shared by every view.
//
// Everything the server sends is put into the page with textContent (through
// `el`), never as HTML: a node value can be any string, and the CSP alone
// should not be our only defence.

/** Builds an element: el('a', {href: '#/x', class: 'k'}, 'text', childNode). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, '');
      else node.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A value as one line of text, in the JSON form of its format. */
export function fmtValue(value, format) {
  if (value === undefined) return '';
  if (value === null) return 'null';
  if (format === 'json' || typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** The same value for an editor: JSON pretty-printed, others as is. */
export function editText(value, format) {
  if (value === undefined || value === null) return '';
  if (format === 'json' || typeof value === 'object') return JSON.stringify(value, null, 2);
  return String(value);
}

export function fmtTime(t) {
  if (t == null || t === '') return '';
  const d = typeof t === 'number' ? new Date(t) : new Date(String(t));
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function fmtNumber(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  return String(Math.round(n * 1000) / 1000);
}

/** Restarts the short highlight that marks a value that just changed. */
export function flash(node) {
  if (!node) return;
  node.classList.remove('flash');
  void node.offsetWidth; // reflow, so that the animation starts again
  node.classList.add('flash');
}

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** At most one call per `ms`, the last arguments winning (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  let args = null;
  const run = () => {
    timer = null;
    last = Date.now();
    fn(...args);
  };
  const wrapped = (...a) => {
    args = a;
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  wrapped.cancel = () => { clearTimeout(timer); timer = null; };
  return wrapped;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Natural order for node names: n2 before n10. */
export const collator = new Intl.Collator('en', { numeric: true });

/** A key/value table (two columns) from [label, value-or-node] pairs. */
export function kvTable(rows, cls = 'kv') {
  return el('table', { class: cls },
    el('tbody', null, rows.map(([k, v]) =>
      el('tr', null, el('th', { scope: 'row' }, k), el('td', null, v instanceof Node ? v : String(v ?? ''))))));
}

/** A section with a heading, as every pane is made of. */
export function section(title, ...body) {
  return el('section', { class: 'card' }, el('h2', null, title), ...body);
}

/**
 * A view's life: once started it reloads (at most once a second) when an
 * event touches `prefix`, and stops when disposed; a load in flight checks
 * `disposed` before drawing an answer nobody wants any more.
 */
export function viewLife(prefix) {
  let disposed = false;
  let refresh = null;
  return {
    get disposed() { return disposed; },
    start(load) {
      refresh = throttle(() => !disposed && load(), 1000);
      load();
      return this;
    },
    onEvent(ev) {
      if (refresh && (ev.uri || '').startsWith(prefix)) refresh();
    },
    dispose() {
      disposed = true;
      if (refresh) refresh.cancel();
    },
  };
}
