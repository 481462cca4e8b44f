// IVS mode: the errors the real IVS Web Broadcast SDK raises against ivs-local, one test each,
// and what the viewer page then does (re-seat, back off, or stop and say why).
//
//   MEDIA_MODE=ivs STAGE_CAPACITY=2 IVS_LOCAL_SUBSCRIBER_CAP=2 \
//     scripts/with-stack.sh node --test tests/browser/ivs-errors.test.mjs
//
// Each bad token is a real one (from the worker) changed and signed again with the stack's
// key, handed to the page in place of its first seat (Playwright route on /api/token/viewer):
// the SDK then meets ivs-local's real refusal. Stage deletion and DisconnectParticipant are
// real IVS calls (SigV4) to ivs-local. Skips on a stack that is not in IVS mode.
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, waitFor, decodes } from './lib/browser.mjs';
import {
  ivsStack, ivsContext, keepConsole, resign, decodeToken, randomParticipantId, ivsCall,
} from './lib/ivs.mjs';

const { BASE, HOST_KEY, IVS, skip } = await ivsStack();

const run = Date.now().toString(36);
const broadcast = `ivs-errors-${run}`;
let browser;
let host;
let n = 0;

before(async () => {
  if (skip) return;
  browser = await launch();
  const ctx = await ivsContext(browser);
  const page = await ctx.newPage();
  await page.goto(`${BASE}/host?live=1&height=240&broadcast=${encodeURIComponent(broadcast)}#key=${encodeURIComponent(HOST_KEY)}`);
  host = { ctx, page };
  await waitFor(async () => (await page.evaluate(() => window.stagefanHost.stages())).some((s) => s.conn === 'publishing' && s.reported),
    45_000, 'the host to publish with the SDK');
});

after(async () => {
  await host?.ctx.close();
  await browser?.close();
});

/**
 * A viewer page. `firstSeat(seat)` may rewrite the page's first seat answer (the JSON of
 * POST /api/token/viewer); later answers pass untouched. Returns { page, ctx, log, seats }.
 */
async function viewer(firstSeat) {
  const ctx = await ivsContext(browser);
  const seats = [];
  await ctx.route(`${BASE}/api/token/viewer`, async (route) => {
    const res = await route.fetch();
    let seat = await res.json();
    if (res.status() === 200 && firstSeat && seats.length === 0) seat = await firstSeat(seat);
    if (res.status() === 200) seats.push(seat);
    await route.fulfill({ response: res, body: JSON.stringify(seat) });
  });
  const page = await ctx.newPage();
  const log = keepConsole(page);
  await page.goto(`${BASE}/watch?broadcast=${encodeURIComponent(broadcast)}&userId=err-${run}-${n++}`, { waitUntil: 'domcontentloaded' });
  return { ctx, page, log, seats, i: n };
}

const status = (v) => v.page.evaluate(() => ({ ...window.stagefanViewer }));
const pageLog = (v) => v.page.evaluate(() => document.getElementById('log').textContent);

/** Waits until the viewer's log names `code`; returns the log. */
async function logs(v, code, ms = 30_000) {
  return waitFor(async () => { const l = await pageLog(v); return l.includes(code) ? l : null; }, ms, `the page to report ${code}`);
}

async function diagnose(v) {
  try {
    console.log('viewer:', JSON.stringify(await status(v)));
    console.log('viewer log:\n' + await pageLog(v));
    console.log('viewer console:\n' + v.log.slice(-30).join('\n'));
  } catch (e) {
    console.log('diagnosis failed:', e.message);
  }
}

/** Runs `body(v)` against a viewer page, printing what the page saw when it fails. */
async function withViewer(firstSeat, body) {
  const v = await viewer(firstSeat);
  try {
    await body(v);
  } catch (e) {
    await diagnose(v);
    throw e;
  } finally {
    await v.ctx.close();
  }
}

/** The page re-seats: a second seat, and it plays again. */
async function reseatsAndPlays(v) {
  await waitFor(async () => (await status(v)).joins >= 2, 30_000, 'a new seat');
  await decodes(v, 60_000);
  assert.equal((await status(v)).state, 'playing');
}

test('expired token: join() is refused with TOKEN_EXPIRED, the page takes a new seat and plays', { skip: skipOutsideCI(skip), timeout: 120_000 }, async () => {
  mustRun(skip);
  await withViewer((seat) => ({
    ...seat, token: resign(seat.token, (c) => { c.iat -= 3600; c.exp = Math.floor(Date.now() / 1000) - 60; }),
  }), async (v) => {
    await logs(v, 'TOKEN_EXPIRED');
    await reseatsAndPlays(v);
  });
});

test('token without the subscribe capability: TOKEN_NOT_ALLOWED, then a new seat that plays', { skip: skipOutsideCI(skip), timeout: 120_000 }, async () => {
  mustRun(skip);
  await withViewer((seat) => ({
    ...seat, token: resign(seat.token, (c) => { c.capabilities = { allow_publish: false, allow_subscribe: false }; }),
  }), async (v) => {
    await logs(v, 'TOKEN_NOT_ALLOWED');
    await reseatsAndPlays(v);
  });
});

test('stage at capacity: ivs-local refuses the subscription (403, 2005), the page re-seats and plays', { skip: skipOutsideCI(skip), timeout: 150_000 }, async () => {
  mustRun(skip);
  // Two viewers fill a stage (ivs-local's subscriber cap is the stage capacity, 2).
  const fillers = [await viewer(), await viewer()];
  try {
    for (const f of fillers) await decodes(f, 60_000);
    const [a, b] = await Promise.all(fillers.map(status));
    const full = a.stageArn === b.stageArn ? a.stageArn : null;
    assert.ok(full, `both fillers on one stage (${a.stageArn}, ${b.stageArn})`);
    // A third participant is sent to that full stage with a valid token for it.
    await withViewer((seat) => ({
      ...seat,
      token: resign(seat.token, (c) => {
        c.jti = randomParticipantId();
        c.resource = full;
        c.topic = full.split('/').pop();
      }),
    }), async (v) => {
      await logs(v, 'STAGE_AT_CAPACITY');
      await reseatsAndPlays(v);
      assert.notEqual((await status(v)).stageArn, full);
    });
  } finally {
    for (const f of fillers) await f.ctx.close();
  }
});

test('participant disconnected (DisconnectParticipant): the page is told and asks for a new seat', { skip: skipOutsideCI(skip), timeout: 150_000 }, async () => {
  mustRun(skip);
  await withViewer(null, async (v) => {
    await decodes(v, 60_000);
    const s = await status(v);
    const pid = decodeToken(v.seats[0].token).claims.jti;
    await ivsCall(IVS, 'DisconnectParticipant', { stageArn: s.stageArn, participantId: pid, reason: 'test: abusive client' });
    await logs(v, 'PARTICIPANT_DISCONNECTED');
    // It asks the edge again (the edge decides whether this client gets another seat).
    await waitFor(async () => (await status(v)).joins >= 2, 30_000, 'the page to ask for a new seat');
    console.log(`after DisconnectParticipant the page is '${(await status(v)).state}'`);
  });
});

test('token reused: a second page with the same participant takes over; the first stops and says so', { skip: skipOutsideCI(skip), timeout: 150_000 }, async () => {
  mustRun(skip);
  const first = await viewer();
  try {
    await decodes(first, 60_000);
    const taken = first.seats[0];
    await withViewer(() => taken, async (second) => {
      await decodes(second, 60_000);
      await waitFor(async () => (await status(first)).state === 'replaced', 20_000, 'the first page to stop as replaced');
      await logs(first, 'TOKEN_REUSED');
      // It does not take the seat back: the second page keeps playing.
      await new Promise((r) => setTimeout(r, 4000));
      assert.equal((await status(first)).joins, 1, 'the replaced page did not ask for another seat');
      assert.equal((await status(second)).state, 'playing');
      const stats = await (await fetch(`${IVS}/_local/stats`)).json();
      assert.ok(stats.events.outcomes.replaced >= 1, JSON.stringify(stats.events));
    });
  } catch (e) {
    await diagnose(first);
    throw e;
  } finally {
    await first.ctx.close();
  }
});

test('token reused by a second host page: the first stops uploading to those stages and says so', { skip: skipOutsideCI(skip), timeout: 150_000 }, async () => {
  mustRun(skip);
  // A broadcast of its own, so the shared host above is not disturbed.
  const b2 = `${broadcast}-hosts`;
  const open = async (rewrite) => {
    const ctx = await ivsContext(browser);
    let answer = null;
    await ctx.route(`${BASE}/api/token/publisher-all`, async (route) => {
      const res = await route.fetch();
      let body = await res.json();
      if (res.status() === 200 && rewrite) body = rewrite(body);
      if (res.status() === 200 && body.tokens?.length) answer = body; // the latest with stages
      await route.fulfill({ response: res, body: JSON.stringify(body) });
    });
    const page = await ctx.newPage();
    const log = keepConsole(page);
    await page.goto(`${BASE}/host?live=1&height=240&broadcast=${encodeURIComponent(b2)}#key=${encodeURIComponent(HOST_KEY)}`);
    return { ctx, page, log, answer: () => answer };
  };
  const stagesOf = (h) => h.page.evaluate(() => window.stagefanHost.stages());
  const first = await open();
  let second;
  try {
    await waitFor(async () => (await stagesOf(first)).some((s) => s.conn === 'publishing'), 45_000, 'the first host to publish');
    const tokens = first.answer();
    // The second page gets the first one's tokens for the same stages (same participants).
    second = await open((body) => ({
      ...body,
      tokens: body.tokens.map((t) => tokens.tokens.find((x) => x.stageArn === t.stageArn) || t),
    }));
    const arn = tokens.tokens[0].stageArn;
    await waitFor(async () => (await stagesOf(second)).some((s) => s.stageArn === arn && s.conn === 'publishing'), 45_000,
      'the second host to publish with the same participant');
    await waitFor(async () => (await stagesOf(first)).some((s) => s.stageArn === arn && s.conn === 'replaced'), 20_000,
      'the first host to mark the stage replaced');
    const err = await first.page.evaluate(() => document.getElementById('error').textContent);
    assert.match(err, /Another host page took over/);
    // It does not take the stage back.
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal((await stagesOf(first)).find((s) => s.stageArn === arn).conn, 'replaced');
    assert.equal((await stagesOf(second)).find((s) => s.stageArn === arn).conn, 'publishing');
  } catch (e) {
    console.log('first host log:\n' + await first.page.evaluate(() => document.getElementById('log').textContent).catch(() => ''));
    if (second) console.log('second host log:\n' + await second.page.evaluate(() => document.getElementById('log').textContent).catch(() => ''));
    throw e;
  } finally {
    await second?.ctx.close();
    await first.ctx.close();
  }
});

// Last: the pool may keep seating viewers on the deleted stage (see below).
test('stage deleted under the viewer: the page is told STAGE_DELETED and asks for a new seat', { skip: skipOutsideCI(skip), timeout: 150_000 }, async () => {
  mustRun(skip);
  await withViewer(null, async (v) => {
    await decodes(v, 60_000);
    const s = await status(v);
    await ivsCall(IVS, 'DeleteStage', { arn: s.stageArn });
    await logs(v, 'STAGE_DELETED');
    await waitFor(async () => (await status(v)).joins >= 2, 30_000, 'the page to ask for a new seat');
    // Until the pool learns that IVS no longer has the stage (issue 8), it may seat the page
    // there again: the page then meets JOIN_ERROR STAGE_DELETED and backs off each time.
    console.log(`after DeleteStage the page is '${(await status(v)).state}' (joins ${(await status(v)).joins})`);
  });
});
