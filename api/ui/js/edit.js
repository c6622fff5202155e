// Writing: set a value (with its format), add and delete nodes, edit ACLs,
// exec a node. Every write that changes an existing node sends If-Match with
// the version the user saw when the form opened, so a change made meanwhile
// is never overwritten silently: the server answers 412 and the form says so.

import { ApiError, putNode, addChild, deleteNode, execNode, token } from './api.js';
import { model } from './model.js';
import { go, href } from './router.js';
import { el, editText, fmtValue } from './util.js';

export const FORMATS = ['int', 'float', 'bool', 'string', 'date', 'time', 'datetime', 'binary', 'base64', 'json', 'null'];
const COMMANDS = ['Add', 'Delete', 'Exec', 'Get', 'Replace'];

/** An error as the user sees it: the server's code and message, always. */
export function errorBox(err, { onReload } = {}) {
  const e = err instanceof ApiError ? err : new ApiError(0, 'client_error', String((err && err.message) || err));
  if (e.status === 412) {
    return el(
      'div',
      { class: 'error stale', role: 'alert', dataset: { code: e.code } },
      el('strong', null, 'Changed meanwhile. '),
      'This node was changed by someone else after you opened the form, so your write was refused (',
      el('code', null, e.code),
      `${e.message}). Reload to see the current version, then apply your change again.`,
      onReload ? el('div', { class: 'buttons' }, el('button', { type: 'button', class: 'primary', onclick: onReload }, 'Reload')) : null,
    );
  }
  return el(
    'div',
    { class: 'error', role: 'alert', dataset: { code: e.code } },
    el('code', null, e.code),
    el('span', { class: 'msg' }, e.message),
    e.uri ? el('div', { class: 'uri' }, e.uri) : null,
  );
}

/** Whether writes make sense to offer: a token, or an ACL that grants `cmd` to anyone. */
export function canTry(node, cmd) {
  if (token()) return true;
  const acl = parseAcl(node.props && node.props.effective_acl);
  return (acl[cmd] || []).includes('*');
}

export function parseAcl(s) {
  const out = {};
  if (!s) return out;
  for (const part of String(s).split('&')) {
    const [cmd, list] = part.split('=');
    if (cmd) out[cmd] = list ? list.split('+').filter(Boolean) : [];
  }
  return out;
}

/** Turns the text typed for a format into the JSON text of the value (big integers kept exact). */
export function encodeValue(text, format) {
  const t = text.trim();
  switch (format) {
    case 'int':
      if (!/^-?\d+$/.test(t)) throw new Error('an int is digits with an optional minus sign');
      return t;
    case 'float': {
      const n = Number(t);
      if (t === '' || !Number.isFinite(n)) throw new Error('not a number');
      return JSON.stringify(n);
    }
    case 'bool':
      if (t !== 'true' && t !== 'false') throw new Error('a bool is true or false');
      return t;
    case 'null':
      return 'null';
    case 'json':
      try {
        JSON.parse(t);
      } catch (e) {
        throw new Error(`invalid JSON: ${e.message}`);
      }
      return t;
    default:
      return JSON.stringify(text);
  }
}

function formatSelect(current, id) {
  return el('select', { id }, FORMATS.map((f) => el('option', { value: f, selected: f === current }, f)));
}

function valueInput(format, text, id) {
  if (format === 'bool') {
    return el('select', { id, class: 'value-input' }, ['true', 'false'].map((b) => el('option', { value: b, selected: text === b }, b)));
  }
  if (format === 'json' || format === 'string' || format === 'base64' || format === 'binary') {
    return el('textarea', { id, class: 'value-input', rows: format === 'json' ? 6 : 2, spellcheck: 'false' }, text);
  }
  const input = el('input', { id, class: 'value-input', type: 'text', spellcheck: 'false', disabled: format === 'null' });
  input.value = text;
  return input;
}

/** The leaf editor: value and format, saved with If-Match. */
export function valueEditor(node, { onClose }) {
  let base = node.props ? node.props.version : null;
  const box = el('div', { class: 'editor' });
  const msg = el('div', { class: 'msg' });
  const fmt = formatSelect(node.format || 'string', 'edit-format');
  let input = valueInput(fmt.value, editText(node.value, node.format), 'edit-value');
  const since = el('span', { class: 'muted' });
  const showBase = () => {
    since.textContent = base == null ? '' : `editing version ${base}`;
  };
  showBase();
  fmt.addEventListener('change', () => {
    const keep = input.value;
    const next = valueInput(fmt.value, keep, 'edit-value');
    input.replaceWith(next);
    input = next;
  });
  const save = el('button', { type: 'submit', class: 'primary', id: 'edit-save' }, 'Save');
  const form = el(
    'form',
    { class: 'form', 'aria-label': `Edit ${node.uri}` },
    el('label', { for: 'edit-format' }, 'Format'),
    fmt,
    el('label', { for: 'edit-value' }, 'Value'),
    el('div', null, input),
    el('div', { class: 'buttons full' }, save, el('button', { type: 'button', onclick: onClose }, 'Cancel'), since),
  );
  const reload = async () => {
    msg.replaceChildren();
    try {
      await model.loadProps(node);
      base = node.props ? node.props.version : null;
      showBase();
      msg.replaceChildren(el('div', { class: 'success' }, `Reloaded: the current value is ${fmtValue(node.value, node.format)} (version ${base}). Your text is kept; save again to apply it.`));
    } catch (e) {
      msg.replaceChildren(errorBox(e));
    }
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    let body;
    try {
      body = `{"value":${encodeValue(input.value, fmt.value)},"format":${JSON.stringify(fmt.value)}}`;
    } catch (e) {
      msg.replaceChildren(errorBox(new ApiError(0, 'invalid_value', e.message)));
      return;
    }
    save.disabled = true;
    try {
      const { data } = await putNode(node.segs, body, base);
      base = data && data.version != null ? data.version : base;
      msg.replaceChildren(el('div', { class: 'success', role: 'status' }, `Saved: version ${base}.`));
      model.loadProps(node).catch(() => {});
      setTimeout(onClose, 700);
    } catch (e) {
      msg.replaceChildren(errorBox(e, { onReload: reload }));
    } finally {
      save.disabled = false;
    }
  });
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    if (e.key === 'Escape') onClose();
  });
  box.append(form, msg);
  queueMicrotask(() => input.focus());
  return box;
}

/** Adds a child to an interior node (a leaf with a value, or an empty interior node). */
export function addChildForm(node) {
  const msg = el('div');
  const name = el('input', { id: 'add-name', type: 'text', placeholder: '(generated when empty)', spellcheck: 'false' });
  const kind = el('select', { id: 'add-kind' }, el('option', { value: 'leaf' }, 'leaf'), el('option', { value: 'interior' }, 'interior'));
  const fmt = formatSelect('string', 'add-format');
  const value = el('input', { id: 'add-value', type: 'text', spellcheck: 'false' });
  const syncKind = () => {
    fmt.disabled = value.disabled = kind.value === 'interior';
  };
  kind.addEventListener('change', syncKind);
  const form = el(
    'form',
    { class: 'form', 'aria-label': `Add a child to ${node.uri}` },
    el('label', { for: 'add-name' }, 'Name'),
    name,
    el('label', { for: 'add-kind' }, 'Kind'),
    kind,
    el('label', { for: 'add-format' }, 'Format'),
    fmt,
    el('label', { for: 'add-value' }, 'Value'),
    value,
    el('div', { class: 'buttons full' }, el('button', { type: 'submit', class: 'primary' }, 'Add child')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    let body;
    try {
      const n = name.value.trim() ? `"name":${JSON.stringify(name.value.trim())},` : '';
      body = kind.value === 'interior' ? `{${n}"children":{}}` : `{${n}"value":${encodeValue(value.value, fmt.value)},"format":${JSON.stringify(fmt.value)}}`;
    } catch (e) {
      msg.replaceChildren(errorBox(new ApiError(0, 'invalid_value', e.message)));
      return;
    }
    try {
      const { data } = await addChild(node.segs, body);
      const uri = data && data.uri;
      msg.replaceChildren(el('div', { class: 'success', role: 'status' }, 'Created ', el('a', { href: href(segsFromUri(uri, node, name.value)) }, uri || 'the node'), '.'));
      name.value = '';
      value.value = '';
      model.loadChildren(node, { force: true }).catch(() => {});
    } catch (e) {
      msg.replaceChildren(errorBox(e));
    }
  });
  return el('div', null, form, msg);
}

function segsFromUri(uri, parent, typed) {
  if (uri && uri.startsWith(parent.uri === '.' ? './' : `${parent.uri}/`)) {
    const rest = uri.slice(parent.uri === '.' ? 2 : parent.uri.length + 1);
    return [...parent.segs, rest.replace(/\\\//g, '/').replace(/\\\\/g, '\\')];
  }
  return [...parent.segs, typed];
}

/** Delete with an inline confirmation (no blocking dialog), and If-Match. */
export function deleteControl(node) {
  const msg = el('div');
  const wrap = el('div');
  const ask = el('button', { type: 'button', class: 'danger', id: 'delete-node' }, 'Delete…');
  ask.addEventListener('click', () => {
    const version = node.props ? node.props.version : null;
    const yes = el('button', { type: 'button', class: 'danger', id: 'delete-confirm' }, 'Delete');
    const no = el('button', { type: 'button' }, 'Cancel');
    const confirm = el('div', { class: 'error stale', role: 'alertdialog', 'aria-label': 'Confirm delete' },
      `Delete ${node.uri}${node.kind === 'interior' ? ' and everything below it' : ''}?`,
      el('div', { class: 'buttons' }, yes, no));
    no.addEventListener('click', () => confirm.remove());
    yes.addEventListener('click', async () => {
      try {
        await deleteNode(node.segs, version);
        confirm.remove();
        go(node.segs.slice(0, -1));
      } catch (e) {
        msg.replaceChildren(errorBox(e, {
          onReload: async () => {
            msg.replaceChildren();
            await model.loadProps(node).catch((err) => msg.replaceChildren(errorBox(err)));
          },
        }));
      }
    });
    wrap.replaceChildren(confirm);
    no.focus();
  });
  return el('div', null, ask, wrap, msg);
}

/** The ACL editor: principals per command, or none of its own (inherit). */
export function aclEditor(node, { onClose }) {
  let base = node.props ? node.props.version : null;
  const own = parseAcl(node.props && node.props.acl);
  const eff = parseAcl(node.props && node.props.effective_acl);
  const start = node.props && node.props.acl ? own : eff;
  const msg = el('div');
  const inherit = el('input', { type: 'checkbox', id: 'acl-inherit', checked: !(node.props && node.props.acl) });
  const inputs = {};
  const rows = COMMANDS.map((cmd) => {
    const input = el('input', { type: 'text', id: `acl-${cmd}`, spellcheck: 'false', placeholder: 'e.g. admin+ops or *' });
    input.value = (start[cmd] || []).join('+');
    inputs[cmd] = input;
    return [el('label', { for: `acl-${cmd}` }, cmd), input];
  });
  const sync = () => Object.values(inputs).forEach((i) => (i.disabled = inherit.checked));
  inherit.addEventListener('change', sync);
  sync();
  const form = el(
    'form',
    { class: 'form', 'aria-label': `Edit the ACL of ${node.uri}` },
    el('label', { class: 'full' }, inherit, ' No ACL of its own (inherit from the parent)'),
    rows.flat(),
    el('div', { class: 'buttons full' }, el('button', { type: 'submit', class: 'primary', id: 'acl-save' }, 'Save ACL'), el('button', { type: 'button', onclick: onClose }, 'Cancel')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    let acl = null;
    if (!inherit.checked) {
      const parts = [];
      for (const cmd of COMMANDS) {
        const list = inputs[cmd].value.split(/[+\s,]+/).filter(Boolean);
        const bad = list.find((p) => !/^[A-Za-z0-9._@:*-]{1,128}$/.test(p));
        if (bad) {
          msg.replaceChildren(errorBox(new ApiError(0, 'invalid_value', `"${bad}" is not a principal (letters, digits, ._@:*-)`)));
          return;
        }
        if (list.length) parts.push(`${cmd}=${list.join('+')}`);
      }
      acl = parts.join('&');
    }
    try {
      await putNode(node.segs, { acl }, base);
      await model.loadProps(node).catch(() => {});
      base = node.props ? node.props.version : base;
      msg.replaceChildren(el('div', { class: 'success', role: 'status' }, 'ACL saved.'));
      setTimeout(onClose, 700);
    } catch (e) {
      msg.replaceChildren(errorBox(e, {
        onReload: async () => {
          await model.loadProps(node).catch(() => {});
          base = node.props ? node.props.version : base;
          msg.replaceChildren(el('div', { class: 'success' }, `Reloaded (version ${base}).`));
        },
      }));
    }
  });
  return el('div', null, form, msg);
}

/** Exec a node with JSON data; shows the handler's result. */
export function execForm(node) {
  const data = el('textarea', { id: 'exec-data', rows: 3, spellcheck: 'false', 'aria-label': 'Exec data (JSON)' }, '{}');
  const out = el('div');
  const run = el('button', { type: 'submit', class: 'primary', id: 'exec-run' }, 'Exec');
  const form = el('form', { 'aria-label': `Exec ${node.uri}` }, data, el('div', { class: 'buttons' }, run));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    let body;
    try {
      body = data.value.trim() ? JSON.parse(data.value) : {};
    } catch (e) {
      out.replaceChildren(errorBox(new ApiError(0, 'invalid_json', e.message)));
      return;
    }
    run.disabled = true;
    try {
      const { data: res } = await execNode(node.segs, body);
      out.replaceChildren(el('pre', { class: 'value-big exec-result' }, JSON.stringify(res && 'result' in res ? res.result : res, null, 2)));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    } finally {
      run.disabled = false;
    }
  });
  return el('div', null, form, out);
}

