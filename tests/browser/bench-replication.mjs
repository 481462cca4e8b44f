// Benchmark, not a test: the host page's upload (outbound-rtp bytes over time, from its own
// getStats) with 1, 6 and 12 stages, in the fan-out mode the stack runs (multi-publish: one
// upload per stage; replicate: one per origin, i.e. per six stages).
//
//   STAGEFAN_URL=… STAGEFAN_HOST_KEY=… STAGEFAN_ADMIN_KEY=… node tests/browser/bench-replication.mjs
//
// Run it once against a stack started with FANOUT_MODE=multi-publish and once with
// FANOUT_MODE=replicate, both with SCALE_DOWN_GRACE_SECONDS large enough that the empty stages
// are not drained during the run (docs/benchmarks-replication.md has the commands). Stages are
// added with the admin `create` action; each step waits until every stage is live (the host
// publishes there, or its replica is seen there), lets the encoders settle, then samples.
// Env: BENCH_STAGES (default "1,6,12"), BENCH_SETTLE_MS (10000), BENCH_WINDOW_MS (5000),
// STAGEFAN_HOST_HEIGHT (360), BENCH_VIDEO (a .y4m clip for Chromium's fake camera instead of its
// flat green frame, e.g. tests/out/busy-720p.y4m from `tests/bench/media-bench.mjs --noise`).
import { launch, waitFor, sleep } from './lib/browser.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
if (!BASE || !HOST_KEY || !ADMIN_KEY) {
  console.error('set STAGEFAN_URL, STAGEFAN_HOST_KEY and STAGEFAN_ADMIN_KEY');
  process.exit(2);
}
const STEPS = (process.env.BENCH_STAGES || '1,6,12').split(',').map(Number);
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS || 10_000);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS || 5_000);
const HEIGHT = Number(process.env.STAGEFAN_HOST_HEIGHT || 360);

const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json());
const mode = cfg.fanoutMode;
const broadcast = `bench-${mode === 'replicate' ? 'r' : 'm'}-${Date.now().toString(36)}`;
const admin = (path, body) => fetch(`${BASE}/api/admin/broadcasts/${broadcast}${path}`, {
  method: body ? 'POST' : 'GET',
  headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
  body: body ? JSON.stringify(body) : undefined,
}).then(async (r) => {
  if (r.status !== 200) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
});
const existing = (snap) => snap.stages.filter((s) => s.state !== 'deleted');

/** The page's publishing connections and their outbound bytes (audio + video). */
async function sample(host) {
  return host.evaluate(async () => {
    let bytes = 0;
    let streams = 0;
    for (const pc of window.__stagefanPcs || []) {
      if (pc.connectionState !== 'connected') continue;
      let sending = false;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp') { bytes += s.bytesSent; sending = true; }
      });
      if (sending) streams++;
    }
    return { bytes, streams, t: performance.now() };
  });
}

const extraArgs = process.env.BENCH_VIDEO
  ? [`--use-file-for-fake-video-capture=${process.env.BENCH_VIDEO}`] : [];
const browser = await launch({ extraArgs });
const host = await (await browser.newContext()).newPage();
await host.goto(`${BASE}/host?live=1&height=${HEIGHT}&broadcast=${broadcast}#key=${encodeURIComponent(HOST_KEY)}`);
await waitFor(async () => (await host.evaluate(() => window.stagefanHost.stages()))
  .some((s) => s.conn === 'publishing' && s.reported), 30_000, 'the host to publish');

const rows = [];
for (const n of STEPS) {
  while (existing(await admin('')).length < n) {
    const out = await admin('/actions', { action: 'create' });
    if (out.outcome !== 'done') throw new Error(`create refused: ${JSON.stringify(out)}`);
  }
  const t0 = Date.now();
  const snap = await waitFor(async () => {
    const s = await admin('');
    const stages = existing(s);
    if (stages.length !== n || !stages.every((x) => x.state === 'live')) return null;
    const origins = stages.filter((x) => !x.originArn).map((x) => x.stageArn);
    const page = await host.evaluate(() => window.stagefanHost.stages());
    const publishing = origins.every((arn) => page.some((p) => p.stageArn === arn && p.conn === 'publishing'));
    return publishing ? s : null;
  }, 120_000, `${n} live stages`, 500);
  const liveAfter = (Date.now() - t0) / 1000;
  await sleep(SETTLE_MS);
  const a = await sample(host);
  await sleep(WINDOW_MS);
  const b = await sample(host);
  const kbps = ((b.bytes - a.bytes) * 8) / (b.t - a.t);
  const stages = existing(snap);
  const row = {
    mode,
    stages: stages.length,
    origins: stages.filter((x) => !x.originArn).length,
    uploads: b.streams,
    kbps: Math.round(kbps),
    kbpsPerUpload: b.streams ? Math.round(kbps / b.streams) : 0,
    liveAfterSeconds: Number(liveAfter.toFixed(1)),
    // Why the encoders hold back, if they do (cpu: the host's machine cannot encode more).
    limitation: await host.evaluate(async () => {
      const seen = new Set();
      for (const pc of window.__stagefanPcs || []) {
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'outbound-rtp' && s.kind === 'video') seen.add(s.qualityLimitationReason);
        });
      }
      return [...seen].join('+');
    }),
  };
  rows.push(row);
  console.log(JSON.stringify(row));
}
console.table(rows);
await browser.close();
