// Media plane benchmark: the server's CPU per subscriber with one 720p H.264 publisher, and the
// time from a viewer page's load to its first decoded frame.
//
//   node tests/bench/media-bench.mjs [--steps 0,25,50,100,150,200] [--window 10] [--viewers 5] [--debug]
//        [--noise]
//
// Builds (release unless --debug) and starts ivs-local-media's loopback example, publishes
// Chromium's fake camera at 1280×720 (H.264, ≤ 2.5 Mbit/s), adds str0m subscribers
// (examples/bench_subscribers.rs: they receive every packet but do not decode) step by step while
// sampling the server's CPU from /proc, then opens Chromium viewer pages one at a time and times
// page load → first decoded frame. Prints JSON lines and a Markdown summary.
//
// Chromium's fake camera (a flat green frame) compresses to ≈0.5 Mbit/s at 720p. With --noise
// the camera is a generated busy 1280×720 clip (tests/out/busy-720p.y4m, made on first use)
// that the encoder sends at up to the 2.5 Mbit/s cap, like a busy real camera.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { launch, waitFor, videoHealth, sleep, ROOT } from '../browser/lib/browser.mjs';
import { startLoopback } from '../browser/lib/loopback.mjs';

const argv = process.argv.slice(2);
const opt = (name, def) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : def; };

/**
 * A 1280×720 30 fps Y4M clip (2 s, looped by Chromium): 16×16 blocks of random grey that change
 * 8 % at a time, under a moving fine pattern. Busy enough that the encoder uses its whole
 * bitrate cap, unlike the fake camera's flat frame (pure noise makes it stall instead).
 */
function noiseVideo() {
  const dir = join(ROOT, 'tests', 'out');
  const path = join(dir, 'busy-720p.y4m');
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true });
  const w = 1280, h = 720, B = 16, bw = w / B;
  const fd = openSync(path, 'w');
  writeSync(fd, `YUV4MPEG2 W${w} H${h} F30:1 C420\n`);
  const frame = Buffer.alloc(w * h * 3 / 2, 128);
  const blocks = new Uint8Array(bw * (h / B)).map(() => randomInt(256));
  for (let i = 0; i < 60; i++) {
    for (let k = 0; k < blocks.length * 0.08; k++) blocks[randomInt(blocks.length)] = randomInt(256);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) frame[y * w + x] = blocks[((y / B) | 0) * bw + ((x / B) | 0)] ^ ((x * 7 + y * 13 + i) & 15);
    }
    writeSync(fd, 'FRAME\n');
    writeSync(fd, frame);
  }
  closeSync(fd);
  return path;
}

const release = !argv.includes('--debug');
const steps = opt('--steps', '0,25,50,100,150,200');
const windowSecs = opt('--window', '10');
const viewerCount = Number(opt('--viewers', '5'));

const target = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
const buildArgs = ['build', '-p', 'ivs-local-media', '--example', 'loopback', '--example', 'bench_subscribers'];
if (release) buildArgs.push('--release');
// Thin local LTO keeps the release build of the examples quick; run time is what is measured.
const b = spawnSync('cargo', buildArgs, {
  cwd: ROOT, stdio: 'inherit',
  env: { ...process.env, CARGO_PROFILE_RELEASE_LTO: 'false', CARGO_PROFILE_RELEASE_CODEGEN_UNITS: '16' },
});
if (b.status !== 0) process.exit(1);
const profile = release ? 'release' : 'debug';
process.env.LOOPBACK_BIN = join(target, profile, 'examples', 'loopback');

const extraArgs = [];
if (argv.includes('--noise')) extraArgs.push(`--use-file-for-fake-video-capture=${noiseVideo()}`);
const server = await startLoopback({ release });
const browser = await launch({ extraArgs });
const results = { steps: [], firstFrameMs: [] };
try {
  const ctx = await browser.newContext();
  const pub = await ctx.newPage();
  await pub.goto(`${server.url}/?role=publish&stage=bench&codec=H264&w=1280&h=720&bitrate=2500000`);
  const sent = await waitFor(async () => {
    const s = await pub.evaluate(() => window.videoStats && window.videoStats());
    return s && s.framesSent > 30 && s.width === 1280 ? s : null;
  }, 30000, 'the publisher to send 1280x720');
  console.log(`publisher: ${sent.codec} ${sent.width}x${sent.height}`);

  // The load generator runs at the lowest priority: on a small machine it competes with the
  // server and with Chromium's encoder; when it falls behind, its subscribers receive less (their
  // columns drop) but the server's work is still what the server forwarded.
  const client = spawn('nice', ['-n', '19', join(target, profile, 'examples', 'bench_subscribers'),
    '--url', server.url, '--pid', String(server.proc.pid), '--stage', 'bench', '--steps', steps, '--window', windowSecs],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  client.stdout.on('data', async (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      const r = JSON.parse(line);
      const stats = await (await fetch(server.url + '/stats')).json();
      r.publisherVideo = await pub.evaluate(() => window.videoStats());
      r.sessions = stats.sessions;
      results.steps.push(r);
      console.log(JSON.stringify(r));
    }
  });
  await new Promise((r) => client.on('exit', r));
  const stats = await (await fetch(server.url + '/stats')).json();
  console.log(`server stats: ${stats.sessions} sessions, ${stats.packetsForwarded} packets forwarded, ${stats.sendDrops} send drops`);
  results.sendDrops = stats.sendDrops;

  // Time to first frame: a fresh viewer page on a stage whose host has been publishing a while.
  for (let i = 0; i < viewerCount; i++) {
    const vctx = await browser.newContext();
    const page = await vctx.newPage();
    const t0 = Date.now();
    await page.goto(`${server.url}/?role=subscribe&stage=bench`, { waitUntil: 'domcontentloaded' });
    await waitFor(async () => (await videoHealth(page)).framesDecoded > 0, 15000, 'a first decoded frame', 20);
    results.firstFrameMs.push(Date.now() - t0);
    await vctx.close();
    await sleep(700);
  }
  console.log(`page load → first decoded frame (ms): ${results.firstFrameMs.join(', ')}`);
} finally {
  await browser.close();
  await server.stop();
}

// Markdown summary. A row counts when the publisher kept its frame rate (the server had the
// whole stream to forward); the cost per subscriber is then set against what the server actually
// forwarded (its own counters), whatever the load generator managed to receive.
const base = results.steps.find((s) => s.subscribers === 0)?.serverCpuCores ?? 0;
const pubFps = Math.max(...results.steps.map((s) => s.publisherVideo?.fps || 0));
console.log('\n| subscribers | connected | server CPU (cores) | Δ per subscriber (% of a core) | forwarded Mbit/s per subscriber | forwarded packets/s | received fps / subscriber | publisher fps, size, limited by |');
console.log('|---|---|---|---|---|---|---|---|');
let headline = null;
for (const s of results.steps) {
  const per = s.subscribers ? (s.serverCpuCores - base) / s.subscribers : 0;
  const p = s.publisherVideo || {};
  const fwd = s.subscribers ? (s.serverForwardedMbps / s.subscribers).toFixed(2) : '–';
  console.log(`| ${s.subscribers} | ${s.connected} | ${s.serverCpuCores.toFixed(3)} | ${s.subscribers ? (per * 100).toFixed(3) : '–'} | ${fwd} | ${s.serverForwardedPps} | ${s.videoFpsPerSubscriber.toFixed(1)} | ${p.fps ?? ''} ${p.width}x${p.height} ${p.limitedBy ?? ''} |`);
  if (s.subscribers && s.connected === s.subscribers && (p.fps || 0) >= 0.9 * pubFps) headline = { ...s, per };
}
if (headline) {
  console.log(`\nat ${headline.subscribers} subscribers, ${(headline.serverForwardedMbps / headline.subscribers).toFixed(2)} Mbit/s forwarded to each: ` +
    `${(headline.per * 100).toFixed(3)} % of a core per subscriber → ${(1 / headline.per).toFixed(0)} subscribers per core`);
}
const ff = [...results.firstFrameMs].sort((a, b) => a - b);
if (ff.length) console.log(`first decoded frame: median ${ff[Math.floor(ff.length / 2)]} ms, max ${ff[ff.length - 1]} ms`);
