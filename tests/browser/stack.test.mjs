// The whole local stack through real Chromium: the host page publishes to every stage of the
// pool, viewers spread over the stages and all decode the host's camera.
//
//   STAGEFAN_URL=http://127.0.0.1:8787 STAGEFAN_HOST_KEY=… [STAGEFAN_ADMIN_KEY=…] \
//     node --test tests/browser/stack.test.mjs
//
// The stack (ivs-local + the worker under `wrangler dev` + web/dist) must run with
// STAGE_CAPACITY=2. Optional: STAGEFAN_BROADCAST (default: the edge's defaultBroadcast),
// STAGEFAN_VIEWERS (default 6), STAGEFAN_HOST_HEIGHT (camera height, default 360: one H.264
// encoder per stage runs in the host's tab, on the same cores as everything else).
// Screenshots go to tests/out/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, waitFor, videoHealth, screenshotPath, sleep, decodes, hostUpload,
} from './lib/browser.mjs';
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
const VIEWERS = Number(process.env.STAGEFAN_VIEWERS || 6);
const HEIGHT = Number(process.env.STAGEFAN_HOST_HEIGHT || 360);
let skip = !BASE || !HOST_KEY ? 'set STAGEFAN_URL and STAGEFAN_HOST_KEY to a running local stack' : false;
if (!skip) {
  // This is the multi-publish scenario (the host uploads to every stage); replicate.test.mjs
  // covers FANOUT_MODE=replicate.
  const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
  if (cfg?.fanoutMode === 'replicate') skip = 'the stack runs FANOUT_MODE=replicate (see replicate.test.mjs)';
}

let browser;
let broadcast;
const run = Date.now().toString(36);

async function get(path, key) {
  const r = await fetch(BASE + path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  assert.equal(r.status, 200, `GET ${path}: HTTP ${r.status} ${await r.clone().text()}`);
  return r.json();
}

const pool = () => get(`/api/broadcasts/${encodeURIComponent(broadcast)}`);
const liveStages = (p) => p.stages.filter((s) => s.state === 'live');

async function openViewer(i) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(`${BASE}/watch?broadcast=${encodeURIComponent(broadcast)}&userId=e2e-${run}-${i}`,
    { waitUntil: 'domcontentloaded' });
  return { ctx, page, i, t0 };
}

async function viewerStatus(v) {
  return v.page.evaluate(() => ({ ...window.stagefanViewer }));
}

before(async () => {
  if (skip) return;
  const cfg = await get('/api/config');
  assert.equal(cfg.mediaMode, 'local', 'this test drives the local media plane');
  broadcast = process.env.STAGEFAN_BROADCAST || cfg.defaultBroadcast;
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** On failure: what the host page, the viewers and the pool saw. */
async function diagnose(host, viewers) {
  try {
    console.log('host stages:', JSON.stringify(await host.evaluate(() => window.stagefanHost.stages())));
    console.log('host log:\n' + await host.evaluate(() => document.getElementById('log').textContent));
    for (const v of viewers) {
      if (v.page.isClosed()) continue;
      console.log(`viewer ${v.i}:`, JSON.stringify(await viewerStatus(v)),
        JSON.stringify(await videoHealth(v.page, '#video')),
        await v.page.evaluate(() => document.getElementById('log').textContent.split('\n').slice(0, 4).join(' | ')));
    }
    console.log('pool:', JSON.stringify(await pool()));
    await host.screenshot({ path: screenshotPath('failure-host.png') });
  } catch (e) {
    console.log('diagnosis failed:', e.message);
  }
}

test('host + viewers over ≥3 live stages, every viewer decodes the host', { skip: skipOutsideCI(skip), timeout: 240_000 }, async () => {
  mustRun(skip);
  const viewers = [];
  let host;
  try {
    await scenario(viewers, (h) => { host = h; });
  } catch (e) {
    if (host) await diagnose(host, viewers);
    throw e;
  }
});

async function scenario(viewers, setHost) {
  // The host goes live first (?live=1, key in the fragment).
  const hostCtx = await browser.newContext();
  const host = await hostCtx.newPage();
  setHost(host);
  await host.goto(`${BASE}/host?live=1&height=${HEIGHT}&broadcast=${encodeURIComponent(broadcast)}#key=${encodeURIComponent(HOST_KEY)}`);
  assert.equal(new URL(host.url()).hash, '', 'the host key leaves the address bar');
  await waitFor(async () => (await host.evaluate(() => window.stagefanHost.stages()))
    .some((s) => s.conn === 'publishing' && s.reported), 30_000, 'the host to publish to a first stage');

  const capacity = (await pool()).capacity;
  assert.ok(capacity * 3 <= VIEWERS,
    `the stack runs with capacity ${capacity}; start it with STAGE_CAPACITY=2 for ${VIEWERS} viewers on 3 stages`);

  // Viewers arrive one by one; the pool scales up ahead of them.
  for (let i = 0; i < VIEWERS; i++) {
    viewers.push(await openViewer(i));
    await waitFor(async () => (await viewerStatus(viewers[i])).stageArn, 30_000, `viewer ${i} to get a seat`);
  }

  // Every viewer decodes the host, whatever stage it is on.
  const health = [];
  for (const v of viewers) health.push(await decodes(v, 90_000));
  const seats = await Promise.all(viewers.map(viewerStatus));
  const stagesUsed = new Set(seats.map((s) => s.stageArn));
  // Page navigation → first decoded frame on screen, measured in the page.
  console.log(`viewers on ${stagesUsed.size} stages; first decoded frame after page load (ms): ` +
    seats.map((s) => s.firstFrameMs).join(', '));
  assert.ok(stagesUsed.size >= 3, `viewers spread over ${stagesUsed.size} stages, want ≥ 3`);

  // The pool agrees: ≥ 3 live stages, each load within capacity, each viewer's stage counted.
  const p = await waitFor(async () => {
    const p = await pool();
    return liveStages(p).length >= 3 ? p : null;
  }, 30_000, '≥ 3 live stages in the pool');
  for (const s of p.stages) assert.ok(s.load <= s.capacity, `stage ${s.stageArn} over capacity`);
  assert.equal(p.viewers, VIEWERS);
  for (const arn of stagesUsed) {
    assert.ok(p.stages.find((s) => s.stageArn === arn)?.load > 0, `stage ${arn} has our viewers`);
  }
  // The host publishes to every live stage.
  const hostStages = await host.evaluate(() => window.stagefanHost.stages());
  for (const s of liveStages(p)) {
    assert.ok(hostStages.some((h) => h.stageArn === s.stageArn && h.conn === 'publishing'),
      `the host publishes to live stage ${s.stageArn}`);
  }

  const upload = await hostUpload(host);
  console.log(`host upload with ${liveStages(p).length} live stages: ${upload.streams} connections, ${upload.kbps} kbit/s`);
  assert.equal(upload.streams, hostStages.filter((h) => h.conn === 'publishing').length);

  // Screenshots: host, a viewer, the status page.
  await host.screenshot({ path: screenshotPath('host.png'), fullPage: true });
  await viewers[0].page.screenshot({ path: screenshotPath('viewer.png') });
  const statusCtx = await browser.newContext();
  const status = await statusCtx.newPage();
  await status.goto(`${BASE}/status`);
  await waitFor(() => status.evaluate(() => document.querySelectorAll('[data-stage]').length >= 3), 10_000,
    'the status page to list the stages');
  await status.screenshot({ path: screenshotPath('status.png'), fullPage: true });

  // A viewer that closes its page frees its seat (pagehide → /api/viewer/leave).
  const gone = seats[0];
  const before = p.stages.find((s) => s.stageArn === gone.stageArn).load;
  await viewers[0].ctx.close();
  await waitFor(async () => {
    const q = await pool();
    return q.viewers === VIEWERS - 1 && q.stages.find((s) => s.stageArn === gone.stageArn)?.load === before - 1;
  }, 15_000, 'the closed viewer\'s seat to be freed');

  // A stage added while live gets the host within seconds.
  const known = new Set((await pool()).stages.map((s) => s.stageArn));
  let added;
  const tAdd = Date.now();
  if (ADMIN_KEY) {
    const r = await fetch(`${BASE}/api/admin/broadcasts/${encodeURIComponent(broadcast)}/actions`, {
      method: 'POST', headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ action: 'create' }),
    });
    assert.equal(r.status, 200, `create action: HTTP ${r.status}`);
    const outcome = await r.json();
    assert.equal(outcome.outcome, 'done', `create action: ${JSON.stringify(outcome)}`);
  } else {
    // Without the admin key, more viewers make the pool scale up.
    for (let i = VIEWERS; i < VIEWERS + 2 * capacity; i++) viewers.push(await openViewer(i));
  }
  added = await waitFor(async () => (await pool()).stages.find((s) => !known.has(s.stageArn)),
    30_000, 'a new stage in the pool');
  const liveNew = await waitFor(async () => {
    const h = await host.evaluate(() => window.stagefanHost.stages());
    const mine = h.find((s) => s.stageArn === added.stageArn && s.conn === 'publishing' && s.reported);
    const q = await pool();
    return mine && q.stages.find((s) => s.stageArn === added.stageArn)?.state === 'live' ? Date.now() : null;
  }, 30_000, 'the host to publish to the added stage');
  // How fast is a figure (tests/browser/bench-recovery.mjs); the 30 s waits above are liveness.
  const seconds = (liveNew - tAdd) / 1000;
  console.log(`stage ${added.stageArn} added while live: host publishing and stage live after ${seconds.toFixed(1)} s`);
  const upload2 = await hostUpload(host);
  console.log(`host upload after the added stage: ${upload2.streams} connections, ${upload2.kbps} kbit/s`);

  for (const v of viewers.slice(1)) await v.ctx.close();
  await statusCtx.close();
  await hostCtx.close();
}
