// The web console in headless Chromium (playwright-core driving Debian's /usr/bin/chromium)
// against the real warren-server binary: each test clicks through the console as a user would
// and checks the broker's state over the HTTP API. Screenshots of every page go to
// $WARREN_SCREENSHOTS (default interop/browser/screenshots/) for review.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const amqp = require('amqplib');
const { start, api } = require('../broker');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = process.env.WARREN_SCREENSHOTS || path.join(__dirname, '..', 'screenshots');
const TIMEOUT_MS = 60000;

let broker;
let browser;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  broker = await start();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await broker.stop();
});

// A fresh page that accepts confirm() dialogs and fails the test on a page error or a
// Content-Security-Policy violation.
async function newPage(t) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40\d/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  page.on('dialog', (d) => d.accept());
  t.after(async () => {
    await context.close();
    assert.deepEqual(problems, [], 'the page reported errors');
  });
  return page;
}

async function login(page, user = 'guest', pass = 'guest') {
  await page.goto(broker.url);
  await page.fill('#login-user', user);
  await page.fill('#login-pass', pass);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#top:not([hidden])');
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

async function visit(page, hash, ready) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  if (ready) await page.waitForSelector(ready);
}

// Fills one row of an arguments editor inside `scope`.
async function fillArg(scope, prefix, key, value, type) {
  await scope.locator(`input[name=${prefix}-key]`).last().fill(key);
  await scope.locator(`input[name=${prefix}-value]`).last().fill(value);
  await scope.locator(`select[name=${prefix}-type]`).last().selectOption(type);
}

const lastMessage = (page) => page.locator('#messages .msg').last();

// Waits until fn() is truthy (polling), or fails after ms.
async function waitFor(fn, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the console is served with a strict policy, and a wrong password is refused with the reason', { timeout: TIMEOUT_MS }, async (t) => {
  const r = await fetch(broker.url);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-security-policy'), /script-src 'self';/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  const js = await fetch(`${broker.url}console.js`, { method: 'HEAD' });
  assert.equal(js.status, 200);
  assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(js.headers.get('cache-control'), 'no-cache');
  assert.equal((await fetch(`${broker.url}nope.js`)).status, 404);
  assert.equal((await fetch(broker.url, { method: 'POST' })).status, 404);

  const page = await newPage(t);
  await page.goto(broker.url);
  await page.waitForSelector('#login:not([hidden])');
  await shot(page, '00-login');
  await page.fill('#login-user', 'guest');
  await page.fill('#login-pass', 'wrong');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#messages .msg.error');
  assert.match(await lastMessage(page).textContent(), /401 not_authorised: Login failed/);
  assert.equal(await page.isHidden('#top'), true);
  // Nothing about the session is kept beyond sessionStorage, and no password at all.
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('warren.auth')), null);
});

test('a reload keeps the session, a user without a management tag is refused, a deleted user is logged out', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  assert.equal((await call('PUT', '/users/no-tags', { password: 'pw', tags: '' })).status, 201);
  assert.equal((await call('PUT', '/users/carol', { password: 'carol-pw', tags: 'monitoring' })).status, 201);
  const page = await newPage(t);
  await page.goto(broker.url);
  await page.fill('#login-user', 'no-tags');
  await page.fill('#login-pass', 'pw');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#messages .msg.error:has-text("Not management user")');
  assert.equal(await page.isHidden('#top'), true);

  await login(page, 'carol', 'carol-pw');
  assert.equal(await page.textContent('#whoami'), 'carol (monitoring)');
  await page.waitForSelector('#alarms');
  await page.reload();
  await page.waitForSelector('#top:not([hidden])');
  assert.equal(await page.textContent('#whoami'), 'carol (monitoring)');
  // The overview polls every 5 s; once carol is gone the next poll ends the session.
  assert.equal((await call('DELETE', '/users/carol')).status, 204);
  await page.waitForSelector('#login:not([hidden])', { timeout: 15000 });
  await page.waitForSelector('#messages .msg.error:has-text("no longer accepted")');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('warren.auth')), null);
});

test('log in, create a vhost and a user with permissions, declare a queue and a binding, publish, get, purge, delete', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  const page = await newPage(t);
  await login(page);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  await page.waitForSelector('.totals .card');
  await page.waitForSelector('#alarms');
  assert.equal(await page.textContent('#alarms'), 'none');
  assert.match(await page.textContent('main'), /Memory used[\d.]+ MiB \(alarm above [\d.]+ [MG]iB\)/);
  assert.match(await page.textContent('main'), /File descriptors\d+ \(of [\d,]+\)/);
  await shot(page, '01-overview');

  // Admin: a vhost, a user, permissions.
  await visit(page, '#/admin', '#users');
  await page.fill('#add-vhost input[name=name]', 'shop');
  await page.click('#add-vhost button[type=submit]');
  await page.waitForSelector('#vhosts td:text-is("shop")');
  await page.fill('#add-user input[name=name]', 'alice');
  await page.fill('#add-user input[name=password]', 'alice-pw');
  await page.fill('#add-user input[name=tags]', 'management');
  await page.click('#add-user button[type=submit]');
  await page.waitForSelector('#users td:text-is("alice")');
  await waitFor(async () => (await page.locator('#set-permissions select[name=user] option[value=alice]').count()) === 1, 'alice in the user choice');
  await page.selectOption('#set-permissions select[name=user]', 'alice');
  await page.selectOption('#set-permissions select[name=vhost]', 'shop');
  await page.fill('#set-permissions input[name=configure]', '^orders');
  await page.click('#set-permissions button[type=submit]');
  await page.waitForSelector('#permissions td:text-is("alice")');
  const perm = await call('GET', '/permissions/shop/alice');
  assert.equal(perm.status, 200);
  assert.deepEqual([perm.body.configure, perm.body.write, perm.body.read], ['^orders', '.*', '.*']);
  const alice = await call('GET', '/users/alice');
  assert.deepEqual(alice.body.tags, ['management']);
  await shot(page, '02-admin');

  // A queue with an argument, in the new vhost.
  await visit(page, '#/queues', '#queues');
  await page.selectOption('#add-queue select[name=vhost]', 'shop');
  await page.fill('#add-queue input[name=name]', 'orders');
  await fillArg(page.locator('#add-queue'), 'q-args', 'x-max-length', '100', 'number');
  await page.click('#add-queue button[type=submit]');
  await page.waitForSelector('#queues a:text-is("orders")');
  const q = await call('GET', '/queues/shop/orders');
  assert.equal(q.status, 200);
  assert.deepEqual(q.body.arguments, { 'x-max-length': 100 });
  // An API error is shown with its reason, not swallowed.
  await page.selectOption('#add-queue select[name=vhost]', 'shop');
  await page.fill('#add-queue input[name=name]', 'amq.nope');
  await page.click('#add-queue button[type=submit]');
  await page.waitForSelector('#messages .msg.error');
  assert.match(await lastMessage(page).textContent(), /ACCESS_REFUSED.*amq\.nope/);
  await shot(page, '03-queues');

  // An exchange, bound to the queue from the exchange's page.
  await visit(page, '#/exchanges', '#exchanges');
  await page.selectOption('#add-exchange select[name=vhost]', 'shop');
  await page.fill('#add-exchange input[name=name]', 'orders-x');
  await page.selectOption('#add-exchange select[name=type]', 'direct');
  await page.click('#add-exchange button[type=submit]');
  await page.waitForSelector('#exchanges a:text-is("orders-x")');
  await shot(page, '04-exchanges');
  await page.click('#exchanges a:text-is("orders-x")');
  await page.waitForSelector('#bindings-source');
  await page.selectOption('#bind select[name=destination_type]', 'q');
  await page.fill('#bind input[name=destination]', 'orders');
  await page.fill('#bind input[name=routing_key]', 'new');
  await page.click('#bind button[type=submit]');
  await page.waitForSelector('#bindings-source a:text-is("orders")');
  const bindings = await call('GET', '/bindings/shop/e/orders-x/q/orders');
  assert.deepEqual(bindings.body.map((b) => b.routing_key), ['new']);

  // Publish from the exchange page, with a header.
  const publish = page.locator('#publish');
  await publish.locator('input[name=routing_key]').fill('new');
  await fillArg(publish, 'headers', 'order-id', '42', 'number');
  await publish.locator('textarea[name=payload]').fill('hello from the console');
  await publish.locator('button[type=submit]').click();
  await page.waitForSelector('#messages .msg:has-text("Message published.")');
  await shot(page, '05-exchange');
  await waitFor(async () => (await call('GET', '/queues/shop/orders')).body.messages === 1, 'the message in orders');

  // Get it from the queue page (requeued), purge, delete.
  await visit(page, '#/queues/shop/orders', '#q-ready');
  await page.waitForSelector('#bindings a:text-is("orders-x")');
  assert.equal(await page.textContent('#q-ready'), '1');
  await page.selectOption('#get-messages select[name=ackmode]', 'ack_requeue_true');
  await page.click('#get-messages button[type=submit]');
  await page.waitForSelector('#got-messages pre.payload');
  assert.equal(await page.textContent('#got-messages pre.payload'), 'hello from the console');
  assert.match(await page.textContent('#got-messages'), /"order-id": 42/);
  await shot(page, '06-queue');
  assert.equal((await call('GET', '/queues/shop/orders')).body.messages_ready, 1, 'requeued');
  await page.click('#purge');
  await page.waitForSelector('#messages .msg:has-text("Queue orders purged.")');
  await waitFor(async () => (await page.textContent('#q-ready')) === '0', 'ready 0 after purge');
  assert.equal((await call('GET', '/queues/shop/orders')).body.messages, 0);
  await page.click('#delete-queue');
  await page.waitForSelector('#messages .msg:has-text("Queue orders deleted.")');
  assert.equal(await page.evaluate(() => location.hash), '#/queues');
  assert.equal((await call('GET', '/queues/shop/orders')).status, 404);

  // The new user logs in and sees the vhost it may use, not the Admin pages.
  await page.click('#logout');
  await login(page, 'alice', 'alice-pw');
  assert.equal(await page.isHidden('#nav-admin'), true);
  assert.deepEqual(await page.locator('#vhost-filter option').allTextContents(), ['All', 'shop']);
  await visit(page, '#/admin', 'main p.note');
  assert.match(await page.textContent('main'), /need the administrator or policymaker tag/);

  // A policymaker sees only the policies on the Admin page, and sets one in its vhost.
  assert.equal((await call('PUT', '/users/alice', { password: 'alice-pw', tags: 'policymaker' })).status, 204);
  await page.click('#logout');
  await login(page, 'alice', 'alice-pw');
  await visit(page, '#/admin', '#policies');
  assert.equal(await page.locator('#users, #vhosts, #permissions, #export').count(), 0);
  await page.fill('#add-policy input[name=name]', 'alice-ttl');
  await page.fill('#add-policy input[name=pattern]', '^orders');
  await fillArg(page.locator('#add-policy'), 'policy-def', 'message-ttl', '1000', 'number');
  await page.click('#add-policy button[type=submit]');
  await page.waitForSelector('#policies td:text-is("alice-ttl")');
  assert.equal((await call('GET', '/policies/shop/alice-ttl')).body.vhost, 'shop');
  await shot(page, '06b-admin-policymaker');
  assert.equal((await call('DELETE', '/policies/shop/alice-ttl')).status, 204);
});

test('a connection opened by an AMQP client appears, with its channel, and is closed from the console', { timeout: TIMEOUT_MS }, async (t) => {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${broker.amqpPort}`, { clientProperties: { connection_name: 'console-test' } });
  const closed = new Promise((resolve) => conn.on('close', resolve));
  conn.on('error', () => {});
  const ch = await conn.createChannel();
  await ch.prefetch(7);

  const page = await newPage(t);
  await login(page);
  await visit(page, '#/connections', '#connections');
  const row = page.locator('#connections tbody tr', { hasText: 'amqplib' });
  await row.waitFor();
  await shot(page, '07-connections');
  await visit(page, '#/channels', '#channels');
  await page.waitForSelector('#channels td:text-is("7")');
  await shot(page, '08-channels');
  await ch.assertQueue('console-consumed', { durable: false });
  await ch.consume('console-consumed', () => {}, { consumerTag: 'console-tag' });
  await page.locator('#channels tbody tr').first().locator('a').first().click();
  await page.waitForSelector('#channel-consumers td:text-is("console-tag")');
  assert.match(await page.textContent('main'), /7 per consumer/);
  // The channel's own rate chart, polled like the queue page's.
  assert.match(await page.textContent('.chart-box:has-text("Message rates") .legend'), /Publish: .*Confirm: .*Deliver \/ get: .*Ack: /);
  await shot(page, '08-channel');

  await visit(page, '#/connections', '#connections');
  await row.locator('a').click();
  await page.waitForSelector('#close-connection');
  assert.match(await page.textContent('main'), /console-test/);
  assert.match(await page.textContent('.chart-box:has-text("Data rates") .legend'), /Received \(bytes\): .*Sent \(bytes\): /);
  await shot(page, '09-connection');
  await page.fill('#close-connection input[name=reason]', 'closed by the browser test');
  await page.click('#close-connection button[type=submit]');
  const err = await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), 10000))]);
  assert.match(String(err && err.message), /CONNECTION_FORCED.*closed by the browser test/);
  await page.waitForSelector('#connections');
  await waitFor(async () => (await page.locator('#connections tbody tr.empty').count()) === 1, 'no connections listed', 15000);
});

test('hostile names and header values are shown as text and nothing runs', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  const evil = '<img src=x onerror=window.__pwned=1>';
  const evilHeader = '<script>window.__pwned=2</script><b onmouseover=window.__pwned=3>bold</b>';
  assert.equal((await call('PUT', `/queues/%2F/${encodeURIComponent(evil)}`, { durable: false })).status, 201);
  assert.equal((await call('PUT', `/exchanges/%2F/${encodeURIComponent(evil)}`, { type: 'fanout' })).status, 201);
  assert.equal((await call('POST', `/bindings/%2F/e/${encodeURIComponent(evil)}/q/${encodeURIComponent(evil)}`, { routing_key: evil })).status, 201);
  const pub = await call('POST', `/exchanges/%2F/${encodeURIComponent(evil)}/publish`,
    { routing_key: '', payload: evil, payload_encoding: 'string', properties: { headers: { [evil]: evilHeader } } });
  assert.equal(pub.body.routed, true);
  assert.equal((await call('PUT', `/users/${encodeURIComponent(evil)}`, { password: 'x', tags: evil })).status, 201);
  assert.equal((await call('PUT', `/vhosts/${encodeURIComponent(evil)}`, {})).status, 201);

  const page = await newPage(t);
  await login(page);
  await visit(page, '#/queues', '#queues');
  await page.waitForSelector(`#queues a:text-is("${evil}")`);
  await shot(page, '10-hostile-queues');
  await visit(page, '#/exchanges', '#exchanges');
  await page.waitForSelector(`#exchanges a:text-is("${evil}")`);
  await page.click(`#exchanges a:text-is("${evil}")`);
  await page.waitForSelector(`#bindings-source a:text-is("${evil}")`);
  assert.equal(await page.textContent('h1 .name'), evil);
  await shot(page, '11-hostile-exchange');
  await page.click(`#bindings-source a:text-is("${evil}")`);
  await page.waitForSelector('#get-messages');
  await page.click('#get-messages button[type=submit]');
  await page.waitForSelector('#got-messages pre.payload');
  assert.equal(await page.textContent('#got-messages pre.payload'), evil);
  assert.ok((await page.textContent('#got-messages')).includes(JSON.stringify(evilHeader)), 'the header value shown literally');
  await page.hover('#got-messages');
  await shot(page, '12-hostile-queue');
  await visit(page, '#/admin', '#users');
  await page.waitForSelector(`#users td:text-is("${evil}")`);
  await page.waitForSelector(`#vhosts td:text-is("${evil}")`);
  await shot(page, '13-hostile-admin');

  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator('main img, main script, main b').count(), 0);
  assert.equal(await page.evaluate(() => document.querySelectorAll('[onerror], [onmouseover]').length), 0);
});

test('admin: policies, definitions export and import, clearing permissions, deleting a user and a vhost', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  const page = await newPage(t);
  await login(page);
  await visit(page, '#/admin', '#policies');

  // A policy with a typed definition, then deleted from its row.
  const policy = page.locator('#add-policy');
  await policy.locator('select[name=vhost]').selectOption('/');
  await policy.locator('input[name=name]').fill('short-ttl');
  await policy.locator('input[name=pattern]').fill('^ttl\\.');
  await policy.locator('select[name=apply-to]').selectOption('queues');
  await policy.locator('input[name=priority]').fill('3');
  await fillArg(policy, 'policy-def', 'message-ttl', '60000', 'number');
  await policy.locator('button[type=submit]').click();
  await page.waitForSelector('#policies td:text-is("short-ttl")');
  const p = await call('GET', '/policies/%2F/short-ttl');
  assert.equal(p.status, 200);
  assert.deepEqual([p.body.pattern, p.body['apply-to'], p.body.priority, p.body.definition], ['^ttl\\.', 'queues', 3, { 'message-ttl': 60000 }]);
  await shot(page, '15-admin-policies');
  await page.locator('#policies tr', { hasText: 'short-ttl' }).locator('button').click();
  await page.waitForSelector('#policies tbody tr.empty');
  assert.equal((await call('GET', '/policies/%2F/short-ttl')).status, 404);

  // An operator policy, the same way.
  const op = page.locator('#add-operator-policy');
  await op.locator('select[name=vhost]').selectOption('/');
  await op.locator('input[name=name]').fill('cap');
  await op.locator('input[name=pattern]').fill('.*');
  await fillArg(op, 'operator-policy-def', 'max-length', '1000', 'number');
  await op.locator('button[type=submit]').click();
  await page.waitForSelector('#operator-policies td:text-is("cap")');
  assert.deepEqual((await call('GET', '/operator-policies/%2F/cap')).body.definition, { 'max-length': 1000 });
  await page.locator('#operator-policies tr', { hasText: 'cap' }).locator('button').click();
  await page.waitForSelector('#operator-policies tbody tr.empty');
  assert.equal((await call('GET', '/operator-policies/%2F/cap')).status, 404);

  // Export: the file downloaded is the API's definitions.
  await call('PUT', '/queues/%2F/exported-q', { durable: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  assert.match(download.suggestedFilename(), /^warren-definitions-\d{4}-\d\d-\d\d\.json$/);
  const exported = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  assert.ok(exported.queues.some((q) => q.name === 'exported-q'), 'the export lists exported-q');
  assert.ok(exported.users.some((u) => u.name === 'guest'), 'the export lists guest');

  // Import: a file with a vhost, a user and a permission; then clear and delete them.
  const defs = {
    vhosts: [{ name: 'imported-vh' }],
    users: [{ name: 'bob', password_hash: exported.users.find((u) => u.name === 'guest').password_hash, hashing_algorithm: 'rabbit_password_hashing_sha256', tags: ['monitoring'] }],
    permissions: [{ user: 'bob', vhost: 'imported-vh', configure: '.*', write: '.*', read: '.*' }],
    queues: [{ name: 'imported-q', vhost: 'imported-vh', durable: true, auto_delete: false, arguments: {} }],
  };
  await page.setInputFiles('#import input[name=file]', { name: 'defs.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(defs)) });
  await page.click('#import button[type=submit]');
  await page.waitForSelector('#messages .msg:has-text("Definitions imported from defs.json.")');
  await page.waitForSelector('#users td:text-is("bob")');
  await page.waitForSelector('#vhosts td:text-is("imported-vh")');
  assert.equal((await call('GET', '/queues/imported-vh/imported-q')).status, 200);
  // A file that is not JSON is refused in the page, with the reason.
  await page.setInputFiles('#import input[name=file]', { name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{nope') });
  await page.click('#import button[type=submit]');
  await page.waitForSelector('#messages .msg.error:has-text("bad.json is not JSON")');

  // Topic permissions for bob, set and cleared.
  await waitFor(async () => (await page.locator('#set-topic-permissions select[name=user] option[value=bob]').count()) === 1, 'bob in the choice');
  await page.selectOption('#set-topic-permissions select[name=user]', 'bob');
  await page.selectOption('#set-topic-permissions select[name=vhost]', 'imported-vh');
  await page.fill('#set-topic-permissions input[name=write]', '^bob\\.');
  await page.click('#set-topic-permissions button[type=submit]');
  await page.waitForSelector('#topic-permissions td:text-is("bob")');
  const tp = await call('GET', '/topic-permissions/imported-vh/bob');
  assert.deepEqual(tp.body.map((p) => [p.exchange, p.write, p.read]), [['amq.topic', '^bob\\.', '.*']]);
  await page.locator('#topic-permissions tr', { hasText: 'bob' }).locator('button').click();
  await page.waitForSelector('#topic-permissions tbody tr.empty');
  assert.equal((await call('GET', '/topic-permissions/imported-vh/bob')).status, 404);

  await page.locator('#permissions tr', { hasText: 'bob' }).locator('button').click();
  await waitFor(async () => (await page.locator('#permissions tr', { hasText: 'bob' }).count()) === 0, 'bob\'s permission gone');
  assert.equal((await call('GET', '/permissions/imported-vh/bob')).status, 404);
  await page.locator('#users tr', { hasText: 'bob' }).locator('button').click();
  await waitFor(async () => (await page.locator('#users td:text-is("bob")').count()) === 0, 'bob gone');
  assert.equal((await call('GET', '/users/bob')).status, 404);
  await page.locator('#vhosts tr', { hasText: 'imported-vh' }).locator('button').click();
  await waitFor(async () => (await page.locator('#vhosts td:text-is("imported-vh")').count()) === 0, 'imported-vh gone');
  assert.equal((await call('GET', '/vhosts/imported-vh')).status, 404);
  assert.equal((await call('GET', '/queues/imported-vh/imported-q')).status, 404);
});

test('an exchange is unbound and deleted from its page; the overview charts the queued messages', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  await call('PUT', '/exchanges/%2F/gone-x', { type: 'topic' });
  await call('PUT', '/queues/%2F/gone-q', {});
  await call('POST', '/bindings/%2F/e/gone-x/q/gone-q', { routing_key: 'a.#' });
  await call('POST', '/exchanges/%2F/gone-x/publish', { routing_key: 'a.b', payload: 'x', payload_encoding: 'string', properties: {} });

  const page = await newPage(t);
  await login(page);
  // The overview samples every 5 s; the queued message shows in the depth chart's legend.
  const total = (await call('GET', '/overview')).body.queue_totals.messages;
  assert.ok(total >= 1);
  await waitFor(async () => (await page.textContent('main')).includes(`Total: ${total}`), `Total: ${total} in the chart legend`, 12000);
  await shot(page, '16-overview-with-messages');
  await visit(page, '#/exchanges/%2F/gone-x', '#bindings-source');
  await page.waitForSelector('#bindings-source td:text-is("a.#")');
  assert.match(await page.textContent('.chart-box:has-text("Message rates") .legend'), /In: .*Out: /);
  await page.locator('#bindings-source tr', { hasText: 'a.#' }).locator('button').click();
  await page.waitForSelector('#bindings-source tbody tr.empty');
  assert.deepEqual((await call('GET', '/bindings/%2F/e/gone-x/q/gone-q')).body, []);
  // The topic exchange publishes nowhere now: the page says so.
  await page.fill('#publish input[name=routing_key]', 'a.b');
  await page.click('#publish button[type=submit]');
  await page.waitForSelector('#messages .msg.error:has-text("not routed")');
  await page.click('#delete-exchange');
  await page.waitForSelector('#messages .msg:has-text("Exchange gone-x deleted.")');
  assert.equal((await call('GET', '/exchanges/%2F/gone-x')).status, 404);
  await call('DELETE', '/queues/%2F/gone-q');
});

test('the rate chart uses the API\'s rates, and derives them from counters when the API gives none', { timeout: TIMEOUT_MS }, async (t) => {
  const page = await newPage(t);
  // The overview as the server sends it, with message_stats replaced: counters only (publish
  // grows by 50 a poll) for the login's check and the first two polls, then a reported rate.
  let polls = 0;
  await page.route('**/api/overview', async (route) => {
    const resp = await route.fetch();
    const body = await resp.json();
    polls += 1;
    body.message_stats = polls <= 3 ? { publish: 50 * polls } : { publish: 1000, publish_details: { rate: 3.5 } };
    await route.fulfill({ response: resp, json: body });
  });
  await login(page);
  const legend = () => page.textContent('.chart-box:has-text("Message rates") .legend');
  // 50 per poll of about 5 s (the browser's timer and the requests' time make it 9 to 11)
  await waitFor(async () => polls >= 3 && /Publish: (9|10|11)\.\d\/s/.test(await legend()), 'a rate of 50 per 5 s poll', 12000);
  await waitFor(async () => polls >= 4 && /Publish: 3\.5\/s/.test(await legend()), 'the reported rate', 12000);
  await shot(page, '17-overview-rates');
});

test('10,000 queues: the list shows one page, filters by regex on the server, and pages', { timeout: TIMEOUT_MS }, async (t) => {
  const call = api(broker);
  const queues = [];
  for (let i = 0; i < 10000; i++) queues.push({ name: `bulk-${String(i).padStart(5, '0')}`, vhost: '/', durable: false, auto_delete: false, arguments: {} });
  const imported = await call('POST', '/definitions', { queues });
  assert.ok(imported.status < 300, JSON.stringify(imported.body));

  const page = await newPage(t);
  await login(page);
  const began = Date.now();
  await visit(page, '#/queues', '#queues');
  await page.waitForSelector('#queues a:text-is("bulk-00000")');
  const shownMs = Date.now() - began;
  t.diagnostic(`10,000 queues: first page shown ${shownMs} ms after navigating`);
  assert.ok(shownMs < 5000, `first page shown after ${shownMs} ms`);
  assert.equal(await page.locator('#queues tbody tr').count(), 20);
  assert.match(await page.textContent('.page-info'), /Page 1 of 50[0-9] · 10,0\d\d in all/);
  await page.selectOption('select[name=page_size]', '100');
  await waitFor(async () => (await page.locator('#queues tbody tr').count()) === 100, '100 rows');
  await page.click('button.next');
  await page.waitForSelector('#queues a:text-is("bulk-00100")');
  await page.check('input[name=regex]');
  const filtering = Date.now();
  await page.fill('input[name=filter]', '^bulk-0999[0-4]$');
  await waitFor(async () => (await page.locator('#queues tbody tr').count()) === 5, 'five matches');
  t.diagnostic(`10,000 queues: regex filter shown ${Date.now() - filtering} ms after typing (250 ms of it the typing pause)`);
  assert.match(await page.textContent('.page-info'), /Page 1 of 1 · .* \(5 match\)/);
  // Sorting is the server's too: the Name header sorts, a second click reverses.
  const firstName = () => page.locator('#queues tbody tr').first().locator('a').textContent();
  await page.click('#queues button[data-sort=name]');
  await waitFor(async () => (await page.textContent('#queues button[data-sort=name]')).endsWith('▲'), 'ascending');
  assert.equal(await firstName(), 'bulk-09990');
  await page.click('#queues button[data-sort=name]');
  await waitFor(async () => (await firstName()) === 'bulk-09994', 'reversed');
  await shot(page, '14-ten-thousand-queues');
  // A bad regex is the server's 400, shown.
  await page.fill('input[name=filter]', '(');
  await page.waitForSelector('#messages .msg.error');
  assert.match(await lastMessage(page).textContent(), /400/);
});
