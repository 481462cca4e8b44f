// @ts-check
// Waiting and retrying: what the pages' loops do between attempts.

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Backoff with jitter: 1 s, 2 s, 4 s … up to `max` ms.
 * @param {number} attempt 0 for the first retry
 * @param {number} [max]
 * @param {() => number} [random] in [0, 1)
 */
export function backoff(attempt, max = 15000, random = Math.random) {
  const base = Math.min(max, 1000 * 2 ** Math.min(attempt, 6));
  return base / 2 + random() * base / 2;
}
