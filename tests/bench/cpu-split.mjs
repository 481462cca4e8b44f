// CPU time per request of each process of the local stack, by request kind (a benchmark, not a
// test; docs/benchmarks.md, "Where the time went"). Run against a stack of its own:
//
//   STAGE_CAPACITY=25000 LEASE_TTL_SECONDS=3600 MAX_STAGES=4 \
//     scripts/with-stack.sh node tests/bench/cpu-split.mjs
//   (STAGEFAN_INSPECT=1 in front: the same with wrangler's devtools inspector attached)
//
// N requests per kind (default 4000) from C concurrent clients (default 64); KINDS picks them
// (config, viewer, heartbeat). CPU seconds come from /proc/<pid>/stat (utime + stime), so the
// figures per request do not depend on what else the machine is doing; the rate does.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

const base = process.env.STAGEFAN_URL;
const adminKey = process.env.STAGEFAN_ADMIN_KEY;
if (!base || !adminKey) throw new Error('run under scripts/with-stack.sh (STAGEFAN_URL, STAGEFAN_ADMIN_KEY)');
const N = Number(process.env.N ?? 4000);
const C = Number(process.env.C ?? 64);
const KINDS = (process.env.KINDS ?? 'config,viewer,heartbeat').split(',');
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
const broadcast = 'cpu-split';

// Each request is its own simulated viewer address (CF-Connecting-IP, as Cloudflare sets it),
// so the edge's per-client admission control sees many viewers, not one client.
let nextClient = 1;
const clientIp = () => { const n = nextClient++; return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`; };

async function post(path, body, key) {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'cf-connecting-ip': clientIp(),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify(body),
  });
  return [r.status, await r.json()];
}

/** CPU seconds of each process of the stack, by role. */
function cpu() {
  const roles = {};
  const pids = execFileSync('pgrep', ['-f', 'workerd serve|dev-worker.mjs|wrangler-dist/cli.js|ivs-local'])
    .toString().trim().split('\n');
  for (const pid of pids) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const role = cmd.includes('workerd\0serve') ? 'workerd' : cmd.includes('ivs-local') ? 'ivs-local' : 'node';
      const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      roles[role] = (roles[role] ?? 0) + (Number(fields[11]) + Number(fields[12])) / TICKS;
    } catch {
      // the process ended between pgrep and the read
    }
  }
  const own = process.cpuUsage();
  roles['load generator'] = (own.user + own.system) / 1e6;
  return roles;
}

const leases = [];
async function load(kind, n) {
  let next = 0;
  let ok = 0;
  const failures = new Map();
  const before = cpu();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: C }, async () => {
    for (let i = next++; i < n; i = next++) {
      let status, body;
      if (kind === 'config') {
        const r = await fetch(`${base}/api/config`);
        status = r.status;
        await r.text();
      } else if (kind === 'heartbeat') {
        [status, body] = await post('/api/viewer/heartbeat', { leaseId: leases[i % leases.length] });
      } else {
        [status, body] = await post('/api/token/viewer', { userId: `${kind}-${i}`, broadcast });
        if (status === 200) leases.push(body.leaseId);
      }
      if (status === 200) ok++;
      else failures.set(status, (failures.get(status) ?? 0) + 1);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  const after = cpu();
  const split = Object.keys(after)
    .map((role) => `${role} ${((1000 * (after[role] - (before[role] ?? 0))) / ok).toFixed(2)}`)
    .join(', ');
  const failed = failures.size ? ` failures ${JSON.stringify(Object.fromEntries(failures))}` : '';
  console.log(`${kind}: ${ok} ok, ${(ok / seconds).toFixed(0)}/s; CPU ms per request: ${split}${failed}`);
}

const [status, created] = await post(`/api/admin/broadcasts/${broadcast}`, {}, adminKey);
if (status !== 200) throw new Error(`creating the broadcast: ${status} ${JSON.stringify(created)}`);
// The first stage, and a warm isolate (key import, JIT).
for (let i = 0; i < 100; i++) {
  const [s] = await post('/api/token/viewer', { userId: 'warm-first', broadcast });
  if (s === 200) break;
  await new Promise((r) => setTimeout(r, 200));
}
await load('warm', 500);
for (const kind of KINDS) await load(kind === 'viewer' ? 'viewer' : kind, N);
