// The node pane: breadcrumbs, the value or the children, properties, the ACL
// (own or inherited, and from where), the handler the node belongs to, the
// write forms, and the live events of the open subtree. For ./contextstore,
// ./managers and ./rules it also offers their dashboards, loaded on demand.

import { getNode, uriOf, segsOf, token } from './api.js';
import { model } from './model.js';
import { href } from './router.js';
import { el, clear, fmtValue, fmtTime, flash, kvTable, section, editText, throttle } from './util.js';
import { errorBox, canTry, parseAcl, valueEditor, addChildForm, deleteControl, aclEditor, execForm } from './edit.js';

const PAGE = 100; // children per page in the table; the tree pane scrolls all of them

/** Dashboards: which nodes have one, and the module that draws it (imported on first use). */
const DASHBOARDS = [
  { match: (s) => s.length === 1 && s[0] === 'contextstore', title: 'ContextStore', load: () => import('./context.js') },
  { match: (s) => s.length === 1 && s[0] === 'managers', title: 'Manager cloud', load: () => import('./managers.js') },
  { match: (s) => s[0] === 'rules' && s.length <= 2, title: 'Rules', load: () => import('./rules.js') },
];

export function dashboardFor(segs) {
  return DASHBOARDS.find((d) => d.match(segs)) || null;
}

export class NodePane {
  constructor(box, live) {
    this.box = box;
    this.live = live;
    this.seq = 0;
    this.node = null;
    this.view = null; // a dashboard's controller: {onEvent, dispose}
    this.events = [];
    this.page = 0;
    this.filter = '';
    this.reloadProps = throttle(() => {
      const n = this.node;
      if (n && !n.deleted) model.loadProps(n).catch(() => {});
    }, 300);
    model.on((c) => this.onModel(c));
    live.subscribe((ev) => this.onEvent(ev));
  }

  dispose() {
    if (this.view && this.view.dispose) this.view.dispose();
    this.view = null;
    this.node = null;
    // The previous view's parts: live updates must not reach them.
    this.head = this.body = this.propsBox = this.aclBox = this.aclEdit = null;
    this.valueEl = this.drawChildren = this.childRows = this.eventsBody = null;
  }

  /** Shows a route whose path was resolved by the model ({status, node}) or failed (error). */
  async show(route, res) {
    const seq = ++this.seq;
    const sameNode = this.node && res && res.node === this.node && res.status === 'ok';
    this.dispose();
    const segs = route.segs;
    if (!sameNode) {
      this.events = [];
      this.page = 0;
      this.filter = '';
    }
    this.segs = segs;
    clear(this.box);
    const head = el('div', { class: 'titlebar' }, breadcrumbs(segs));
    this.box.append(head);
    if (res.error) {
      this.box.append(section('Error', errorBox(res.error)));
      return;
    }
    if (res.status === 'missing') {
      const missing = uriOf(segs.slice(0, res.at + 1));
      this.box.append(section('Not found', el('div', { class: 'error', role: 'alert', dataset: { code: 'node_not_found' } },
        el('code', null, 'node_not_found'), `${missing} does not exist.`)));
      return;
    }
    if (res.status === 'unreadable') {
      this.box.append(forbidden(res.node));
      return;
    }
    const node = res.node;
    this.node = node;
    const dash = dashboardFor(segs);
    let body = this.box;
    if (dash) {
      const tab = route.params.get('tab') === 'node' ? 'node' : 'dashboard';
      this.box.append(el('div', { class: 'tabs', role: 'tablist' },
        el('a', { role: 'tab', href: href(segs), 'aria-selected': String(tab === 'dashboard') }, dash.title),
        el('a', { role: 'tab', href: href(segs, { tab: 'node' }), 'aria-selected': String(tab === 'node') }, 'Node')));
      body = el('div', { role: 'tabpanel' });
      this.box.append(body);
      if (tab === 'dashboard') {
        try {
          const mod = await dash.load();
          if (seq !== this.seq) return;
          this.view = mod.render(body, { segs, params: route.params, live: this.live, node });
        } catch (e) {
          body.append(errorBox(e));
        }
        return;
      }
    }
    this.live.hold();
    try {
      await model.loadNode(node);
    } catch (e) {
      if (seq === this.seq) body.append(section('Error', errorBox(e)));
      return;
    } finally {
      this.live.release();
    }
    if (seq !== this.seq) return;
    this.head = head;
    this.body = body;
    this.renderNode(node);
  }

  renderNode(node) {
    this.head.replaceChildren(breadcrumbs(node.segs), el('span', { id: 'node-badges', class: 'badges' }));
    this.renderBadges();
    const left = el('div');
    const right = el('div');
    if (node.kind === 'leaf') left.append(this.valueCard(node));
    else left.append(this.childrenCard(node));
    if (node.kind === 'leaf') this.historyCard(node, left);
    left.append(this.eventsCard());
    this.propsBox = el('div');
    this.aclBox = el('div');
    right.append(this.propsBox, this.aclBox);
    this.renderProps();
    this.renderAcl();
    const mountBox = el('div');
    right.append(mountBox);
    mountCard(node).then((c) => c && mountBox.replaceWith(c)).catch(() => {});
    right.append(this.actionsCard(node));
    this.body.append(el('div', { class: 'grid' }, left, right));
  }

  renderBadges() {
    const n = this.node;
    const box = this.head && this.head.querySelector('#node-badges');
    if (!n || !box) return;
    const p = n.props || {};
    box.replaceChildren(...[
      el('span', { class: 'badge info' }, n.kind || '?'),
      n.kind === 'leaf' ? el('span', { class: 'badge' }, `format ${n.format}`) : null,
      ' ',
      el('span', { class: 'badge', id: 'node-version', title: 'The version is the ETag; writes send it as If-Match' }, `version ${p.version ?? '?'} · ETag "${p.version ?? '?'}"`),
      n.stale ? el('span', { class: 'badge warn' }, `stale ${n.stale.age_ms} ms`) : null,
      n.deleted ? el('span', { class: 'badge bad' }, 'deleted') : null,
    ].filter(Boolean));
  }

  valueCard(node) {
    const value = el('div', { class: 'value-big', id: 'node-value', dataset: { uri: node.uri } }, fmtValue(node.value, node.format));
    if (node.format === 'json') value.textContent = editText(node.value, 'json');
    const editBox = el('div');
    const editBtn = el('button', { type: 'button', id: 'edit-value-btn' }, 'Edit');
    const close = () => {
      editBox.replaceChildren();
      editBtn.hidden = false;
    };
    editBtn.addEventListener('click', () => {
      editBtn.hidden = true;
      editBox.replaceChildren(valueEditor(node, { onClose: close }));
    });
    const writable = canTry(node, 'Replace');
    this.valueEl = value;
    return el('section', { class: 'card' },
      el('h2', null, 'Value', el('span', { class: 'spacer' }), writable ? editBtn : el('span', { class: 'muted' }, 'paste a token to edit')),
      value, editBox);
  }

  childrenCard(node) {
    const filter = el('input', { type: 'search', id: 'children-filter', placeholder: 'filter by prefix', 'aria-label': 'Filter children by name prefix' });
    filter.value = this.filter;
    const info = el('span', { class: 'muted', id: 'children-count' });
    const prev = el('button', { type: 'button', class: 'small', 'aria-label': 'Previous page' }, '‹ prev');
    const next = el('button', { type: 'button', class: 'small', 'aria-label': 'Next page' }, 'next ›');
    const tbody = el('tbody');
    const table = el('table', { id: 'children', 'aria-label': `Children of ${node.uri}` },
      el('thead', null, el('tr', null, el('th', null, 'Name'), el('th', null, 'Kind'), el('th', null, 'Format'), el('th', null, 'Value'))), tbody);
    this.childRows = new Map();
    const draw = (flashName) => {
      const names = (node.names || []).filter((n) => !this.filter || n.toLowerCase().startsWith(this.filter.toLowerCase()));
      const pages = Math.max(1, Math.ceil(names.length / PAGE));
      this.page = Math.min(this.page, pages - 1);
      const start = this.page * PAGE;
      const slice = names.slice(start, start + PAGE);
      this.childRows.clear();
      tbody.replaceChildren(...slice.map((name) => {
        const c = node.children.get(name);
        const row = el('tr', { dataset: { name } },
          el('td', null, el('a', { href: href(c.segs) }, name)),
          el('td', null, c.readable ? c.kind || '' : el('span', { class: 'badge bad' }, 'no access')),
          el('td', null, c.kind === 'leaf' ? c.format || '' : ''),
          el('td', { class: 'v' }, c.kind === 'leaf' ? fmtValue(c.value, c.format) : ''));
        this.childRows.set(name, row);
        if (name === flashName) flash(row);
        return row;
      }));
      if (!slice.length) tbody.append(el('tr', null, el('td', { colspan: 4, class: 'muted' }, node.names && node.names.length ? 'No child matches.' : 'No children.')));
      info.textContent = names.length ? `${start + 1}–${start + slice.length} of ${names.length}${this.filter ? ` matching (of ${node.names.length})` : ''}` : '';
      prev.disabled = this.page === 0;
      next.disabled = this.page >= pages - 1;
    };
    this.drawChildren = draw;
    filter.addEventListener('input', () => {
      this.filter = filter.value;
      this.page = 0;
      draw();
    });
    prev.addEventListener('click', () => { this.page--; draw(); });
    next.addEventListener('click', () => { this.page++; draw(); });
    draw();
    return el('section', { class: 'card' }, el('h2', null, 'Children'),
      el('div', { class: 'toolbar' }, filter, el('span', { class: 'grow' }), info, el('span', { class: 'pager' }, prev, next)),
      el('div', { class: 'scroll' }, table));
  }

  renderProps() {
    const n = this.node;
    if (!n || !this.propsBox) return;
    const p = n.props || {};
    this.propsBox.replaceChildren(section('Properties', kvTable([
      ['URI', n.uri],
      ['Kind', n.kind || ''],
      ['Format', p.format ?? ''],
      ['Version (ETag)', p.version ?? ''],
      ['Changed', fmtTime(p.timestamp)],
      ['Size', p.size ?? ''],
      ['Title', p.title ?? ''],
      ['Type', p.type ?? ''],
    ], 'kv props')));
  }

  renderAcl() {
    const n = this.node;
    if (!n || !this.aclBox) return;
    const p = n.props || {};
    const eff = parseAcl(p.effective_acl);
    const from = el('div', { class: 'acl-origin', id: 'acl-origin' });
    if (p.acl) {
      from.append(el('span', { class: 'badge info' }, 'own ACL'), ' set on this node');
      this.origin = null;
    } else {
      from.append(el('span', { class: 'badge' }, 'inherited'), ' …');
      // Asked once per node: live changes redraw this card often.
      if (!this.origin || this.origin.node !== n) this.origin = { node: n, promise: aclOrigin(n) };
      this.origin.promise.then((o) => {
        from.replaceChildren(el('span', { class: 'badge' }, 'inherited'), ' from ',
          o.segs ? el('a', { href: href(o.segs) }, o.segs.length ? uriOf(o.segs) : '. (root)') : el('span', { class: 'muted' }, o.text));
      }).catch(() => from.replaceChildren(el('span', { class: 'badge' }, 'inherited')));
    }
    const table = el('table', { class: 'acl' }, el('tbody', null, ['Add', 'Delete', 'Exec', 'Get', 'Replace'].map((cmd) =>
      el('tr', null, el('th', { scope: 'row' }, cmd), el('td', null, (eff[cmd] || []).length
        ? eff[cmd].map((who) => el('span', { class: 'p' }, who === '*' ? '* (anyone)' : who))
        : el('span', { class: 'muted' }, 'nobody'))))));
    // The editor outlives a redraw of the card (a save reloads the properties).
    if (!this.aclEdit || this.aclEdit.node !== n) {
      const box = el('div');
      const btn = el('button', { type: 'button', id: 'acl-edit-btn', class: 'small' }, 'Edit ACL');
      btn.addEventListener('click', () => {
        btn.hidden = true;
        box.replaceChildren(aclEditor(n, { onClose: () => { box.replaceChildren(); btn.hidden = false; } }));
      });
      this.aclEdit = { node: n, box, btn };
    }
    const { box: editBox, btn: editBtn } = this.aclEdit;
    this.aclBox.replaceChildren(el('section', { class: 'card', id: 'acl-card' },
      el('h2', null, 'ACL', el('span', { class: 'spacer' }), canTry(n, 'Replace') ? editBtn : null),
      from, table, el('div', { class: 'muted mono acl-eff', title: 'The effective ACL' }, p.effective_acl || ''), editBox));
  }

  actionsCard(node) {
    const parts = [];
    if (node.kind === 'interior' && canTry(node, 'Add')) {
      parts.push(el('details', { id: 'add-child' }, el('summary', null, 'Add a child'), addChildForm(node)));
    }
    if (canTry(node, 'Exec')) parts.push(el('details', { id: 'exec' }, el('summary', null, 'Exec with JSON data'), execForm(node)));
    if (node.segs.length && canTry(node, 'Delete')) parts.push(deleteControl(node));
    if (!parts.length) parts.push(el('p', { class: 'muted' }, 'Paste a token in the header to add, delete or exec.'));
    return section('Actions', ...parts);
  }

  async historyCard(node, parent) {
    if (!model.root.children || !model.root.children.get('contextstore')) return;
    const slot = el('div');
    parent.append(slot);
    try {
      const mod = await import('./context.js');
      const card = await mod.historyCard(node);
      if (card && this.node === node) slot.replaceWith(card);
    } catch (e) {
      slot.replaceWith(section('History', errorBox(e)));
    }
  }

  eventsCard() {
    this.eventsBody = el('tbody');
    const card = el('section', { class: 'card' }, el('h2', null, 'Live events in this subtree'),
      el('div', { class: 'events-list' }, el('table', { id: 'events' },
        el('thead', null, el('tr', null, el('th', null, 'Rev'), el('th', null, 'Time'), el('th', null, 'Kind'), el('th', null, 'Node'), el('th', null, 'Value'))),
        this.eventsBody)));
    for (const ev of this.events) this.eventsBody.append(eventRow(ev));
    if (!this.events.length) this.eventsBody.append(el('tr', { class: 'empty' }, el('td', { colspan: 5, class: 'muted' }, 'No change since this view opened.')));
    return card;
  }

  onEvent(ev) {
    if (this.view && this.view.onEvent) this.view.onEvent(ev);
    if (!this.node) return;
    this.events.unshift(ev);
    if (this.events.length > 50) this.events.pop();
    if (this.eventsBody && this.eventsBody.isConnected) {
      const empty = this.eventsBody.querySelector('tr.empty');
      if (empty) empty.remove();
      const row = eventRow(ev);
      this.eventsBody.prepend(row);
      flash(row);
      while (this.eventsBody.children.length > 50) this.eventsBody.lastChild.remove();
    }
  }

  onModel(c) {
    const n = this.node;
    if (!n || this.view) return;
    if (c.type === 'value' && c.node === n) {
      if (this.valueEl && this.valueEl.isConnected) {
        this.valueEl.textContent = n.format === 'json' ? editText(n.value, 'json') : fmtValue(n.value, n.format);
        flash(this.valueEl);
      }
      this.reloadProps();
    } else if (c.type === 'value' && c.node.parent === n) {
      const row = this.childRows && this.childRows.get(c.node.name);
      if (row) {
        row.cells[3].textContent = fmtValue(c.node.value, c.node.format);
        row.cells[2].textContent = c.node.format || '';
        flash(row);
      }
    } else if (c.type === 'structure' && c.node === n && this.drawChildren) {
      this.drawChildren(c.added ? c.added.name : null);
      this.reloadProps();
    } else if (c.type === 'children' && c.node === n && this.drawChildren) {
      this.drawChildren();
    } else if (c.type === 'props' && c.node === n) {
      this.renderBadges();
      this.renderProps();
      this.renderAcl();
    }
    if (c.type === 'structure' && n.deleted) {
      this.renderBadges();
      if (!this.box.querySelector('#deleted-banner')) {
        this.box.insertBefore(el('div', { class: 'error', id: 'deleted-banner', role: 'alert' },
          el('code', null, 'deleted'), `${n.uri} was deleted. `, el('a', { href: href(n.segs.slice(0, -1)) }, 'Go to the parent')), this.head.nextSibling);
      }
    }
  }
}

function eventRow(ev) {
  return el('tr', null,
    el('td', { class: 'num' }, ev.revision ?? ''),
    el('td', null, fmtTime(ev.timestamp).slice(11)),
    el('td', null, ev.kind),
    el('td', { class: 'v' }, ev.uri || '', ev.to ? ` → ${ev.to}` : ''),
    el('td', { class: 'v' }, 'value' in ev ? fmtValue(ev.value, ev.format) : ''));
}

export function breadcrumbs(segs) {
  const nav = el('nav', { class: 'crumbs', 'aria-label': 'Breadcrumbs' });
  nav.append(segs.length ? el('a', { href: href([]) }, '.') : el('span', { 'aria-current': 'page' }, '. (root)'));
  segs.forEach((s, i) => {
    nav.append(el('span', { class: 'sep' }, '/'));
    nav.append(i === segs.length - 1 ? el('span', { 'aria-current': 'page' }, s) : el('a', { href: href(segs.slice(0, i + 1)) }, s));
  });
  return nav;
}

/** A node the caller may not read: said plainly, with no request made for it. */
export function forbidden(node) {
  return section('No access', el('div', { class: 'error forbidden', role: 'alert', id: 'forbidden', dataset: { code: 'permission_denied' } },
    el('code', null, token() ? 'permission_denied' : 'authentication_required'),
    `You may not read ${node.uri}: its ACL does not grant Get to ${token() ? 'your token' : 'anonymous users'}.`,
    token() ? null : el('div', { class: 'muted' }, 'Paste a token in the header to read it with your rights.')));
}

/** Where the effective ACL comes from: the nearest ancestor with an ACL of its own. */
async function aclOrigin(node) {
  for (let i = node.segs.length - 1; i >= 0; i--) {
    const segs = node.segs.slice(0, i);
    const anc = model.get(segs);
    if (anc && !anc.readable) return { text: `an ancestor you may not read (${uriOf(segs)})` };
    const { data } = await getNode(segs, { depth: 0, props: true });
    if (data.props && data.props.acl) return { segs };
  }
  return { text: 'the default' };
}

// --- Mounts ---------------------------------------------------------------
let mountsCache = { at: 0, list: null };

/** ./mounts: id, mount point and handler of every mount (cached for a few seconds). */
export async function mountList() {
  if (mountsCache.list && Date.now() - mountsCache.at < 10000) return mountsCache.list;
  const res = await model.resolve(['mounts']);
  if (res.status !== 'ok') return [];
  const { data } = await getNode(['mounts'], { depth: 2 });
  const list = [];
  for (const [id, m] of Object.entries(data.children || {})) {
    const c = m.children || {};
    if (c.uri && typeof c.uri.value === 'string') list.push({ id, uri: c.uri.value, handler: c.handler ? c.handler.value : '' });
  }
  mountsCache = { at: Date.now(), list };
  return list;
}

function mountOf(node, list) {
  let best = null;
  for (const m of list) {
    const prefix = m.uri === '.' ? '.' : m.uri;
    const inside = node.uri === prefix || node.uri.startsWith(`${prefix}/`);
    if (inside && (!best || m.uri.length > best.uri.length)) best = m;
  }
  return best;
}

const MOUNT_FIELDS = ['handler', 'uri', 'origin', 'since', 'supplier', 'url'];

async function mountCard(node) {
  const m = mountOf(node, await mountList());
  if (!m) return null;
  const { data } = await getNode(['mounts', m.id], { depth: 3 });
  const c = data.children || {};
  const rows = [
    ['Mount', el('a', { href: href(['mounts', m.id]) }, m.id)],
    ['Handler (kind)', c.handler ? c.handler.value : ''],
    ['Mount point', el('a', { href: href(segsOf(m.uri)) }, m.uri)],
  ];
  for (const f of ['origin', 'since', 'supplier', 'url']) if (c[f] && c[f].value !== '' && c[f].value != null) rows.push([f, fmtValue(c[f].value, c[f].format)]);
  const mon = [];
  const walk = (n, path) => {
    if (!n || n.readable === false) return;
    if (n.kind === 'leaf') mon.push([path, fmtValue(n.value, n.format)]);
    else for (const [k, ch] of Object.entries(n.children || {})) walk(ch, path ? `${path}/${k}` : k);
  };
  for (const [k, ch] of Object.entries(c)) if (!MOUNT_FIELDS.includes(k)) walk(ch, k === 'monitoring' ? '' : k);
  return el('section', { class: 'card', id: 'mount-card' }, el('h2', null, 'Handler'), kvTable(rows),
    mon.length ? el('details', { open: mon.length <= 12 }, el('summary', null, `Monitoring (${mon.length})`), el('div', { class: 'scroll' }, kvTable(mon))) : null);
}
