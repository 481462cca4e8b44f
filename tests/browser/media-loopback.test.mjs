// The media crate alone, through real Chromium: one publisher, six subscribers on one stage
// of ivs-local-media's loopback example (no tokens, no edge).
//
//   node --test tests/browser/media-loopback.test.mjs
//
// Needs /usr/bin/chromium and the example binary (built with cargo if missing; set
// CARGO_TARGET_DIR or LOOPBACK_BIN to pick it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, waitFor, videoHealth, screenshotPath, sleep } from './lib/browser.mjs';
import { startLoopback } from './lib/loopback.mjs';

let server;
let browser;

before(async () => {
  server = await startLoopback();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function getJson(path) {
  const r = await fetch(server.url + path);
  assert.equal(r.status, 200, `${path}: HTTP ${r.status}`);
  return r.json();
}

async function events() {
  return (await (await fetch(server.url + '/events')).text()).split('\n').filter(Boolean);
}

async function openPage(ctx, query) {
  const page = await ctx.newPage();
  await page.goto(`${server.url}/?${query}`, { waitUntil: 'domcontentloaded' });
  return page;
}

async function decodes(page, what, ms = 15000) {
  const first = await waitFor(async () => {
    const h = await videoHealth(page);
    return h.framesDecoded > 0 && h.litFraction > 0.05 ? h : null;
  }, ms, `${what} to decode a non-black frame`);
  await sleep(1000);
  const later = await videoHealth(page);
  assert.ok(later.framesDecoded > first.framesDecoded,
    `${what}: framesDecoded did not rise (${first.framesDecoded} → ${later.framesDecoded})`);
  return later;
}

test('an offer that does not fit the role is refused with 400', async () => {
  const sdp = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' +
    'm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n';
  const r = await fetch(`${server.url}/publish?stage=bad`, { method: 'POST', body: sdp });
  assert.equal(r.status, 400);
  assert.match(await r.text(), /invalid SDP offer/);
});

test('one publisher fans out to six subscribers, H.264 + Opus, keyframes on join', async () => {
  const ctx = await browser.newContext();
  const stage = 'fanout';
  const publisher = await openPage(ctx, `role=publish&stage=${stage}&codec=H264&w=1280&h=720`);
  await waitFor(() => publisher.evaluate(() => window.loopbackState === 'connected' || window.loopbackError),
    15000, 'the publisher to connect');
  assert.equal(await publisher.evaluate(() => window.loopbackError), null);

  const subscribers = [];
  for (let i = 0; i < 6; i++) {
    subscribers.push(await openPage(ctx, `role=subscribe&stage=${stage}`));
  }
  const results = await Promise.all(subscribers.map((p, i) => decodes(p, `subscriber ${i + 1}`)));
  for (const r of results) {
    assert.equal(r.codec, 'video/H264', 'the publisher sends H.264, as IVS ingests it');
    assert.ok(r.width > 0, `decoded width ${r.width}`);
  }
  const audio = await subscribers[0].evaluate(() => window.videoStats());
  assert.ok(audio.audioSamples > 0, 'Opus audio arrives too');

  const stats = await getJson('/stats');
  const s = stats.stages.find((x) => x.stageId === stage);
  assert.equal(s.publishers, 1);
  assert.equal(s.subscribers, 6);
  assert.ok(s.packetsReceived > 100, `packets received ${s.packetsReceived}`);
  assert.ok(s.packetsForwarded > 6 * 100, `packets forwarded ${s.packetsForwarded}`);
  const ev = await events();
  assert.ok(ev.some((e) => e.startsWith(`published ${stage} pub-`)), ev.join('; '));
  assert.equal(ev.filter((e) => e.startsWith(`connected ${stage} sub-`)).length, 6);

  // A late subscriber decodes quickly: its join asked the publisher for a keyframe (the
  // fake camera's encoder would otherwise send one only every few seconds or never).
  await sleep(3000);
  const t0 = Date.now();
  const late = await openPage(ctx, `role=subscribe&stage=${stage}`);
  await decodes(late, 'a late subscriber', 8000);
  const lateMs = Date.now() - t0;
  console.log(`late subscriber: first decoded non-black frame ${lateMs} ms after page open`);

  await subscribers[0].screenshot({ path: screenshotPath('media-loopback-subscriber.png') });

  // DELETE ends a session at once; the event and the stats follow.
  const loc = await late.evaluate(() => window.sessionUrl);
  const del = await fetch(server.url + loc, { method: 'DELETE' });
  assert.equal(del.status, 200);
  await waitFor(async () => (await getJson('/stats')).stages.find((x) => x.stageId === stage)?.subscribers === 6,
    3000, 'the deleted subscriber to leave the stats');
  await waitFor(async () => (await events()).some((e) => e === `disconnected ${stage} ${loc.split('/').pop()}`),
    3000, 'a Disconnected event for the deleted session');

  // A closed page ends its session too (DTLS close or, at worst, the 15 s ICE timeout).
  await subscribers[5].close();
  await waitFor(async () => (await getJson('/stats')).stages.find((x) => x.stageId === stage)?.subscribers === 5,
    25000, 'a closed subscriber page to leave the stats');

  // The others keep playing.
  for (const p of subscribers.slice(0, 5)) await decodes(p, 'a remaining subscriber', 5000);
  await ctx.close();
});

test('VP8 publishers work too, and stages are isolated', async () => {
  const ctx = await browser.newContext();
  const a = await openPage(ctx, 'role=publish&stage=vp8-a&codec=VP8&w=640&h=360');
  const subA = await openPage(ctx, 'role=subscribe&stage=vp8-a');
  const subB = await openPage(ctx, 'role=subscribe&stage=vp8-b');
  const r = await decodes(subA, 'the VP8 subscriber');
  assert.equal(r.codec, 'video/VP8');
  await sleep(2000);
  const b = await videoHealth(subB);
  assert.equal(b.framesDecoded, 0, 'a subscriber of another stage receives nothing');
  const stats = await getJson('/stats');
  assert.equal(stats.stages.find((x) => x.stageId === 'vp8-b').packetsForwarded, 0);
  await a.close();
  await ctx.close();
});
