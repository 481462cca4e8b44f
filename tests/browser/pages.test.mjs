// The pages' own behaviour, against a scripted edge (lib/scripted-edge.mjs) and the real media
// plane (ivs-local-media's loopback example): the host joins stages the pool adds and leaves
// drained ones, reconnects a dropped stage; viewers wait out a 503 (Retry-After), heartbeat,
// and free their seat on close; the status page draws the pool.
//
//   node web/build.mjs && node --test tests/browser/pages.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { launch, waitFor, videoHealth, screenshotPath, sleep, ROOT } from './lib/browser.mjs';
import { startLoopback } from './lib/loopback.mjs';
import { startScriptedEdge } from './lib/scripted-edge.mjs';

let media;
let edge;
let browser;

before(async () => {
  if (!existsSync(join(ROOT, 'web', 'dist', 'host.js'))) throw new Error('build the pages first: node web/build.mjs');
  media = await startLoopback();
  edge = await startScriptedEdge({ mediaUrl: media.url, capacity: 2, leaseTtlSeconds: 6 });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await edge?.stop();
  await media?.stop();
});

const mediaStats = async () => (await fetch(media.url + '/stats')).json();
const stageStats = async (id) => (await mediaStats()).stages.find((s) => s.stageId === id);
const hostStages = (host) => host.evaluate(() => window.stagefanHost.stages());

async function open(path) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`page error on ${path}: ${e.message}`));
  await page.goto(edge.url + path, { waitUntil: 'domcontentloaded' });
  return { ctx, page };
}

async function decodes(page, what, ms = 20000) {
  const first = await waitFor(async () => {
    const h = await videoHealth(page, '#video');
    return h.framesDecoded > 0 && h.litFraction > 0.05 ? h : null;
  }, ms, `${what} to decode a non-black frame`);
  await sleep(1200);
  const later = await videoHealth(page, '#video');
  assert.ok(later.framesDecoded > first.framesDecoded, `${what}: framesDecoded did not rise`);
}

test('host follows the pool; viewers play, wait out 503, heartbeat and leave', { timeout: 180_000 }, async () => {
  const [s1] = edge.stages;

  // The host: key from the fragment, live at once.
  const host = (await open(`/host?live=1&height=360#key=${edge.hostKey}`)).page;
  assert.equal(new URL(host.url()).hash, '', 'the key is removed from the address bar');
  await waitFor(async () => (await hostStages(host)).some((s) => s.stageArn === s1.stageArn && s.conn === 'publishing' && s.reported),
    20000, 'the host to publish on the first stage and report it');
  assert.equal(s1.state, 'live');
  assert.ok(edge.calls.includes('POST /api/host/published'));

  // Two viewers fill the first stage and play.
  const v1 = await open('/watch?userId=alice');
  const v2 = await open('/watch?userId=bob');
  await decodes(v1.page, 'viewer 1');
  await decodes(v2.page, 'viewer 2');
  assert.equal(s1.leases.size, 2);

  // The pool adds a stage while live: the host joins it within a poll or two.
  const s2 = edge.addStage('warming');
  const t0 = Date.now();
  await waitFor(async () => (await stageStats(s2.id))?.publishers === 1 && s2.state === 'live', 15000,
    'the host to publish to the added stage');
  console.log(`added stage: host publishing after ${Date.now() - t0} ms`);

  // The next viewer is refused twice with 503 + Retry-After: 1, waits, then plays on stage 2.
  edge.refuseViewers = 2;
  const v3 = await open('/watch?userId=carol');
  await waitFor(() => v3.page.evaluate(() => window.stagefanViewer.state === 'waiting'), 5000, 'viewer 3 to wait');
  await decodes(v3.page, 'viewer 3');
  assert.equal(await v3.page.evaluate(() => window.stagefanViewer.stageArn), s2.stageArn);
  assert.equal(edge.refuseViewers, 0);

  // A dropped stage connection: the media plane ends the host's session on stage 2; the host
  // reconnects with a fresh token and viewer 3 plays again.
  const before = (await hostStages(host)).find((s) => s.stageArn === s2.stageArn).participantId;
  await fetch(`${media.url}/whip/session/${before}`, { method: 'DELETE' });
  await waitFor(async () => {
    const s = (await hostStages(host)).find((x) => x.stageArn === s2.stageArn);
    return s && s.participantId !== before && s.conn === 'publishing';
  }, 20000, 'the host to reconnect to stage 2');
  await decodes(v3.page, 'viewer 3 after the host reconnected');

  // The status page draws the pool.
  const status = (await open('/status')).page;
  await waitFor(() => status.evaluate(() => document.querySelectorAll('[data-stage]').length === 2), 5000, 'the status rows');
  await status.screenshot({ path: screenshotPath('pages-status.png'), fullPage: true });
  await host.screenshot({ path: screenshotPath('pages-host.png') });
  await v3.page.screenshot({ path: screenshotPath('pages-viewer.png') });

  // Heartbeats keep leases past their TTL (6 s here).
  await sleep(8000);
  assert.equal(s1.leases.size + s2.leases.size, 3, 'leases survive their TTL through heartbeats');

  // A closed viewer page leaves (sendBeacon) and frees its seat; its media session ends.
  // The session ends at once when the page's keepalive DELETE gets through; a page torn down
  // before that (the DELETE is cross-origin, so it needs a preflight) ends it by ICE: ivs-local
  // is ICE-lite and drops a peer once no binding request came on any of its candidate pairs
  // for 15 s (str0m checks an idle agent every 3 s: up to ≈18 s after the page went away).
  // This waited 20 s and failed twice when the DELETE was lost; both ways end within 30 s.
  const closedAt = Date.now();
  await v2.ctx.close();
  await waitFor(() => s1.leases.size === 1, 5000, 'the closed viewer to leave');
  await waitFor(async () => (await stageStats(s1.id))?.subscribers === 1, 30000, 'its media session to end');
  console.log(`closed viewer's media session ended after ${Date.now() - closedAt} ms`);

  // The pool drains stage 1: while viewer 1 is on it (its move is the edge's job) the pool
  // lists it and the host keeps uploading there; once the pool lists it deleted, the host
  // leaves it.
  s1.state = 'draining';
  await new Promise((r) => setTimeout(r, 3000));
  assert.ok((await hostStages(host)).some((s) => s.stageArn === s1.stageArn),
    'the host keeps uploading to a draining stage the pool still lists');
  s1.state = 'deleted';
  await waitFor(async () => !(await hostStages(host)).some((s) => s.stageArn === s1.stageArn), 10000,
    'the host to leave the drained stage');
  await waitFor(async () => ((await stageStats(s1.id))?.publishers ?? 0) === 0, 5000, 'its publisher session to end');
});
