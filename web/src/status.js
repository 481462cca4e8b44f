// The status page: every broadcast's state (not started, on air, host reconnecting, off air,
// ended) and its stages with state, load and a fill bar, refreshed live, with charts of its
// viewers, open seats and stages over the last hour (web/src/charts.js) drawn from the same
// polls. In replicate mode each origin is followed by its replica stages, marked with their
// origin. With the admin key (typed in, kept for the tab only) the page also reads each
// broadcast's admin snapshot: the cost meter's participant-hours and estimated cost per hour.
// Above the broadcasts, each region's account quotas (subscriptions, publishers, stages):
// what stagefan's pools hold of what they may hold (web/src/region-quota.js).
import { api } from './api.js';
import { stageId, el, badge } from './dom.js';
import { History, sampleOf, stepPath, niceMax, peak, span } from './charts.js';
import { quotaRows, quotaText } from './region-quota.js';

const REFRESH_MS = 2000;
const KEY_ITEM = 'stagefan.adminKey';
const $ = (id) => document.getElementById(id);
const history = new History();
const SVG = 'http://www.w3.org/2000/svg';

/** @param {string} tag @param {Record<string, string | number>} attrs */
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * One chart of the last hour: `lines` of the broadcast's samples, the newest value of the
 * first one as its figure.
 * @param {string} title
 * @param {import('./charts.js').Sample[]} samples
 * @param {{ key: import('./charts.js').SeriesKey, cls: string, label: string }[]} lines
 * @param {(v: number) => string} format
 */
function chart(title, samples, lines, format) {
  const width = 240, height = 56;
  const { t0, t1 } = span(samples, Date.now());
  const max = niceMax(Math.max(...lines.map((l) => peak(samples, l.key))));
  const box = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'chart', role: 'img' });
  box.append(svg('line', { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: 'axis' }));
  for (const l of lines) {
    const d = stepPath(samples, l.key, { width, height, t0, t1, max });
    if (d) box.append(svg('path', { d, class: `series ${l.cls}` }));
  }
  const last = samples[samples.length - 1];
  const now = last ? last[lines[0].key] : null;
  const legend = lines.map((l) => el('span', { class: `legend ${l.cls}` }, l.label));
  return el('figure', { class: 'chart-box', 'data-chart': lines[0].key },
    el('figcaption', {}, el('span', {}, title), ' ',
      el('strong', { 'data-now': lines[0].key }, typeof now === 'number' ? format(now) : '–'),
      el('span', { class: 'muted' }, ` · max ${format(max)} · last ${spanText(t1 - t0)}`)),
    box,
    lines.length > 1 ? el('div', { class: 'legends' }, legend) : []);
}

/** @param {import('./charts.js').Sample[]} samples @param {boolean} withCost */
function charts(samples, withCost) {
  const count = (/** @type {number} */ v) => String(Math.round(v));
  return el('div', { class: 'charts' },
    chart('Viewers / open seats', samples, [
      { key: 'viewers', cls: 'viewers', label: 'viewers' },
      { key: 'seats', cls: 'seats', label: 'open seats' },
    ], count),
    chart('Stages', samples, [{ key: 'stages', cls: 'stages', label: 'stages' }], count),
    withCost
      ? chart('Est. cost per hour', samples, [{ key: 'costPerHour', cls: 'cost', label: 'USD/h' }], usd)
      : []);
}

/** @param {number} ms */
const spanText = (ms) => (ms >= 3_540_000 ? 'hour' : ms >= 120_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`);

/** @param {number} v */
const usd = (v) => `$${v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(3)}`;

/** The cost meter's line: participant-hours so far and what they and an hour now cost. */
function meterLine(snapshot) {
  const m = snapshot?.meter;
  if (!m) return [];
  const ms = m.participantMs || {};
  const hours = ((ms.viewers || 0) + (ms.hosts || 0) + (ms.replicas || 0)) / 3_600_000;
  const now = m.participants || {};
  const parts = [
    `${hours.toFixed(2)} participant-hours (viewers ${((ms.viewers || 0) / 3_600_000).toFixed(2)}, host ${((ms.hosts || 0) / 3_600_000).toFixed(2)}${ms.replicas ? `, replicas ${(ms.replicas / 3_600_000).toFixed(2)}` : ''})`,
    `est. ${usd((m.costMicroUsd || 0) / 1e6)} so far`,
    `${usd((m.costMicroUsdPerHour || 0) / 1e6)}/h now for ${(now.viewers || 0) + (now.hosts || 0) + (now.replicas || 0)} participants`,
  ];
  return el('p', { class: 'muted meter', 'data-meter': '', title: 'an estimate at the configured price table (IVS_PARTICIPANT_HOUR_PRICES), not a bill' },
    parts.join(' · '));
}

function fillBar(load, capacity) {
  const ratio = capacity > 0 ? Math.min(1, load / capacity) : 0;
  const cls = ratio >= 1 ? 'fill full' : ratio >= 0.8 ? 'fill high' : 'fill';
  return el('div', { class: cls, title: `${load} / ${capacity}` },
    el('span', { style: `width: ${(ratio * 100).toFixed(1)}%` }));
}

/** Replicate mode: each origin followed by its replicas (oldest first); replicas whose origin
 *  is not listed come last. Multi-publish: the stages as they are. */
function ordered(stages) {
  if (!stages.some((s) => s.role)) return stages;
  const rest = stages.filter((s) => s.role === 'replica');
  const out = [];
  for (const origin of stages.filter((s) => s.role !== 'replica')) {
    out.push(origin);
    const mine = rest.filter((r) => origin.stageArn && r.originArn === origin.stageArn);
    out.push(...mine);
    for (const r of mine) rest.splice(rest.indexOf(r), 1);
  }
  return out.concat(rest);
}

function roleCell(s) {
  if (s.role === 'replica') {
    return el('td', { title: s.originArn ? `receives the host by replication from ${s.originArn}` : '' },
      badge('replica'), ' ', el('span', { class: 'muted role-note' },
        s.originArn ? `of ${stageId(s.originArn)}` : 'origin being created'));
  }
  return el('td', {}, badge('origin'), ' ', el('span', { class: 'muted role-note' }, 'host uploads'));
}

function broadcastPanel(b, snapshot) {
  // A deployment of several regions: the stages grouped by region (a stable sort keeps
  // each region's order), with a Region column.
  const regional = (b.stages || []).some((s) => s.region);
  const stages = regional
    ? ordered(b.stages || []).sort((x, y) => (x.region || '').localeCompare(y.region || ''))
    : ordered(b.stages || []);
  const replicate = stages.some((s) => s.role);
  const live = stages.filter((s) => s.state === 'live').length;
  const seats = stages.filter((s) => s.state === 'live' || s.state === 'warming')
    .reduce((n, s) => n + (s.capacity ?? b.capacity ?? 0), 0);
  const rows = stages.map((s) => el('tr', {
    'data-stage': s.stageArn, 'data-state': s.state,
    'data-role': s.role, 'data-origin': s.originArn, 'data-region': s.region, class: s.role === 'replica' ? 'replica' : undefined,
  },
  regional ? el('td', { class: 'mono' }, s.region || '') : [],
  el('td', { class: 'mono', title: s.stageArn }, s.role === 'replica' ? '↳ ' : '', stageId(s.stageArn) || '(creating)'),
  replicate ? roleCell(s) : [],
  el('td', {}, badge(s.state)),
  el('td', {}, `${s.load} / ${s.capacity ?? b.capacity}`),
  el('td', { style: `width: ${replicate ? 40 : 45}%` }, fillBar(s.load, s.capacity ?? b.capacity)),
  ));
  const origins = stages.filter((s) => s.role === 'origin').length;
  const fanout = replicate
    ? ` · replicate: ${origins} origin${origins === 1 ? '' : 's'}, ${stages.length - origins} replica${stages.length - origins === 1 ? '' : 's'}`
    : '';
  const columns = [...(regional ? ['Region'] : []), 'Stage', ...(replicate ? ['Role'] : []), 'State', 'Viewers', 'Fill'];
  return el('section', { class: 'panel', 'data-broadcast': b.broadcast },
    el('h2', { style: 'margin: 0 0 8px; font-size: 17px' }, b.broadcast, ' ',
      b.broadcastState ? el('span', { 'data-broadcast-state': b.broadcastState, title: b.broadcastStateSince ? `since ${b.broadcastStateSince}` : '' },
        badge(b.broadcastState)) : [],
      el('span', { class: 'muted', style: 'font-weight: 400; font-size: 14px; margin-left: 12px' },
        `${b.viewers} viewer${b.viewers === 1 ? '' : 's'} · ${stages.length} stage${stages.length === 1 ? '' : 's'} (${live} live) · ${seats} seats · capacity ${b.capacity} per stage${fanout}`)),
    meterLine(snapshot),
    charts(history.samples(b.broadcast), Boolean(snapshot)),
    el('table', {},
      el('thead', {}, el('tr', {}, columns.map((c) => el('th', {}, c)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, 'No stages.')))));
}

/** Each region's quota use: a table of used / usable per region and quota, with a bar. */
function regionQuotas(regions) {
  const rows = quotaRows(regions);
  const box = $('region-quotas');
  box.hidden = rows.length === 0;
  if (!rows.length) return;
  const body = rows.map((r, i) => el('tr', { 'data-region': r.region, 'data-quota': r.quota, 'data-used': r.used, 'data-usable': r.usable },
    el('td', { class: 'mono' }, i === 0 || rows[i - 1].region !== r.region ? r.region : ''),
    el('td', {}, r.quota),
    el('td', { class: 'num' }, quotaText(r)),
    el('td', {}, fillBar(r.used, r.usable))));
  box.replaceChildren(
    el('h2', {}, 'Region quotas', el('span', { class: 'muted', style: 'font-weight: 400; font-size: 14px; margin-left: 12px' },
      'what stagefan holds of each region\'s account quotas (IVS_QUOTA_*, less the reserve)')),
    el('table', {},
      el('thead', {}, el('tr', {}, ['Region', 'Quota', 'Used / usable', 'Use'].map((c) => el('th', {}, c)))),
      el('tbody', {}, body)));
}

/** The admin snapshot of each broadcast, when the admin key is given (null for each when not,
 *  or when the key is refused: the page then says so and shows the public view). */
async function snapshots(broadcasts) {
  const key = sessionStorage.getItem(KEY_ITEM);
  if (!key) return broadcasts.map(() => null);
  const read = await Promise.allSettled(broadcasts.map((b) =>
    api(`/api/admin/broadcasts/${encodeURIComponent(b.broadcast)}`, { key })));
  const refused = read.find((r) => r.status === 'rejected' && r.reason?.status === 401);
  $('key-state').textContent = refused ? 'admin key refused' : 'cost shown';
  return read.map((r) => (r.status === 'fulfilled' && r.value?.meter ? r.value : null));
}

async function refresh() {
  try {
    const { broadcasts, regions } = await api('/api/broadcasts');
    regionQuotas(regions);
    const list = broadcasts || [];
    const snaps = await snapshots(list);
    const t = Date.now();
    list.forEach((b, i) => history.add(b.broadcast, sampleOf(b, snaps[i], t)));
    history.prune(t);
    const panels = list.map((b, i) => broadcastPanel(b, snaps[i]));
    $('broadcasts').replaceChildren(...(panels.length ? panels : [el('p', { class: 'muted' }, 'No broadcasts yet.')]));
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    window.stagefanStatus = broadcasts;
    window.stagefanRegions = regions;
    window.stagefanMeters = snaps.map((s) => s?.meter ?? null);
  } catch (e) {
    $('updated').textContent = `cannot reach the edge: ${e.message}`;
  }
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = /** @type {HTMLInputElement} */ ($('admin-key')).value.trim();
  if (value) sessionStorage.setItem(KEY_ITEM, value);
  else sessionStorage.removeItem(KEY_ITEM);
  $('key-state').textContent = value ? 'checking…' : '';
  /** @type {HTMLInputElement} */ ($('admin-key')).value = '';
  refresh();
});
if (sessionStorage.getItem(KEY_ITEM)) $('key-state').textContent = 'cost shown';

refresh();
setInterval(refresh, REFRESH_MS);
