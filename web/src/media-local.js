// @ts-check
// Local mode: WHIP publish and WHEP-style subscribe against ivs-local (docs/contract.md,
// "Local media signaling"). One RTCPeerConnection per stage; the participant token is the
// Bearer credential and is sent nowhere else.

/**
 * A refusal from ivs-local's signaling route (401 token, 403 capability, 404 stage, 429
 * capacity), or why the server ended a session (status 404 and its code: TOKEN_REUSED when a
 * newer connection of the same participant took over, PARTICIPANT_DISCONNECTED, STAGE_DELETED,
 * ICE_SETUP_TIMEOUT, SESSION_ENDED).
 */
export class SignalError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

// Every peer connection the page opens, for tests and diagnostics (getStats).
/** @type {Set<RTCPeerConnection>} */
const pcs = (/** @type {any} */ (window)).__stagefanPcs ??= new Set();

const VIDEO_MAX_BITRATE = 2_500_000; // IVS's STAGE_MAX_BITRATE

async function postOffer(url, token, pc) {
  await pc.setLocalDescription(await pc.createOffer());
  // ivs-local is ICE-lite and learns our address from our STUN checks: no need to wait for
  // candidate gathering before sending the offer.
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
    signal: AbortSignal.timeout(15000),
  });
  if (res.status !== 201) {
    let code = `http_${res.status}`;
    let message = res.statusText;
    try { ({ code = code, message = message } = (await res.json()).error || {}); } catch { /* not JSON */ }
    throw new SignalError(res.status, code, message);
  }
  const location = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  return location;
}

/**
 * Watches a peer connection: calls onState('connected' | 'failed' | 'closed', err?). A
 * 'disconnected' or 'failed' connection asks `whyGone()` whether the server ended the
 * session, and why (err is then a SignalError with that code); a 'disconnected' that does not
 * recover within 5 s counts as failed, or at once when the server ended it (the browser
 * notices that only from missing ICE answers, ~6 s later; the 5 s grace is for a network gap
 * that passes).
 */
function watch(pc, onState, whyGone) {
  let timer;
  let done = false;
  const finish = (s, err) => { if (!done) { done = true; clearTimeout(timer); onState(s, err); } };
  const ask = () => whyGone().catch(() => null); // cannot tell: the grace decides
  pc.addEventListener('connectionstatechange', () => {
    const s = pc.connectionState;
    clearTimeout(timer);
    if (s === 'connected') onState('connected');
    else if (s === 'failed') ask().then((err) => finish('failed', err || undefined));
    else if (s === 'closed') finish('closed');
    else if (s === 'disconnected') {
      timer = setTimeout(() => finish('failed'), 5000);
      ask().then((err) => {
        if (err && pc.connectionState === 'disconnected') finish('failed', err);
      });
    }
  });
  return () => { done = true; clearTimeout(timer); };
}

/**
 * Why ivs-local ended the session at `ref.url`, or null while it exists (GET: 204 while it
 * does, 404 with the reason as the code after).
 */
function sessionGone(ref) {
  return async () => {
    if (!ref.url) return null;
    const res = await fetch(ref.url, { signal: AbortSignal.timeout(2000) });
    if (res.status !== 404) return null;
    let code = 'SESSION_NOT_FOUND';
    try { ({ code = code } = (await res.json()).error || {}); } catch { /* not JSON */ }
    return new SignalError(404, code, 'the server ended this session');
  };
}

class LocalSession {
  constructor(pc, sessionUrl, token, stopWatching) {
    this.pc = pc;
    this.sessionUrl = sessionUrl;
    this.token = token;
    this.stopWatching = stopWatching;
  }

  /** Leaves: DELETE the session (best effort, survives page unload) and close. */
  close() {
    this.stopWatching();
    if (this.sessionUrl) {
      fetch(this.sessionUrl, {
        method: 'DELETE', keepalive: true, headers: { Authorization: `Bearer ${this.token}` },
      }).catch(() => {});
      this.sessionUrl = null;
    }
    this.pc.close();
    pcs.delete(this.pc);
  }
}

function sessionUrl(location, whipUrl, participantId) {
  return new URL(location || `session/${participantId}`, whipUrl.endsWith('/') ? whipUrl : whipUrl + '/').href;
}

/**
 * @typedef {'connected' | 'failed' | 'closed'} ConnState
 * @typedef {(state: ConnState, err?: SignalError) => void} OnState
 */

/**
 * One peer connection to ivs-local, from offer to teardown, for publish and subscribe alike:
 * `setup(pc)` adds the transceivers, the offer goes to `offerUrl`, and the answer's session is
 * watched and closed as one LocalSession. On any failure before that the connection is torn
 * down and the error thrown.
 * @param {{ offerUrl: string, whipUrl: string, token: string, participantId: string,
 *   onState: OnState, setup: (pc: RTCPeerConnection) => Promise<void> | void }} options
 */
async function connect({ offerUrl, whipUrl, token, participantId, onState, setup }) {
  const pc = new RTCPeerConnection();
  pcs.add(pc);
  /** @type {{ url: string | null }} */
  const session = { url: null };
  const stopWatching = watch(pc, onState, sessionGone(session));
  try {
    await setup(pc);
    const location = await postOffer(offerUrl, token, pc);
    session.url = sessionUrl(location, whipUrl, participantId);
    return new LocalSession(pc, session.url, token, stopWatching);
  } catch (e) {
    stopWatching();
    pc.close();
    pcs.delete(pc);
    throw e;
  }
}

/**
 * Publishes `stream` to one stage. onState: 'connected' | 'failed' | 'closed'; onPublished()
 * once media flows (ICE and DTLS up: the next RTP packet is the camera's).
 * @param {{ whipUrl: string, token: string, participantId: string, stream: MediaStream,
 *   onState: OnState, onPublished?: () => void }} options
 */
export async function publish({ whipUrl, token, participantId, stream, onState, onPublished }) {
  let published = false;
  return connect({
    offerUrl: whipUrl, whipUrl, token, participantId,
    // As before the helper: the host page gets no reason in local mode (a replaced upload
    // reconnects), unlike IVS mode's TOKEN_REUSED.
    onState: (s) => {
      onState(s);
      if (s === 'connected' && !published && onPublished) { published = true; onPublished(); }
    },
    setup: async (pc) => {
      for (const track of stream.getTracks()) {
        const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
        if (track.kind === 'video') {
          const p = t.sender.getParameters();
          p.encodings = [{ maxBitrate: VIDEO_MAX_BITRATE }];
          p.degradationPreference = 'maintain-resolution';
          await t.sender.setParameters(p).catch(() => {});
        }
      }
    },
  });
}

/**
 * Subscribes to a stage's host; `video` plays it. onState: 'connected' | 'failed' | 'closed'.
 * @param {{ whipUrl: string, token: string, participantId: string, video: HTMLVideoElement,
 *   onState: OnState }} options
 */
export async function subscribe({ whipUrl, token, participantId, video, onState }) {
  return connect({
    offerUrl: `${whipUrl.replace(/\/$/, '')}/subscribe`, whipUrl, token, participantId, onState,
    setup: (pc) => {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const stream = new MediaStream();
      pc.addEventListener('track', (e) => {
        stream.addTrack(e.track);
        video.srcObject = stream;
        video.play().catch(() => {});
      });
    },
  });
}
