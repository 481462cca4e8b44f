// IVS mode in the browser tests: contexts where the real Amazon IVS Web Broadcast SDK runs
// against ivs-local, with its two AWS hosts answered inside the test (Playwright route
// interception), so nothing leaves the machine and a surprise request fails loudly.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './browser.mjs';

/** The SDK version package.json pins (exactly: an upgrade is a deliberate step). */
export const PINNED_SDK = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
  .devDependencies['amazon-ivs-web-broadcast'];

/**
 * A browser context for a page in IVS mode. Every request to an AWS host is recorded in
 * `ctx.awsRequests`; the SDK's stats endpoint gets 204, its device configuration an empty
 * one (the shape the SDK accepts), and any other *.live-video.net or amazonaws.com request is
 * aborted. Every RTCPeerConnection the SDK opens is kept in `window.__stagefanPcs` (for
 * videoHealth and hostUpload), and WHIP requests' `X-Stages-SDK` headers in `ctx.sdkVersions`.
 */
export async function ivsContext(browser) {
  const ctx = await browser.newContext();
  ctx.awsRequests = [];
  ctx.sdkVersions = new Set();
  await ctx.route(/^https:\/\/([a-z0-9.-]+\.)?(live-video\.net|amazonaws\.com)\//, (route) => {
    const url = route.request().url();
    ctx.awsRequests.push(url);
    if (url.startsWith('https://broadcast.stats.live-video.net/')) return route.fulfill({ status: 204 });
    if (url.startsWith('https://prod.ivs-device-config.live-video.net/')) {
      return route.fulfill({
        status: 200, contentType: 'application/json',
        body: JSON.stringify({ version: '1.0', properties: [] }),
      });
    }
    return route.abort();
  });
  ctx.on('request', (req) => {
    const v = req.headers()['x-stages-sdk'];
    if (v) ctx.sdkVersions.add(v);
  });
  await ctx.addInitScript(() => {
    const Original = window.RTCPeerConnection;
    const pcs = (window.__stagefanPcs ??= new Set());
    window.RTCPeerConnection = class extends Original {
      constructor(...args) {
        super(...args);
        pcs.add(this);
      }
    };
  });
  return ctx;
}

/** The page's console, kept for a failure's diagnosis. */
export function keepConsole(page, lines = []) {
  page.on('console', (m) => { lines.push(`${m.type()}: ${m.text()}`.slice(0, 400)); if (lines.length > 300) lines.shift(); });
  page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
  return lines;
}
