// The README's screenshot of the status page over two regions (docs/img/status-regions.png),
// not a test: a broadcast in two regions, viewers seated in each, the page's region quotas.
//   IVS_REGIONS=us-east-1,eu-west-1 STAGE_CAPACITY=5 IVS_QUOTA_SUBSCRIPTIONS=40 \
//     IVS_QUOTA_RESERVE_PERCENT=10 scripts/with-stack.sh node tests/browser/status-regions-shot.mjs
import { join } from 'node:path';
import { launch, waitFor, ROOT } from './lib/browser.mjs';

const base = process.env.STAGEFAN_URL;
const hostKey = process.env.STAGEFAN_HOST_KEY;
const post = async (path, body, key) => {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
};

const broadcast = 'world';
const host = await post('/api/token/publisher-all', { broadcast }, hostKey);
if (host.status !== 200) throw new Error(`publisher-all: ${JSON.stringify(host)}`);
for (const [region, n] of [['us-east-1', 7], ['eu-west-1', 4]]) {
  for (let i = 0; i < n; i++) {
    await waitFor(async () => {
      const a = await post('/api/token/viewer', { broadcast, userId: `${region}-${i}`, region });
      return a.status === 200 && a.body.region === region;
    }, 60_000, `a seat in ${region}`, 300);
  }
}
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
await page.goto(`${base}/status`);
await page.waitForSelector('#region-quotas tr[data-region="eu-west-1"][data-quota="stages"]', { timeout: 30_000 });
await page.waitForSelector('tr[data-region="eu-west-1"] td', { timeout: 30_000 });
await page.screenshot({ path: join(ROOT, 'docs', 'img', 'status-regions.png'), fullPage: true });
console.log(JSON.stringify(await page.evaluate(() => window.stagefanRegions)));
await browser.close();
