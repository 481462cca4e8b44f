// @ts-check
// What the viewer page shows of the broadcast's life, pure (no DOM, no clock): from the edge's
// last word on the broadcast (seat, heartbeat or summary answer: `broadcastState`) and from
// what the page sees itself (connected to its stage, frames arriving, frames arrived before).
// Frames win over a stale word from the edge, except for an end; frames that stop after they
// flowed mean the host is away before the edge says so. Tested by web/test/viewer-life.test.mjs.

/** @typedef {import('./api.js').BroadcastState} BroadcastState */

/** The message shown over the video for each state the page can be in (none while playing). */
export const NOTICES = Object.freeze({
  waiting_for_host: 'Waiting for the host…',
  host_reconnecting: 'The host is reconnecting…',
  host_away: 'The host is away. Waiting for the host to come back…',
  ended: 'The broadcast has ended',
});

/**
 * The page's state and the notice to show.
 * @param {{ broadcastState?: BroadcastState, connected: boolean, frames: boolean, hadFrames: boolean }} seen
 * @returns {{ state: 'ended' | 'playing' | 'connected' | keyof typeof NOTICES, notice: string }}
 */
export function viewerView({ broadcastState, connected, frames, hadFrames }) {
  /** @param {keyof typeof NOTICES} state */
  const noticed = (state) => ({ state, notice: NOTICES[state] });
  if (broadcastState === 'ended') return noticed('ended');
  if (connected && frames) return { state: 'playing', notice: '' };
  switch (broadcastState) {
    // Frames came after the edge said "not started": that word is stale, the host was on air.
    case 'not_started': return noticed(connected && hadFrames ? 'host_reconnecting' : 'waiting_for_host');
    case 'host_reconnecting': return noticed('host_reconnecting');
    case 'off_air': return noticed('host_away');
    default:
      // On air (or not said): frames that stopped are the host going away, as far as this
      // page can tell; no frames yet is a connection about to play.
      if (connected && hadFrames) return noticed('host_reconnecting');
      return { state: 'connected', notice: '' };
  }
}

/**
 * Whether a broadcast state from the edge should be asked for again soon: while the page
 * shows the host away or reconnecting (the edge knows whether it ended), not while playing
 * or waiting for the start (frames or the heartbeat bring the news).
 * @param {string} state the page's state from `viewerView`
 */
export function wantsSummary(state) {
  return state === 'host_reconnecting' || state === 'host_away';
}
