// IVS mode end to end: the host and viewer pages with the real Amazon IVS Web Broadcast SDK
// (the version package.json pins) against ivs-local's events WebSocket and WHIP routes.
//
//   MEDIA_MODE=ivs STAGE_CAPACITY=2 scripts/with-stack.sh node --test tests/browser/ivs-sdk.test.mjs
//
// The SDK's two AWS hosts are answered by the test (lib/ivs.mjs): nothing leaves the machine.
// Skips on a stack in local mode.
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  launch, waitFor, decodes, hostUpload, screenshotPath, ROOT,
} from './lib/browser.mjs';
import { ivsStack, ivsContext, keepConsole, PINNED_SDK } from './lib/ivs.mjs';

const { BASE, HOST_KEY, ADMIN_KEY, IVS, skip } = await ivsStack();

let browser;
const run = Date.now().toString(36);

before(async () => { if (!skip) browser = await launch(); });
after(async () => { await browser?.close(); });

test('the pinned SDK is the one installed and bundled', () => {
  assert.match(PINNED_SDK, /^\d+\.\d+\.\d+$/, `package.json pins amazon-ivs-web-broadcast exactly, not "${PINNED_SDK}"`);
  assert.equal(PINNED_SDK, '1.41.0', 'the version ivs-local\'s SDK protocol was checked against (docs: ivs-local/README.md)');
  const installed = JSON.parse(readFileSync(join(ROOT, 'node_modules', 'amazon-ivs-web-broadcast', 'package.json'), 'utf8')).version;
  assert.equal(installed, PINNED_SDK, 'node_modules holds another SDK than package.json pins: run npm ci');
});

async function get(path) {
  const r = await fetch(BASE + path);
  assert.equal(r.status, 200, `GET ${path}: HTTP ${r.status}`);
  return r.json();
}

async function openHost(broadcast) {
  const ctx = await ivsContext(browser);
  const page = await ctx.newPage();
  const log = keepConsole(page);
  await page.goto(`${BASE}/host?live=1&height=360&broadcast=${encodeURIComponent(broadcast)}#key=${encodeURIComponent(HOST_KEY)}`);
  return { ctx, page, log };
}

async function openViewer(broadcast, i) {
  const ctx = await ivsContext(browser);
  const page = await ctx.newPage();
  const log = keepConsole(page);
  await page.goto(`${BASE}/watch?broadcast=${encodeURIComponent(broadcast)}&userId=ivs-${run}-${i}`, { waitUntil: 'domcontentloaded' });
  return { ctx, page, log, i };
}

const hostStages = (h) => h.page.evaluate(() => window.stagefanHost.stages());
const viewerStatus = (v) => v.page.evaluate(() => ({ ...window.stagefanViewer }));

async function diagnose(host, viewers) {
  try {
    if (host) {
      console.log('host stages:', JSON.stringify(await hostStages(host)));
      console.log('host log:\n' + await host.page.evaluate(() => document.getElementById('log').textContent));
      console.log('host console:\n' + host.log.slice(-40).join('\n'));
    }
    for (const v of viewers) {
      console.log(`viewer ${v.i}:`, JSON.stringify(await viewerStatus(v)));
      console.log(`viewer ${v.i} console:\n` + v.log.slice(-25).join('\n'));
    }
    console.log('ivs-local:', JSON.stringify((await (await fetch(`${IVS}/_local/stats`)).json()).events));
  } catch (e) {
    console.log('diagnosis failed:', e.message);
  }
}

test('IVS mode: the host publishes to every stage, viewers play, a stage added live is joined', { skip: skipOutsideCI(skip), timeout: 240_000 }, async () => {
  mustRun(skip);
  const broadcast = `ivs-fanout-${run}`;
  const viewers = [];
  let host;
  try {
    host = await openHost(broadcast);
    await waitFor(async () => (await hostStages(host)).some((s) => s.conn === 'publishing' && s.reported),
      45_000, 'the host to publish to a first stage with the SDK');
    const pool = () => get(`/api/broadcasts/${encodeURIComponent(broadcast)}`);
    const capacity = (await pool()).capacity;
    // Enough viewers for two stages.
    for (let i = 0; i < 2 * capacity; i++) {
      viewers.push(await openViewer(broadcast, i));
      await waitFor(async () => (await viewerStatus(viewers[i])).stageArn, 30_000, `viewer ${i} to get a seat`);
    }
    for (const v of viewers) await decodes(v, 60_000);
    const seats = await Promise.all(viewers.map(viewerStatus));
    const used = new Set(seats.map((s) => s.stageArn));
    assert.ok(used.size >= 2, `viewers on ${used.size} stages`);
    assert.ok(seats.every((s) => s.state === 'playing'), JSON.stringify(seats.map((s) => s.state)));
    const hs = await hostStages(host);
    for (const arn of used) assert.ok(hs.some((h) => h.stageArn === arn && h.conn === 'publishing'), `host publishes to ${arn}`);
    const upload = await hostUpload(host.page);
    console.log(`IVS mode: ${viewers.length} viewers on ${used.size} stages; host upload ${upload.streams} connections, ${upload.kbps} kbit/s`);
    // Page navigation → first decoded frame on screen, measured in the page (SDK join included).
    console.log(`IVS mode: first decoded frame after page load (ms): ${seats.map((s) => s.firstFrameMs).join(', ')}`);

    // A stage added while live: the host joins it with the SDK.
    const known = new Set((await pool()).stages.map((s) => s.stageArn));
    const t0 = Date.now();
    if (ADMIN_KEY) {
      const r = await fetch(`${BASE}/api/admin/broadcasts/${encodeURIComponent(broadcast)}/actions`, {
        method: 'POST', headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ action: 'create' }),
      });
      assert.equal(r.status, 200, `create action: HTTP ${r.status}`);
    } else {
      for (let i = viewers.length; i < viewers.length + capacity; i++) viewers.push(await openViewer(broadcast, i));
    }
    const added = await waitFor(async () => (await pool()).stages.find((s) => !known.has(s.stageArn)), 30_000, 'a new stage');
    await waitFor(async () => (await hostStages(host)).some((s) => s.stageArn === added.stageArn && s.conn === 'publishing' && s.reported),
      45_000, 'the host to publish to the added stage');
    console.log(`IVS mode: stage added live, host publishing after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // Every WHIP request came from the pinned SDK; the AWS hosts were answered locally only.
    const versions = new Set([...host.ctx.sdkVersions, ...viewers.flatMap((v) => [...v.ctx.sdkVersions])]);
    assert.deepEqual([...versions], [PINNED_SDK], 'X-Stages-SDK of the bundled SDK');
    const aws = [...host.ctx.awsRequests, ...viewers.flatMap((v) => v.ctx.awsRequests)];
    console.log(`AWS requests answered inside the test: ${aws.length}`);
    // ivs-local saw the SDK's sockets.
    const stats = await (await fetch(`${IVS}/_local/stats`)).json();
    assert.ok(stats.events.sockets >= viewers.length + used.size, JSON.stringify(stats.events));
    await host.page.screenshot({ path: screenshotPath('ivs-host.png'), fullPage: true });
    await viewers[0].page.screenshot({ path: screenshotPath('ivs-viewer.png') });
  } catch (e) {
    await diagnose(host, viewers);
    throw e;
  } finally {
    for (const v of viewers) await v.ctx.close();
    await host?.ctx.close();
  }
});
