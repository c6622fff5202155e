// The live stream: GET /events read with fetch() and parsed here.
//
// EventSource cannot send an Authorization header, and dmtree takes the token
// from that header only; putting it in the URL would leak it into logs. So
// the stream is a streaming fetch with a small Server-Sent Events parser.
// After any disconnect (a server restart, a network blip) it reconnects with
// backoff and sends Last-Event-ID, so the server replays what was missed.

import { authHeaders } from './api.js';

const MIN_BACKOFF = 250;
const MAX_BACKOFF = 2000;

export class EventStream {
  /**
   * pattern: a URI pattern (`./config/**`). handlers: onEvent(ev), onGap(gap),
   * onStatus(state, detail) with state 'connecting' | 'connected' |
   * 'reconnecting' | 'error' | 'closed'.
   */
  constructor(pattern, handlers) {
    this.pattern = pattern;
    this.h = handlers;
    this.lastId = null;
    this.closed = false;
    this.ctrl = null;
    this.opened = new Promise((resolve) => (this._resolveOpened = resolve));
    this._run();
  }

  close() {
    this.closed = true;
    if (this.ctrl) this.ctrl.abort();
    this._resolveOpened();
    this._status('closed');
  }

  _status(state, detail) {
    this.state = state;
    if (this.h.onStatus) this.h.onStatus(state, detail);
  }

  async _run() {
    let backoff = MIN_BACKOFF;
    let first = true;
    while (!this.closed) {
      this._status(first ? 'connecting' : 'reconnecting');
      this.ctrl = new AbortController();
      const headers = { Accept: 'text/event-stream', ...authHeaders() };
      if (this.lastId != null) headers['Last-Event-ID'] = String(this.lastId);
      let wait = backoff;
      try {
        const resp = await fetch(`/events?uri=${encodeURIComponent(this.pattern)}`, {
          headers,
          signal: this.ctrl.signal,
          cache: 'no-store',
        });
        if (!resp.ok) {
          const detail = await errorDetail(resp);
          this._status('error', detail);
          this._resolveOpened();
          // A refused stream (bad token, too many streams) will not get better at once.
          wait = MAX_BACKOFF * 2;
        } else {
          // Resume from where this stream started even if no event came before
          // a disconnect: the server says which revision that is.
          const start = resp.headers.get('Dmtree-Revision');
          if (this.lastId == null && start != null && /^\d+$/.test(start)) this.lastId = Number(start);
          this._status('connected');
          this._resolveOpened();
          first = false;
          backoff = MIN_BACKOFF;
          await this._read(resp.body);
          wait = MIN_BACKOFF;
        }
      } catch (e) {
        if (this.closed) return;
        this._resolveOpened();
      }
      if (this.closed) return;
      if (this.state !== 'error') this._status('reconnecting');
      await new Promise((r) => setTimeout(r, wait));
      backoff = Math.min(backoff * 2, MAX_BACKOFF);
    }
  }

  async _read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let end;
      // Events end with a blank line; the server uses \n, the spec allows \r\n.
      while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end).replace(/^\r?\n\r?\n/, '');
        this._dispatch(block);
      }
    }
  }

  _dispatch(block) {
    let id = null;
    let type = 'message';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue; // keep-alive comments
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = val;
      else if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
    }
    if (id != null && /^\d+$/.test(id)) this.lastId = Number(id);
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join('\n'));
    } catch {
      return;
    }
    if (type === 'gap') {
      if (this.h.onGap) this.h.onGap(payload);
    } else if (this.h.onEvent) {
      this.h.onEvent(payload);
    }
  }
}

async function errorDetail(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch {
    /* not JSON */
  }
  return { code: `http_${resp.status}`, message: resp.statusText, uri: '' };
}
