// The host page's stage bookkeeping (web/src/host-stages.js), without a browser:
//   node --test web/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StageRecord, reconcile } from '../src/host-stages.js';

const token = (n, state = 'live') => ({
  stageArn: `arn:aws:ivs:us-east-1:000000000000:stage/${n}`, token: `t${n}`,
  participantId: `p${n}`, expiresAt: '2026-12-02T00:00:00Z', whipUrl: 'http://ivs/whip', state,
});
const arn = (n) => token(n).stageArn;
const stagesOf = (...records) => new Map(records.map((s) => [s.arn, s]));
const arns = (list) => list.map((x) => (x.stage ?? x).arn);
const session = () => ({ closed: 0, close() { this.closed++; } });

test('new stages are added and joined, draining ones too; deleted ones are not', () => {
  const plan = reconcile(new Map(), [token('A', 'warming'), token('B'), token('C', 'draining'), token('D', 'deleted')], 1000);
  assert.deepEqual(arns(plan.add), [arn('A'), arn('B'), arn('C')]);
  assert.equal(plan.add[0].poolState, 'warming');
  assert.deepEqual(arns(plan.join), [arn('A'), arn('B'), arn('C')]);
  assert.equal(plan.join[1].token.token, 'tB');
  assert.deepEqual([plan.leave, plan.update, plan.report], [[], [], []]);
});

test('a stage the pool drops or deletes is left, with why; a draining one it lists is kept', () => {
  // The pool lists a draining stage only while viewers wait on it to be moved: the host
  // keeps uploading there until then.
  const [a, b, c] = ['A', 'B', 'C'].map((n) => new StageRecord(arn(n), 'live'));
  b.session = session();
  const plan = reconcile(stagesOf(a, b, c), [token('B', 'draining'), token('C', 'deleted')], 0);
  assert.deepEqual(plan.leave.map(({ stage, why }) => [stage.arn, why]),
    [[arn('A'), 'no longer in the pool'], [arn('C'), 'deleted']]);
  assert.deepEqual(plan.update.map(({ stage, poolState }) => [stage.arn, poolState]), [[arn('B'), 'draining']]);
  assert.deepEqual([plan.add, plan.join], [[], []]);
});

test('a kept stage gets its new pool state; nothing is changed by reconcile itself', () => {
  const a = new StageRecord(arn('A'), 'warming');
  a.session = session();
  const stages = stagesOf(a);
  const plan = reconcile(stages, [token('A', 'live')], 0);
  assert.deepEqual(plan.update.map(({ stage, poolState }) => [stage.arn, poolState]), [[arn('A'), 'live']]);
  assert.equal(a.poolState, 'warming');
  assert.equal(stages.size, 1);
  assert.deepEqual(reconcile(stages, [token('A', 'warming')], 0).update, []);
});

test('a dropped stage is joined again once its retry time has come', () => {
  const a = new StageRecord(arn('A'), 'live');
  a.retryAt = 5000;
  assert.deepEqual(reconcile(stagesOf(a), [token('A')], 4999).join, []);
  assert.deepEqual(arns(reconcile(stagesOf(a), [token('A')], 5000).join), [arn('A')]);
});

test('never joined: with a session, while joining, or replaced by another connection', () => {
  const withSession = Object.assign(new StageRecord(arn('A'), 'live'), { session: session() });
  const joining = Object.assign(new StageRecord(arn('B'), 'live'), { joining: true });
  const replaced = Object.assign(new StageRecord(arn('C'), 'live'), { replaced: true });
  const plan = reconcile(stagesOf(withSession, joining, replaced), [token('A'), token('B'), token('C')], 1e12);
  assert.deepEqual(plan.join, []);
  assert.deepEqual(plan.leave, []);
});

test('a publishing stage the pool has not heard of is reported again', () => {
  const a = Object.assign(new StageRecord(arn('A'), 'warming'), { session: session(), conn: 'publishing' });
  const b = Object.assign(new StageRecord(arn('B'), 'live'), { session: session(), conn: 'publishing', reported: true });
  const c = Object.assign(new StageRecord(arn('C'), 'warming'), { session: session(), conn: 'connected' });
  assert.deepEqual(arns(reconcile(stagesOf(a, b, c), [token('A'), token('B'), token('C')], 0).report), [arn('A')]);
});

test('a stage listed twice is added and joined once', () => {
  const plan = reconcile(new Map(), [token('A'), token('A')], 0);
  assert.equal(plan.add.length, 1);
  assert.equal(plan.join.length, 1);
});

test('StageRecord: connection state, session teardown, view without tokens', () => {
  const s = new StageRecord(arn('A'), 'live');
  assert.equal(s.setConn('joining', 10), true);
  assert.equal(s.setConn('joining', 20), false);
  assert.equal(s.since, 10);
  const open = session();
  s.session = open;
  s.participantId = 'pA';
  const gen = s.gen;
  s.closeSession();
  s.closeSession();
  assert.equal(open.closed, 1);
  assert.equal(s.session, null);
  assert.equal(s.gen, gen + 2);
  assert.deepEqual(s.view(), { stageArn: arn('A'), poolState: 'live', conn: 'joining', participantId: 'pA', reported: false });
});

test('stages of several regions are kept apart, each knowing its region', () => {
  const eu = { ...token('E'), stageArn: 'arn:aws:ivs:eu-west-1:000000000000:stage/E', region: 'eu-west-1', whipUrl: 'http://ivs-eu/whip' };
  const us = { ...token('U'), region: 'us-east-1' };
  const plan = reconcile(new Map(), [us, eu], 0);
  assert.deepEqual(plan.add.map((s) => s.region), ['us-east-1', 'eu-west-1']);
  assert.equal(plan.join[1].token.whipUrl, 'http://ivs-eu/whip');
  assert.equal(plan.add[1].view().region, 'eu-west-1');
  // The next answer without the EU stage leaves it, and only it.
  const kept = stagesOf(...plan.add);
  const next = reconcile(kept, [us], 10);
  assert.deepEqual(arns(next.leave), [eu.stageArn]);
});
