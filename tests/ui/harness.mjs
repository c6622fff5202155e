// Shared by the UI tests and the measurements: starts a real dmtree on a free
// loopback port with a fresh data directory, talks to it with fetch, and
// drives Debian's chromium (headless) through playwright-core.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// DMTREE_BIN is taken as given (relative to the working directory); by default the debug build.
export const BIN = process.env.DMTREE_BIN ? path.resolve(process.env.DMTREE_BIN) : path.join(ROOT, 'target', 'debug', 'dmtree');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SHOTS = path.join(ROOT, 'target', 'ui-screenshots');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** One dmtree process; restart() keeps its port and data directory. */
export class Server {
  constructor({ config = '', log = !!process.env.DMTREE_TEST_LOG } = {}) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'dmtree-ui-'));
    this.data = path.join(this.dir, 'data');
    this.configFile = path.join(this.dir, 'dmtree.toml');
    writeFileSync(this.configFile, config);
    this.log = log;
    this.proc = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data', this.data, '--config', this.configFile, '--log', 'warn'];
    this.proc = spawn(BIN, args, { stdio: ['ignore', this.log ? 'inherit' : 'ignore', this.log ? 'inherit' : 'pipe'] });
    const proc = this.proc;
    // Never leave a server behind, even when the test process dies first.
    process.once('exit', () => proc.exitCode === null && proc.kill('SIGKILL'));
    this.stderr = '';
    if (this.proc.stderr) this.proc.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-4000); });
    const exited = new Promise((_, reject) => this.proc.once('exit', (code) => reject(new Error(`dmtree exited (${code}): ${this.stderr}`))));
    exited.catch(() => {});
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) break;
      } catch {
        /* not yet listening */
      }
      await Promise.race([sleep(100), exited]);
    }
    const h = await fetch(`${this.url}/healthz`).catch(() => null);
    if (!h || !h.ok) throw new Error(`dmtree did not start on ${this.url}: ${this.stderr}`);
    this.token = readFileSync(path.join(this.data, 'admin.token'), 'utf8').trim();
  }

  /** SIGKILL, as a crash. */
  async kill() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await Promise.race([gone, sleep(5000)]);
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A REST call as admin (or anonymous with auth: false). Resolves {status, body, etag}. */
  async api(method, p, body, { auth = true, headers = {} } = {}) {
    const h = { ...headers };
    if (auth) h.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(`${this.url}${p}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(10000) });
    const text = await r.text();
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status: r.status, body: parsed, etag: r.headers.get('etag') };
  }

  async put(p, value, extra = {}) {
    const r = await this.api('PUT', `/tree/${p}`, { value, ...extra });
    if (r.status >= 300) throw new Error(`PUT ${p}: ${r.status} ${JSON.stringify(r.body)}`);
    return r;
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container has no user namespaces for the sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    timeout: 30000,
  });
}

/**
 * A page with its console errors and page errors collected. `allowed` takes
 * Chromium's own network lines ("Failed to load resource: …") that a test
 * provokes on purpose (a 412, a refused connection while the server is down),
 * each matched by URL and text: the browser logs them whatever the script does.
 */
export async function openPage(browser, server, { token = null, viewport = { width: 1400, height: 860 } } = {}) {
  const context = await browser.newContext({ viewport, baseURL: server.url });
  if (token) await context.addInitScript((t) => sessionStorage.setItem('dmtree.token', t), token);
  const page = await context.newPage();
  page.setDefaultTimeout(8000);
  const problems = [];
  const allowed = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const url = (m.location() && m.location().url) || '';
    if (allowed.some((a) => a.url.test(url) && a.text.test(m.text()))) return;
    problems.push(`console.error: ${m.text()} (${url})`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.stack || e}`));
  // Requests in flight, but for the long-lived event stream.
  const inflight = new Set();
  const track = (req) => !req.url().includes('/events?');
  page.on('request', (req) => track(req) && inflight.add(req));
  page.on('requestfinished', (req) => inflight.delete(req));
  page.on('requestfailed', (req) => inflight.delete(req));
  return {
    page,
    context,
    problems,
    /** Lets one expected browser network line through (url and text are RegExps). */
    allow(url, text) {
      allowed.push({ url, text });
    },
    async close() {
      await context.close();
    },
    /** Waits until no request (but the stream) has been in flight for `quiet` ms. */
    async settle(quiet = 300, timeout = 8000) {
      const deadline = Date.now() + timeout;
      let calm = Date.now();
      while (Date.now() < deadline) {
        if (inflight.size) calm = Date.now();
        else if (Date.now() - calm >= quiet) return;
        await sleep(25);
      }
      throw new Error(`requests still in flight: ${[...inflight].map((r) => r.url()).join(', ')}`);
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
}

/** The text of a node's value in the node pane, waiting up to `timeout` for `expected`. */
export async function waitValue(page, expected, timeout = 5000) {
  await page.waitForFunction((v) => {
    const e = document.querySelector('#node-value');
    return e && e.textContent.trim() === v;
  }, String(expected), { timeout });
}

export async function waitLive(page, state = 'connected', timeout = 8000) {
  await page.waitForFunction((s) => document.querySelector('#live').dataset.state === s, state, { timeout });
}
