// Two IVS regions in replicate mode through real Chromium: one ivs-local per region, the host
// page uploads one stream per region (its origin there; replication stays within a region),
// viewers seated in each region (by `?region=`) decode the host, and each page names its region.
//
//   STAGE_CAPACITY=2 FANOUT_MODE=replicate IVS_REGIONS=us-east-1,eu-west-1 \
//     scripts/with-stack.sh node --test tests/browser/regions.test.mjs
//
// Screenshots: tests/out/regions-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, waitFor, screenshotPath, decodes, hostUpload } from './lib/browser.mjs';
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
const PER_REGION = 3;
const HEIGHT = 360;

let skip = !BASE || !HOST_KEY || !ADMIN_KEY
  ? 'set STAGEFAN_URL, STAGEFAN_HOST_KEY and STAGEFAN_ADMIN_KEY to a running local stack' : false;
let regions = [];
if (!skip) {
  const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
  if (!cfg) skip = `no stack answers at ${BASE}/api/config`;
  else if (cfg.fanoutMode !== 'replicate') skip = `the stack runs FANOUT_MODE=${cfg.fanoutMode}, not replicate`;
  else if (cfg.mediaMode !== 'local') skip = 'this test drives the local media plane';
}

const run = Date.now().toString(36);
const broadcast = `regions-${run}`;
let browser;

async function get(path, key) {
  const r = await fetch(BASE + path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  assert.equal(r.status, 200, `GET ${path}: HTTP ${r.status} ${await r.clone().text()}`);
  return r.json();
}

before(async () => {
  if (skip) return;
  browser = await launch();
});
after(async () => { await browser?.close(); });

test('two regions, replicate mode: one upload per region, viewers in each region play', { skip: skipOutsideCI(skip), timeout: 300_000 }, async () => {
  mustRun(skip);
  // The deployment's regions, as the host's answer names them.
  const first = await fetch(`${BASE}/api/token/publisher-all`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${HOST_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ broadcast }),
  }).then((r) => r.json());
  regions = first.regions || [];
  mustRun(regions.length < 2 && `the stack runs ${JSON.stringify(regions)}: start it with IVS_REGIONS=us-east-1,eu-west-1`);
  assert.equal(first.fanoutMode, 'replicate');

  const hostCtx = await browser.newContext();
  const host = await hostCtx.newPage();
  await host.goto(`${BASE}/host?live=1&height=${HEIGHT}&broadcast=${broadcast}#key=${encodeURIComponent(HOST_KEY)}`);
  await waitFor(async () => {
    const stages = await host.evaluate(() => window.stagefanHost.stages());
    return regions.every((r) => stages.some((s) => s.region === r && s.conn === 'publishing' && s.reported));
  }, 60_000, 'the host to publish to an origin in every region');

  const viewers = [];
  for (const region of regions) {
    for (let i = 0; i < PER_REGION; i++) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(`${BASE}/watch?broadcast=${broadcast}&region=${region}&userId=${region}-${run}-${i}`,
        { waitUntil: 'domcontentloaded' });
      viewers.push({ ctx, page, i: `${region}/${i}`, region });
      await waitFor(() => page.evaluate(() => window.stagefanViewer?.stageArn), 60_000, `viewer ${region}/${i} to get a seat`);
    }
  }
  for (const v of viewers) await decodes(v, 90_000);
  // Each viewer sits in the region it asked for, unless that region had no seat ready when it
  // asked (a stage still being created): then in the other, as placement says.
  const seated = new Map(regions.map((r) => [r, 0]));
  for (const v of viewers) {
    const seat = await v.page.evaluate(() => ({ ...window.stagefanViewer }));
    assert.ok(regions.includes(seat.region), `viewer ${v.i} in a region of the deployment: ${seat.region}`);
    if (seat.region !== v.region) console.log(`viewer ${v.i} overflowed into ${seat.region}`);
    seated.set(seat.region, seated.get(seat.region) + 1);
    assert.equal(await v.page.textContent('#region'), seat.region, `viewer ${v.i}'s page names its region`);
    assert.ok(seat.stageArn.includes(`:${seat.region}:`), `viewer ${v.i}'s stage is in ${seat.region}: ${seat.stageArn}`);
  }
  for (const [region, n] of seated) assert.ok(n >= PER_REGION - 1, `${region}: ${n} viewers play there`);

  // Each region's pool: its own stages, none over capacity; at capacity 2, three viewers need
  // two stages in each region, an origin and a replica of it.
  for (const region of regions) {
    const name = region === regions[0] ? broadcast : `${broadcast}@${region}`;
    // (Percent-encoded, as a URL library writes `@`: the edge decodes path segments.)
    const snap = await get(`/api/admin/broadcasts/${encodeURIComponent(name)}`, ADMIN_KEY);
    const stages = snap.stages.filter((s) => !['deleted', 'creating'].includes(s.state));
    assert.equal(snap.viewers, seated.get(region), `${region}: the pool counts the viewers seated there`);
    for (const s of stages) {
      assert.ok(s.load <= s.capacity, `${region}: stage ${s.stageArn} over capacity`);
      assert.ok(s.stageArn.includes(`:${region}:`), `${region}'s pool holds only its own stages`);
    }
    if (snap.viewers > snap.capacity) assert.ok(stages.some((s) => s.originArn), `${region}: a replica stage`);
    for (const s of stages.filter((x) => x.originArn)) {
      assert.ok(stages.some((o) => o.stageArn === s.originArn), `${region}: a replica's origin is in its own region`);
    }
  }

  // The host uploads one stream per region: its origins, not every stage.
  const upload = await hostUpload(host);
  console.log(`host upload over ${regions.length} regions: ${upload.streams} connection(s), ${upload.kbps} kbit/s`);
  assert.equal(upload.streams, regions.length, 'one upload per region');

  await host.screenshot({ path: screenshotPath('regions-host.png'), fullPage: true });
  await viewers[viewers.length - 1].page.screenshot({ path: screenshotPath('regions-viewer.png') });
  const statusCtx = await browser.newContext();
  const status = await statusCtx.newPage();
  await status.goto(`${BASE}/status`);
  await waitFor(() => status.evaluate((b) => document.querySelectorAll(`[data-broadcast="${b}"] [data-stage]`).length >= 4, broadcast),
    10_000, 'the status page to list both regions\' stages');
  await status.locator(`[data-broadcast="${broadcast}"]`).screenshot({ path: screenshotPath('regions-status.png') });
  for (const v of viewers) await v.ctx.close();
  await statusCtx.close();
  await hostCtx.close();
});
