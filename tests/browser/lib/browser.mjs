// Shared helpers for the browser tests: Debian's Chromium through playwright-core, a fake camera,
// and checks that a <video> really shows decoded, non-black pictures.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const OUT = join(ROOT, 'tests', 'out');

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Many pages decode at once in one headless browser: keep background tabs running.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--autoplay-policy=no-user-gesture-required',
];

export async function launch({ extraArgs = [] } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
  });
}

export function screenshotPath(name) {
  mkdirSync(OUT, { recursive: true });
  return join(OUT, name);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `ms` pass; returns the last value. */
export async function waitFor(fn, ms, what, every = 250) {
  const end = Date.now() + ms;
  let last;
  let lastErr;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}` +
    (lastErr ? ` (last error: ${lastErr.message})` : '') +
    (last !== undefined ? ` (last value: ${JSON.stringify(last)})` : ''));
}

/**
 * In the page: the inbound video's framesDecoded (summed over peer connections in
 * `window.__pcs`, or `window.pc`), and how much of the <video> selected by `sel` is not black.
 */
export async function videoHealth(page, sel = 'video') {
  return page.evaluate(async (sel) => {
    const pcs = window.__stagefanPcs ? [...window.__stagefanPcs] : (window.pc ? [window.pc] : []);
    let framesDecoded = 0;
    let codec = null;
    let width = 0;
    let height = 0;
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          framesDecoded += s.framesDecoded || 0;
          codec = report.get(s.codecId)?.mimeType || codec;
          width = s.frameWidth || width;
          height = s.frameHeight || height;
        }
      });
    }
    const v = document.querySelector(sel);
    let litFraction = 0;
    if (v && v.videoWidth > 0) {
      const c = document.createElement('canvas');
      c.width = 160;
      c.height = 90;
      const ctx = c.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(v, 0, 0, c.width, c.height);
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < px.length; i += 4) {
        if (px[i] + px[i + 1] + px[i + 2] > 60) lit++;
      }
      litFraction = lit / (px.length / 4);
    }
    return { framesDecoded, codec, width, height, litFraction };
  }, sel);
}

/** Waits until a stack viewer `{ page, i }` shows a decoded, non-black frame, then checks that
 *  its decoded-frame count keeps rising; returns the last `videoHealth`. */
export async function decodes(v, ms) {
  const first = await waitFor(async () => {
    const h = await videoHealth(v.page, '#video');
    return h.framesDecoded > 0 && h.litFraction > 0.05 ? h : null;
  }, ms, `viewer ${v.i} to decode a non-black frame`);
  await sleep(1500);
  const later = await videoHealth(v.page, '#video');
  assert.ok(later.framesDecoded > first.framesDecoded,
    `viewer ${v.i}: framesDecoded did not rise (${first.framesDecoded} → ${later.framesDecoded})`);
  return later;
}

/** The host page's upload: its connected publishing peer connections (`window.__stagefanPcs`)
 *  and their outbound video+audio bitrate over `ms`. */
export async function hostUpload(host, ms = 3000) {
  const sample = () => host.evaluate(async () => {
    let bytes = 0;
    let streams = 0;
    for (const pc of window.__stagefanPcs || []) {
      if (pc.connectionState !== 'connected') continue;
      streams++;
      (await pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') bytes += s.bytesSent; });
    }
    return { bytes, streams, t: performance.now() };
  });
  const a = await sample();
  await sleep(ms);
  const b = await sample();
  return { streams: b.streams, kbps: Math.round(((b.bytes - a.bytes) * 8) / (b.t - a.t)) };
}
