// The host page: camera preview, then "Go live" (which starts the camera if it is off) publishes
// to every stage of the broadcast's pool (multi-publish), follows the pool as it adds and drains
// stages, and reconnects dropped stages. "End broadcast" (after a confirm) stops publishing and
// ends the broadcast for every viewer (`POST /api/broadcasts/{id}/end`); going live again
// starts it afresh.
// In replicate mode the pool hands out origin stages only (one per six stages): the page
// uploads to those, and lists the stages that receive it by replication, and from which origin.
import { api, config } from './api.js';
import { stageId, el, badge } from './dom.js';
import { backoff } from './retry.js';
import { StageRecord, reconcile } from './host-stages.js';
import { media } from './media.js';

const POLL_MS = 4000;
const $ = (id) => document.getElementById(id);
const q = new URLSearchParams(location.search);

// The host key lives in this page's memory only: it is read from the form or from the URL
// fragment (which browsers never send to a server), and sent only as the Authorization header.
let hostKey = '';
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get('key')) {
  hostKey = fragment.get('key');
  $('key').value = hostKey;
  history.replaceState(null, '', location.pathname + location.search); // out of the address bar
}
if (q.get('broadcast')) $('broadcast').value = q.get('broadcast');

let stream = null;
let live = false;
let broadcast = null;
/** @type {Map<string, StageRecord>} by stage ARN */
const stages = new Map();
/** @type {import('./api.js').Replica[]} replicate mode: from the last poll */
let replicas = [];
let fanoutMode = '';
/** The deployment runs several IVS regions: the table names each stage's. */
let multiRegion = false;
let wake = () => {};
/** @type {Promise<void> | null} the sync round in flight (an end waits for it) */
let syncing = null;

function log(msg) {
  const line = `${new Date().toLocaleTimeString()}  ${msg}\n`;
  $('log').textContent = (line + $('log').textContent).slice(0, 8000);
}

function showError(msg) { $('error').textContent = msg || ''; }

function setState(s) { $('state').replaceChildren(badge(s)); }

function render() {
  // Stages grouped by region (a deployment may run several), each region's in order.
  const byRegion = [...stages.values()].sort((a, b) => (a.region || '').localeCompare(b.region || ''));
  const rows = byRegion.map((s) => el('tr', { 'data-stage': s.arn, 'data-via': 'upload', 'data-region': s.region || '' },
    el('td', { class: 'mono', title: s.arn }, multiRegion && s.region ? `${s.region} · ${stageId(s.arn)}` : stageId(s.arn)),
    el('td', {}, fanoutMode === 'replicate' ? 'origin: this page uploads' : 'this page uploads'),
    el('td', {}, badge(s.poolState || 'unknown')),
    el('td', {}, badge(s.conn)),
    el('td', { class: 'mono' }, s.participantId || ''),
    el('td', { class: 'muted' }, s.since ? new Date(s.since).toLocaleTimeString() : ''),
  ));
  const origins = new Map([...stages.values()].map((s) => [s.arn, s]));
  for (const r of replicas) {
    rows.push(el('tr', { 'data-stage': r.stageArn, 'data-via': 'replica', 'data-origin': r.originArn },
      el('td', { class: 'mono', title: r.stageArn }, stageId(r.stageArn)),
      el('td', { title: r.originArn }, `replica of ${stageId(r.originArn)}`),
      el('td', {}, badge(r.state)),
      el('td', {}, badge(r.receiving ? 'receiving' : 'waiting')),
      el('td', { class: 'mono' }, origins.get(r.originArn)?.participantId || ''),
      el('td', { class: 'muted' }, ''),
    ));
  }
  $('stages').replaceChildren(...(rows.length ? rows
    : [el('tr', {}, el('td', { colspan: 6, class: 'muted' }, live ? 'Waiting for the pool…' : 'Not live.'))]));
  $('count').textContent = String(stages.size + replicas.length);
  $('uploads').textContent = String([...stages.values()].filter((s) => s.session).length);
  $('replicated').textContent = fanoutMode === 'replicate'
    ? `${replicas.filter((r) => r.receiving).length} of ${replicas.length} receiving`
    : 'off (multi-publish)';
}

async function startCamera() {
  if (stream) return;
  const height = Number(q.get('height')) || 720;
  $('camera-state').textContent = 'Starting camera…';
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: Math.round(height * 16 / 9) }, height: { ideal: height }, frameRate: { ideal: 30 } },
      audio: true,
    });
  } catch (e) {
    $('camera-state').textContent = `Camera unavailable: ${e.message}`;
    throw e;
  }
  $('preview').srcObject = stream;
  const v = stream.getVideoTracks()[0]?.getSettings() || {};
  $('camera-state').textContent = `Camera on: ${v.width}×${v.height}` + (stream.getAudioTracks().length ? ', microphone on.' : '.');
  $('camera').disabled = true;
}

/** @param {StageRecord} s @param {string} conn */
function setConn(s, conn) {
  s.setConn(conn, Date.now());
  render();
}

/** @param {StageRecord} s @param {string} why */
function dropped(s, why) {
  s.closeSession();
  s.reported = false;
  if (!live) return;
  s.failures++;
  const delay = backoff(s.failures - 1);
  s.retryAt = Date.now() + delay;
  setConn(s, 'reconnecting');
  log(`${stageId(s.arn)}: ${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  setTimeout(() => wake(), delay);
}

/**
 * A newer connection of this stage's participant took over (another host page with the same
 * key, as IVS ends the older connection of a participant): reconnecting would only take it
 * back, so this page stops uploading to that stage and says so.
 */
function replaced(s) {
  s.closeSession();
  s.replaced = true;
  setConn(s, 'replaced');
  log(`${stageId(s.arn)}: another connection took over this stage's upload; not reconnecting`);
  showError(REPLACED_MSG);
}

const REPLACED_MSG = 'Another host page took over some stages (see the table). Stop and go live again to take them back.';
const replacedNote = () => ([...stages.values()].some((s) => s.replaced) ? REPLACED_MSG : '');

async function reportPublished(s, gen) {
  if (gen !== s.gen || s.reported) return;
  try {
    await api('/api/host/published', {
      method: 'POST', key: hostKey,
      body: { broadcast, stageArn: s.arn, participantId: s.participantId },
    });
    s.reported = true;
    s.failures = 0;
    log(`${stageId(s.arn)}: publishing, reported to the pool`);
  } catch (e) {
    log(`${stageId(s.arn)}: could not report publishing (${e.message}); will retry`);
  }
}

async function join(s, t) {
  const gen = ++s.gen;
  s.participantId = t.participantId;
  s.joining = true;
  setConn(s, s.failures ? 'reconnecting' : 'joining');
  try {
    const m = await media();
    const session = await m.publish({
      whipUrl: t.whipUrl, token: t.token, participantId: t.participantId, stream,
      onState: (st, err) => {
        if (gen !== s.gen) return;
        if (st === 'connected') setConn(s, s.reported ? 'publishing' : 'connected');
        else if (err?.code === 'TOKEN_REUSED') replaced(s);
        else dropped(s, err ? err.message : `connection ${st}`);
      },
      onPublished: () => {
        if (gen !== s.gen) return;
        setConn(s, 'publishing');
        reportPublished(s, gen);
      },
    });
    if (gen !== s.gen || !live || !stages.has(s.arn)) { session.close(); return; }
    s.session = session;
  } catch (e) {
    if (gen === s.gen) dropped(s, `join refused: ${e.message}`);
  } finally {
    s.joining = false;
    render();
  }
}

/** @param {StageRecord} s @param {string} why */
function leave(s, why) {
  s.closeSession();
  stages.delete(s.arn);
  log(`${stageId(s.arn)}: left (${why})`);
}

/** One round: ask for a token per stage, join new stages, leave drained ones, retry dropped ones. */
async function sync() {
  const body = broadcast ? { broadcast } : {};
  /** @type {import('./api.js').PublisherAll} */
  const res = await api('/api/token/publisher-all', { method: 'POST', key: hostKey, body });
  broadcast = res.broadcast || broadcast;
  fanoutMode = res.fanoutMode || fanoutMode;
  multiRegion = (res.regions || []).length > 1;
  replicas = (res.replicas || []).filter((r) => r.state !== 'deleted');
  const plan = reconcile(stages, res.tokens, Date.now());
  for (const { stage, why } of plan.leave) leave(stage, why);
  for (const { stage, poolState } of plan.update) stage.poolState = poolState;
  for (const stage of plan.add) {
    stages.set(stage.arn, stage);
    log(`${stageId(stage.arn)}: new stage (${stage.poolState})`);
  }
  for (const { stage, token } of plan.join) join(stage, token);
  for (const stage of plan.report) reportPublished(stage, stage.gen);
  render();
}

async function goLive() {
  if (live) return;
  hostKey = $('key').value.trim() || hostKey;
  if (!hostKey) { showError('The host key is needed to go live.'); return; }
  await startCamera();
  broadcast = $('broadcast').value.trim() || null;
  live = true;
  showError('');
  setState('live');
  $('live').disabled = true;
  $('stop').disabled = false;
  $('key').disabled = true;
  $('broadcast').disabled = true;
  log('going live');
  let failures = 0;
  while (live) {
    try {
      syncing = sync();
      await syncing;
      failures = 0;
      showError(replacedNote());
    } catch (e) {
      failures++;
      if (e.status === 401) {
        showError('The host key was refused.');
        stop();
        return;
      }
      showError(`Cannot reach the edge: ${e.message}`);
    }
    await new Promise((r) => { wake = r; setTimeout(r, failures ? backoff(failures) : POLL_MS); });
  }
}

function stop() {
  live = false;
  for (const s of [...stages.values()]) leave(s, 'stopped');
  replicas = [];
  wake();
  setState('stopped');
  $('live').disabled = false;
  $('stop').disabled = true;
  $('key').disabled = false;
  $('broadcast').disabled = false;
  render();
}

$('camera').addEventListener('click', () => startCamera().catch(() => {}));
$('form').addEventListener('submit', (e) => { e.preventDefault(); goLive().catch((err) => showError(err.message)); });
$('stop').addEventListener('click', stop);

/** Ends the broadcast for everyone: stops publishing first (and lets the sync round in flight
 *  finish, so that no `publisher-all` reaches the pool after the end and starts it afresh). */
async function endBroadcast() {
  hostKey = $('key').value.trim() || hostKey;
  if (!hostKey) { showError('The host key is needed to end the broadcast.'); return; }
  const id = broadcast || $('broadcast').value.trim() || (await config()).defaultBroadcast;
  if (!id) { showError('Name the broadcast to end.'); return; }
  if (!window.confirm(`End the broadcast "${id}" for every viewer?`)) return;
  if (live) stop();
  await syncing?.catch(() => {});
  try {
    /** @type {import('./api.js').Ended} */
    const ended = await api(`/api/broadcasts/${encodeURIComponent(id)}/end`, { method: 'POST', key: hostKey, body: {} });
    setState('ended');
    showError('');
    $('camera-state').textContent = 'The broadcast has ended. Go live to start it afresh.';
    log(`ended ${ended.broadcast}: ${ended.seatsFreed} seats freed, ${ended.stagesDeleting} stages being deleted`);
  } catch (e) {
    showError(e.status === 401 ? 'The host key was refused.' : `Cannot end the broadcast: ${e.message}`);
  }
}
$('end').addEventListener('click', () => { endBroadcast().catch((err) => showError(err.message)); });
window.addEventListener('pagehide', () => { for (const s of stages.values()) s.session?.close(); });

// For tests and diagnostics (no secrets).
window.stagefanHost = {
  stages: () => [...stages.values()].map((s) => s.view()),
  replicas: () => replicas.map((r) => ({ ...r })),
  fanoutMode: () => fanoutMode,
  live: () => live,
};

config().then((c) => {
  $('mode').textContent = `media: ${c.mediaMode} · fan-out: ${c.fanoutMode}`;
  fanoutMode = fanoutMode || c.fanoutMode;
  render();
  if (!q.get('broadcast') && c.defaultBroadcast) $('broadcast').placeholder = c.defaultBroadcast;
}).catch((e) => showError(`Cannot read /api/config: ${e.message}`));

if (q.get('live') === '1') {
  startCamera().then(() => goLive()).catch((e) => showError(e.message));
}
render();
