// The video frames a page decodes over time, for the longest stretch without a new one (the
// replicate test checks that video comes back; bench-recovery.mjs measures how long it took).

/** Starts logging, every 100 ms in the page, the video frames its peer connections decoded. */
export async function startFrameLog(page) {
  await page.evaluate(() => {
    window.__frameLog = [];
    clearInterval(window.__frameTimer);
    window.__frameTimer = setInterval(async () => {
      let frames = 0;
      for (const pc of window.__stagefanPcs || []) {
        if (pc.connectionState === 'closed') continue;
        (await pc.getStats()).forEach((x) => {
          if (x.type === 'inbound-rtp' && x.kind === 'video') frames += x.framesDecoded || 0;
        });
      }
      window.__frameLog.push([Date.now(), frames]);
    }, 100);
  });
}

/** The longest time without a newly decoded frame since `from` (ms), and when it ended; from
 *  the page's frame log (a count that changes, also downwards after a reconnect, is progress). */
export async function longestStall(page, from) {
  const log = await page.evaluate(() => window.__frameLog);
  let last = null;
  let lastAt = from;
  let stall = { ms: 0, endedAt: null };
  for (const [t, frames] of log) {
    if (last !== null && frames !== last) {
      if (t >= from && t - lastAt > stall.ms) stall = { ms: t - lastAt, endedAt: t };
      lastAt = Math.max(t, from);
    }
    last = frames;
  }
  return stall;
}
