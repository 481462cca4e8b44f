// The viewer page's view of the broadcast's life (web/src/viewer-life.js), with no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { viewerView, wantsSummary, NOTICES } from '../src/viewer-life.js';

const view = (broadcastState, connected, frames, hadFrames) => viewerView({ broadcastState, connected, frames, hadFrames });

test('each broadcast state shows its notice, frames win except over an end', () => {
  const rows = [
    // state from the edge, connected, frames, had frames → page state
    ['not_started', true, false, false, 'waiting_for_host'],
    ['not_started', true, true, true, 'playing'], // the host came on air before the edge said so
    ['not_started', true, false, true, 'host_reconnecting'], // ... and left again: the word is stale
    ['on_air', true, false, false, 'connected'],
    ['on_air', true, true, true, 'playing'],
    ['on_air', true, false, true, 'host_reconnecting'], // frames stopped: the host left
    ['host_reconnecting', true, false, true, 'host_reconnecting'],
    ['host_reconnecting', true, true, true, 'playing'],
    ['off_air', true, false, true, 'host_away'],
    ['off_air', false, false, false, 'host_away'],
    ['ended', true, true, true, 'ended'],
    ['ended', false, false, false, 'ended'],
    [undefined, true, false, false, 'connected'], // an edge that does not say (older)
    [undefined, true, true, true, 'playing'],
    [undefined, false, false, true, 'connected'],
  ];
  for (const [b, c, f, h, expected] of rows) {
    const v = view(b, c, f, h);
    assert.equal(v.state, expected, JSON.stringify({ b, c, f, h }));
    assert.equal(v.notice, NOTICES[expected] ?? '', expected);
  }
  assert.equal(NOTICES.ended, 'The broadcast has ended');
  assert.equal(NOTICES.waiting_for_host, 'Waiting for the host…');
});

test('the summary is asked for only while the host is away', () => {
  assert.ok(wantsSummary('host_reconnecting'));
  assert.ok(wantsSummary('host_away'));
  for (const s of ['playing', 'connected', 'waiting_for_host', 'ended', 'joining']) assert.ok(!wantsSummary(s), s);
});
