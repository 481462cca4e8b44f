// @ts-check
// The edge API (docs/contract.md, "Edge HTTP API"): one JSON request helper, its error, and
// the shapes of the answers the pages read. No DOM here (dom.js has the page helpers).

/**
 * @typedef {'local' | 'ivs'} MediaMode
 * @typedef {'multi-publish' | 'replicate'} FanoutMode
 * @typedef {'creating' | 'warming' | 'live' | 'draining' | 'deleted'} StageState
 * @typedef {'not_started' | 'on_air' | 'host_reconnecting' | 'off_air' | 'ended'} BroadcastState
 *
 * @typedef {object} Config `GET /api/config`
 * @property {MediaMode} mediaMode
 * @property {FanoutMode} fanoutMode
 * @property {string} tokenMode
 * @property {string} [defaultBroadcast]
 *
 * @typedef {object} PublisherToken one stage of `POST /api/token/publisher-all`
 * @property {string} stageArn
 * @property {string} token
 * @property {string} participantId
 * @property {string} expiresAt RFC3339
 * @property {string} whipUrl
 * @property {StageState} state
 * @property {string} [region] the stage's IVS region (a deployment may run several)
 *
 * @typedef {object} Replica a stage that gets the host by replication (replicate mode)
 * @property {string} stageArn
 * @property {string} originArn
 * @property {StageState} state
 * @property {boolean} receiving
 *
 * @typedef {object} PublisherAll `POST /api/token/publisher-all`
 * @property {string} broadcast
 * @property {FanoutMode} fanoutMode
 * @property {PublisherToken[]} tokens
 * @property {string[]} [regions] the deployment's IVS regions, the primary first
 * @property {number} [creating]
 * @property {Replica[]} [replicas]
 *
 * @typedef {object} ViewerSeat `POST /api/token/viewer`
 * @property {string} token
 * @property {string} stageArn
 * @property {string} participantId
 * @property {string} userId
 * @property {string} expiresAt RFC3339
 * @property {string} leaseId
 * @property {number} leaseTtlSeconds
 * @property {string} [region] the IVS region of the seat
 * @property {string} whipUrl
 * @property {string} broadcast
 * @property {'warming' | 'live'} [stageState]
 * @property {boolean} [reconnected]
 * @property {BroadcastState} [broadcastState]
 * @property {string} [broadcastStateSince] RFC3339
 *
 * @typedef {object} Heartbeat `POST /api/viewer/heartbeat`
 * @property {string} leaseId
 * @property {string} expiresAt RFC3339
 * @property {BroadcastState} [broadcastState]
 * @property {string} [broadcastStateSince] RFC3339
 * @property {object | null} [move] the seat's stage is draining: the new seat (the shape of
 *   `POST /api/token/viewer`'s answer) to join before this one is given back
 *
 * @typedef {object} Ended `POST /api/broadcasts/{id}/end`
 * @property {string} broadcast
 * @property {'ended'} broadcastState
 * @property {string} endedAt RFC3339
 * @property {number} seatsFreed
 * @property {number} stagesDeleting
 *
 * @typedef {object} StageSummary one stage of a broadcast summary
 * @property {string} stageArn
 * @property {StageState} state
 * @property {number} load
 * @property {number} capacity
 * @property {'origin' | 'replica'} [role] replicate mode only
 * @property {string | null} [originArn] a replica's origin
 *
 * @typedef {object} BroadcastSummary `GET /api/broadcasts/{id}`, and each of `GET /api/broadcasts`
 * @property {string} broadcast
 * @property {number} capacity
 * @property {number} viewers
 * @property {FanoutMode} [fanoutMode]
 * @property {BroadcastState} [broadcastState]
 * @property {string} [broadcastStateSince] RFC3339
 * @property {StageSummary[]} stages
 */

/** An HTTP error with the edge's `{"error":{"code","message"}}` body and Retry-After. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number} [retryAfter] seconds
   */
  constructor(status, code, message, retryAfter) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** @param {Response} res */
async function failure(res) {
  let code = 'http_' + res.status;
  let message = res.statusText;
  try {
    const body = await res.json();
    if (body && body.error) ({ code = code, message = message } = body.error);
  } catch { /* not JSON */ }
  const ra = Number(res.headers.get('Retry-After'));
  return new ApiError(res.status, code, message, Number.isFinite(ra) && ra > 0 ? ra : undefined);
}

/**
 * JSON request to the edge; throws ApiError on a non-2xx answer.
 * @param {string} path
 * @param {{ method?: string, body?: unknown, key?: string, timeoutMs?: number }} [options]
 * @returns {Promise<any>} the answer's JSON (null for 204); the typedefs above name its shape
 */
export async function api(path, { method = 'GET', body, key, timeoutMs = 10000 } = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  // A request that hangs must not stall a page's loop forever: it fails and is retried.
  const res = await fetch(path, {
    method, headers, signal: AbortSignal.timeout(timeoutMs),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await failure(res);
  return res.status === 204 ? null : res.json();
}

/** @type {Promise<Config> | undefined} */
let configPromise;
/**
 * `GET /api/config`, once per page: the media mode comes from the edge, not from the page.
 * @returns {Promise<Config>}
 */
export function config() {
  configPromise ??= api('/api/config');
  return configPromise;
}
