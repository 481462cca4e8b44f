// The status page's region quotas (web/src/region-quota.js), without a browser:
//   node --test web/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quotaRows, quotaText } from '../src/region-quota.js';

const use = (used, usable, limit = usable) => ({ used, usable, limit });

test('a row per region and quota, primary first, with its share and level', () => {
  const rows = quotaRows([
    { region: 'us-east-1', quota: { stages: use(2, 6), subscriptions: use(10, 12), publishers: use(0, 8) } },
    { region: 'eu-west-1', quota: { subscriptions: use(12, 12), publishers: use(1, 8), stages: use(1, 6) } },
  ]);
  assert.deepEqual(rows.map((r) => [r.region, r.quota, r.level]), [
    ['us-east-1', 'subscriptions', 'high'], ['us-east-1', 'publishers', 'ok'], ['us-east-1', 'stages', 'ok'],
    ['eu-west-1', 'subscriptions', 'full'], ['eu-west-1', 'publishers', 'ok'], ['eu-west-1', 'stages', 'ok'],
  ]);
  assert.equal(rows[0].share, 10 / 12);
  assert.equal(rows[3].share, 1);
});

test('what the answer lacks or gets wrong is left out, never shown as zero', () => {
  assert.deepEqual(quotaRows(undefined), []);
  assert.deepEqual(quotaRows({ region: 'us-east-1' }), []);
  const rows = quotaRows([
    null,
    { region: 'us-east-1' },
    { region: 'eu-west-1', quota: { subscriptions: use(-1, 5), publishers: { used: 1 }, stages: use(1.5, 6) } },
    { region: 'ap-south-1', quota: { stages: use(0, 0) } },
  ]);
  assert.deepEqual(rows.map((r) => [r.region, r.quota, r.share]), [['ap-south-1', 'stages', 0]]);
  // Nothing usable but something held (the limit was lowered under the grants): full.
  assert.equal(quotaRows([{ region: 'x', quota: { stages: use(1, 0) } }])[0].level, 'full');
});

test('the figure names the reserve when there is one', () => {
  const [plain] = quotaRows([{ region: 'us-east-1', quota: { subscriptions: use(1500, 20000) } }]);
  assert.equal(quotaText(plain), '1,500 / 20,000');
  const [reserved] = quotaRows([{ region: 'us-east-1', quota: { subscriptions: use(1500, 18000, 20000) } }]);
  assert.equal(quotaText(reserved), '1,500 / 18,000 (limit 20,000, 2,000 reserved)');
});
