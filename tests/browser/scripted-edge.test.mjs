// The scripted edge (lib/scripted-edge.mjs) that pages.test.mjs tests the pages against is only
// worth what it shares with the real edge: the same requests go to both, and each answer must
// match in status and error code, and every field the double sends must exist in the real
// answer with the same JSON type (so a page tested against the double reads nothing the real
// edge does not send).
//
//   STAGEFAN_URL=http://127.0.0.1:8787 STAGEFAN_HOST_KEY=… node --test tests/browser/scripted-edge.test.mjs
//
// Needs a running multi-publish stack (`make browser-test` starts one); without it, it skips
// (under CI=true it fails, saying so).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startScriptedEdge } from './lib/scripted-edge.mjs';
import { mustRun, skipOutsideCI } from './lib/must-run.mjs';
import { sleep } from './lib/browser.mjs';

const BASE = process.env.STAGEFAN_URL?.replace(/\/$/, '');
const HOST_KEY = process.env.STAGEFAN_HOST_KEY;
let skip = !BASE || !HOST_KEY ? 'set STAGEFAN_URL and STAGEFAN_HOST_KEY to a running local stack' : false;
let cfg = null;
if (!skip) {
  cfg = await fetch(`${BASE}/api/config`).then((r) => r.json()).catch(() => null);
  if (!cfg) skip = `no stack answers at ${BASE}/api/config`;
  else if (cfg.fanoutMode !== 'multi-publish') skip = `the stack runs FANOUT_MODE=${cfg.fanoutMode}; the double speaks multi-publish`;
  else if (!cfg.defaultBroadcast) skip = 'the stack has no default broadcast (the double serves "default")';
}

/** Where `double` differs in shape from `real` (null matches anything; arrays by their first elements). */
function shapeDifferences(path, real, double, out) {
  if (real === null || double === null || real === undefined && double === undefined) return out;
  if (real === undefined) { out.push(`${path}: only in the double`); return out; }
  const kind = (v) => (Array.isArray(v) ? 'array' : typeof v);
  if (kind(real) !== kind(double)) { out.push(`${path}: real ${JSON.stringify(real)}, double ${JSON.stringify(double)}`); return out; }
  if (Array.isArray(double)) {
    if (real.length && double.length) shapeDifferences(`${path}[0]`, real[0], double[0], out);
  } else if (kind(double) === 'object') {
    for (const k of Object.keys(double)) shapeDifferences(`${path}.${k}`, real[k], double[k], out);
  }
  return out;
}

async function ask(base, method, path, body, key) {
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, body: json, retryAfter: r.headers.get('retry-after') };
}

test('the scripted edge answers as the real edge does', { skip: skipOutsideCI(skip), timeout: 120_000 }, async () => {
  mustRun(skip);
  const hostKey = 'double-host-key';
  const edge = await startScriptedEdge({ mediaUrl: 'http://127.0.0.1:9', hostKey });
  try {
    const real = (method, path, body, key) => ask(BASE, method, path, body, key === 'host' ? HOST_KEY : key);
    const double = (method, path, body, key) => ask(edge.url, method, path, body, key === 'host' ? hostKey : key);
    const b = cfg.defaultBroadcast;
    const user = `double-check-${Date.now().toString(36)}`;

    // A seat on each (the real pool may need a moment for its first stage).
    let realSeat;
    for (let i = 0; i < 100; i++) {
      realSeat = await real('POST', '/api/token/viewer', { userId: user });
      if (realSeat.status === 200) break;
      assert.equal(realSeat.status, 503, JSON.stringify(realSeat));
      await sleep(200);
    }
    const doubleSeat = await double('POST', '/api/token/viewer', { userId: user });
    const pairs = [
      ['viewer token', realSeat, doubleSeat],
      ['config', await real('GET', '/api/config'), await double('GET', '/api/config')],
      ['heartbeat', await real('POST', '/api/viewer/heartbeat', { leaseId: realSeat.body.leaseId }),
        await double('POST', '/api/viewer/heartbeat', { leaseId: doubleSeat.body.leaseId })],
      ['heartbeat of an unknown lease', await real('POST', '/api/viewer/heartbeat', { leaseId: `${b}.AAAAAAAAAAAAAAAAAAAAAA` }),
        await double('POST', '/api/viewer/heartbeat', { leaseId: `${b}.AAAAAAAAAAAAAAAAAAAAAA` })],
      ['publisher-all', await real('POST', '/api/token/publisher-all', { broadcast: b }, 'host'),
        await double('POST', '/api/token/publisher-all', { broadcast: b }, 'host')],
      ['publisher-all without the key', await real('POST', '/api/token/publisher-all', { broadcast: b }),
        await double('POST', '/api/token/publisher-all', { broadcast: b })],
      ['host/published on an unknown stage',
        await real('POST', '/api/host/published', { broadcast: b, stageArn: 'arn:aws:ivs:us-east-1:123456789012:stage/NoSuchStage1', participantId: 'p' }, 'host'),
        await double('POST', '/api/host/published', { broadcast: b, stageArn: 'arn:aws:ivs:us-east-1:123456789012:stage/NoSuchStage1', participantId: 'p' }, 'host')],
      ['broadcast summary', await real('GET', `/api/broadcasts/${b}`), await double('GET', `/api/broadcasts/${b}`)],
      ['leave', await real('POST', '/api/viewer/leave', { leaseId: realSeat.body.leaseId }),
        await double('POST', '/api/viewer/leave', { leaseId: doubleSeat.body.leaseId })],
    ];
    const differences = [];
    for (const [what, r, d] of pairs) {
      console.log(`${what}: real ${r.status} ${JSON.stringify(r.body)}, double ${d.status} ${JSON.stringify(d.body)}`);
      if (r.status !== d.status) differences.push(`${what}: status real ${r.status}, double ${d.status}`);
      if (r.body?.error?.code !== d.body?.error?.code) {
        differences.push(`${what}: error code real ${r.body?.error?.code}, double ${d.body?.error?.code}`);
      }
      shapeDifferences(what, r.body, d.body, differences);
    }
    assert.deepEqual(differences, [], `the scripted edge differs from the real one:\n  ${differences.join('\n  ')}`);
  } finally {
    await edge.stop();
  }
});
