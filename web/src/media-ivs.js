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

// SDK error codes → the local mode's HTTP-like status, so the pages handle both alike.
function statusOf(code) {
  switch (code) {
    case StageErrorCode.TOKEN_EXPIRED:
    case StageErrorCode.TOKEN_MALFORMED: return 401;
    case StageErrorCode.TOKEN_NOT_ALLOWED: return 403;
    case StageErrorCode.STAGE_DELETED: return 404;
    case StageErrorCode.STAGE_AT_CAPACITY: return 429;
    default: return 0;
  }
}

function wire(stage, onState, onPublished) {
  let done = false;
  const finish = (s, err) => { if (!done) { done = true; onState(s, err); } };
  stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (s) => {
    if (s === StageConnectionState.CONNECTED) onState('connected');
    else if (s === StageConnectionState.ERRORED) finish('failed');
  });
  stage.on(StageEvents.STAGE_LEFT, (reason) => finish('closed', new SignalError(0, reason, 'left the stage')));
  stage.on(StageEvents.ERROR, (e) => {
    const status = statusOf(e.code);
    if (status) finish('failed', new SignalError(status, StageErrorCode[e.code] || String(e.code), e.message || ''));
  });
  if (onPublished) {
    stage.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (p, state) => {
      if (p.isLocal && state === StageParticipantPublishState.PUBLISHED) onPublished();
    });
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
  wire(stage, onState, onPublished);
  await stage.join();
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
  wire(stage, onState);
  await stage.join();
  return new IvsSession(stage);
}
