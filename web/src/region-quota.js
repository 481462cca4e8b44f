// Each region's account quotas as the status page shows them: from the `regions` field of
// the public list's first page (GET /api/broadcasts), one row per region and quota with
// what stagefan's pools hold (`used`), what stagefan may hold (`usable`: the limit minus the
// reserve for the account's other users) and the account's `limit`. Pure: no DOM, tested
// under node --test (web/test/region-quota.test.mjs).

/** The quotas in the order the page lists them. */
export const QUOTAS = ['subscriptions', 'publishers', 'stages'];

/**
 * @typedef {{ used: number, usable: number, limit: number }} QuotaUse
 * @typedef {{ region: string, quota: Record<string, QuotaUse> }} RegionQuota
 * @typedef {{ region: string, quota: string, used: number, usable: number, limit: number,
 *   share: number, level: 'ok' | 'high' | 'full' }} QuotaRow
 */

/**
 * The rows of the region-quota table, regions in the order the edge gives them (the primary
 * first), quotas in [`QUOTAS`] order. A region or quota the answer lacks or gets wrong is
 * left out rather than shown as zero.
 * @param {unknown} regions
 * @returns {QuotaRow[]}
 */
export function quotaRows(regions) {
  if (!Array.isArray(regions)) return [];
  /** @type {QuotaRow[]} */
  const rows = [];
  for (const r of regions) {
    if (!r || typeof r.region !== 'string' || !r.quota || typeof r.quota !== 'object') continue;
    for (const quota of QUOTAS) {
      const q = r.quota[quota];
      if (!q || ![q.used, q.usable, q.limit].every((v) => Number.isInteger(v) && v >= 0)) continue;
      const share = q.usable > 0 ? q.used / q.usable : (q.used > 0 ? 1 : 0);
      const level = share >= 1 ? 'full' : share >= 0.8 ? 'high' : 'ok';
      rows.push({ region: r.region, quota, used: q.used, usable: q.usable, limit: q.limit, share, level });
    }
  }
  return rows;
}

/**
 * The text of a row's figure: `used / usable`, and the account's limit when a reserve
 * keeps part of it for other users.
 * @param {QuotaRow} row
 */
export function quotaText(row) {
  const n = (/** @type {number} */ v) => v.toLocaleString('en-US');
  const base = `${n(row.used)} / ${n(row.usable)}`;
  return row.limit > row.usable ? `${base} (limit ${n(row.limit)}, ${n(row.limit - row.usable)} reserved)` : base;
}
