// End-to-end tests of the web UI: the real dmtree binary (DMTREE_BIN, default
// target/debug/dmtree), Debian's chromium headless, playwright-core.
// Run: cd tests/ui && npm ci && node --test
// Screenshots of the main views go to target/ui-screenshots/.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launch, openPage, screenshot, waitValue, waitLive, sleep } from './harness.mjs';

let server;
let browser;
const pages = [];

/** A page whose console must stay clean; checked after each test. */
async function open(opts) {
  const p = await openPage(browser, server, opts);
  pages.push(p);
  return p;
}

before(async () => {
  server = new Server();
  await server.start();
  browser = await launch();
  await server.put('config/app/limit', 42);
  await server.put('config/app/name', 'shop');
});

afterEach(async () => {
  const open = pages.splice(0);
  const problems = open.flatMap((p) => p.problems);
  await Promise.all(open.map((p) => p.close().catch(() => {})));
  assert.deepEqual(problems, [], 'no console errors and no page errors');
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('tree: open /ui/, expand to a leaf with the mouse and the keyboard, read its value', async () => {
  const { page } = await open();
  // `/` in a browser redirects to the UI.
  await page.goto('/');
  assert.match(page.url(), /\/ui\/$/);
  await page.locator('#tree .trow[data-uri="./config"] .tn').click();
  await page.locator('#tree .trow[data-uri="./config/app"]').waitFor();
  await page.locator('#tree .trow[data-uri="./config/app"] .tn').click();
  await page.locator('#tree .trow[data-uri="./config/app/limit"]').waitFor();
  await page.waitForFunction(() => location.hash === '#/config/app');
  // The children table of ./config/app lists the leaf with its value.
  await page.locator('#children tr[data-name="limit"] td.v', { hasText: '42' }).waitFor();
  // Keyboard: the focus is on ./config/app; ↓ reaches `limit`, Enter opens it.
  await page.locator('#tree').focus();
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/config/app/limit');
  await waitValue(page, '42');
  assert.equal(await page.locator('#node-version').textContent().then((t) => /version \d+/.test(t)), true);
  assert.match(await page.locator('.crumbs').textContent(), /config\s*\/\s*app\s*\/\s*limit/);
  await screenshot(page, 'tree');
  // A shared link opens the same view in a fresh page.
  const other = await open();
  await other.page.goto('/ui/#/config/app/limit');
  await waitValue(other.page, '42');
  await screenshot(other.page, 'node');
});

test('search: a path prefix lists matching nodes and opens one', async () => {
  const { page } = await open();
  await page.goto('/ui/#/');
  await page.locator('#tree .trow[data-uri="./config"]').waitFor();
  await page.locator('#search').fill('config/app/li');
  await page.locator('#search-list li', { hasText: './config/app/limit' }).waitFor();
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash === '#/config/app/limit');
  await waitValue(page, '42');
});

test('live: a PUT from outside appears within 1 s; added and deleted nodes come and go', async () => {
  const { page } = await open();
  await page.goto('/ui/#/config/app/limit');
  await waitValue(page, '42');
  await waitLive(page);
  await server.put('config/app/limit', 43);
  await waitValue(page, '43', 1000);
  // Highlighted briefly, and the tree pane row changed too.
  assert.ok(await page.locator('#node-value.flash').count());
  await page.locator('#tree .trow[data-uri="./config/app/limit"] .tv', { hasText: '43' }).waitFor({ timeout: 1000 });

  await page.goto('/ui/#/config/app');
  await page.locator('#children tr[data-name="limit"]').waitFor();
  await waitLive(page);
  await server.put('config/app/fresh', 'new');
  await page.locator('#children tr[data-name="fresh"]').waitFor({ timeout: 1000 });
  await page.locator('#tree .trow[data-uri="./config/app/fresh"]').waitFor({ timeout: 1000 });
  const del = await server.api('DELETE', '/tree/config/app/fresh');
  assert.equal(del.status, 204);
  await page.locator('#children tr[data-name="fresh"]').waitFor({ state: 'detached', timeout: 1000 });
  await page.locator('#tree .trow[data-uri="./config/app/fresh"]').waitFor({ state: 'detached', timeout: 1000 });
  await page.locator('#events td', { hasText: 'deleted' }).first().waitFor();
});

test('editing: a value set in the page with a token is what curl reads', async () => {
  const p = await open();
  const { page } = p;
  await page.goto('/ui/#/config/app/limit');
  await page.locator('#node-value').waitFor();
  // No token yet: no edit button.
  assert.equal(await page.locator('#edit-value-btn').count(), 0);
  // A wrong token is refused with its code, and not kept.
  p.allow(/\/whoami$/, /status of 401/);
  await page.locator('#token-input').fill('not-a-token');
  await page.locator('#token-use').click();
  await page.locator('#toast', { hasText: 'invalid_token' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('dmtree.token')), null);
  await page.locator('#token-input').fill(server.token);
  await page.locator('#token-use').click();
  // The header names the principal the server resolved (GET /whoami).
  await page.locator('#token-state', { hasText: 'admin (this tab only)' }).waitFor();
  // The token is in sessionStorage, never in the URL.
  assert.ok(!page.url().includes(server.token));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('dmtree.token')), server.token);
  await page.locator('#edit-value-btn').click();
  await page.locator('#edit-format').selectOption('int');
  await page.locator('#edit-value').fill('77');
  await screenshot(page, 'editing');
  await page.locator('#edit-save').click();
  await page.locator('.success', { hasText: 'Saved' }).waitFor();
  const r = await server.api('GET', '/tree/config/app/limit', undefined, { auth: false });
  assert.equal(r.body.value, 77);
  assert.equal(r.body.format, 'int');
  await waitValue(page, '77');

  // A JSON value with its format, and a new child through the form.
  await page.goto('/ui/#/config/app');
  await page.locator('#add-child summary').click();
  await page.locator('#add-name').fill('opts');
  await page.locator('#add-format').selectOption('json');
  await page.locator('#add-value').fill('{"a": [1, 2]}');
  await page.locator('#add-child button[type=submit]').click();
  await page.locator('.success', { hasText: 'Created' }).waitFor();
  const opts = await server.api('GET', '/tree/config/app/opts');
  assert.deepEqual(opts.body.value, { a: [1, 2] });
  assert.equal(opts.body.format, 'json');

  // An ACL edit, sent as the ACL string.
  await page.goto('/ui/#/config/app/opts');
  await page.locator('#acl-edit-btn').click();
  await page.locator('#acl-inherit').uncheck();
  await page.locator('#acl-Get').fill('admin+ops');
  await page.locator('#acl-Replace').fill('admin');
  await page.locator('#acl-Delete').fill('admin');
  for (const c of ['Add', 'Exec']) await page.locator(`#acl-${c}`).fill('');
  await page.locator('#acl-save').click();
  await page.locator('.success', { hasText: 'ACL saved' }).waitFor();
  const props = await server.api('GET', '/tree/config/app/opts?props=true');
  assert.equal(props.body.props.acl, 'Delete=admin&Get=admin+ops&Replace=admin');
  await page.locator('#acl-origin', { hasText: 'own ACL' }).waitFor();

  // Exec with JSON data shows the handler's result.
  await page.goto('/ui/#/contextstore/ingest');
  await page.locator('#exec summary').click();
  await page.locator('#exec-data').fill('[{"sender": "ui-test", "type": "note", "payload": {"x": 1}}]');
  await page.locator('#exec-run').click();
  await page.locator('#exec .exec-result', { hasText: '"stored": 1' }).waitFor();

  // Delete with confirmation.
  await page.goto('/ui/#/config/app/opts');
  await page.locator('#delete-node').click();
  await page.locator('#delete-confirm').click();
  await page.waitForFunction(() => location.hash === '#/config/app');
  assert.equal((await server.api('GET', '/tree/config/app/opts')).status, 404);
});

test('a stale edit gets the 412 "changed meanwhile" message, and Reload recovers', async () => {
  const p = await open({ token: server.token });
  const { page } = p;
  // The browser itself logs the refused write as a failed load; that one line is expected.
  p.allow(/\/tree\/config\/app\/name$/, /status of 412/);
  await page.goto('/ui/#/config/app/name');
  await waitValue(page, 'shop');
  await page.locator('#edit-value-btn').click();
  await page.locator('#edit-value').fill('mine');
  // Someone else writes meanwhile.
  await server.put('config/app/name', 'theirs');
  await page.locator('#edit-save').click();
  const stale = page.locator('.error.stale');
  await stale.waitFor();
  assert.match(await stale.textContent(), /Changed meanwhile/);
  assert.equal(await stale.getAttribute('data-code'), 'precondition_failed');
  assert.equal((await server.api('GET', '/tree/config/app/name')).body.value, 'theirs');
  await stale.locator('button', { hasText: 'Reload' }).click();
  await page.locator('.success', { hasText: 'theirs' }).waitFor();
  await page.locator('#edit-save').click();
  await page.locator('.success', { hasText: 'Saved' }).waitFor();
  assert.equal((await server.api('GET', '/tree/config/app/name')).body.value, 'mine');
});

test('anonymous users cannot see an ACL-protected node, and are told so', async () => {
  await server.put('config/secret/key', 's3cr3t-value');
  await server.api('PUT', '/tree/config/secret', { acl: 'Get=admin&Replace=admin' });
  const { page } = await open();
  await page.goto('/ui/#/config/secret/key');
  await page.locator('#forbidden').waitFor();
  assert.equal(await page.locator('#node-value').count(), 0);
  assert.ok(!(await page.content()).includes('s3cr3t-value'));
  // Its listing shows it locked, without asking for it.
  await page.goto('/ui/#/config');
  await page.locator('#children tr[data-name="secret"]', { hasText: 'no access' }).waitFor();
  assert.equal(await page.locator('#tree .trow.locked[data-uri="./config/secret"]').count(), 1);
  // A change to it while anonymous watches ./config is not sent either.
  await waitLive(page);
  await server.put('config/secret/key', 'other-s3cr3t');
  await server.put('config/app/limit', 101);
  await page.locator('#events td', { hasText: './config/app/limit' }).first().waitFor();
  assert.ok(!(await page.content()).includes('other-s3cr3t'));
  // With the admin token the same link shows it.
  const admin = await open({ token: server.token });
  await admin.page.goto('/ui/#/config/secret/key');
  await waitValue(admin.page, 'other-s3cr3t');
});

test('the stream reconnects after a server restart and catches up with Last-Event-ID', async () => {
  const p = await open();
  const { page } = p;
  // While the server is down, chromium logs the broken stream and refused reconnects.
  p.allow(/\/events\?/, /ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|NETWORK_CHANGED)/);
  const resumes = [];
  page.on('request', (req) => {
    if (req.url().includes('/events?')) resumes.push(req.headers()['last-event-id'] || null);
  });
  await page.goto('/ui/#/config/app/limit');
  await waitLive(page);
  await server.put('config/app/limit', 500);
  await waitValue(page, '500', 1000);
  const seen = Number(await page.locator('#live').getAttribute('data-last-event'));
  // The page is done loading (a kill in the middle would break its other requests too).
  await p.settle(600);
  await server.kill();
  await waitLive(page, 'reconnecting');
  await page.locator('#live', { hasText: 'reconnecting' }).waitFor();
  await server.start();
  // Written right after the restart, most likely before the page is back: replayed.
  await server.put('config/app/limit', 501);
  await server.put('config/app/limit', 502);
  await waitValue(page, '502', 10000);
  await waitLive(page);
  const resumed = resumes.filter((h) => h !== null).map(Number);
  assert.ok(resumed.length > 0, 'a reconnect sent Last-Event-ID');
  assert.ok(resumed.every((id) => id >= seen), `resumed from ${resumed} after ${seen}`);
});

test('contextstore: an aggregate renders as a chart with points and legend values', async () => {
  await server.api('PUT', '/tree/contextstore/config/subscriptions/cpu', {
    value: { pattern: './config/usage/*/*/cpu_seconds', type: 'cpu', fields: ['user', 'vm'] },
  });
  await server.api('PUT', '/tree/contextstore/config/handlers/cpu', {
    value: { kind: 'aggregate', input: 'cpu', keys: ['user'], value: 'value', window_s: 2, lateness_s: 0 },
  });
  await server.api('PUT', '/tree/contextstore/config/handlers/cpu-hot', {
    value: { kind: 'threshold', input: 'cpu', keys: ['user'], value: 'value', op: '>', threshold: 25, duration_s: 0 },
  });
  // Two-second windows: eight rounds span three or more of them.
  for (let i = 1; i <= 8; i++) {
    await server.put('config/usage/alice/vm1/cpu_seconds', i * 7);
    await server.put('config/usage/bob/vm1/cpu_seconds', i * 3);
    await sleep(420);
  }
  // What the tree says the newest alice window holds.
  const agg = await server.api('GET', '/tree/contextstore/aggregates/cpu/alice?depth=2');
  const windows = Object.keys(agg.body.children).sort();
  assert.ok(windows.length >= 2, `windows: ${windows}`);
  const newest = agg.body.children[windows[windows.length - 1]].children;

  const { page } = await open({ token: server.token });
  await page.goto('/ui/#/contextstore?agg=cpu&metric=sum&range=15m');
  const canvas = page.locator('#agg-chart canvas');
  await canvas.waitFor();
  const box = await canvas.boundingBox();
  assert.ok(box.width > 200 && box.height > 100, 'the canvas has a size');
  // Pixels of the first series' colour (#1f77b4): lines and points were drawn.
  const drawn = await page.evaluate(() => {
    const c = document.querySelector('#agg-chart canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 31) < 30 && Math.abs(d[i + 1] - 119) < 30 && Math.abs(d[i + 2] - 180) < 30 && d[i + 3] > 100) n++;
    return n;
  });
  assert.ok(drawn > 50, `series pixels drawn: ${drawn}`);
  // The legend shows the newest window's values per key.
  const legend = await page.locator('.u-legend').textContent();
  assert.match(legend, /alice/);
  assert.match(legend, /bob/);
  const aliceValue = await page.locator('.u-legend tr', { hasText: 'alice' }).locator('.u-value').textContent();
  assert.equal(Number(aliceValue), newest.sum.value);
  // The metric picker changes the series: count of the newest window.
  await page.locator('#agg-metric').selectOption('count');
  await page.waitForFunction((v) => {
    const row = [...document.querySelectorAll('.u-legend tr')].find((r) => r.textContent.includes('alice'));
    return row && row.querySelector('.u-value').textContent.trim() === String(v);
  }, newest.count.value);
  // SLA: alice went over 25.
  await page.locator('#sla-table tr', { hasText: 'alice' }).locator('.badge', { hasText: 'violating' }).waitFor();
  await page.locator('#agg-metric').selectOption('sum');
  await screenshot(page, 'contextstore');

  // A leaf's recorded history, from the store.
  await page.goto('/ui/#/config/usage/alice/vm1/cpu_seconds');
  await page.locator('#history-chart canvas').waitFor();
  assert.match(await page.locator('#history').textContent(), /8 recorded changes/);
});

test('managers: the coordinator, members and resources, filtered by status', async () => {
  const coord = await server.api('GET', '/tree/managers/coordinator?depth=1');
  const id = coord.body.children.id.value;
  const term = coord.body.children.term.value;
  const { page } = await open({ token: server.token });
  await page.goto('/ui/#/managers');
  const c = page.locator('#coordinator');
  await c.locator('.stat', { hasText: 'coordinator' }).waitFor();
  assert.match(await c.textContent(), new RegExp(`${id}[\\s\\S]*${term}`));
  await page.locator(`#members tr[data-id="${id}"]`).waitFor();
  const host = `${id}.host`;
  await page.locator(`#resources-table tr[data-id="${host}"] .status-up`).waitFor({ timeout: 10000 });
  await page.locator('.chip[data-status="up"]', { hasText: 'up 1' }).waitFor();
  await screenshot(page, 'managers');
  await page.locator('.chip[data-status="down"]').click();
  await page.locator('#resources-table td', { hasText: 'No resource matches.' }).waitFor();
  assert.match(page.url(), /status=down/);
  await page.locator('.chip[data-status="all"]').click();
  await page.locator('#res-filter').fill('host');
  await page.locator(`#resources-table tr[data-id="${host}"]`).waitFor();
});

test('a node with 10 000 children renders one page in the table and a virtual list in the tree', async () => {
  const body = {};
  for (let i = 0; i < 10000; i++) body[`n${String(i).padStart(5, '0')}`] = i;
  const r = await server.api('PATCH', '/tree/config/big', body);
  assert.ok(r.status < 300, JSON.stringify(r.body));
  const { page } = await open();
  await page.goto('/ui/#/config/big');
  await page.locator('#children-count', { hasText: 'of 10000' }).waitFor();
  assert.equal(await page.locator('#children tbody tr').count(), 100);
  const rows = await page.locator('#tree .trow').count();
  assert.ok(rows < 200, `only the rows in view exist: ${rows}`);
  await page.locator('#children-filter').fill('n0999');
  await page.locator('#children-count', { hasText: '1–10 of 10 matching' }).waitFor();
  // The last child, opened by its link: the tree scrolls its row into view.
  await page.goto('/ui/#/config/big/n09999');
  await waitValue(page, '9999');
  assert.ok(await page.locator('#tree .trow.selected[data-uri="./config/big/n09999"]').isVisible());
});

test('rules: the list with state and last firing, one rule, and explain', async () => {
  // A server of its own, with one-second epochs.
  const s = new Server({ config: '[rules]\nepoch = "1s"\n' });
  await s.start();
  let p = null;
  try {
    await s.put('config/cpu/usage', 95.5);
    const rule = async (name, value) => {
      const r = await s.api('PUT', `/tree/rules/${name}`, { value });
      assert.ok(r.status < 300, JSON.stringify(r.body));
    };
    await rule('hot-cpu', { scope: 'global', when: "value('./config/cpu/usage') > 90.0", actions: [{ set: './config/cpu/alert', value: 'hot' }] });
    await rule('slow-cpu', { scope: 'global', when: "value('./config/cpu/usage') > 50.0", for_epochs: 1000, group: 'ops' });
    await rule('broken', { scope: 'global', when: "value('./config/cpu/usage') > 'high'" });
    const deadline = Date.now() + 10000;
    while ((await s.api('GET', '/tree/rules/hot-cpu/monitoring/firings')).body.value !== 1) {
      assert.ok(Date.now() < deadline, 'hot-cpu fired');
      await sleep(100);
    }
    p = await openPage(browser, s, { token: s.token });
    const { page } = p;
    await page.goto(`${s.url}/ui/#/rules`);
    await page.locator('#nav a[data-view="rules"]:not([hidden])').waitFor();
    await page.locator('#rules-table tr[data-name="hot-cpu"]').waitFor();
    assert.equal(await page.locator('#rules-table tr[data-name="monitoring"]').count(), 0, 'the engine counters are not a rule');
    assert.doesNotMatch(await page.locator('#rules-table tr[data-name="hot-cpu"] td').nth(3).textContent(), /never/);
    await page.locator('#rules-table tr[data-name="broken"]', { hasText: 'when:' }).waitFor();
    assert.match(await page.locator('#rules-engine').textContent(), /Epoch\s*1 s/);
    await page.locator('#rules-table tr[data-name="slow-cpu"] a').click();
    await page.locator('#rule-definition').waitFor({ state: 'attached' });
    await page.locator('#explain-run').click();
    await page.locator('#explain-table tbody tr').first().waitFor();
    assert.match(await page.locator('#explain').textContent(), /1 binding, 0 would fire/);
    assert.match(await page.locator('#explain-table').textContent(), /\(global\).*for_epochs: condition held \d+ of 1000 epochs/s);
    assert.match(await page.locator('#explain-table').textContent(), /\.\/config\/cpu\/usage=95\.5/);
    await screenshot(page, 'rules');
    await page.goto(`${s.url}/ui/#/rules/hot-cpu`);
    await page.locator('#explain-run').click();
    await page.locator('#explain-table', { hasText: 'not armed' }).waitFor();
  } finally {
    // The page goes first: its stream must not see its server die.
    if (p) {
      pages.push(p);
      await p.close();
    }
    await s.stop();
  }
});

test('the rules view is hidden when ./rules is not mounted', async () => {
  const s = new Server({ config: '[rules]\nenabled = false\n' });
  await s.start();
  let p = null;
  try {
    p = await openPage(browser, s, { token: s.token });
    const { page } = p;
    await page.goto(`${s.url}/ui/#/`);
    await page.locator('#tree .trow[data-uri="./managers"]').waitFor();
    assert.equal(await page.locator('#nav a[data-view="rules"]').isHidden(), true);
    assert.equal(await page.locator('#nav a[data-view="managers"]').isHidden(), false);
  } finally {
    if (p) {
      pages.push(p);
      await p.close();
    }
    await s.stop();
  }
});
