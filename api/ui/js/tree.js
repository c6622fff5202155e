// The tree pane: the opened part of the tree as one flat list of rows,
// virtually scrolled, so that a node with 10 000 children costs as much to
// show as one with 30 (only the rows in view exist in the DOM).
//
// Keyboard: ↑/↓ move, → expands (or goes to the first child), ← collapses
// (or goes to the parent), Enter opens the node, Home/End, PageUp/PageDown.
// The focus stays on the list (aria-activedescendant names the row).

import { model } from './model.js';
import { href, go } from './router.js';
import { el, fmtValue, flash } from './util.js';

const ROW = 22; // px; every row has the same height so positions are arithmetic
const OVERSCAN = 10;

export class TreePane {
  constructor(container) {
    this.box = container;
    this.expanded = new Set(['.']);
    this.errors = new Map(); // uri → ApiError of a failed expansion
    this.rows = [];
    this.focus = 0;
    this.selected = '.';
    this.visible = new Map(); // uri → row element, for in-place updates
    this.spacer = el('div', { class: 'tree-spacer' });
    this.list = el('div', { class: 'tree-rows', role: 'presentation' });
    this.spacer.append(this.list);
    this.box.replaceChildren(this.spacer);
    this.box.addEventListener('scroll', () => this.schedule(false));
    this.box.addEventListener('keydown', (e) => this.onKey(e));
    this.box.addEventListener('click', (e) => this.onClick(e));
    this.box.addEventListener('focus', () => this.schedule(false));
    new ResizeObserver(() => this.schedule(false)).observe(this.box);
    model.on((c) => this.onModel(c));
    this.reflatten();
  }

  /** Forgets expansions (the model was reset). */
  reset() {
    this.expanded = new Set(['.']);
    this.errors.clear();
    this.reflatten();
  }

  /** Shows `segs` as the selected row: ancestors expanded, scrolled into view. */
  select(segs) {
    for (let i = 0; i < segs.length; i++) {
      const n = model.get(segs.slice(0, i));
      if (n) this.expanded.add(n.uri);
    }
    const target = model.get(segs);
    this.selected = target ? target.uri : '.';
    // Opening an interior node shows its children here too (loaded with the node).
    if (target && target.kind !== 'leaf' && target.readable && !this.expanded.has(target.uri)) this.toggle(target, true);
    this.reflatten();
    const idx = this.rows.findIndex((r) => r.node && r.node.uri === this.selected);
    if (idx >= 0) {
      this.focus = idx;
      this.scrollTo(idx);
    }
    this.render();
  }

  onModel(change) {
    if (change.type === 'value') {
      const row = this.visible.get(change.node.uri);
      if (row) {
        const v = row.querySelector('.tv');
        if (v) v.textContent = fmtValue(change.node.value, change.node.format);
        flash(row);
      }
      return;
    }
    if (change.type === 'children' || change.type === 'structure') this.schedule(true);
  }

  schedule(structural) {
    this.needFlatten ||= structural;
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      if (this.needFlatten) {
        const focusUri = this.rows[this.focus] && this.rows[this.focus].node ? this.rows[this.focus].node.uri : null;
        this.needFlatten = false;
        this.flatten();
        if (focusUri) {
          const i = this.rows.findIndex((r) => r.node && r.node.uri === focusUri);
          if (i >= 0) this.focus = i;
        }
      }
      this.render();
    });
  }

  reflatten() {
    this.flatten();
    this.render();
  }

  flatten() {
    const rows = [];
    const walk = (node, level) => {
      rows.push({ node, level });
      if (!this.expanded.has(node.uri)) return;
      const err = this.errors.get(node.uri);
      if (err) {
        rows.push({ level: level + 1, note: `${err.code}: ${err.message}`, error: true });
        return;
      }
      if (!node.loaded) {
        rows.push({ level: level + 1, note: 'loading…' });
        return;
      }
      if (!node.names.length) rows.push({ level: level + 1, note: '(no children)' });
      for (const name of node.names) {
        const c = node.children.get(name);
        if (c) walk(c, level + 1);
      }
    };
    walk(model.root, 0);
    this.rows = rows;
    this.focus = Math.min(this.focus, rows.length - 1);
    this.spacer.style.height = `${rows.length * ROW}px`;
  }

  render() {
    const top = this.box.scrollTop;
    const height = this.box.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    this.list.style.transform = `translateY(${first * ROW}px)`;
    this.visible.clear();
    const frag = [];
    for (let i = first; i < last; i++) frag.push(this.rowEl(this.rows[i], i));
    this.list.replaceChildren(...frag);
    const active = this.rows[this.focus];
    this.box.setAttribute('aria-activedescendant', active ? `tree-row-${this.focus}` : '');
  }

  rowEl(r, i) {
    const pad = { style: `padding-left:${6 + r.level * 14}px` };
    if (!r.node) {
      return el('div', { class: `trow note${r.error ? ' err' : ''}`, role: 'none', ...pad }, r.note);
    }
    const n = r.node;
    const interior = n.kind !== 'leaf';
    const open = this.expanded.has(n.uri);
    const row = el(
      'div',
      {
        id: `tree-row-${i}`,
        class: `trow${n.uri === this.selected ? ' selected' : ''}${i === this.focus ? ' focused' : ''}${n.readable ? '' : ' locked'}`,
        role: 'treeitem',
        'aria-level': r.level + 1,
        'aria-selected': n.uri === this.selected ? 'true' : 'false',
        'aria-expanded': interior && n.readable ? String(open) : null,
        dataset: { idx: i, uri: n.uri },
        ...pad,
      },
      el('span', { class: 'tw', 'aria-hidden': 'true' }, !n.readable ? '⊘' : interior ? (open ? '▾' : '▸') : '·'),
      el('a', { class: 'tn', href: href(n.segs), tabindex: '-1' }, n.segs.length ? n.name : '. (root)'),
      interior ? null : el('span', { class: 'tv' }, fmtValue(n.value, n.format)),
    );
    if (!n.readable) row.title = 'You may not read this node';
    this.visible.set(n.uri, row);
    return row;
  }

  scrollTo(idx) {
    const top = idx * ROW;
    const h = this.box.clientHeight || 600;
    if (top < this.box.scrollTop) this.box.scrollTop = top;
    else if (top + ROW > this.box.scrollTop + h) this.box.scrollTop = top - h + ROW * 3;
  }

  async toggle(node, open = !this.expanded.has(node.uri)) {
    if (node.kind === 'leaf' || !node.readable) return;
    if (!open) {
      this.expanded.delete(node.uri);
      this.schedule(true);
      return;
    }
    this.expanded.add(node.uri);
    this.errors.delete(node.uri);
    this.schedule(true);
    try {
      await model.loadChildren(node);
    } catch (e) {
      this.errors.set(node.uri, e);
    }
    this.schedule(true);
  }

  onClick(e) {
    const row = e.target.closest('.trow[data-idx]');
    if (!row) return;
    const idx = Number(row.dataset.idx);
    const r = this.rows[idx];
    if (!r || !r.node) return;
    this.focus = idx;
    if (e.target.closest('.tw')) {
      e.preventDefault();
      this.toggle(r.node);
      this.render();
      return;
    }
    // The link navigates (elsewhere on the row too); opening a node expands it.
    if (!e.target.closest('a')) go(r.node.segs);
    if (r.node.kind !== 'leaf' && r.node.readable) this.toggle(r.node, true);
    this.box.focus({ preventScroll: true });
  }

  onKey(e) {
    const r = this.rows[this.focus];
    const move = (to) => {
      e.preventDefault();
      this.focus = Math.max(0, Math.min(this.rows.length - 1, to));
      this.scrollTo(this.focus);
      this.render();
    };
    const page = Math.max(1, Math.floor((this.box.clientHeight || 600) / ROW) - 1);
    switch (e.key) {
      case 'ArrowDown':
        return move(this.focus + 1);
      case 'ArrowUp':
        return move(this.focus - 1);
      case 'PageDown':
        return move(this.focus + page);
      case 'PageUp':
        return move(this.focus - page);
      case 'Home':
        return move(0);
      case 'End':
        return move(this.rows.length - 1);
      case 'ArrowRight':
        if (!r || !r.node) return;
        e.preventDefault();
        if (r.node.kind !== 'leaf' && r.node.readable && !this.expanded.has(r.node.uri)) this.toggle(r.node, true);
        else if (this.rows[this.focus + 1] && this.rows[this.focus + 1].level > r.level) move(this.focus + 1);
        return;
      case 'ArrowLeft': {
        if (!r) return;
        e.preventDefault();
        if (r.node && this.expanded.has(r.node.uri) && r.node.segs.length) {
          this.toggle(r.node, false);
          return;
        }
        for (let i = this.focus - 1; i >= 0; i--) if (this.rows[i].level < r.level) return move(i);
        return;
      }
      case 'Enter':
      case ' ':
        if (!r || !r.node) return;
        e.preventDefault();
        if (e.key === ' ') this.toggle(r.node);
        else go(r.node.segs);
        return;
      default:
    }
  }
}
