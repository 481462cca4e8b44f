// The status page: every broadcast's state (not started, on air, host reconnecting, off air,
// ended) and its stages with state, load and a fill bar, refreshed live.
// In replicate mode each origin is followed by its replica stages, marked with their origin.
import { api } from './api.js';
import { stageId, el, badge } from './dom.js';

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

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

function broadcastPanel(b) {
  const stages = ordered(b.stages || []);
  const replicate = stages.some((s) => s.role);
  const live = stages.filter((s) => s.state === 'live').length;
  const seats = stages.filter((s) => s.state === 'live' || s.state === 'warming')
    .reduce((n, s) => n + (s.capacity ?? b.capacity ?? 0), 0);
  const rows = stages.map((s) => el('tr', {
    'data-stage': s.stageArn, 'data-state': s.state,
    'data-role': s.role, 'data-origin': s.originArn, class: s.role === 'replica' ? 'replica' : undefined,
  },
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
  const columns = ['Stage', ...(replicate ? ['Role'] : []), 'State', 'Viewers', 'Fill'];
  return el('section', { class: 'panel', 'data-broadcast': b.broadcast },
    el('h2', { style: 'margin: 0 0 8px; font-size: 17px' }, b.broadcast, ' ',
      b.broadcastState ? el('span', { 'data-broadcast-state': b.broadcastState, title: b.broadcastStateSince ? `since ${b.broadcastStateSince}` : '' },
        badge(b.broadcastState)) : [],
      el('span', { class: 'muted', style: 'font-weight: 400; font-size: 14px; margin-left: 12px' },
        `${b.viewers} viewer${b.viewers === 1 ? '' : 's'} · ${stages.length} stage${stages.length === 1 ? '' : 's'} (${live} live) · ${seats} seats · capacity ${b.capacity} per stage${fanout}`)),
    el('table', {},
      el('thead', {}, el('tr', {}, columns.map((c) => el('th', {}, c)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, 'No stages.')))));
}

async function refresh() {
  try {
    const { broadcasts } = await api('/api/broadcasts');
    const panels = (broadcasts || []).map(broadcastPanel);
    $('broadcasts').replaceChildren(...(panels.length ? panels : [el('p', { class: 'muted' }, 'No broadcasts yet.')]));
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    window.stagefanStatus = broadcasts;
  } catch (e) {
    $('updated').textContent = `cannot reach the edge: ${e.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
