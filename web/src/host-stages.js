// @ts-check
// The host page's stage bookkeeping: one StageRecord per stage it uploads to, and
// `reconcile`, which compares them with the pool's latest `publisher-all` answer and says
// what to do. Pure (no DOM, no clock, no network): the page applies the plan, and
// web/test/host-stages.test.mjs tests it with plain objects.

/** @typedef {import('./api.js').PublisherToken} PublisherToken */
/** @typedef {{ close(): void }} Session a media session (media-local.js or media-ivs.js) */

/** States of a stage the host does not upload to any more. A draining stage is listed by
 *  the pool only while its viewers are being moved off it: the host stays until then. */
const GONE = new Set(['deleted']);

/** One stage the host page uploads to, and the state of its connection. */
export class StageRecord {
  /**
   * @param {string} arn
   * @param {string} [poolState] the pool's state of the stage
   * @param {string} [region] the stage's IVS region
   */
  constructor(arn, poolState, region) {
    this.arn = arn;
    this.poolState = poolState;
    this.region = region;
    /** The connection as the table shows it: idle, joining, connected, publishing, … */
    this.conn = 'idle';
    /** @type {string | undefined} */
    this.participantId = undefined;
    /** @type {Session | null} */
    this.session = null;
    /** Bumped whenever a session is dropped: callbacks of an older one are ignored. */
    this.gen = 0;
    this.failures = 0;
    /** Not before this time (ms) is a dropped stage joined again. */
    this.retryAt = 0;
    /** The pool was told the host publishes here (`POST /api/host/published`). */
    this.reported = false;
    this.joining = false;
    /** Another connection of this stage's participant took over: not joined again. */
    this.replaced = false;
    /** @type {number | undefined} when `conn` last changed (ms) */
    this.since = undefined;
  }

  /**
   * Sets the connection state; true when it changed.
   * @param {string} conn
   * @param {number} now ms
   */
  setConn(conn, now) {
    if (this.conn === conn) return false;
    this.conn = conn;
    this.since = now;
    return true;
  }

  /** Closes the session, if any, and ignores its later callbacks. */
  closeSession() {
    if (this.session) { try { this.session.close(); } catch { /* already gone */ } }
    this.session = null;
    this.gen++;
  }

  /** @param {number} now ms */
  canJoin(now) {
    return !this.session && !this.joining && !this.replaced && now >= this.retryAt;
  }

  /** Publishing on a live session that the pool has not heard of yet. */
  needsReport() {
    return !!this.session && this.conn === 'publishing' && !this.reported;
  }

  /** What `window.stagefanHost.stages()` shows (no tokens). */
  view() {
    const { arn, poolState, conn, participantId, reported, region } = this;
    return { stageArn: arn, poolState, conn, participantId, reported, ...(region ? { region } : {}) };
  }
}

/**
 * @typedef {object} Plan what to do after a `publisher-all` answer
 * @property {{ stage: StageRecord, why: string }[]} leave stages to close and forget
 * @property {StageRecord[]} add new stages to keep (not yet in `stages`)
 * @property {{ stage: StageRecord, poolState: string }[]} update pool states of kept stages
 * @property {{ stage: StageRecord, token: PublisherToken }[]} join stages to join now
 * @property {StageRecord[]} report stages to report as published again
 */

/**
 * Compares the page's stages with the pool's tokens. A stage the pool no longer lists, or
 * lists as deleted, is left (a draining one it lists still has viewers to move: kept); a new one is added (and joined); a stage without a
 * session is joined once its retry time has come (never one another connection took over);
 * a publishing stage the pool has not heard of is reported again; a stage listed twice counts
 * once. Changes nothing.
 *
 * @param {ReadonlyMap<string, StageRecord>} stages by stage ARN
 * @param {readonly PublisherToken[]} tokens the answer's tokens
 * @param {number} now ms
 * @returns {Plan}
 */
export function reconcile(stages, tokens, now) {
  /** @type {Plan} */
  const plan = { leave: [], add: [], update: [], join: [], report: [] };
  const byArn = new Map(tokens.map((t) => [t.stageArn, t]));
  const seen = new Set();
  for (const stage of stages.values()) {
    const t = byArn.get(stage.arn);
    if (!t) plan.leave.push({ stage, why: 'no longer in the pool' });
    else if (GONE.has(t.state)) plan.leave.push({ stage, why: t.state });
    else if (t.state !== stage.poolState) plan.update.push({ stage, poolState: t.state });
  }
  for (const token of tokens) {
    if (GONE.has(token.state) || seen.has(token.stageArn)) continue;
    seen.add(token.stageArn);
    let stage = stages.get(token.stageArn);
    if (!stage) {
      stage = new StageRecord(token.stageArn, token.state, token.region);
      plan.add.push(stage);
    }
    if (stage.canJoin(now)) plan.join.push({ stage, token });
    else if (stage.needsReport()) plan.report.push(stage);
  }
  return plan;
}
