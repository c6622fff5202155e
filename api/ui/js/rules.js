// Rules (./rules, when mounted): the list with state and last firing, and one
// rule's definition, counters and explain view. The layout read here:
//   ./rules/<name>/{definition (JSON), owner, status, error, monitoring/{evaluations,
//   firings, errors, last_evaluation, last_firing, blocked/<reason>}, explain (exec)}
// Every field may be missing; what is there is shown.

import { getNode, execNode, token } from './api.js';
import { model } from './model.js';
import { href, setParams } from './router.js';
import { el, fmtNumber, fmtTime, fmtValue, section, kvTable, viewLife, collator } from './util.js';
import { errorBox } from './edit.js';

const DEF_FIELDS = ['scope', 'for_each', 'where', 'when', 'for_epochs', 'clear_when', 'cooldown', 'priority', 'group', 'verify', 'actions'];

const leaves = (n) => {
  const out = {};
  for (const [k, c] of Object.entries((n && n.children) || {})) if (c.kind === 'leaf') out[k] = c.value;
  return out;
};

/** Times come as RFC 3339 strings or Unix milliseconds; null is "never". */
function when(v) {
  if (v == null || v === '') return 'never';
  if (typeof v === 'number') return v > 1e11 ? fmtTime(v) : String(v);
  return fmtTime(v);
}

function statusBadge(s) {
  const cls = s === 'ok' ? 'ok' : s === 'error' ? 'bad' : s === 'suspended' ? 'warn' : '';
  return el('span', { class: `badge ${cls} status-${s}` }, s ?? 'unknown');
}

function parseRule(name, n) {
  const ch = (n && n.children) || {};
  const top = leaves(n);
  const mon = leaves(ch.monitoring);
  const blocked = ch.monitoring && ch.monitoring.children && ch.monitoring.children.blocked ? leaves(ch.monitoring.children.blocked) : {};
  return { name, readable: n.readable !== false, ...top, mon, blocked };
}

export function render(box, { segs, params }) {
  return segs.length === 1 ? renderList(box, params) : renderRule(box, segs[1]);
}

function renderList(box, params) {
  const state = { q: params.get('q') || '', status: params.get('status') || 'all' };
  const life = viewLife('./rules/');
  let rules = [];
  const filter = el('input', { type: 'search', id: 'rules-filter', placeholder: 'filter by name, owner or group', 'aria-label': 'Filter rules' });
  filter.value = state.q;
  const chips = el('div', { class: 'chips', role: 'group', 'aria-label': 'Filter by status' });
  const tableBox = el('div', { class: 'scroll', id: 'rules' });
  const msg = el('div');
  const engineBox = el('div', { id: 'rules-engine' });
  box.append(msg, el('section', { class: 'card' }, el('h2', null, 'Rules'),
    el('div', { class: 'toolbar' }, chips, el('span', { class: 'grow' }), filter), tableBox), engineBox);

  async function load() {
    let data;
    try {
      ({ data } = await getNode(['rules'], { depth: 3 }));
    } catch (e) {
      msg.replaceChildren(errorBox(e));
      return;
    }
    if (life.disposed) return;
    msg.replaceChildren();
    const children = Object.entries(data.children || {});
    // ./rules/monitoring is the engine's own counters, not a rule.
    const engine = children.find(([name, n]) => name === 'monitoring' && n.children && 'epoch_ms' in n.children);
    rules = children.filter((c) => c !== engine).map(([name, n]) => parseRule(name, n));
    rules.sort((a, b) => collator.compare(a.name, b.name));
    engineBox.replaceChildren(engine ? engineCard(leaves(engine[1])) : '');
    draw();
  }

  function draw() {
    const counts = { all: rules.length };
    for (const r of rules) counts[r.status] = (counts[r.status] || 0) + 1;
    chips.replaceChildren(...['all', 'ok', 'suspended', 'disabled'].map((s) => el('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(state.status === s),
      onclick: () => { state.status = s; keep(); draw(); },
    }, `${s} ${counts[s] || 0}`)));
    const q = state.q.toLowerCase();
    const shown = rules.filter((r) => (state.status === 'all' || r.status === state.status)
      && (!q || [r.name, r.owner, r.definition && r.definition.group].some((v) => String(v ?? '').toLowerCase().includes(q))));
    tableBox.replaceChildren(el('table', { id: 'rules-table' },
      el('thead', null, el('tr', null, ...['Rule', 'Status', 'Owner', 'Last firing', 'Last evaluation', 'Firings', 'Evaluations', 'Errors', 'Error'].map((h) => el('th', null, h)))),
      el('tbody', null, shown.length ? shown.map((r) => el('tr', { dataset: { name: r.name } },
        el('td', null, el('a', { href: href(['rules', r.name]) }, r.name)),
        el('td', null, r.readable ? statusBadge(r.status) : el('span', { class: 'badge bad' }, 'no access')),
        el('td', null, r.owner ?? ''),
        el('td', null, when(r.mon.last_firing)),
        el('td', null, when(r.mon.last_evaluation)),
        el('td', { class: 'num' }, r.mon.firings ?? ''),
        el('td', { class: 'num' }, r.mon.evaluations ?? ''),
        el('td', { class: 'num' }, r.mon.errors ?? ''),
        el('td', { class: 'v', title: r.error || '' }, r.error || ''))) : el('tr', null, el('td', { colspan: 9, class: 'muted' }, rules.length ? 'No rule matches.' : 'No rules.')))));
  }

  const keep = () => setParams({ ...(state.q ? { q: state.q } : {}), ...(state.status !== 'all' ? { status: state.status } : {}) });
  filter.addEventListener('input', () => { state.q = filter.value; keep(); draw(); });
  return life.start(load);
}

function renderRule(box, name) {
  const life = viewLife(`./rules/${name}/`);
  const msg = el('div');
  const stateBox = el('div');
  const defBox = el('div');
  const monBox = el('div');
  const explainBox = el('div', { id: 'explain' });
  box.append(msg, el('div', { class: 'grid' }, el('div', null, defBox, explainBox), el('div', null, stateBox, monBox)));

  async function load() {
    const res = await model.resolve(['rules', name]).catch((e) => ({ error: e }));
    if (life.disposed) return;
    if (res.error) return msg.replaceChildren(errorBox(res.error));
    if (res.status !== 'ok') {
      msg.replaceChildren(el('div', { class: 'error', role: 'alert' }, el('code', null, res.status === 'missing' ? 'node_not_found' : 'permission_denied'),
        res.status === 'missing' ? `No rule ${name}.` : `You may not read the rule ${name}.`));
      return;
    }
    let data;
    try {
      ({ data } = await getNode(['rules', name], { depth: 3 }));
    } catch (e) {
      msg.replaceChildren(errorBox(e));
      return;
    }
    if (life.disposed) return;
    msg.replaceChildren();
    const r = parseRule(name, data);
    stateBox.replaceChildren(section('State', kvTable([
      ['Status', statusBadge(r.status)],
      ['Owner', r.owner ?? ''],
      ['Error', r.error || '–'],
      ['Last firing', when(r.mon.last_firing)],
      ['Last evaluation', when(r.mon.last_evaluation)],
    ])));
    const counters = Object.entries(r.mon).filter(([k]) => !k.startsWith('last_')).map(([k, v]) => [k, fmtValue(v)]);
    const blocked = Object.entries(r.blocked).map(([k, v]) => [`blocked: ${k}`, fmtValue(v)]);
    monBox.replaceChildren(section('Monitoring', counters.length || blocked.length ? kvTable([...counters, ...blocked]) : el('p', { class: 'muted' }, 'No counters.')));
    const def = r.definition;
    const defRows = def && typeof def === 'object' ? DEF_FIELDS.filter((f) => f in def).map((f) => [f, el('pre', null, typeof def[f] === 'string' ? def[f] : JSON.stringify(def[f], null, 1))]) : [];
    defBox.replaceChildren(section('Definition',
      defRows.length ? kvTable(defRows) : null,
      el('details', { open: !defRows.length }, el('summary', null, 'As written (JSON)'), el('pre', { class: 'value-big', id: 'rule-definition' }, def === undefined ? '(no definition)' : JSON.stringify(def, null, 2))),
      el('p', null, el('a', { href: href(['rules', name, 'definition']) }, 'Edit the definition in the tree'))));
  }

  // Explain: what the rule would do now, binding by binding.
  const run = el('button', { type: 'button', class: 'primary', id: 'explain-run', disabled: !token() }, 'Explain now');
  const out = el('div');
  run.addEventListener('click', async () => {
    out.replaceChildren(el('p', { class: 'muted' }, 'Evaluating…'));
    try {
      const { data: res } = await execNode(['rules', name, 'explain'], {});
      out.replaceChildren(explainTable(res && 'result' in res ? res.result : res));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  });
  explainBox.replaceChildren(section('Explain', el('p', { class: 'muted' }, token() ? 'A dry run of the next epoch: per binding, the values read, the condition, and why it would or would not fire. Nothing is changed.' : 'Paste a token to run explain (an exec).'),
    el('div', { class: 'buttons' }, run), out));

  return life.start(load);
}

/** The epoch loop on this member: period, last epoch, overruns, placement. */
function engineCard(m) {
  const rows = [
    ['Epoch', m.epoch_ms != null ? `${fmtNumber(m.epoch_ms / 1000)} s` : ''],
    ['Epochs run', m.epochs ?? ''],
    ['Last epoch took', m.last_duration_ms != null ? `${m.last_duration_ms} ms` : ''],
    ['Overruns (skipped)', `${m.overruns ?? 0} (${m.skipped ?? 0})`],
    ['Firings redone after a failover', m.redone ?? 0],
    ['Member', `${m.member ?? ''}${m.coordinator ? ' (coordinator: global rules run here)' : ''}`],
  ];
  return section('Evaluation', kvTable(rows));
}

/** Why a binding does not fire, in words (the server sends `{reason, …}`). */
function whyNot(w) {
  if (w == null) return '';
  if (typeof w !== 'object') return String(w);
  switch (w.reason) {
    case 'for_epochs': return `for_epochs: condition held ${w.have} of ${w.need} epochs`;
    case 'cooldown': return `cooldown: ${fmtNumber(w.remaining_ms / 1000)} s left`;
    case 'not_armed': return 'not armed: fired, and has not cleared since';
    case 'lower_priority': return `lower priority in its group than ${w.winner}`;
    case 'write_conflict': return `${w.winner} writes ${w.node} with higher priority`;
    case 'verify_false': return 'verify is false';
    case 'condition_false': return 'condition is false';
    case 'filtered': return 'excluded by where';
    case 'error': return `error: ${w.message ?? ''}`;
    default: return String(w.reason ?? JSON.stringify(w));
  }
}

function explainTable(r) {
  if (!r || typeof r !== 'object') return el('pre', { class: 'value-big' }, JSON.stringify(r, null, 2));
  const bindings = Array.isArray(r.bindings) ? r.bindings : [];
  const fires = bindings.filter((b) => b && b.would_fire).length;
  return el('div', null,
    el('p', null, `Epoch ${r.epoch ?? '?'}: ${bindings.length} binding${bindings.length === 1 ? '' : 's'}, ${fires} would fire.`),
    r.evaluated_here === false ? el('p', { class: 'muted' }, 'Not evaluated on this member: global rules run at the coordinator.') : '',
    r.suspended || r.error ? el('p', { class: 'error' }, `Suspended: ${r.suspended || r.error}`) : '',
    el('table', { id: 'explain-table' },
      el('thead', null, el('tr', null, ...['Binding', 'Values', 'Condition', 'Counters', 'Would fire', 'Why not'].map((h) => el('th', null, h)))),
      el('tbody', null, bindings.map((b) => el('tr', null,
        el('td', { class: 'mono' }, b.binding ? String(b.binding) : '(global)'),
        el('td', { class: 'v', title: JSON.stringify(b.values ?? {}) }, compact(b.values)),
        el('td', null, b.condition == null ? el('span', { class: 'muted' }, 'n/a') : el('span', { class: `badge ${b.condition ? 'ok' : ''}` }, String(b.condition))),
        el('td', { class: 'v' }, compact(b.counters)),
        el('td', null, el('span', { class: `badge ${b.would_fire ? 'bad' : ''}` }, b.would_fire ? 'yes' : 'no')),
        el('td', { class: 'why' }, b.would_fire ? (b.actions || []).map((a) => a.kind).join(', ') : whyNot(b.why_not)))))),
    el('details', null, el('summary', null, 'Raw answer'), el('pre', { class: 'value-big' }, JSON.stringify(r, null, 2))));
}

function compact(obj) {
  if (obj == null) return '';
  if (typeof obj !== 'object') return String(obj);
  return Object.entries(obj).map(([k, v]) => `${k}=${typeof v === 'number' ? fmtNumber(v) : JSON.stringify(v)}`).join('  ');
}
