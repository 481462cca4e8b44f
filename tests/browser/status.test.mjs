// The status page's charts and cost meter against the whole local stack: a broadcast scales
// up as viewers arrive (seats asked for through the edge, the host's publishing reported as
// the host page reports it); the page, given the admin key, draws viewers, open seats,
// stages and the estimated cost per hour, and its figures are the pool's own.
//
//   STAGE_CAPACITY=2 scripts/with-stack.sh node --test tests/browser/status.test.mjs
//
// Screenshots go to tests/out/ (status-charts-*.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, waitFor, screenshotPath, sleep } from './lib/browser.mjs';
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
let skip = !BASE || !HOST_KEY || !ADMIN_KEY
  ? 'set STAGEFAN_URL, STAGEFAN_HOST_KEY and STAGEFAN_ADMIN_KEY to a running local stack' : false;
if (!skip) {
  const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
  if (cfg?.fanoutMode === 'replicate') skip = 'the stack runs FANOUT_MODE=replicate';
}

const broadcast = `status-${Date.now().toString(36)}`;
let browser;
let nextClient = 1;

async function call(method, path, body, key) {
  const n = nextClient++;
  const r = await fetch(BASE + path, {
    method,
    headers: {
      'content-type': 'application/json',
      // Each viewer its own address, as Cloudflare would tell the edge.
      'cf-connecting-ip': `10.77.${(n >> 8) & 255}.${n & 255}`,
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const snapshot = async () => {
  const r = await call('GET', `/api/broadcasts/${broadcast}`, undefined, ADMIN_KEY);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
};

/** Publisher tokens for every stage, and each reported published (what the host page does). */
async function hostOnEveryStage() {
  const all = await call('POST', '/api/token/publisher-all', { broadcast }, HOST_KEY);
  assert.equal(all.status, 200, JSON.stringify(all.body));
  for (const t of all.body.tokens) {
    const r = await call('POST', '/api/host/published',
      { broadcast, stageArn: t.stageArn, participantId: t.participantId }, HOST_KEY);
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  return all.body.tokens.length;
}

async function seat(i) {
  for (let tries = 0; tries < 40; tries++) {
    const r = await call('POST', '/api/token/viewer', { broadcast, userId: `status-viewer-${i}` });
    if (r.status === 200) return r.body;
    assert.equal(r.status, 503, JSON.stringify(r.body));
    await sleep(500);
  }
  throw new Error(`viewer ${i} never seated`);
}

before(async () => {
  if (skip) return;
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('the status page charts a scale-up and shows the cost meter with the admin key', { skip: skipOutsideCI(skip), timeout: 180_000 }, async () => {
  mustRun(skip);
  await hostOnEveryStage();
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`status page error: ${e.message}`));
  await page.goto(`${BASE}/status`, { waitUntil: 'domcontentloaded' });
  const panel = `[data-broadcast="${broadcast}"]`;
  await waitFor(() => page.locator(panel).count().then((n) => n === 1), 10_000, 'the broadcast panel');
  // Without the key: charts of the public figures, no cost.
  assert.equal(await page.locator(`${panel} [data-chart="viewers"]`).count(), 1);
  assert.equal(await page.locator(`${panel} [data-chart="costPerHour"]`).count(), 0);
  assert.equal(await page.locator(`${panel} [data-meter]`).count(), 0);

  // A wrong key is refused and shows nothing more.
  await page.fill('#admin-key', 'not-the-key');
  await page.click('#key-form button');
  await waitFor(() => page.textContent('#key-state').then((t) => t === 'admin key refused'), 10_000, 'the refusal');
  assert.equal(await page.locator(`${panel} [data-meter]`).count(), 0);
  await page.fill('#admin-key', ADMIN_KEY);
  await page.click('#key-form button');
  await waitFor(() => page.locator(`${panel} [data-meter]`).count().then((n) => n === 1), 10_000, 'the cost meter');
  assert.equal(await page.inputValue('#admin-key'), '', 'the key is not left in the field');

  // The scale-up: viewers in three waves; the host joins each new stage (as its page would).
  const seats = [];
  for (const wave of [2, 3, 3]) {
    for (let k = 0; k < wave; k++) seats.push(await seat(seats.length));
    await waitFor(async () => (await snapshot()).stages.filter((s) => s.state === 'creating').length === 0,
      20_000, 'the stages being created');
    await hostOnEveryStage();
    await sleep(4_500); // two polls of the page
  }
  const snap = await snapshot();
  const viewers = snap.viewers;
  const live = snap.stages.filter((s) => s.state !== 'deleted' && s.hostPublishing).length;
  assert.equal(viewers, 8);
  assert.ok(snap.stages.filter((s) => s.state !== 'deleted').length >= 4, 'capacity 2: at least four stages');
  // The meter: one participant per seat and per stage the host publishes to, priced at the
  // default 0.072 USD per participant-hour.
  assert.equal(snap.meter.participants.viewers, viewers);
  assert.equal(snap.meter.participants.hosts, live);
  assert.equal(snap.meter.costMicroUsdPerHour, (viewers + live) * 72_000);
  assert.ok(snap.meter.participantMs.viewers > 0 && snap.meter.participantMs.hosts > 0);
  const perStage = snap.stages.reduce((n, s) => n + s.meter.participants.viewers, 0);
  assert.equal(perStage, viewers, 'the stages\' meters add up to the broadcast\'s');

  await waitFor(async () => (await page.textContent(`${panel} [data-now="viewers"]`)) === String(viewers),
    10_000, 'the viewers chart at the pool\'s count');
  const cost = await page.textContent(`${panel} [data-now="costPerHour"]`);
  assert.equal(cost, `$${((viewers + live) * 0.072).toFixed(3)}`, 'the cost chart at the meter\'s figure');
  const paths = await page.locator(`${panel} svg path`).count();
  assert.ok(paths >= 4, `viewers, seats, stages and cost drawn (${paths} paths)`);
  const steps = await page.locator(`${panel} [data-chart="viewers"] path.viewers`).getAttribute('d');
  assert.ok((steps.match(/V/g) || []).length >= 2, `the viewers line steps up with each wave: ${steps}`);
  await page.locator(panel).screenshot({ path: screenshotPath('status-charts-scale-up.png') });

  // Viewers leave: the charts go down with them, the cost per hour with them.
  for (const s of seats.slice(0, 6)) {
    const r = await call('POST', '/api/viewer/leave', { leaseId: s.leaseId });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await waitFor(async () => (await page.textContent(`${panel} [data-now="viewers"]`)) === '2', 10_000,
    'the viewers chart after the leaves');
  const after = await snapshot();
  assert.equal(after.meter.participants.viewers, 2);
  await page.locator(panel).screenshot({ path: screenshotPath('status-charts-after-leaves.png') });
  await ctx.close();
});
