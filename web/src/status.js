// The status page: every broadcast's stages with state, load and a fill bar, refreshed live.
import { api, stageId, el, badge } from './api.js';

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

function fillBar(load, capacity) {
  const ratio = capacity > 0 ? Math.min(1, load / capacity) : 0;
  const cls = ratio >= 1 ? 'fill full' : ratio >= 0.8 ? 'fill high' : 'fill';
  return el('div', { class: cls, title: `${load} / ${capacity}` },
    el('span', { style: `width: ${(ratio * 100).toFixed(1)}%` }));
}

function broadcastPanel(b) {
  const stages = b.stages || [];
  const live = stages.filter((s) => s.state === 'live').length;
  const seats = stages.filter((s) => s.state === 'live' || s.state === 'warming')
    .reduce((n, s) => n + (s.capacity ?? b.capacity ?? 0), 0);
  const rows = stages.map((s) => el('tr', { 'data-stage': s.stageArn, 'data-state': s.state },
    el('td', { class: 'mono', title: s.stageArn }, stageId(s.stageArn)),
    el('td', {}, badge(s.state)),
    el('td', {}, `${s.load} / ${s.capacity ?? b.capacity}`),
    el('td', { style: 'width: 45%' }, fillBar(s.load, s.capacity ?? b.capacity)),
  ));
  return el('section', { class: 'panel', 'data-broadcast': b.broadcast },
    el('h2', { style: 'margin: 0 0 8px; font-size: 17px' }, b.broadcast,
      el('span', { class: 'muted', style: 'font-weight: 400; font-size: 14px; margin-left: 12px' },
        `${b.viewers} viewer${b.viewers === 1 ? '' : 's'} · ${stages.length} stage${stages.length === 1 ? '' : 's'} (${live} live) · ${seats} seats · capacity ${b.capacity} per stage`)),
    el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Stage'), el('th', {}, 'State'), el('th', {}, 'Viewers'), el('th', {}, 'Fill'))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No stages.')))));
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
