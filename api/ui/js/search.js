// The search box: type a path prefix (`config/app/li`), pick a match.
// Lists the children of the typed parent whose names start with the last,
// partial segment; the listings come from the shared model, so what the tree
// pane loaded is reused and unreadable parents are never requested.

import { model } from './model.js';
import { segsOf } from './api.js';
import { go } from './router.js';
import { el, debounce } from './util.js';

const MAX = 30;

export function initSearch(input, list) {
  let items = [];
  let active = -1;
  let seq = 0;

  const close = () => {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
    active = -1;
  };

  const highlight = (i) => {
    active = i;
    [...list.children].forEach((li, j) => li.setAttribute('aria-selected', String(j === i)));
    if (i >= 0 && list.children[i]) {
      input.setAttribute('aria-activedescendant', list.children[i].id);
      list.children[i].scrollIntoView({ block: 'nearest' });
    }
  };

  const update = debounce(async () => {
    const mine = ++seq;
    const text = input.value.trim();
    if (!text) return close();
    const endsWithSlash = /\/$/.test(text);
    const segs = segsOf(text.replace(/^\.?\/?/, './'));
    const parentSegs = endsWithSlash ? segs : segs.slice(0, -1);
    const partial = endsWithSlash ? '' : segs[segs.length - 1] || '';
    let res;
    try {
      res = await model.resolve(parentSegs);
      if (res.status === 'ok' && res.node.kind !== 'leaf') await model.loadChildren(res.node);
    } catch {
      res = null;
    }
    if (mine !== seq) return;
    items = [];
    if (res && res.status === 'ok' && res.node.loaded) {
      const p = partial.toLowerCase();
      for (const name of res.node.names) {
        if (name.toLowerCase().startsWith(p)) {
          items.push(res.node.children.get(name));
          if (items.length >= MAX) break;
        }
      }
    }
    list.replaceChildren(...items.map((n, i) => el('li', { id: `search-opt-${i}`, role: 'option', dataset: { i } },
      n.uri, el('span', { class: 'k' }, n.readable ? n.kind || '' : 'no access'))));
    if (!items.length) list.append(el('li', { role: 'option', 'aria-disabled': 'true', class: 'muted' }, res && res.status !== 'ok' ? 'no such parent' : 'no match'));
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    highlight(items.length ? 0 : -1);
  }, 120);

  const choose = (i) => {
    const n = items[i];
    if (n) {
      go(n.segs);
      input.value = '';
      close();
    } else if (input.value.trim()) {
      go(segsOf(input.value.trim().replace(/^\.?\/?/, './')));
      input.value = '';
      close();
    }
  };

  input.addEventListener('input', update);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') {
      e.preventDefault();
      if (items.length) highlight((active + 1) % items.length);
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      if (items.length) highlight((active - 1 + items.length) % items.length);
    } else if (e.key === 'Enter') {
      e.preventDefault();
      choose(active);
    } else if (e.key === 'Tab' && items[active] && !list.hidden) {
      // Completes the segment, ready for the next one.
      e.preventDefault();
      const n = items[active];
      input.value = n.segs.join('/') + (n.kind === 'leaf' ? '' : '/');
      update();
    } else if (e.key === 'Escape') {
      close();
    }
  });
  list.addEventListener('mousedown', (e) => {
    const li = e.target.closest('li[data-i]');
    if (li) {
      e.preventDefault();
      choose(Number(li.dataset.i));
    }
  });
  input.addEventListener('blur', () => setTimeout(close, 150));
  document.addEventListener('keydown', (e) => {
    if (e.key === '/' && !['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName)) {
      e.preventDefault();
      input.focus();
    }
  });
}
