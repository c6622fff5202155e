// The ContextStore: aggregates as charts over a chosen time range, SLA state
// and violations, and (for a leaf of the tree) the history the store recorded.
// Aggregates and SLA state are read through the tree, so anonymous users see
// them when their ACLs allow; queries are an exec and need a token.

import { getNode, execNode, segsOf, token } from './api.js';
import { model } from './model.js';
import { href, setParams } from './router.js';
import { el, fmtNumber, fmtTime, fmtValue, section, kvTable, throttle, collator } from './util.js';
import { errorBox } from './edit.js';
import { timeChart } from './chart.js';

export const RANGES = [
  ['5m', 300], ['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400], ['7d', 604800], ['all', 0],
];
const METRICS = ['avg', 'sum', 'count', 'min', 'max'];

function rangeSelect(id, current) {
  return el('select', { id, 'aria-label': 'Time range' }, RANGES.map(([k]) => el('option', { value: k, selected: k === current }, k === 'all' ? 'all time' : `last ${k}`)));
}

const rangeSeconds = (k) => (RANGES.find(([r]) => r === k) || RANGES[2])[1];

/** A listing through the model, so that unreadable parents are not requested. */
async function listing(segs) {
  const res = await model.resolve(segs);
  if (res.status !== 'ok') return null;
  await model.loadChildren(res.node, { force: true });
  return res.node;
}

// --- Dashboard ------------------------------------------------------------

export function render(box, { params }) {
  const state = {
    agg: params.get('agg') || '',
    metric: METRICS.includes(params.get('metric')) ? params.get('metric') : 'avg',
    range: RANGES.some(([k]) => k === params.get('range')) ? params.get('range') : '1h',
    all: params.get('sla') === 'all',
  };
  let chart = null;
  let disposed = false;
  let handlers = {};

  const aggSel = el('select', { id: 'agg-name', 'aria-label': 'Aggregate' });
  const metricSel = el('select', { id: 'agg-metric', 'aria-label': 'Metric' }, METRICS.map((m) => el('option', { value: m, selected: m === state.metric }, m)));
  const rangeSel = rangeSelect('agg-range', state.range);
  const chartBox = el('div', { class: 'chart', id: 'agg-chart' });
  const latest = el('div', { id: 'agg-latest' });
  const aggMsg = el('div');
  const slaAll = el('input', { type: 'checkbox', id: 'sla-all', checked: state.all });
  const slaBox = el('div', { id: 'sla' });
  const cfgBox = el('div');
  const monBox = el('div');

  box.append(el('div', { class: 'grid' },
    el('div', null,
      el('section', { class: 'card' }, el('h2', null, 'Aggregates'),
        el('div', { class: 'toolbar' }, aggSel, metricSel, rangeSel, el('span', { class: 'grow' }), el('span', { class: 'muted', id: 'agg-info' })),
        aggMsg, chartBox, latest),
      el('section', { class: 'card' }, el('h2', null, 'SLA violations', el('span', { class: 'spacer' }),
        el('label', { class: 'muted' }, slaAll, ' show every key')), slaBox)),
    el('div', null, cfgBox, monBox)));

  const keep = () => setParams({ agg: state.agg, metric: state.metric, range: state.range, ...(state.all ? { sla: 'all' } : {}) });

  async function loadConfig() {
    const cfg = await listing(['contextstore', 'config', 'handlers']).catch(() => null);
    handlers = {};
    if (cfg) for (const [name, n] of cfg.children) if (n.kind === 'leaf' && n.value && typeof n.value === 'object') handlers[name] = n.value;
    const aggs = await listing(['contextstore', 'aggregates']).catch(() => null);
    const names = new Set(Object.keys(handlers).filter((n) => handlers[n].kind === 'aggregate'));
    if (aggs) for (const n of aggs.names) names.add(n);
    const sorted = [...names].sort(collator.compare);
    if (!state.agg || !names.has(state.agg)) state.agg = sorted[0] || '';
    aggSel.replaceChildren(...sorted.map((n) => el('option', { value: n, selected: n === state.agg }, n)));
    aggSel.disabled = !sorted.length;
    const subs = await listing(['contextstore', 'config', 'subscriptions']).catch(() => null);
    const rows = [];
    const json = (v) => el('pre', null, JSON.stringify(v, null, 1).replace(/\n\s*/g, ' '));
    if (subs) for (const [name, n] of subs.children) rows.push([`subscription ${name}`, n.readable ? json(n.value) : 'no access']);
    for (const [name, h] of Object.entries(handlers)) rows.push([`${h.kind || 'handler'} ${name}`, json(h)]);
    cfgBox.replaceChildren(section('Configuration', rows.length ? kvTable(rows) : el('p', { class: 'muted' }, 'No subscription or handler configured (./contextstore/config).'),
      el('p', null, el('a', { href: href(['contextstore', 'config']) }, 'Edit in the tree'))));
  }

  async function loadAggregate() {
    aggMsg.replaceChildren();
    if (!state.agg) {
      chartBox.replaceChildren(el('p', { class: 'muted' }, 'No aggregate yet: configure an aggregate handler under ./contextstore/config/handlers.'));
      return;
    }
    const node = await listing(['contextstore', 'aggregates', state.agg]).catch((e) => {
      aggMsg.replaceChildren(errorBox(e));
      return null;
    });
    if (!node) {
      chartBox.replaceChildren(el('p', { class: 'muted' }, `No data under ./contextstore/aggregates/${state.agg} that you may read.`));
      latest.replaceChildren();
      return;
    }
    const h = handlers[state.agg];
    const depth = h && Array.isArray(h.keys) ? h.keys.length + 2 : 'unbounded';
    let data;
    try {
      ({ data } = await getNode(['contextstore', 'aggregates', state.agg], { depth }));
    } catch (e) {
      aggMsg.replaceChildren(errorBox(e));
      return;
    }
    if (disposed) return;
    const windows = [];
    collectWindows(data, [], windows);
    const span = rangeSeconds(state.range);
    const from = span ? Date.now() / 1000 - span : -Infinity;
    const inRange = windows.filter((w) => w.start >= from);
    const xs = [...new Set(inRange.map((w) => w.start))].sort((a, b) => a - b);
    const keys = [...new Set(inRange.map((w) => w.key))].sort(collator.compare);
    const index = new Map(xs.map((x, i) => [x, i]));
    const series = keys.map((k) => ({ label: k || state.agg, values: new Array(xs.length).fill(null) }));
    const byKey = new Map(keys.map((k, i) => [k, series[i]]));
    for (const w of inRange) {
      const v = w.values[state.metric];
      byKey.get(w.key).values[index.get(w.start)] = typeof v === 'number' ? v : null;
    }
    box.querySelector('#agg-info').textContent = `${keys.length} key${keys.length === 1 ? '' : 's'}, ${xs.length} window${xs.length === 1 ? '' : 's'}`;
    if (chart) chart.destroy();
    chart = null;
    chartBox.replaceChildren();
    if (!xs.length) {
      chartBox.append(el('p', { class: 'muted' }, 'No window in this time range.'));
    } else {
      chart = await timeChart(chartBox, { xs, series });
      if (disposed) chart.destroy();
    }
    // The newest window of each key, as numbers (also what a screen reader reads).
    const newest = new Map();
    for (const w of inRange) if (!newest.has(w.key) || newest.get(w.key).start < w.start) newest.set(w.key, w);
    latest.replaceChildren(el('table', { 'aria-label': 'Latest window per key' },
      el('thead', null, el('tr', null, el('th', null, 'Key'), el('th', null, 'Window'), ...METRICS.map((m) => el('th', { class: 'num' }, m)))),
      el('tbody', null, keys.map((k) => {
        const w = newest.get(k);
        return el('tr', null, el('td', null, el('a', { href: href(w.segs) }, k || '(all)')), el('td', null, fmtTime(w.start * 1000)),
          ...METRICS.map((m) => el('td', { class: 'num' }, w.values[m] == null ? '' : fmtNumber(w.values[m]))));
      }))));
  }

  async function loadSla() {
    const node = await listing(['contextstore', 'sla']).catch(() => null);
    if (!node) {
      slaBox.replaceChildren(el('p', { class: 'muted' }, 'No SLA state you may read.'));
      return;
    }
    let data;
    try {
      ({ data } = await getNode(['contextstore', 'sla'], { depth: 'unbounded' }));
    } catch (e) {
      slaBox.replaceChildren(errorBox(e));
      return;
    }
    const rows = [];
    collectSla(data, [], rows);
    rows.sort((a, b) => Number(b.violating) - Number(a.violating) || collator.compare(a.name + a.key, b.name + b.key));
    const shown = state.all ? rows : rows.filter((r) => r.violating);
    const count = rows.filter((r) => r.violating).length;
    slaBox.replaceChildren(...[
      el('p', { class: 'muted' }, `${count} violation${count === 1 ? '' : 's'} now, ${rows.length} key${rows.length === 1 ? '' : 's'} watched.`),
      shown.length ? el('table', { id: 'sla-table' },
        el('thead', null, el('tr', null, el('th', null, 'Handler'), el('th', null, 'Key'), el('th', null, 'State'), el('th', null, 'Breach since'), el('th', { class: 'num' }, 'Last value'))),
        el('tbody', null, shown.map((r) => el('tr', null,
          el('td', null, r.name), el('td', null, el('a', { href: href(r.segs) }, r.key)),
          el('td', null, el('span', { class: `badge ${r.violating ? 'bad' : 'ok'}` }, r.violating ? 'violating' : 'ok')),
          el('td', null, fmtTime(r.since)), el('td', { class: 'num' }, r.last == null ? '' : fmtNumber(r.last)))))) : null,
    ].filter(Boolean));
  }

  async function loadMonitoring() {
    const node = await listing(['contextstore', 'monitoring']).catch(() => null);
    if (!node) return;
    try {
      const { data } = await getNode(['contextstore', 'monitoring'], { depth: 3 });
      const rows = [];
      flatten(data, '', rows);
      monBox.replaceChildren(section('Store', kvTable(rows.map(([k, v]) => [k, v])), el('p', null, el('a', { href: href(['contextstore', 'monitoring']) }, 'Monitoring in the tree'))));
    } catch (e) {
      monBox.replaceChildren(section('Store', errorBox(e)));
    }
  }

  aggSel.addEventListener('change', () => { state.agg = aggSel.value; keep(); loadAggregate(); });
  metricSel.addEventListener('change', () => { state.metric = metricSel.value; keep(); loadAggregate(); });
  rangeSel.addEventListener('change', () => { state.range = rangeSel.value; keep(); loadAggregate(); });
  slaAll.addEventListener('change', () => { state.all = slaAll.checked; keep(); loadSla(); });

  const refreshAgg = throttle(() => !disposed && loadAggregate().catch(() => {}), 1000);
  const refreshSla = throttle(() => !disposed && loadSla().catch(() => {}), 1000);
  const refreshCfg = throttle(() => !disposed && loadConfig().then(loadAggregate).catch(() => {}), 1000);
  const refreshMon = throttle(() => !disposed && loadMonitoring().catch(() => {}), 2000);

  (async () => {
    await loadConfig().catch((e) => aggMsg.replaceChildren(errorBox(e)));
    await Promise.all([loadAggregate(), loadSla(), loadMonitoring()]).catch((e) => aggMsg.replaceChildren(errorBox(e)));
  })();

  return {
    onEvent(ev) {
      const u = ev.uri || '';
      if (u.startsWith('./contextstore/aggregates/')) refreshAgg();
      else if (u.startsWith('./contextstore/sla/')) refreshSla();
      else if (u.startsWith('./contextstore/config/')) refreshCfg();
      else if (u.startsWith('./contextstore/monitoring/')) refreshMon();
    },
    dispose() {
      disposed = true;
      [refreshAgg, refreshSla, refreshCfg, refreshMon].forEach((f) => f.cancel());
      if (chart) chart.destroy();
    },
  };
}

/** Windows are the interior nodes with a `window_end`; the names above them are the key. */
function collectWindows(n, path, out) {
  const ch = n.children || {};
  if (ch.window_end || (ch.count && ch.sum)) {
    const start = Date.parse(path[path.length - 1]);
    if (!Number.isNaN(start)) {
      const values = {};
      for (const m of METRICS) values[m] = ch[m] ? ch[m].value : null;
      out.push({ key: path.slice(0, -1).join('/'), start: start / 1000, values, segs: segsOf(n.uri) });
    }
    return;
  }
  for (const [name, c] of Object.entries(ch)) if (c.kind === 'interior') collectWindows(c, [...path, name], out);
}

function collectSla(n, path, out) {
  const ch = n.children || {};
  if (ch.violating) {
    out.push({
      name: path[0],
      key: path.slice(1).join('/'),
      violating: ch.violating.value === true,
      since: ch.breach_since ? ch.breach_since.value : null,
      last: ch.last_value ? ch.last_value.value : null,
      segs: segsOf(n.uri),
    });
    return;
  }
  for (const [name, c] of Object.entries(ch)) if (c.kind === 'interior') collectSla(c, [...path, name], out);
}

function flatten(n, path, out) {
  if (n.readable === false) return;
  if (n.kind === 'leaf') out.push([path, fmtValue(n.value, n.format)]);
  else for (const [k, c] of Object.entries(n.children || {})) flatten(c, path ? `${path}/${k}` : k, out);
}

// --- A leaf's recorded history ---------------------------------------------

/** `*` is one segment, a final `**` the rest (as the server's patterns). */
export function matches(pattern, segs) {
  const p = segsOf(pattern);
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '**' && i === p.length - 1) return true;
    if (i >= segs.length) return false;
    if (p[i] !== '*' && p[i] !== segs[i]) return false;
  }
  return p.length === segs.length;
}

/** The "History" card of a leaf, when a ContextStore subscription keeps its events; else null. */
export async function historyCard(node) {
  const subsNode = await listing(['contextstore', 'config', 'subscriptions']).catch(() => null);
  if (!subsNode) return null;
  const subs = [];
  for (const [name, s] of subsNode.children) {
    if (s.kind === 'leaf' && s.value && typeof s.value.pattern === 'string' && typeof s.value.type === 'string' && matches(s.value.pattern, node.segs)) subs.push({ name, type: s.value.type });
  }
  if (!subs.length) return null;
  const range = rangeSelect('history-range', '1h');
  const body = el('div', { id: 'history' });
  const card = el('section', { class: 'card' }, el('h2', null, 'History (ContextStore)', el('span', { class: 'spacer' }), range),
    el('p', { class: 'muted' }, `Kept by subscription${subs.length > 1 ? 's' : ''} ${subs.map((s) => `${s.name} (type ${s.type})`).join(', ')}.`), body);
  let chart = null;
  const load = async () => {
    if (!token()) {
      body.replaceChildren(el('p', { class: 'muted' }, 'Reading the history runs ./contextstore/history, which needs Exec there: paste a token.'));
      return;
    }
    body.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    const span = rangeSeconds(range.value);
    const from = new Date(span ? Date.now() - span * 1000 : 0).toISOString();
    let points;
    try {
      // One exec: the store finds the leaf's events across types, and checks the caller may read the leaf.
      const { data } = await execNode(['contextstore', 'history'], { uri: node.uri, from, limit: 10000 });
      points = ((data.result || {}).points || []).filter((p) => Array.isArray(p) && p.length === 2);
    } catch (e) {
      body.replaceChildren(errorBox(e));
      return;
    }
    if (chart) chart.destroy();
    chart = null;
    const chartBox = el('div', { class: 'chart', id: 'history-chart' });
    body.replaceChildren(
      el('p', { class: 'muted' }, `${points.length} recorded change${points.length === 1 ? '' : 's'} in range.`),
      chartBox,
      el('div', { class: 'scroll' }, el('table', null,
        el('thead', null, el('tr', null, el('th', null, 'Time'), el('th', null, 'Value'))),
        el('tbody', null, points.slice(-200).reverse().map(([ts, v]) => el('tr', null,
          el('td', null, fmtTime(ts)), el('td', { class: 'v' }, v === null ? 'deleted' : fmtValue(v))))))));
    const numeric = points.filter(([, v]) => typeof v === 'number');
    if (numeric.length >= 2) {
      chart = await timeChart(chartBox, { xs: numeric.map(([ts]) => ts / 1000), series: [{ label: node.name, values: numeric.map(([, v]) => v) }], height: 180 });
    } else {
      chartBox.remove();
    }
  };
  range.addEventListener('change', load);
  load();
  return card;
}
