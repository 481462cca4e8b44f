// IVS mode in the browser tests: contexts where the real Amazon IVS Web Broadcast SDK runs
// against ivs-local, with its two AWS hosts answered inside the test (Playwright route
// interception), so nothing leaves the machine and a surprise request fails loudly.
import { createHash, createHmac, createPrivateKey, sign, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './browser.mjs';

/** The SDK version package.json pins (exactly: an upgrade is a deliberate step). */
export const PINNED_SDK = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
  .devDependencies['amazon-ivs-web-broadcast'];

/**
 * The stack an ivs-*.test.mjs runs against, from scripts/with-stack.sh's environment, and
 * `skip`: why its tests cannot run there (no stack named, or a stack not in IVS mode, or in
 * replicate mode), else false. Throws when the named stack does not answer.
 */
export async function ivsStack() {
  const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
  const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
  const ADMIN_KEY = process.env.STAGEFAN_ADMIN_KEY;
  const IVS = process.env.IVS_ENDPOINT;
  let skip = !BASE || !HOST_KEY || !IVS ? 'set STAGEFAN_URL, STAGEFAN_HOST_KEY and IVS_ENDPOINT (scripts/with-stack.sh)' : false;
  if (!skip) {
    const cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
    if (!cfg) throw new Error(`cannot read ${BASE}/api/config`);
    if (cfg.mediaMode !== 'ivs') skip = 'the stack runs MEDIA_MODE=local (start it with MEDIA_MODE=ivs)';
    else if (cfg.fanoutMode === 'replicate') skip = 'the stack runs FANOUT_MODE=replicate';
  }
  return { BASE, HOST_KEY, ADMIN_KEY, IVS, skip };
}

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

// --- tokens and IVS calls made by the test itself --------------------------------------------

const b64url = (b) => Buffer.from(b).toString('base64url');

/** A token's header and claims (unverified). */
export function decodeToken(token) {
  const [h, c] = token.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(c, 'base64url')) };
}

/**
 * `token` with its claims changed by `edit` and signed again with the stack's own token key
 * (.stagefan/keys/token-private.pem, the key the worker signs with and ivs-local verifies): a
 * real, valid signature over claims the worker would not issue (expired, no capability,
 * another stage).
 */
export function resign(token, edit) {
  const { header, claims } = decodeToken(token);
  edit(claims);
  const key = createPrivateKey(readFileSync(join(ROOT, '.stagefan', 'keys', 'token-private.pem')));
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = sign('sha384', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

export const randomParticipantId = () => randomBytes(9).toString('base64url').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 12);

const hmac = (k, s) => createHmac('sha256', k).update(s).digest();
const sha256 = (s) => createHash('sha256').update(s).digest('hex');

/**
 * One IVS Real-Time operation against ivs-local (`POST {endpoint}/{op}`), SigV4-signed with
 * ivs-local's default local credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY override).
 */
export async function ivsCall(endpoint, op, body) {
  const accessKey = process.env.AWS_ACCESS_KEY_ID || 'AKIDLOCALSTAGEFAN';
  const secret = process.env.AWS_SECRET_ACCESS_KEY || 'stagefan-local-secret';
  const region = process.env.IVS_LOCAL_REGION || 'us-east-1';
  const url = new URL(`${endpoint.replace(/\/$/, '')}/${op}`);
  const payload = JSON.stringify(body);
  const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers = { 'content-type': 'application/json', host: url.host, 'x-amz-date': amzDate };
  const names = Object.keys(headers).sort();
  const canonical = ['POST', url.pathname, '', ...names.map((n) => `${n}:${headers[n]}\n`).join('').split('\n').slice(0, -1),
    '', names.join(';'), sha256(payload)].join('\n');
  const scope = `${day}/${region}/ivs/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const kSigning = ['ivs', 'aws4_request'].reduce((k, s) => hmac(k, s), hmac(hmac(`AWS4${secret}`, day), region));
  const signature = createHmac('sha256', kSigning).update(toSign).digest('hex');
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': headers['content-type'], 'x-amz-date': amzDate,
      authorization: `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`,
    },
    body: payload,
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${op}: HTTP ${res.status} ${text}`);
  return text ? JSON.parse(text) : {};
}
