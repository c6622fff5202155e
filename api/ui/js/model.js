// The client-side copy of the part of the tree the user has opened.
//
// Children are loaded lazily, one level at a time, and kept by URI so that
// the tree pane, the node pane and the search box share one copy, and live
// events update it in one place. Each parent listing tells whether a child is
// readable, so the UI never asks for a node it knows it may not read (a
// refused request would be logged by the browser as a failed load).

import { getNode, uriOf, segsOf } from './api.js';
import { collator } from './util.js';

export class TreeNode {
  constructor(segs, parent) {
    this.segs = segs;
    this.uri = uriOf(segs);
    this.name = segs.length ? segs[segs.length - 1] : '.';
    this.parent = parent;
    this.kind = undefined; // 'leaf' | 'interior' once known
    this.readable = true;
    this.value = undefined;
    this.format = undefined;
    this.stale = null;
    this.props = null; // {format, version, acl, effective_acl, …} once loaded
    this.children = null; // Map name → TreeNode once loaded
    this.names = null; // child names in natural order
    this.changedAt = 0; // when a live event last changed it
    this.deleted = false;
  }

  get loaded() {
    return this.children !== null;
  }
}

export class Model {
  constructor() {
    this.listeners = new Set();
    this.reset();
  }

  /** Forgets everything (the token changed: what is readable changed too). */
  reset() {
    this.root = new TreeNode([], null);
    this.root.kind = 'interior';
    this.byUri = new Map([['.', this.root]]);
    this.inflight = new Map();
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of this.listeners) fn(change);
  }

  get(segsOrUri) {
    const uri = typeof segsOrUri === 'string' ? segsOrUri : uriOf(segsOrUri);
    return this.byUri.get(uri) || null;
  }

  /** Loads (or reloads, with force) the children of an interior node (a leaf: its value). */
  loadChildren(node, { force = false } = {}) {
    if (node.loaded && !force) return Promise.resolve(node);
    const key = node.uri;
    if (this.inflight.has(key)) return this.inflight.get(key);
    const p = getNode(node.segs, { depth: 1 })
      .then(({ data }) => {
        this.fill(node, data);
        this.emit({ type: 'children', node });
        return node;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Loads a node with its properties and, for an interior node, its children. */
  async loadNode(node) {
    // The listing is shared with a load the tree pane started at the same time.
    const [, withProps] = await Promise.all([
      this.loadChildren(node, { force: true }),
      getNode(node.segs, { depth: 0, props: true }),
    ]);
    node.props = withProps.data.props || null;
    this.emit({ type: 'props', node });
    return node;
  }

  /** Reloads the properties only (the version moved after a live change). */
  async loadProps(node) {
    const { data } = await getNode(node.segs, { depth: 0, props: true });
    node.props = data.props || null;
    if (data.kind === 'leaf') {
      node.value = data.value;
      node.format = data.format;
    }
    this.emit({ type: 'props', node });
    return node;
  }

  /**
   * Walks from the root to `segs`, loading each parent's children on the way.
   * Resolves to {status: 'ok' | 'missing' | 'unreadable', node, at}.
   */
  async resolve(segs) {
    let cur = this.root;
    await this.loadChildren(cur);
    for (let i = 0; i < segs.length; i++) {
      if (cur.kind === 'leaf') return { status: 'missing', node: cur, at: i };
      if (!cur.loaded) await this.loadChildren(cur);
      const child = cur.children.get(segs[i]);
      if (!child) return { status: 'missing', node: cur, at: i };
      if (!child.readable) return { status: 'unreadable', node: child, at: i };
      cur = child;
      if (i < segs.length - 1 && cur.kind !== 'leaf') await this.loadChildren(cur);
    }
    return { status: 'ok', node: cur, at: segs.length };
  }

  /** Takes a GET answer into a node (and its children, one level). */
  fill(node, data) {
    node.deleted = false;
    node.readable = data.readable !== false;
    if (data.kind) node.kind = data.kind;
    if (data.kind === 'leaf') {
      node.value = data.value;
      node.format = data.format;
      node.stale = data.stale || null;
      this.dropChildren(node);
      return;
    }
    if (data.kind !== 'interior') return;
    const incoming = data.children || {};
    const old = node.children || new Map();
    const next = new Map();
    for (const [name, c] of Object.entries(incoming)) {
      const child = old.get(name) || new TreeNode([...node.segs, name], node);
      child.readable = c.readable !== false && !!c.kind;
      if (c.kind) child.kind = c.kind;
      if (c.kind === 'leaf') {
        child.value = c.value;
        child.format = c.format;
        child.stale = c.stale || null;
      }
      next.set(name, child);
      this.byUri.set(child.uri, child);
    }
    for (const [name, child] of old) if (!next.has(name)) this.forget(child);
    node.children = next;
    node.names = [...next.keys()].sort(collator.compare);
  }

  dropChildren(node) {
    if (node.children) for (const c of node.children.values()) this.forget(c);
    node.children = null;
    node.names = null;
  }

  forget(node) {
    node.deleted = true;
    this.byUri.delete(node.uri);
    if (node.children) for (const c of node.children.values()) this.forget(c);
  }

  /** Applies one event from the stream; emits what changed. */
  apply(ev) {
    const segs = segsOf(ev.uri);
    const now = Date.now();
    switch (ev.kind) {
      case 'replaced':
      case 'monitoring': {
        let n = this.get(segs);
        if (!n) n = this.addChild(segs, ev);
        if (!n) return;
        if ('value' in ev || ev.format) {
          n.kind = 'leaf';
          n.value = ev.value;
          n.format = ev.format ?? n.format;
          n.stale = null;
        }
        n.changedAt = now;
        this.emit({ type: 'value', node: n, event: ev });
        return;
      }
      case 'added': {
        const n = this.addChild(segs, ev);
        if (n) {
          n.changedAt = now;
          this.emit({ type: 'structure', node: n.parent, added: n, event: ev });
        }
        return;
      }
      case 'deleted':
        this.remove(segs, ev);
        return;
      case 'renamed':
        this.remove(segs, ev);
        if (ev.to) this.reloadParentOf(segsOf(ev.to));
        return;
      case 'copied':
        if (ev.to) this.reloadParentOf(segsOf(ev.to));
        return;
      default:
        this.emit({ type: 'other', event: ev });
    }
  }

  addChild(segs, ev) {
    if (!segs.length) return null;
    const parent = this.get(segs.slice(0, -1));
    if (!parent || !parent.loaded) return null;
    const name = segs[segs.length - 1];
    let n = parent.children.get(name);
    if (!n) {
      n = new TreeNode(segs, parent);
      parent.children.set(name, n);
      this.byUri.set(n.uri, n);
      insertSorted(parent.names, name);
    }
    n.deleted = false;
    n.readable = true;
    if (ev.format) {
      n.kind = 'leaf';
      n.value = ev.value;
      n.format = ev.format;
    } else if (ev.kind === 'added') {
      // A new interior node is empty: later `added` events fill it in.
      n.kind = 'interior';
      if (!n.children) {
        n.children = new Map();
        n.names = [];
      }
    }
    return n;
  }

  remove(segs, ev) {
    const n = this.get(segs);
    const parent = segs.length ? this.get(segs.slice(0, -1)) : null;
    if (parent && parent.loaded) {
      const name = segs[segs.length - 1];
      if (parent.children.delete(name)) {
        const i = parent.names.indexOf(name);
        if (i >= 0) parent.names.splice(i, 1);
      }
    }
    if (n) this.forget(n);
    this.emit({ type: 'structure', node: parent, removed: n, uri: uriOf(segs), event: ev });
  }

  reloadParentOf(segs) {
    const parent = this.get(segs.slice(0, -1));
    if (parent && parent.loaded) {
      this.loadChildren(parent, { force: true }).catch(() => {});
    }
  }
}

function insertSorted(arr, name) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (collator.compare(arr[mid], name) < 0) lo = mid + 1;
    else hi = mid;
  }
  arr.splice(lo, 0, name);
}

export const model = new Model();
