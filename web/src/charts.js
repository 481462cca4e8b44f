// @ts-check
// The status page's charts, pure (no DOM): each broadcast's history over the last hour, from
// what the page already polls, and the SVG path of one of its series. Tested by
// web/test/charts.test.mjs.

/** How far back the charts look: one hour. */
export const WINDOW_MS = 3_600_000;

/**
 * One poll of one broadcast.
 * @typedef {object} Sample
 * @property {number} t unix ms
 * @property {number} viewers seats taken
 * @property {number} seats seats open on warming and live stages
 * @property {number} stages stages that exist (not deleted)
 * @property {number | null} costPerHour USD per hour at the participants of now (admin
 *   snapshots only; null without the admin key)
 */

/** The series a chart can draw. @typedef {'viewers' | 'seats' | 'stages' | 'costPerHour'} SeriesKey */

/**
 * A sample of a broadcast from its public summary and, when the admin key is given, its
 * admin snapshot (for the cost meter).
 * @param {import('./api.js').BroadcastSummary} summary
 * @param {{ meter?: { costMicroUsdPerHour?: number } } | null} snapshot
 * @param {number} t
 * @returns {Sample}
 */
export function sampleOf(summary, snapshot, t) {
  const stages = (summary.stages || []).filter((s) => s.state !== 'deleted');
  const seats = stages
    .filter((s) => s.state === 'live' || s.state === 'warming')
    .reduce((n, s) => n + (s.capacity ?? summary.capacity ?? 0), 0);
  const micro = snapshot?.meter?.costMicroUsdPerHour;
  return {
    t,
    viewers: summary.viewers ?? 0,
    seats,
    stages: stages.length,
    costPerHour: typeof micro === 'number' ? micro / 1e6 : null,
  };
}

/** Every broadcast's samples over the last `windowMs`. */
export class History {
  /** @param {number} [windowMs] */
  constructor(windowMs = WINDOW_MS) {
    this.windowMs = windowMs;
    /** @type {Map<string, Sample[]>} */
    this.byBroadcast = new Map();
  }

  /**
   * Adds a sample (an older or equal `t` than the last one replaces nothing and is dropped),
   * and drops what fell out of the window.
   * @param {string} broadcast
   * @param {Sample} sample
   */
  add(broadcast, sample) {
    let list = this.byBroadcast.get(broadcast);
    if (!list) this.byBroadcast.set(broadcast, (list = []));
    const last = list[list.length - 1];
    if (last && sample.t <= last.t) return;
    list.push(sample);
    const from = sample.t - this.windowMs;
    let drop = 0;
    while (drop < list.length && list[drop].t < from) drop++;
    if (drop) list.splice(0, drop);
  }

  /** @param {string} broadcast @returns {Sample[]} */
  samples(broadcast) {
    return this.byBroadcast.get(broadcast) || [];
  }

  /** Forgets the broadcasts whose newest sample is older than the window at `now`. @param {number} now */
  prune(now) {
    for (const [b, list] of this.byBroadcast) {
      const last = list[list.length - 1];
      if (!last || last.t < now - this.windowMs) this.byBroadcast.delete(b);
    }
  }
}

/** Shortest time span a chart shows: one minute. */
export const MIN_SPAN_MS = 60_000;

/**
 * The time span a chart shows: from its oldest sample (at most one window back) to its
 * newest, at least a minute, so that a page open for a few minutes shows those minutes
 * across its width rather than a sliver of an hour.
 * @param {Sample[]} samples oldest first
 * @param {number} now used when there are no samples
 * @param {number} [windowMs]
 * @returns {{ t0: number, t1: number }}
 */
export function span(samples, now, windowMs = WINDOW_MS) {
  const t1 = samples.length ? samples[samples.length - 1].t : now;
  const first = samples.length ? samples[0].t : t1;
  return { t0: Math.min(t1 - MIN_SPAN_MS, Math.max(first, t1 - windowMs)), t1 };
}

/** The smallest 1, 2 or 5 × 10^k at or above `v` (at least 1). @param {number} v */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v - 1e-9) return m * p;
  return 10 * p;
}

/**
 * The SVG path of one series as steps (a value holds until the next sample), over the time
 * span [t0, t1] and the value span [0, max], in a `width` × `height` box (y grows down).
 * Samples without the value (null) break the line.
 * @param {Sample[]} samples oldest first
 * @param {SeriesKey} key
 * @param {{ width: number, height: number, t0: number, t1: number, max: number }} box
 * @returns {string} `M x y H x V y …`, or '' when there is nothing to draw
 */
export function stepPath(samples, key, { width, height, t0, t1, max }) {
  const span = Math.max(1, t1 - t0);
  const x = (/** @type {number} */ t) => round(((Math.min(Math.max(t, t0), t1) - t0) / span) * width);
  const y = (/** @type {number} */ v) => round(height - (Math.min(Math.max(v, 0), max) / max) * height);
  let d = '';
  let open = false;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    const v = s[key];
    if (v === null || v === undefined || s.t > t1) {
      open = false;
      continue;
    }
    const end = i + 1 < samples.length ? samples[i + 1].t : s.t;
    if (end < t0) continue;
    d += open ? ` V${y(v)}` : `${d ? ' ' : ''}M${x(s.t)} ${y(v)}`;
    if (end > s.t) d += ` H${x(end)}`;
    open = true;
  }
  return d;
}

/** Largest value of a series in `samples` (0 when none). @param {Sample[]} samples @param {SeriesKey} key */
export function peak(samples, key) {
  let m = 0;
  for (const s of samples) {
    const v = s[key];
    if (typeof v === 'number' && v > m) m = v;
  }
  return m;
}

/** @param {number} n */
const round = (n) => Math.round(n * 10) / 10;
