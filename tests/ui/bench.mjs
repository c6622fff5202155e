// Measures the web UI in headless chromium against the real binary:
//  1. bytes transferred (compressed, as on the wire) for the first load of /ui/,
//     and what the ContextStore view adds (its module and uPlot, loaded lazily);
//  2. time to first render of a node with 10 000 children;
//  3. latency from a PUT to the change in the DOM, p50 and p99 over 100 changes.
// Run: cd tests/ui && npm ci && DMTREE_BIN=../../target/release/dmtree node bench.mjs

import { Server, launch, sleep } from './harness.mjs';

const RUNS = 5;
const CHANGES = 100;

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

/** Encoded (compressed) bytes per URL, headers included, from the DevTools protocol. */
async function recordTransfers(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const urls = new Map();
  const done = [];
  cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, { url: e.response.url, encoding: (e.response.headers['content-encoding'] || e.response.headers['Content-Encoding'] || '') }));
  cdp.on('Network.loadingFinished', (e) => {
    const r = urls.get(e.requestId);
    if (r) done.push({ ...r, bytes: e.encodedDataLength });
  });
  return { done, reset: () => done.splice(0) };
}

async function main() {
  const server = new Server();
  await server.start();
  const browser = await launch();
  try {
    await server.put('config/app/limit', 1);
    const big = {};
    for (let i = 0; i < 10000; i++) big[`n${String(i).padStart(5, '0')}`] = i;
    const r = await server.api('PATCH', '/tree/config/big', big);
    if (r.status >= 300) throw new Error(JSON.stringify(r.body));
    await server.api('PUT', '/tree/contextstore/config/subscriptions/cpu', { value: { pattern: './config/usage/*/cpu', type: 'cpu', fields: ['user'] } });
    await server.api('PUT', '/tree/contextstore/config/handlers/cpu', { value: { kind: 'aggregate', input: 'cpu', keys: ['user'], value: 'value', window_s: 60, lateness_s: 0 } });
    await server.put('config/usage/alice/cpu', 5);

    // 1. First load.
    {
      const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
      const page = await context.newPage();
      const t = await recordTransfers(page);
      await page.goto(`${server.url}/ui/`);
      await page.locator('#tree .trow[data-uri="./config"]').waitFor({ timeout: 10000 });
      await sleep(500);
      const assets = t.done.filter((x) => x.url.includes('/ui/'));
      const api = t.done.filter((x) => !x.url.includes('/ui/'));
      const sum = (xs) => xs.reduce((a, x) => a + x.bytes, 0);
      console.log(`First load of /ui/: ${kb(sum(assets))} of UI assets in ${assets.length} requests (compressed), ${kb(sum(t.done))} with the API calls (${api.length})`);
      for (const x of assets.sort((a, b) => b.bytes - a.bytes)) console.log(`  ${String(x.bytes).padStart(7)} B  ${x.encoding.padEnd(4) || '-   '} ${x.url.replace(server.url, '')}`);
      t.reset();
      await page.evaluate(() => { location.hash = '#/contextstore'; });
      await page.locator('#agg-chart canvas').waitFor({ timeout: 10000 });
      await sleep(500);
      const extra = t.done.filter((x) => x.url.includes('/ui/'));
      console.log(`The ContextStore view adds ${kb(sum(extra))} (${extra.map((x) => x.url.replace(`${server.url}/ui/`, '')).join(', ')})`);
      await context.close();
    }

    // 2. A node with 10 000 children.
    {
      const cold = [];
      const nav = [];
      for (let i = 0; i < RUNS; i++) {
        const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
        const page = await context.newPage();
        // From navigation start to the table's first page and the tree's rows in the DOM.
        await page.goto(`${server.url}/ui/#/config/big`);
        const t = await page.waitForFunction(() => {
          const rows = document.querySelectorAll('#children tbody tr').length;
          const tree = document.querySelector('#tree .trow[data-uri="./config/big/n00000"]');
          return rows === 100 && tree ? performance.now() : false;
        }, null, { timeout: 20000, polling: 'raf' });
        cold.push(await t.jsonValue());
        // In the app: from ./config to ./config/big (the listing is requested again).
        await page.evaluate(() => { location.hash = '#/config'; });
        await page.locator('#children tr[data-name="big"]').waitFor();
        const ms = await page.evaluate(() => new Promise((resolve) => {
          const t0 = performance.now();
          location.hash = '#/config/big';
          const check = () => {
            const rows = document.querySelectorAll('#children tbody tr').length;
            if (rows === 100 && document.querySelector('#tree .trow[data-uri="./config/big/n00000"]')) resolve(performance.now() - t0);
            else requestAnimationFrame(check);
          };
          requestAnimationFrame(check);
        }));
        nav.push(ms);
        await context.close();
      }
      console.log(`10 000-child node, page load to first render: median ${median(cold).toFixed(0)} ms (min ${Math.min(...cold).toFixed(0)}, max ${Math.max(...cold).toFixed(0)}; ${RUNS} runs)`);
      console.log(`10 000-child node, navigation in the app to first render: median ${median(nav).toFixed(0)} ms (min ${Math.min(...nav).toFixed(0)}, max ${Math.max(...nav).toFixed(0)})`);
    }

    // 3. PUT → DOM. The PUT is sent from the page (a plain fetch, not the UI's
    // code), so that both ends are timed on one clock; the DOM changes when
    // the event arrives on the UI's stream.
    {
      const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
      const page = await context.newPage();
      await page.goto(`${server.url}/ui/#/config/app/limit`);
      await page.waitForFunction(() => document.querySelector('#live').dataset.state === 'connected', null, { timeout: 10000 });
      await page.locator('#node-value').waitFor();
      const res = await page.evaluate(async ({ token, n }) => {
        const out = [];
        const valueEl = () => document.querySelector('#node-value');
        for (let i = 0; i < n; i++) {
          const v = String(10000 + i);
          const seen = new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`value ${v} not shown within 5 s`)), 5000);
            const obs = new MutationObserver(() => {
              if (valueEl().textContent === v) {
                obs.disconnect();
                clearTimeout(timer);
                resolve(performance.now());
              }
            });
            obs.observe(valueEl(), { childList: true, characterData: true, subtree: true });
          });
          const t0 = performance.now();
          const r = await fetch('/tree/config/app/limit', { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: `{"value": ${v}}` });
          const t1 = performance.now();
          if (!r.ok) throw new Error(`PUT ${r.status}`);
          const t2 = await seen;
          out.push({ dom: t2 - t0, put: t1 - t0 });
          await new Promise((x) => setTimeout(x, 20));
        }
        return out;
      }, { token: server.token, n: CHANGES });
      const dom = res.map((x) => x.dom);
      const put = res.map((x) => x.put);
      console.log(`PUT → DOM over ${CHANGES} changes: p50 ${pct(dom, 50).toFixed(1)} ms, p99 ${pct(dom, 99).toFixed(1)} ms (the PUT itself answered in p50 ${pct(put, 50).toFixed(1)} ms, p99 ${pct(put, 99).toFixed(1)} ms)`);
      await context.close();
    }
  } finally {
    await browser.close();
    await server.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
