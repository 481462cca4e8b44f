// IVS mode: the Amazon IVS Web Broadcast SDK, one `Stage` per participant token. Loaded only
// when the edge says mediaMode is "ivs" (a separate chunk, bundled at build time).
import {
  Stage, LocalStageStream, SubscribeType, StageEvents, StageConnectionState, StageErrorCode,
  StageParticipantPublishState,
} from 'amazon-ivs-web-broadcast';

export class SignalError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

// StageErrorCode → the local mode's status and code, so the pages handle both alike (re-seat
// on a token, capacity or stage problem, stop on TOKEN_REUSED). The SDK's errors carry a
// numeric `code` (its rejected join() too), never an HTTP status.
const ERRORS = {
  [StageErrorCode.TOKEN_MALFORMED]: [401, 'TOKEN_MALFORMED'],
  [StageErrorCode.TOKEN_EXPIRED]: [401, 'TOKEN_EXPIRED'],
  [StageErrorCode.TOKEN_NOT_ALLOWED]: [403, 'TOKEN_NOT_ALLOWED'],
  [StageErrorCode.STAGE_DELETED]: [404, 'STAGE_DELETED'],
  [StageErrorCode.PARTICIPANT_DISCONNECTED]: [403, 'PARTICIPANT_DISCONNECTED'],
  [StageErrorCode.STAGE_AT_CAPACITY]: [429, 'STAGE_AT_CAPACITY'],
  [StageErrorCode.CODEC_MISMATCH]: [400, 'CODEC_MISMATCH'],
  [StageErrorCode.TIMEOUT]: [0, 'TIMEOUT'],
  [StageErrorCode.FAILED]: [0, 'FAILED'],
};
// Codes that do not end the session: our own leave() cancels, and no token exchange is used.
const IGNORED = new Set([
  StageErrorCode.CANCELED, StageErrorCode.TOKEN_EXCHANGE_REQUEST_INVALID, StageErrorCode.TOKEN_EXCHANGE_FAILED,
]);

/** A StageError (ERROR event or rejected join()) as a SignalError; null for an ignored one. */
export function signalErrorOf(e) {
  if (e instanceof SignalError) return e;
  if (typeof e?.code !== 'number') return new SignalError(0, 'FAILED', e?.message || String(e));
  if (IGNORED.has(e.code)) return null;
  const [status, code] = ERRORS[e.code] || [0, StageErrorCode[e.code] || `CODE_${e.code}`];
  return new SignalError(status, code, e.message || '');
}

// StageLeftReason → the code a page sees (the same as local mode's reason for a session the
// server ended). 'user-initiated' is our own leave().
const LEFT = {
  'token-reused': [409, 'TOKEN_REUSED'],
  'participant-disconnected': [403, 'PARTICIPANT_DISCONNECTED'],
  'stage-deleted': [404, 'STAGE_DELETED'],
};

function wire(stage, onState, onPublished) {
  let done = false;
  let errored = null;
  const finish = (s, err) => { if (!done) { done = true; clearTimeout(errored); onState(s, err); } };
  stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (s) => {
    if (s === StageConnectionState.CONNECTED) onState('connected');
    // ERRORED comes before the ERROR that says why: give it a moment to arrive.
    else if (s === StageConnectionState.ERRORED) {
      errored = setTimeout(() => finish('failed', new SignalError(0, 'ERRORED', 'the stage connection failed')), 250);
    }
  });
  stage.on(StageEvents.STAGE_LEFT, (reason) => {
    const [status, code] = LEFT[reason] || [0, String(reason).toUpperCase()];
    finish('closed', reason === 'user-initiated' ? undefined : new SignalError(status, code, `left the stage (${reason})`));
  });
  stage.on(StageEvents.ERROR, (e) => {
    const err = signalErrorOf(e);
    if (err) finish('failed', err);
  });
  if (onPublished) {
    stage.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (p, state) => {
      if (p.isLocal && state === StageParticipantPublishState.PUBLISHED) onPublished();
    });
  }
  return () => { done = true; clearTimeout(errored); };
}

/** Joins; a refusal leaves the stage (no retries behind the page's back) and throws a SignalError. */
async function join(stage, stopWatching) {
  try {
    await stage.join();
  } catch (e) {
    stopWatching();
    try { stage.leave(); } catch { /* not joined */ }
    throw signalErrorOf(e) || new SignalError(0, 'CANCELED', e?.message || 'join canceled');
  }
}

class IvsSession {
  constructor(stage) { this.stage = stage; }
  close() { this.stage.leave(); }
}

/** Publishes the camera to one stage. onState('connected'|'failed'|'closed', err?); onPublished(). */
export async function publish({ token, stream, onState, onPublished }) {
  const streams = stream.getTracks().map((t) => new LocalStageStream(t));
  const stage = new Stage(token, {
    stageStreamsToPublish: () => streams,
    shouldPublishParticipant: () => true,
    shouldSubscribeToParticipant: () => SubscribeType.NONE,
  });
  await join(stage, wire(stage, onState, onPublished));
  return new IvsSession(stage);
}

/** Subscribes to the stage's publishers (the host) and plays them in `video`. */
export async function subscribe({ token, video, onState }) {
  const stage = new Stage(token, {
    stageStreamsToPublish: () => [],
    shouldPublishParticipant: () => false,
    shouldSubscribeToParticipant: () => SubscribeType.AUDIO_VIDEO,
  });
  const media = new MediaStream();
  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (p, streams) => {
    if (p.isLocal) return;
    for (const s of streams) media.addTrack(s.mediaStreamTrack);
    video.srcObject = media;
    video.play().catch(() => {});
  });
  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, (p, streams) => {
    for (const s of streams) media.removeTrack(s.mediaStreamTrack);
  });
  await join(stage, wire(stage, onState));
  return new IvsSession(stage);
}
