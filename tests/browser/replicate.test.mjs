// Replicate fan-out through real Chromium: the host page uploads to origin stages only (one per
// six stages), IVS participant replication (ivs-local's media plane) copies it into the other
// stages, and every viewer — on an origin or on a replica stage — decodes the host's camera.
//
//   STAGEFAN_URL=http://127.0.0.1:8787 STAGEFAN_HOST_KEY=… STAGEFAN_ADMIN_KEY=… \
//     node --test tests/browser/replicate.test.mjs
//
// The stack must run with FANOUT_MODE=replicate and STAGE_CAPACITY=2 (`make browser-test`
// starts one); on a multi-publish stack this test skips (under CI=true it fails, saying so).
// Optional: STAGEFAN_BROADCAST,
// STAGEFAN_VIEWERS (default 8), STAGEFAN_HOST_HEIGHT (default 360). Screenshots: tests/out/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, waitFor, videoHealth, screenshotPath, sleep, decodes, hostUpload,
} from './lib/browser.mjs';
import { CI, mustRun, skipOutsideCI } from './lib/must-run.mjs';
import { startFrameLog, longestStall } from './lib/frames.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
// ivs-local (scripts/with-stack.sh sets it): used to cut the host's upload.
const IVS_ENDPOINT = process.env.IVS_ENDPOINT?.replace(/\/$/, '');
const VIEWERS = Number(process.env.STAGEFAN_VIEWERS || 8);
const HEIGHT = Number(process.env.STAGEFAN_HOST_HEIGHT || 360);

let skip = !BASE || !HOST_KEY || !ADMIN_KEY
  ? 'set STAGEFAN_URL, STAGEFAN_HOST_KEY and STAGEFAN_ADMIN_KEY to a running local stack'
  : false;
if (!skip) {
  const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
  if (!cfg) skip = `no stack answers at ${BASE}/api/config`;
  else if (cfg.fanoutMode !== 'replicate') skip = `the stack runs FANOUT_MODE=${cfg.fanoutMode}, not replicate`;
}

let browser;
let broadcast;
const run = Date.now().toString(36);

async function get(path, key) {
  const r = await fetch(BASE + path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  assert.equal(r.status, 200, `GET ${path}: HTTP ${r.status} ${await r.clone().text()}`);
  return r.json();
}

/** The admin snapshot: every stage with its state, load and origin (null for an origin). */
const snapshot = () => get(`/api/broadcasts/${encodeURIComponent(broadcast)}`, ADMIN_KEY);
const existing = (snap) => snap.stages.filter((s) => !['deleted', 'creating'].includes(s.state));

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

test('replicate mode: one host upload per six stages, every viewer decodes', { skip: skipOutsideCI(skip), timeout: 300_000 }, async () => {
  mustRun(skip);
  // Without ivs-local's address the added-replica and upload-cut parts are left out; not in CI.
  if (CI) mustRun(!IVS_ENDPOINT && 'IVS_ENDPOINT (ivs-local) is not set: the added replica and the cut upload would not be checked');
  const viewers = [];
  const hostCtx = await browser.newContext();
  const host = await hostCtx.newPage();
  // The host's publish tokens by participant id (ivs-local ends a session only for a DELETE
  // with that session's own token), read from the page's own WHIP requests.
  const whipTokens = new Map();
  host.on('request', (req) => {
    const auth = req.headers().authorization;
    if (req.method() !== 'POST' || !auth?.startsWith('Bearer ') || !new URL(req.url()).pathname.startsWith('/whip')) return;
    const token = auth.slice(7);
    try { whipTokens.set(JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).jti, token); } catch { /* not a JWT */ }
  });
  try {
    await host.goto(`${BASE}/host?live=1&height=${HEIGHT}&broadcast=${encodeURIComponent(broadcast)}#key=${encodeURIComponent(HOST_KEY)}`);
    await waitFor(async () => (await host.evaluate(() => window.stagefanHost.stages()))
      .some((s) => s.conn === 'publishing' && s.reported), 30_000, 'the host to publish to the origin');
    assert.equal(await host.evaluate(() => window.stagefanHost.fanoutMode()), 'replicate');

    // A running broadcast does not switch modes: asking for the other one is a clear 409.
    const r = await fetch(`${BASE}/api/token/publisher-all`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${HOST_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ broadcast, fanoutMode: 'multi-publish' }),
    });
    assert.equal(r.status, 409);
    const refusal = await r.json();
    assert.equal(refusal.error.code, 'fanout_mode_locked', JSON.stringify(refusal));
    assert.match(refusal.error.message, /replicate/);

    const snap0 = await snapshot();
    assert.equal(snap0.fanoutMode, 'replicate');
    assert.ok(snap0.capacity * 4 <= VIEWERS,
      `the stack runs with capacity ${snap0.capacity}; start it with STAGE_CAPACITY=2`);

    for (let i = 0; i < VIEWERS; i++) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(`${BASE}/watch?broadcast=${encodeURIComponent(broadcast)}&userId=repl-${run}-${i}`,
        { waitUntil: 'domcontentloaded' });
      const v = { ctx, page, i };
      viewers.push(v);
      await waitFor(async () => (await page.evaluate(() => window.stagefanViewer?.stageArn)), 60_000,
        `viewer ${i} to get a seat`);
    }

    // Every viewer decodes the host, whichever stage it sits on.
    for (const v of viewers) await decodes(v, 90_000);
    const seats = await Promise.all(viewers.map((v) => v.page.evaluate(() => ({ ...window.stagefanViewer }))));

    const snap = await snapshot();
    const stages = existing(snap);
    const origins = stages.filter((s) => !s.originArn);
    const replicaStages = stages.filter((s) => s.originArn);
    const byArn = new Map(stages.map((s) => [s.stageArn, s]));
    const onReplicas = seats.filter((s) => byArn.get(s.stageArn)?.originArn);
    console.log(`${stages.length} stages (${origins.length} origins, ${replicaStages.length} replicas); ` +
      `${onReplicas.length} of ${VIEWERS} viewers on replica stages`);
    assert.ok(stages.length >= VIEWERS / snap.capacity, `${stages.length} stages for ${VIEWERS} viewers`);
    assert.ok(onReplicas.length > 0, 'some viewers watch through a replica stage');
    for (const s of stages) assert.ok(s.load <= s.capacity, `stage ${s.stageArn} over capacity`);
    // A stage with viewers has the host: an origin it publishes to, or a replica seen live.
    for (const seat of seats) {
      assert.equal(byArn.get(seat.stageArn)?.state, 'live', `viewer stage ${seat.stageArn} is live`);
    }
    for (const o of origins) {
      assert.ok(replicaStages.filter((s) => s.originArn === o.stageArn).length <= 5, 'at most 5 replicas per origin');
    }

    // The host uploads to at most one stage per six: its peer connections are its origins.
    const upload = await hostUpload(host);
    const allowed = Math.ceil(stages.length / 6);
    console.log(`host upload with ${stages.length} stages: ${upload.streams} connection(s), ${upload.kbps} kbit/s`);
    assert.ok(upload.streams >= 1 && upload.streams <= allowed,
      `${upload.streams} upload connections for ${stages.length} stages (want 1..${allowed})`);
    const hostStages = await host.evaluate(() => window.stagefanHost.stages());
    assert.deepEqual(hostStages.map((h) => h.stageArn).sort(), origins.map((o) => o.stageArn).sort(),
      'the host page publishes to the origins only');

    // The page shows which stages receive it by replication, and from which origin.
    const shown = await waitFor(async () => {
      const rows = await host.evaluate(() => window.stagefanHost.replicas());
      const receiving = new Set(rows.filter((x) => x.receiving).map((x) => x.stageArn));
      return onReplicas.every((seat) => receiving.has(seat.stageArn)) ? rows : null;
    }, 15_000, 'the host page to list the replica stages as receiving');
    for (const r of replicaStages) {
      const row = shown.find((x) => x.stageArn === r.stageArn);
      assert.ok(row, `the host page lists replica ${r.stageArn}`);
      assert.equal(row.originArn, r.originArn);
    }
    const domRows = await host.evaluate(() => [...document.querySelectorAll('tr[data-via="replica"]')].length);
    assert.equal(domRows, shown.length);
    await host.screenshot({ path: screenshotPath('host-replicate.png'), fullPage: true });
    const onReplica = viewers.find((v) => byArn.get(seats[v.i].stageArn)?.originArn);
    await onReplica.page.screenshot({ path: screenshotPath('viewer-replica.png') });

    // The public summary and the status page say which stages are origins and which are
    // replicas, and of which origin; the page lists each replica under its origin.
    const summary = await get(`/api/broadcasts/${encodeURIComponent(broadcast)}`);
    for (const s of stages) {
      const pub = summary.stages.find((x) => x.stageArn === s.stageArn);
      assert.ok(pub, `the summary lists ${s.stageArn}`);
      assert.equal(pub.role, s.originArn ? 'replica' : 'origin', JSON.stringify(pub));
      assert.equal(pub.originArn, s.originArn ?? undefined, JSON.stringify(pub));
    }
    const statusCtx = await browser.newContext();
    try {
      const status = await statusCtx.newPage();
      await status.goto(`${BASE}/status`);
      const rows = await waitFor(async () => {
        const r = await status.evaluate((b) => [...document.querySelectorAll(`section[data-broadcast="${b}"] tr[data-stage]`)]
          .map((tr) => ({ stageArn: tr.dataset.stage, role: tr.dataset.role, origin: tr.dataset.origin ?? null, text: tr.innerText })),
        broadcast);
        return stages.every((s) => r.some((x) => x.stageArn === s.stageArn)) ? r : null;
      }, 10_000, 'the status page to list every stage');
      const shortId = (arn) => arn.split('/').pop();
      for (const s of stages) {
        const i = rows.findIndex((x) => x.stageArn === s.stageArn);
        const row = rows[i];
        if (s.originArn) {
          assert.equal(row.role, 'replica', row.text);
          assert.equal(row.origin, s.originArn);
          assert.match(row.text, new RegExp(`replica\\s+of ${shortId(s.originArn)}`), row.text);
          const o = rows.findIndex((x) => x.stageArn === s.originArn);
          assert.ok(o >= 0 && o < i, `replica ${s.stageArn} is listed after its origin`);
          assert.ok(rows.slice(o + 1, i).every((x) => x.role === 'replica' && x.origin === s.originArn),
            `only replicas of the same origin between ${s.originArn} and its replica ${s.stageArn}`);
        } else {
          assert.equal(row.role, 'origin', row.text);
          assert.equal(row.origin, null);
          assert.match(row.text, /origin\s+host uploads/, row.text);
        }
      }
      const heading = await status.evaluate((b) => document.querySelector(`section[data-broadcast="${b}"] h2`).innerText, broadcast);
      const counted = heading.match(/replicate: (\d+) origins?, (\d+) replicas?/);
      assert.ok(counted && Number(counted[1]) >= origins.length && Number(counted[2]) >= replicaStages.length, heading);
      await status.screenshot({ path: screenshotPath('status-replicate.png'), fullPage: true });
    } finally {
      await statusCtx.close();
    }

    // A replica stage added while live gets the host by replication and goes live; deleting
    // it (empty) stops its replication first.
    if (IVS_ENDPOINT) {
      const activeReplications = async () =>
        (await fetch(`${IVS_ENDPOINT}/_local/stats`).then((r) => r.json())).state.activeReplications;
      const known = new Set(stages.map((x) => x.stageArn));
      const replicationsBefore = await activeReplications();
      const action = (body) => fetch(`${BASE}/api/admin/broadcasts/${encodeURIComponent(broadcast)}/actions`, {
        method: 'POST', headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      }).then((x) => x.json());
      const t0 = Date.now();
      assert.equal((await action({ action: 'create' })).outcome, 'done');
      const added = await waitFor(async () => existing(await snapshot())
        .find((x) => !known.has(x.stageArn) && x.state === 'live'), 30_000, 'the added replica stage to go live');
      console.log(`replica stage added while live: live after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      assert.ok(added.originArn, 'the 6th stage of an origin is a replica');
      assert.equal(await activeReplications(), replicationsBefore + 1);
      const outcome = await action({ action: 'delete', stageArn: added.stageArn });
      assert.equal(outcome.outcome, 'done', JSON.stringify(outcome));
      assert.equal((await snapshot()).stages.find((x) => x.stageArn === added.stageArn)?.state ?? 'deleted', 'deleted');
      assert.equal(await activeReplications(), replicationsBefore, 'its replication was stopped');
    }

    // The host's upload drops (its WHIP session is ended at ivs-local): the page reconnects
    // with a new participant id, the pool replicates that one, and the replica stage's viewer
    // decodes again.
    const replicaArn = seats[onReplica.i].stageArn;
    const replicaHasHost = async (not) => {
      const snap = await snapshot();
      const s = snap.stages.find((x) => x.stageArn === replicaArn);
      const origin = snap.stages.find((x) => x.stageArn === s.originArn);
      return s.hostPublishing && s.hostParticipantId === origin.hostParticipantId
        && s.hostParticipantId !== not;
    };
    if (IVS_ENDPOINT) {
      const before = hostStages[0];
      await startFrameLog(onReplica.page);
      await host.evaluate(() => {
        window.__pcLog = [];
        for (const pc of window.__stagefanPcs) {
          pc.addEventListener('connectionstatechange', () => window.__pcLog.push([Date.now(), pc.connectionState]));
        }
      });
      const del = await fetch(`${IVS_ENDPOINT}/whip/session/${before.participantId}`, {
        method: 'DELETE', headers: { Authorization: `Bearer ${whipTokens.get(before.participantId)}` },
      });
      assert.equal(del.status, 200, 'ending the host session at ivs-local');
      const t0 = Date.now();
      await waitFor(async () => (await host.evaluate(() => window.stagefanHost.stages()))
        .some((s) => s.participantId !== before.participantId && s.conn === 'publishing' && s.reported),
      60_000, 'the host to publish again under a new participant id');
      const tPublishing = Date.now();
      const pcLog = await host.evaluate(() => window.__pcLog);
      console.log('the old upload connection: ' +
        pcLog.map(([t, st]) => `${st} at ${((t - t0) / 1000).toFixed(1)} s`).join(', '));
      await waitFor(() => replicaHasHost(before.participantId), 60_000, 'the replica stage to get the reconnected host');
      const tReplicated = Date.now();
      const h = await videoHealth(onReplica.page, '#video');
      await sleep(2000);
      const h2 = await videoHealth(onReplica.page, '#video');
      const stall = await longestStall(onReplica.page, t0);
      console.log(`host upload cut at ivs-local: the page publishes again after ${((tPublishing - t0) / 1000).toFixed(1)} s, ` +
        `replicated again after ${((tReplicated - t0) / 1000).toFixed(1)} s; the replica viewer went ` +
        `${(stall.ms / 1000).toFixed(1)} s without a new frame; framesDecoded ${h.framesDecoded} → ${h2.framesDecoded}`);
      assert.ok(h2.framesDecoded > h.framesDecoded && h2.litFraction > 0.05,
        'the viewer on the replica stage decodes the reconnected host');
      // The stall's length is a figure (tests/browser/bench-recovery.mjs): Chrome reports the
      // connection disconnected ~6.5 s after the server ended it, and the page then learns at
      // once that the session is gone. Here: the video came back (liveness, the waits above).
      assert.ok(stall.endedAt, 'the replica viewer decoded new frames after the cut');
    }

    // The host page reloads (its sessions end on pagehide; the new page goes live under new
    // participant ids): the replica stage's viewer decodes the host again.
    {
      const before = (await host.evaluate(() => window.stagefanHost.stages()))[0];
      await startFrameLog(onReplica.page);
      const t0 = Date.now();
      await host.goto(`${BASE}/host?live=1&height=${HEIGHT}&broadcast=${encodeURIComponent(broadcast)}&reload=1#key=${encodeURIComponent(HOST_KEY)}`);
      await waitFor(async () => (await host.evaluate(() => window.stagefanHost.stages()))
        .some((s) => s.participantId !== before.participantId && s.conn === 'publishing' && s.reported),
      60_000, 'the reloaded host page to publish');
      const tPublishing = Date.now();
      await waitFor(() => replicaHasHost(before.participantId), 60_000, 'the replica stage to get the reloaded host');
      const tReplicated = Date.now();
      await decodes(onReplica, 30_000);
      await sleep(1000);
      const stall = await longestStall(onReplica.page, t0);
      console.log(`host page reloaded: it publishes again after ${((tPublishing - t0) / 1000).toFixed(1)} s, ` +
        `replicated again after ${((tReplicated - t0) / 1000).toFixed(1)} s; the replica viewer went ` +
        `${(stall.ms / 1000).toFixed(1)} s without a new frame (until ${((stall.endedAt - t0) / 1000).toFixed(1)} s after the reload)`);
      assert.ok(stall.endedAt, 'the replica viewer decoded new frames after the reload');
    }
  } catch (e) {
    try {
      console.log('host stages:', JSON.stringify(await host.evaluate(() => window.stagefanHost.stages())));
      console.log('host replicas:', JSON.stringify(await host.evaluate(() => window.stagefanHost.replicas())));
      console.log('host log:\n' + await host.evaluate(() => document.getElementById('log').textContent));
      console.log('snapshot:', JSON.stringify(await snapshot()));
      await host.screenshot({ path: screenshotPath('failure-host-replicate.png'), fullPage: true });
    } catch (d) {
      console.log('diagnosis failed:', d.message);
    }
    throw e;
  } finally {
    for (const v of viewers) await v.ctx.close();
    await hostCtx.close();
  }
});
