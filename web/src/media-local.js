// Local mode: WHIP publish and WHEP-style subscribe against ivs-local (docs/contract.md,
// "Local media signaling"). One RTCPeerConnection per stage; the participant token is the
// Bearer credential and is sent nowhere else.

/** A refusal from ivs-local's signaling route (401 token, 403 capability, 404 stage, 409 reused, 429 capacity). */
export class SignalError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

// Every peer connection the page opens, for tests and diagnostics (getStats).
window.__stagefanPcs ??= new Set();

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
 * Watches a peer connection: calls onState('connected' | 'failed' | 'closed'). A
 * 'disconnected' that does not recover within 5 s counts as failed, or at once when
 * `isGone()` finds that the server ended the session (the browser notices that only from
 * missing ICE answers, ~6 s later; the 5 s grace is for a network gap that passes).
 */
function watch(pc, onState, isGone) {
  let timer;
  let done = false;
  const finish = (s) => { if (!done) { done = true; clearTimeout(timer); onState(s); } };
  pc.addEventListener('connectionstatechange', () => {
    const s = pc.connectionState;
    clearTimeout(timer);
    if (s === 'connected') onState('connected');
    else if (s === 'failed') finish('failed');
    else if (s === 'closed') finish('closed');
    else if (s === 'disconnected') {
      timer = setTimeout(() => finish('failed'), 5000);
      isGone().then((gone) => {
        if (gone && pc.connectionState === 'disconnected') finish('failed');
      }, () => { /* cannot tell: the grace decides */ });
    }
  });
  return () => { done = true; clearTimeout(timer); };
}

/** Whether ivs-local ended the session at `ref.url` (GET: 204 while it exists, 404 after). */
function sessionGone(ref) {
  return async () => {
    if (!ref.url) return false;
    const res = await fetch(ref.url, { signal: AbortSignal.timeout(2000) });
    return res.status === 404;
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
    window.__stagefanPcs.delete(this.pc);
  }
}

function sessionUrl(location, whipUrl, participantId) {
  return new URL(location || `session/${participantId}`, whipUrl.endsWith('/') ? whipUrl : whipUrl + '/').href;
}

/**
 * Publishes `stream` to one stage. onState: 'connected' | 'failed' | 'closed'; onPublished()
 * once media flows (ICE and DTLS up: the next RTP packet is the camera's).
 */
export async function publish({ whipUrl, token, participantId, stream, onState, onPublished }) {
  const pc = new RTCPeerConnection();
  window.__stagefanPcs.add(pc);
  let published = false;
  const session = { url: null };
  const stopWatching = watch(pc, (s) => {
    onState(s);
    if (s === 'connected' && !published && onPublished) { published = true; onPublished(); }
  }, sessionGone(session));
  try {
    for (const track of stream.getTracks()) {
      const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video') {
        const p = t.sender.getParameters();
        p.encodings = [{ maxBitrate: VIDEO_MAX_BITRATE }];
        p.degradationPreference = 'maintain-resolution';
        await t.sender.setParameters(p).catch(() => {});
      }
    }
    const location = await postOffer(whipUrl, token, pc);
    session.url = sessionUrl(location, whipUrl, participantId);
    return new LocalSession(pc, session.url, token, stopWatching);
  } catch (e) {
    stopWatching();
    pc.close();
    window.__stagefanPcs.delete(pc);
    throw e;
  }
}

/** Subscribes to a stage's host; `video` plays it. onState: 'connected' | 'failed' | 'closed'. */
export async function subscribe({ whipUrl, token, participantId, video, onState }) {
  const pc = new RTCPeerConnection();
  window.__stagefanPcs.add(pc);
  const session = { url: null };
  const stopWatching = watch(pc, onState, sessionGone(session));
  try {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.addEventListener('track', (e) => {
      stream.addTrack(e.track);
      video.srcObject = stream;
      video.play().catch(() => {});
    });
    const base = whipUrl.replace(/\/$/, '');
    const location = await postOffer(`${base}/subscribe`, token, pc);
    session.url = sessionUrl(location, whipUrl, participantId);
    return new LocalSession(pc, session.url, token, stopWatching);
  } catch (e) {
    stopWatching();
    pc.close();
    window.__stagefanPcs.delete(pc);
    throw e;
  }
}
