// The viewer page: asks the edge for a seat (a subscribe token on the stage the pool picks),
// plays the host from that stage, keeps its lease alive, and asks again whenever the seat is
// lost (capacity, stage deleted, token expired, connection dropped). Over the video it says
// where the broadcast is (waiting for the host, the host reconnecting or away, ended: from the
// seat, heartbeat and summary answers and from the frames it gets, viewer-life.js) and plays
// by itself when the host comes on air; after an end it asks again now and then, so a
// broadcast started afresh plays without a reload. When its stage drains (consolidation, an
// operator's drain) the heartbeat answer carries a new seat: the page joins it under the
// playing video and gives the old seat back only once the new stage plays (make-before-break).
import { api, config } from './api.js';
import { stageId, badge } from './dom.js';
import { sleep, backoff } from './retry.js';
import { media } from './media.js';
import { viewerView, wantsSummary } from './viewer-life.js';

const $ = (id) => document.getElementById(id);
const q = new URLSearchParams(location.search);
let video = /** @type {HTMLVideoElement} */ ($('video'));

function viewerId() {
  if (q.get('userId')) return q.get('userId');
  let id = localStorage.getItem('stagefan.userId');
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(9));
    id = 'viewer-' + [...bytes].map((b) => b.toString(36).padStart(2, '0')).join('').slice(0, 14);
    localStorage.setItem('stagefan.userId', id);
  }
  return id;
}

const userId = viewerId();
const broadcastParam = q.get('broadcast') || undefined;
// `?region=eu-west-1`: the IVS region to be seated in first (else the edge places the viewer
// nearest first).
const regionParam = q.get('region') || undefined;
// The lease is the seat's key: presented again, it gets the same seat (same participant);
// without it the edge gives a new seat. Kept per tab (sessionStorage): two tabs are two
// viewers, and a tab's reload keeps its lease until the page gives it back.
const leaseStore = `stagefan.lease.${broadcastParam || ''}`;
let heldLease = sessionStorage.getItem(leaseStore) || undefined;
function holdLease(id) {
  heldLease = id || undefined;
  if (heldLease) sessionStorage.setItem(leaseStore, heldLease);
  else sessionStorage.removeItem(leaseStore);
}
const status = {
  state: 'joining', stageArn: null, leaseId: null, participantId: null, broadcast: null, region: null, joins: 0, firstFrameMs: null,
  /** Moves to a new stage completed (make-before-break), and the last one's switch time (ms). */
  moves: 0, lastMoveMs: null,
  /** When the last move began: page clock (performance.now()) and wall clock (ms). */
  moveStartedPerf: null, moveStartedAt: null,
  /** @type {import('./api.js').BroadcastState | undefined} the edge's last word */
  broadcastState: undefined,
  notice: '',
};
/** How often an ended broadcast is asked again (a new seat request), and a host away (summary). */
const ENDED_RETRY_MS = 10_000;
const SUMMARY_EVERY_MS = 3_000;
/** Frames older than this mean the host's video stopped. */
const FRAME_GAP_MS = 2_000;
const life = { connected: false, hadFrames: false, framesAt: 0, summaryAt: 0, lose: null };
window.stagefanLife = life; // for tests and diagnostics
window.stagefanViewer = status; // for tests and diagnostics
let closing = false;
/** The code of a connection ended because a newer one of the same participant took over. */
const REPLACED = 'TOKEN_REUSED';

function log(msg) {
  const line = `${new Date().toLocaleTimeString()}  ${msg}\n`;
  $('log').textContent = (line + $('log').textContent).slice(0, 6000);
}
function setState(s, error) {
  status.state = s;
  $('state').replaceChildren(badge(s));
  $('error').textContent = error || '';
}
$('user').textContent = userId;

/** Shows where the broadcast is (viewer-life.js): once connected to a stage, or once ended. */
function showLife() {
  if (!life.connected && status.broadcastState !== 'ended') return;
  const frames = Date.now() - life.framesAt < FRAME_GAP_MS;
  const v = viewerView({ broadcastState: status.broadcastState, connected: life.connected, frames, hadFrames: life.hadFrames });
  if (v.state !== status.state) {
    setState(v.state);
    if (v.notice) log(v.notice);
  }
  status.notice = v.notice;
  $('notice').textContent = v.notice;
  $('notice').hidden = !v.notice;
}

/** The edge's word on the broadcast (seat, heartbeat, summary). */
function heard(broadcastState) {
  if (!broadcastState) return;
  status.broadcastState = broadcastState;
  if (broadcastState === 'ended') life.lose?.('the broadcast has ended');
  showLife();
}

/** While the host is away, the summary says whether it is back or the broadcast ended. */
async function askSummary() {
  if (!wantsSummary(status.state) || !status.broadcast || Date.now() - life.summaryAt < SUMMARY_EVERY_MS) return;
  life.summaryAt = Date.now();
  try {
    const s = await api(`/api/broadcasts/${encodeURIComponent(status.broadcast)}`);
    heard(s.broadcastState);
  } catch (e) { log(`cannot read the broadcast's state: ${e.message}`); }
}
/** Resolves when the current seat is lost, with the reason. */
function seatLost() {
  let lose;
  const lost = new Promise((r) => { lose = r; });
  return { lost, lose };
}

/** The seat being watched: its session, and the `lose` of the run loop's iteration. */
const current = { session: null, lose: null, moving: false };
/** How long a move's new stage has to show its first frame before the move is given up. */
const MOVE_PLAY_TIMEOUT_MS = 15_000;

/** Resolves true once `el` has a picture to show (its first presented frame, or a decoded
 *  frame and advancing time where frames are not presented), false after `ms`. */
function firstFrameOn(el, ms) {
  return new Promise((resolve) => {
    let poll = 0;
    const finish = (ok) => { clearTimeout(timer); clearInterval(poll); resolve(ok); };
    const timer = setTimeout(() => finish(false), ms);
    if ('requestVideoFrameCallback' in el) el.requestVideoFrameCallback(() => finish(true));
    let t = -1;
    poll = setInterval(() => {
      if (el.readyState >= 2 && el.videoWidth > 0 && t >= 0 && el.currentTime > t) finish(true);
      t = el.currentTime;
    }, 50);
  });
}

/** Shows the seat in the panel. */
function showSeat(seat) {
  Object.assign(status, {
    stageArn: seat.stageArn, leaseId: seat.leaseId, participantId: seat.participantId, broadcast: seat.broadcast,
  });
  $('stage').textContent = stageId(seat.stageArn);
  $('stage').title = seat.stageArn;
  $('broadcast').textContent = seat.broadcast || '–';
  $('region').textContent = seat.region || '–';
  status.region = seat.region || null;
}

/**
 * Make-before-break: joins `seat` (the heartbeat's move) in a second video under the playing
 * one; once it shows a frame, it takes the first one's place and the old seat is given back.
 * A move that fails leaves the old seat playing: the next heartbeat offers the move again.
 */
async function moveTo(seat) {
  if (current.moving || closing || !current.lose) return;
  current.moving = true;
  status.moveStartedPerf = performance.now();
  status.moveStartedAt = Date.now();
  const from = { session: current.session, video, leaseId: status.leaseId, stageArn: status.stageArn };
  const next = document.createElement('video');
  Object.assign(next, { autoplay: true, playsInline: true, muted: video.muted });
  next.className = 'incoming';
  video.after(next);
  let session = null;
  let swapped = false;
  /** @type {(why: string) => void} */
  let failMove = () => {};
  const failed = new Promise((resolve) => { failMove = resolve; });
  try {
    log(`moving to ${stageId(seat.stageArn)} (this stage is draining)`);
    const m = await media();
    const played = firstFrameOn(next, MOVE_PLAY_TIMEOUT_MS);
    session = await m.subscribe({
      whipUrl: seat.whipUrl, token: seat.token, participantId: seat.participantId, video: next,
      onState: (st, err) => {
        if (st === 'connected') return;
        const why = err ? err.message : `connection ${st}`;
        if (swapped) current.lose?.(err?.code === REPLACED ? REPLACED : why);
        else failMove(why);
      },
    });
    const outcome = await Promise.race([played.then((ok) => (ok ? 'played' : 'no frame in time')), failed]);
    if (outcome !== 'played') throw new Error(outcome);
    // The new stage plays: it takes the old one's place.
    swapped = true;
    const t0 = performance.now();
    next.classList.remove('incoming');
    from.video.removeAttribute('id');
    next.id = 'video';
    video = next;
    next.addEventListener('resize', showSize);
    current.session = session;
    window.stagefanSession = session;
    holdLease(seat.leaseId);
    showSeat(seat);
    from.video.remove();
    from.session?.close();
    status.moves++;
    status.lastMoveMs = Math.round(performance.now() - t0);
    log(`moved to ${stageId(seat.stageArn)}; giving back the seat on ${stageId(from.stageArn)}`);
    heartbeatLoop(seat.leaseId, seat.leaseTtlSeconds || 60, current.lose);
    api('/api/viewer/leave', { method: 'POST', body: { leaseId: from.leaseId } })
      .catch((e) => log(`could not give back the old seat (it lapses): ${e.message}`));
  } catch (e) {
    log(`move to ${stageId(seat.stageArn)} failed (${e.message}); staying, it is offered again`);
    if (!swapped) {
      session?.close();
      next.remove();
    }
  } finally {
    current.moving = false;
  }
}

async function heartbeatLoop(leaseId, ttlSeconds, lose) {
  const every = Math.max(1000, (ttlSeconds * 1000) / 3);
  let misses = 0;
  while (!closing && status.leaseId === leaseId) {
    await sleep(every);
    if (closing || status.leaseId !== leaseId) return;
    try {
      /** @type {import('./api.js').Heartbeat} */
      const beat = await api('/api/viewer/heartbeat', { method: 'POST', body: { leaseId } });
      misses = 0;
      heard(beat.broadcastState);
      // Not awaited: this seat's heartbeats go on until the new one plays.
      if (beat.move && status.leaseId === leaseId) moveTo(beat.move);
    } catch (e) {
      // 410 broadcast_ended: the host ended it, every seat is freed. 410 stage_gone: IVS lost
      // the stage; the pool evicted the seat. 404: the lease lapsed.
      if (e.status === 410 && e.code === 'broadcast_ended') { holdLease(null); heard('ended'); return; }
      if (e.status === 410) { lose('the stage is gone; taking a new seat'); return; }
      if (e.status === 404) { holdLease(null); lose('lease expired'); return; }
      if (++misses >= 3) { lose(`heartbeat failing: ${e.message}`); return; }
    }
  }
}

async function getSeat() {
  for (let attempt = 0; !closing; attempt++) {
    try {
      const seat = await api('/api/token/viewer', {
        method: 'POST', body: { userId, broadcast: broadcastParam, leaseId: heldLease, region: regionParam },
      });
      holdLease(seat.leaseId);
      status.broadcastState = seat.broadcastState;
      return seat;
    } catch (e) {
      let wait = backoff(attempt);
      if (e.status === 410 && e.code === 'broadcast_ended') {
        // Asked again now and then: a broadcast started afresh seats this viewer.
        holdLease(null);
        heard('ended');
        wait = ENDED_RETRY_MS;
      } else if (e.status === 429) {
        wait = (e.retryAfter ?? 10) * 1000;
        setState('waiting', 'Too many seats or requests from this address; waiting…');
      } else if (e.status === 503) {
        wait = (e.retryAfter ?? 2) * 1000;
        setState('waiting', 'Every stage is full; waiting for a seat…');
      } else if (e.status === 404) {
        setState('waiting', 'This broadcast does not exist (yet).');
        wait = Math.max(wait, 5000);
      } else {
        setState('retrying', `Cannot get a seat: ${e.message}`);
      }
      log(`no seat (${e.message}); next try in ${(wait / 1000).toFixed(1)} s`);
      await sleep(wait);
    }
  }
  return null;
}

async function run() {
  const m = await media();
  let failures = 0;
  while (!closing) {
    if (status.broadcastState !== 'ended') setState(status.joins ? 'reconnecting' : 'joining');
    const seat = await getSeat();
    if (!seat) return;
    status.joins++;
    showSeat(seat);
    log(`seat on ${stageId(seat.stageArn)} as ${seat.participantId}`);
    const { lost, lose } = seatLost();
    life.lose = lose;
    current.lose = lose;
    Object.assign(life, { connected: false, hadFrames: false, framesAt: 0 });
    heartbeatLoop(seat.leaseId, seat.leaseTtlSeconds || 60, lose);

    let session = null;
    try {
      session = await m.subscribe({
        whipUrl: seat.whipUrl, token: seat.token, participantId: seat.participantId, video,
        onState: (st, err) => {
          // A session a move replaced is closed on purpose: not a lost seat.
          if (current.session && current.session !== session) return;
          if (st === 'connected') {
            life.connected = true;
            setState('connected');
            showLife();
          } else if (err?.code === REPLACED) lose(REPLACED);
          else lose(err ? err.message : `connection ${st}`);
        },
      });
      current.session = session;
      window.stagefanSession = session;
      failures = 0;
      const why = await lost;
      log(`lost the seat: ${why}`);
      if (why === REPLACED) {
        // A newer connection of this seat (another tab or window with the same lease) took
        // over: taking it back would only start a tug of war. That one keeps the lease alive.
        setState('replaced', 'This seat is now playing in another window. Reload to watch here.');
        return;
      }
    } catch (e) {
      // STAGE_AT_CAPACITY, stage deleted, token expired/invalid or not allowed, disconnected:
      // all mean "ask the edge again". A stage that is not found is reported first, so the
      // pool checks it with IVS and seats this viewer elsewhere if it is gone.
      failures++;
      if (e.status === 404 && seat.leaseId) {
        try {
          const r = await api('/api/viewer/stage-missing', { method: 'POST', body: { leaseId: seat.leaseId } });
          log(r.stageGone ? 'the stage is gone: taking a new seat' : 'stage reported missing');
        } catch (report) { log(`could not report the missing stage: ${report.message}`); }
      }
      setState('retrying', e.message);
      log(`join refused: ${e.message}`);
      await sleep(e.status === 401 ? 200 : backoff(failures - 1, 8000));
    } finally {
      life.connected = false;
      life.lose = null;
      current.lose = null;
      status.leaseId = null; // stops this seat's heartbeat loop
      (current.session || session)?.close();
      current.session = null;
      window.stagefanSession = null;
    }
    if (!closing && failures === 0) await sleep(500);
  }
}

// Time from navigation start to the first decoded frame on screen (for tests and benchmarks).
function watchFirstFrame() {
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return;
  video.requestVideoFrameCallback(() => { status.firstFrameMs ??= Math.round(performance.now()); });
}
watchFirstFrame();

/** Frames decoded by the page's peer connections (local mode lists them), else null. The
 *  <video> is no witness: Chromium repeats a WebRTC track's last frame when none arrive. */
async function framesDecoded() {
  const pcs = /** @type {any} */ (window).__stagefanPcs;
  if (!pcs) return null;
  let n = 0;
  for (const pc of pcs) {
    if (pc.connectionState === 'closed') continue;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
  }
  return n;
}
let lastFrames = 0;
let lastTime = 0;
/** Whether the host's video is arriving: decoded frames rise (or, without the peer
 *  connections to ask, the playing video's time advances). */
async function sampleFrames() {
  const n = await framesDecoded().catch(() => null);
  const arriving = n !== null ? n > lastFrames
    : video.readyState >= 2 && !video.paused && video.currentTime > lastTime;
  lastFrames = n ?? 0;
  lastTime = video.currentTime;
  if (arriving && life.connected) {
    life.framesAt = Date.now();
    life.hadFrames = true;
  }
}
function showSize() { $('video-info').textContent = `${video.videoWidth}×${video.videoHeight}`; }
video.addEventListener('resize', showSize);
setInterval(() => {
  sampleFrames().then(() => { showLife(); askSummary(); });
}, 500);
$('unmute').addEventListener('click', () => { video.muted = !video.muted; $('unmute').textContent = video.muted ? 'Unmute' : 'Mute'; });

window.addEventListener('pagehide', () => {
  closing = true;
  const leaseId = status.leaseId || heldLease;
  if (leaseId) {
    navigator.sendBeacon('/api/viewer/leave',
      new Blob([JSON.stringify({ leaseId })], { type: 'application/json' }));
    holdLease(null);
  }
  window.stagefanSession?.close();
});

config().then((c) => { $('mode').textContent = `media: ${c.mediaMode}`; }).catch(() => {});
run().catch((e) => setState('error', e.message));
