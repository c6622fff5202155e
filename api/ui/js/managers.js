// The manager cloud (./managers): the coordinator, its term and successors,
// the members with their load, the resources by status with filters, and
// each resource's actions as buttons (an exec, forwarded to its agent).

import { getNode, execNode, token } from './api.js';
import { model } from './model.js';
import { href, setParams } from './router.js';
import { el, fmtNumber, fmtTime, fmtValue, section, kvTable, viewLife, collator } from './util.js';
import { errorBox } from './edit.js';

const STATUSES = ['up', 'down', 'unreachable', 'assigned'];

/** Reads ./managers/<part> to `depth` if the caller may; null otherwise. */
async function read(part, depth) {
  const res = await model.resolve(['managers', part]);
  if (res.status !== 'ok') return null;
  const { data } = await getNode(['managers', part], { depth });
  return data;
}

const leaves = (n) => {
  const out = {};
  for (const [k, c] of Object.entries((n && n.children) || {})) if (c.kind === 'leaf') out[k] = c.value;
  return out;
};

const msTime = (v) => (typeof v === 'number' && v > 1e11 ? fmtTime(v) : fmtValue(v));

export function render(box, { params }) {
  const state = { status: params.get('status') || 'all', q: params.get('q') || '', data: '{}' };
  const life = viewLife('./managers/');
  let resources = [];
  const coordBox = el('div');
  const selfBox = el('div');
  const membersBox = el('div');
  const chips = el('div', { class: 'chips', role: 'group', 'aria-label': 'Filter by status' });
  const filter = el('input', { type: 'search', id: 'res-filter', placeholder: 'filter: id, type or manager', 'aria-label': 'Filter resources' });
  filter.value = state.q;
  const execData = el('input', { type: 'text', id: 'res-exec-data', value: state.data, spellcheck: 'false', 'aria-label': 'Exec data for actions (JSON)', size: 18 });
  const tableBox = el('div', { class: 'scroll', id: 'resources' });
  const result = el('div', { id: 'res-result' });
  const msg = el('div');

  box.append(msg, el('div', { class: 'grid' },
    el('div', null,
      membersBox,
      el('section', { class: 'card' }, el('h2', null, 'Resources'),
        el('div', { class: 'toolbar' }, chips, el('span', { class: 'grow' }), filter,
          el('label', { class: 'muted', for: 'res-exec-data' }, 'action data'), execData),
        tableBox, result)),
    el('div', null, coordBox, selfBox)));

  const keep = () => setParams({ ...(state.status !== 'all' ? { status: state.status } : {}), ...(state.q ? { q: state.q } : {}) });

  async function load() {
    let coord, members, mon, res;
    try {
      [coord, members, mon, res] = await Promise.all([read('coordinator', 1), read('members', 2), read('monitoring', 2), read('resources', 3)]);
    } catch (e) {
      msg.replaceChildren(errorBox(e));
      return;
    }
    if (life.disposed) return;
    msg.replaceChildren();
    const c = leaves(coord);
    const successors = typeof c.successors === 'string' ? c.successors.split(',').filter(Boolean) : Array.isArray(c.successors) ? c.successors : [];
    coordBox.replaceChildren(el('section', { class: 'card', id: 'coordinator' }, el('h2', null, 'Coordinator'),
      coord ? el('div', null,
        el('div', { class: 'stats' },
          stat(c.id ?? '–', 'coordinator'), stat(c.term ?? '–', 'term'), stat(c.birth ?? '–', 'birth')),
        kvTable([['since', msTime(c.since)], ['instance', c.instance ?? ''],
          ['successors', el('ol', { class: 'successors' }, successors.map((s) => el('li', null, s)))]]))
        : el('p', { class: 'muted' }, 'Not readable.')));
    const m = mon ? leaves(mon) : {};
    const self = mon && mon.children && mon.children.self ? leaves(mon.children.self) : {};
    const dropped = mon && mon.children && mon.children.dropped ? leaves(mon.children.dropped) : {};
    selfBox.replaceChildren(section('This member', kvTable([
      ...Object.entries(self).map(([k, v]) => [k, fmtValue(v)]),
      ...Object.entries(m).map(([k, v]) => [k, fmtValue(v)]),
      ...Object.entries(dropped).map(([k, v]) => [`dropped/${k}`, fmtValue(v)]),
    ])));
    const mem = Object.entries((members && members.children) || {}).map(([id, n]) => ({ id, ...leaves(n) }));
    mem.sort((a, b) => (a.birth ?? 0) - (b.birth ?? 0));
    membersBox.replaceChildren(el('section', { class: 'card' }, el('h2', null, `Members (${mem.length})`),
      el('table', { id: 'members' },
        el('thead', null, el('tr', null, ...['Member', 'Live', 'Load', 'Resources', 'Capacity', 'Birth', 'Endpoint', 'Lease until'].map((h) => el('th', null, h)))),
        el('tbody', null, mem.map((x) => el('tr', { dataset: { id: x.id } },
          el('td', null, el('a', { href: href(['managers', 'members', x.id]) }, x.id), x.id === c.id ? el('span', { class: 'badge info' }, ' coordinator') : null),
          el('td', null, el('span', { class: `badge ${x.live ? 'ok' : 'bad'}` }, x.live ? 'live' : 'gone')),
          el('td', { class: 'num' }, x.load == null ? '' : fmtNumber(x.load)),
          el('td', { class: 'num' }, x.resources ?? ''),
          el('td', { class: 'num' }, x.capacity ?? ''),
          el('td', { class: 'num' }, x.birth ?? ''),
          el('td', null, x.endpoint ?? ''),
          el('td', null, msTime(x.lease_until))))))));
    resources = Object.entries((res && res.children) || {}).map(([id, n]) => {
      const ch = n.children || {};
      return {
        id,
        readable: n.readable !== false,
        ...leaves(n),
        props: leaves(ch.properties),
        actions: Object.keys((ch.actions && ch.actions.children) || {}).sort(collator.compare),
      };
    });
    resources.sort((a, b) => collator.compare(a.id, b.id));
    drawResources();
  }

  function drawResources() {
    const counts = { all: resources.length };
    for (const r of resources) counts[r.status] = (counts[r.status] || 0) + 1;
    const statuses = ['all', ...STATUSES, ...Object.keys(counts).filter((s) => s !== 'all' && !STATUSES.includes(s) && s !== 'undefined')];
    chips.replaceChildren(...statuses.map((s) => el('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(state.status === s), dataset: { status: s },
      onclick: () => { state.status = s; keep(); drawResources(); },
    }, `${s} ${counts[s] || 0}`)));
    const q = state.q.toLowerCase();
    const shown = resources.filter((r) => (state.status === 'all' || r.status === state.status)
      && (!q || [r.id, r.type, r.manager].some((v) => String(v ?? '').toLowerCase().includes(q))));
    const canExec = !!token();
    tableBox.replaceChildren(el('table', { id: 'resources-table' },
      el('thead', null, el('tr', null, ...['Resource', 'Type', 'Status', 'Manager', 'Instance', 'Policy', 'Owner', 'Properties', 'Actions'].map((h) => el('th', null, h)))),
      el('tbody', null, shown.length ? shown.map((r) => el('tr', { dataset: { id: r.id } },
        el('td', null, el('a', { href: href(['managers', 'resources', r.id]) }, r.id)),
        el('td', null, r.type ?? ''),
        el('td', null, el('span', { class: `status-${r.status}` }, r.status ?? '')),
        el('td', null, r.manager ?? ''),
        el('td', { class: 'num' }, r.instance ?? ''),
        el('td', null, r.policy ?? ''),
        el('td', null, r.owner ?? ''),
        el('td', { class: 'v', title: JSON.stringify(r.props) }, Object.entries(r.props).map(([k, v]) => `${k}=${typeof v === 'number' ? fmtNumber(v) : fmtValue(v)}`).join('  ')),
        el('td', null, r.actions.length ? r.actions.map((a) => el('button', {
          type: 'button', class: 'small', disabled: !canExec, title: canExec ? `exec ./managers/resources/${r.id}/actions/${a}` : 'paste a token to run actions',
          onclick: () => runAction(r.id, a),
        }, a)) : el('span', { class: 'muted' }, '–')))) : el('tr', null, el('td', { colspan: 9, class: 'muted' }, 'No resource matches.')))));
  }

  async function runAction(id, action) {
    let data;
    try {
      data = execData.value.trim() ? JSON.parse(execData.value) : {};
    } catch (e) {
      result.replaceChildren(errorBox(e));
      return;
    }
    result.replaceChildren(el('p', { class: 'muted' }, `Running ${action} on ${id}…`));
    try {
      const { data: res } = await execNode(['managers', 'resources', id, 'actions', action], data);
      result.replaceChildren(el('div', { class: 'success' }, `${id} ${action}:`), el('pre', { class: 'value-big' }, JSON.stringify(res.result ?? res, null, 2)));
    } catch (e) {
      result.replaceChildren(errorBox(e));
    }
  }

  filter.addEventListener('input', () => { state.q = filter.value; keep(); drawResources(); });
  return life.start(load);
}

function stat(n, label) {
  return el('div', { class: 'stat' }, el('div', { class: 'n' }, String(n)), el('div', { class: 'l' }, label));
}
