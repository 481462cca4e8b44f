// The status page's chart history and paths (web/src/charts.js), with no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { History, sampleOf, stepPath, niceMax, peak, span } from '../src/charts.js';

const summary = {
  broadcast: 'b',
  capacity: 10,
  viewers: 13,
  stages: [
    { stageArn: 'a', state: 'live', load: 10, capacity: 10 },
    { stageArn: 'b', state: 'warming', load: 3, capacity: 10 },
    { stageArn: 'c', state: 'draining', load: 0, capacity: 10 },
    { stageArn: 'd', state: 'deleted', load: 0, capacity: 10 },
    { stageArn: null, state: 'creating', load: 0, capacity: 10 },
  ],
};

test('a sample counts seats on warming and live stages, stages not deleted, cost when known', () => {
  assert.deepEqual(sampleOf(summary, null, 5), { t: 5, viewers: 13, seats: 20, stages: 4, costPerHour: null });
  const s = sampleOf(summary, { meter: { costMicroUsdPerHour: 1_080_000 } }, 6);
  assert.equal(s.costPerHour, 1.08);
});

test('the history keeps one window, in time order, per broadcast', () => {
  const h = new History(1000);
  const at = (t, viewers = t) => ({ t, viewers, seats: 0, stages: 0, costPerHour: null });
  h.add('b', at(0));
  h.add('b', at(500));
  h.add('b', at(400)); // out of order: dropped
  h.add('b', at(500)); // same time: dropped
  h.add('other', at(100));
  assert.deepEqual(h.samples('b').map((s) => s.t), [0, 500]);
  h.add('b', at(1400));
  assert.deepEqual(h.samples('b').map((s) => s.t), [500, 1400], 'older than the window is gone');
  h.prune(1400);
  assert.deepEqual(h.samples('other'), [], 'a broadcast not seen for a window is forgotten');
  assert.deepEqual(h.samples('b').length, 2);
  assert.deepEqual(h.samples('nobody'), []);
});

test('a series is drawn as steps in its box, nulls break the line', () => {
  const s = (t, viewers, costPerHour = null) => ({ t, viewers, seats: 0, stages: 0, costPerHour });
  const box = { width: 100, height: 50, t0: 0, t1: 100, max: 10 };
  assert.equal(stepPath([s(0, 0), s(50, 10), s(100, 5)], 'viewers', box), 'M0 50 H50 V0 H100 V25');
  assert.equal(stepPath([], 'viewers', box), '');
  // Cost known, then unknown (the key was dropped), then known again: two pieces.
  const cost = [s(0, 0, 2), s(20, 0, null), s(40, 0, 4), s(60, 0, 4)];
  assert.equal(stepPath(cost, 'costPerHour', box), 'M0 40 H20 M40 30 H60 V30');
  // Values above the max are clamped to the top; times before t0 start at the left edge.
  assert.equal(stepPath([s(-50, 20), s(50, 20)], 'viewers', box), 'M0 0 H50 V0');
});

test('axis maxima are 1, 2 or 5 times a power of ten; peak reads a series', () => {
  assert.deepEqual([0, 0.3, 1, 3, 7, 10, 11, 180, 2500].map(niceMax), [1, 0.5, 1, 5, 10, 10, 20, 200, 5000]);
  const samples = [{ t: 0, viewers: 3, costPerHour: null }, { t: 1, viewers: 9, costPerHour: 2 }];
  assert.equal(peak(samples, 'viewers'), 9);
  assert.equal(peak(samples, 'costPerHour'), 2);
  assert.equal(peak([], 'viewers'), 0);
});

test('a chart spans its samples, at least a minute, at most the window', () => {
  const at = (t) => ({ t, viewers: 0, seats: 0, stages: 0, costPerHour: null });
  assert.deepEqual(span([], 1_000_000), { t0: 940_000, t1: 1_000_000 });
  assert.deepEqual(span([at(0), at(10_000)], 0), { t0: -50_000, t1: 10_000 }, 'a minute at least');
  assert.deepEqual(span([at(0), at(600_000)], 0), { t0: 0, t1: 600_000 }, 'ten minutes of samples: ten minutes');
  assert.deepEqual(span([at(0), at(5_000_000)], 0, 3_600_000), { t0: 1_400_000, t1: 5_000_000 }, 'one window at most');
});
