// Wires the page: the route decides the open node, the node decides the live
// subtree (one SSE stream), the token decides what the model may show.

import { model } from './model.js';
import { TreePane } from './tree.js';
import { NodePane } from './node.js';
import { EventStream } from './sse.js';
import { current, onRoute } from './router.js';
import { token, setToken, request, uriOf } from './api.js';
import { initSearch } from './search.js';
import { el, sleep } from './util.js';
import { errorBox } from './edit.js';

const $ = (sel) => document.querySelector(sel);

// --- The live stream ------------------------------------------------------

const statusEl = $('#live');
const STATUS_TEXT = {
  idle: 'idle',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  closed: 'idle',
};

function setStatus(state, detail) {
  statusEl.dataset.state = state;
  statusEl.querySelector('.txt').textContent = state === 'error' ? `stream refused: ${detail ? detail.code : ''}` : STATUS_TEXT[state] || state;
  statusEl.title = live.pattern ? `Live: ${live.pattern}` : 'No live stream';
}

/**
 * One stream for the open subtree. While a view loads, events are held and
 * applied after the load, in order, so an answer older than an event never
 * overwrites it.
 */
const live = {
  stream: null,
  pattern: null,
  holds: 0,
  held: [],
  subs: new Set(),
  subscribe(fn) {
    this.subs.add(fn);
  },
  hold() {
    this.holds++;
  },
  release() {
    this.holds = Math.max(0, this.holds - 1);
    if (this.holds === 0) {
      const evs = this.held;
      this.held = [];
      for (const ev of evs) this.dispatch(ev);
    }
  },
  dispatch(ev) {
    if (this.holds > 0) {
      this.held.push(ev);
      return;
    }
    model.apply(ev);
    for (const fn of this.subs) fn(ev);
    if (ev.revision != null) statusEl.dataset.lastEvent = String(ev.revision);
  },
  open(pattern) {
    if (this.stream && this.pattern === pattern) return;
    this.close();
    this.pattern = pattern;
    this.stream = new EventStream(pattern, {
      onEvent: (ev) => this.dispatch(ev),
      onGap: () => refreshAll(),
      onStatus: (state, detail) => setStatus(state, detail),
    });
  },
  close() {
    if (this.stream) this.stream.close();
    this.stream = null;
    this.pattern = null;
    setStatus('idle');
  },
};

/** The subtree to watch for a node: itself when interior, its parent's for a leaf. */
function patternFor(node) {
  const dir = node.kind === 'leaf' ? node.segs.slice(0, -1) : node.segs;
  // The root's own subtree would wake every poller; its listing is what is open.
  return dir.length ? `${uriOf(dir)}/**` : './*';
}

// --- Views ----------------------------------------------------------------

const tree = new TreePane($('#tree'));
const pane = new NodePane($('#node-pane'), live);
let showSeq = 0;

async function show(route) {
  const seq = ++showSeq;
  let res;
  try {
    res = await model.resolve(route.segs);
    if (res.status === 'missing') {
      // The parent's listing may predate the node: read it again once.
      const parent = model.get(route.segs.slice(0, res.at));
      if (parent && parent.kind !== 'leaf' && parent.readable) {
        await model.loadChildren(parent, { force: true });
        res = await model.resolve(route.segs);
      }
    }
  } catch (e) {
    res = { error: e };
  }
  if (seq !== showSeq) return;
  updateNav(route.segs);
  if (res.status === 'ok') {
    live.open(patternFor(res.node));
    // Start reading only once the stream is there, so no change falls between.
    await Promise.race([live.stream.opened, sleep(1500)]);
    if (seq !== showSeq) return;
  } else {
    live.close();
  }
  if (!res.error) {
    const shown = res.status === 'ok' ? route.segs.length : res.status === 'unreadable' ? res.at + 1 : res.at;
    tree.select(route.segs.slice(0, shown));
  }
  await pane.show(route, res);
}

/** Everything again from the server: the token changed, or events were lost. */
function refreshAll() {
  live.close();
  model.reset();
  tree.reset();
  show(current());
}

function updateNav(segs) {
  const top = model.root.children;
  for (const a of document.querySelectorAll('#nav a')) {
    const view = a.dataset.view;
    if (view !== 'tree') {
      const child = top && top.get(view);
      a.hidden = !child;
    }
    const active = view === 'tree' ? !['contextstore', 'managers', 'rules'].includes(segs[0]) : segs[0] === view;
    a.classList.toggle('active', active);
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// --- Token ----------------------------------------------------------------

const tokenInput = $('#token-input');
const tokenState = $('#token-state');
const forget = $('#token-forget');

/** Shows whom the server takes this tab for; `who` is /whoami's answer. */
function showTokenState(who) {
  const has = !!token();
  tokenState.textContent = !has ? 'anonymous' : who && who.principal ? `${who.principal} (this tab only)` : 'token set (this tab only)';
  forget.hidden = !has;
  tokenInput.placeholder = has ? 'replace the token' : 'paste a bearer token';
}

/** Asks the server who a token is; an invalid one answers 401 invalid_token. */
const whoami = (t) => request('GET', '/whoami', t ? { headers: { Authorization: `Bearer ${t}` } } : {});

$('#token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const t = tokenInput.value.trim();
  if (!t) return;
  let who;
  try {
    who = (await whoami(t)).data;
  } catch (err) {
    toast(errorBox(err));
    return;
  }
  tokenInput.value = '';
  setToken(t);
  showTokenState(who);
  refreshAll();
});

forget.addEventListener('click', () => {
  setToken('');
  showTokenState();
  refreshAll();
});

// --- Odds and ends --------------------------------------------------------

let toastTimer = null;
function toast(content) {
  const t = $('#toast');
  t.replaceChildren(content, el('div', { class: 'buttons' }, el('button', { type: 'button', class: 'small', onclick: () => (t.hidden = true) }, 'Dismiss')));
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 8000);
}

// A bug must not fail silently: show it (the browser logs it too).
window.addEventListener('unhandledrejection', (e) => toast(el('div', null, 'Internal error: ', String(e.reason && e.reason.message ? e.reason.message : e.reason))));

$('#tree-refresh').addEventListener('click', () => refreshAll());
initSearch($('#search'), $('#search-list'));
showTokenState();
// A token kept from before a reload: name its principal (a revoked one shows in every view's error).
if (token()) whoami().then((r) => showTokenState(r.data), () => {});
setStatus('idle');
onRoute(show);
show(current());
