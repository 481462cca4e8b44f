// A scripted stand-in for the edge, for testing the pages' own behaviour (joining stages the
// pool adds, leaving drained ones, reconnecting, 503 + Retry-After, heartbeats, leave on close)
// with the real media plane (ivs-local-media's loopback example, whose /whip routes take
// "<stage>:<participant>" as the Bearer token). It serves web/dist like the worker does.
// It is not the worker: the full stack is tested by stack.test.mjs.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { ROOT } from './browser.mjs';

const DIST = join(ROOT, 'web', 'dist');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

export async function startScriptedEdge({ mediaUrl, capacity = 2, hostKey = 'test-host-key', leaseTtlSeconds = 6, mediaMode = 'local' }) {
  const edge = {
    broadcast: 'default',
    capacity,
    stages: [], // { stageArn, id, state, leases: Set }
    leases: new Map(), // leaseId → { stageArn, userId, expires }
    calls: [],
    refuseViewers: 0, // answer the next n viewer-token requests with 503 + Retry-After: 1
    published: [],
    nextId: 1,
  };
  edge.addStage = (state = 'warming') => {
    const id = `stage${String(edge.nextId++).padStart(7, '0')}`;
    const s = { stageArn: `arn:aws:ivs:us-east-1:123456789012:stage/${id}`, id, state, leases: new Set() };
    edge.stages.push(s);
    return s;
  };
  edge.addStage('warming');
  const token = (stage, pid) => `${stage.id}:${pid}`;
  const json = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const err = (res, status, code, headers) => json(res, status, { error: { code, message: code } }, headers);
  const expire = () => {
    const now = Date.now();
    for (const [id, l] of edge.leases) {
      if (l.expires < now) {
        edge.leases.delete(id);
        edge.stages.find((s) => s.stageArn === l.stageArn)?.leases.delete(id);
      }
    }
  };
  const summary = () => ({
    broadcast: edge.broadcast, capacity, viewers: edge.leases.size,
    stages: edge.stages.filter((s) => s.state !== 'deleted')
      .map((s) => ({ stageArn: s.stageArn, state: s.state, load: s.leases.size, capacity })),
  });

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    let body = '';
    for await (const c of req) body += c;
    const data = body ? (() => { try { return JSON.parse(body); } catch { return {}; } })() : {};
    edge.calls.push(`${req.method} ${url.pathname}`);
    expire();
    const p = url.pathname;
    if (p === '/api/config') return json(res, 200, { mediaMode, fanoutMode: 'multi-publish', tokenMode: 'self-signed', defaultBroadcast: 'default' });
    if (p === '/api/token/publisher-all') {
      if (req.headers.authorization !== `Bearer ${hostKey}`) return err(res, 401, 'unauthorized');
      return json(res, 200, {
        broadcast: edge.broadcast, fanoutMode: 'multi-publish',
        tokens: edge.stages.filter((s) => s.state !== 'deleted').map((s) => {
          const pid = `host-${edge.nextId++}`;
          return { stageArn: s.stageArn, token: token(s, pid), participantId: pid, expiresAt: new Date(Date.now() + 3600e3).toISOString(), whipUrl: `${mediaUrl}/whip`, state: s.state };
        }),
      });
    }
    if (p === '/api/host/published') {
      if (req.headers.authorization !== `Bearer ${hostKey}`) return err(res, 401, 'unauthorized');
      const s = edge.stages.find((x) => x.stageArn === data.stageArn);
      if (!s) return err(res, 404, 'stage_not_found');
      if (s.state === 'warming') s.state = 'live';
      edge.published.push(data);
      return json(res, 200, { stageArn: s.stageArn, state: s.state });
    }
    if (p === '/api/token/viewer') {
      if (edge.refuseViewers > 0) { edge.refuseViewers--; return err(res, 503, 'no_capacity', { 'Retry-After': '1' }); }
      for (const [id, l] of edge.leases) {
        if (l.userId === data.userId) {
          const s = edge.stages.find((x) => x.stageArn === l.stageArn);
          if (s && s.state !== 'deleted') {
            const pid = `viewer-${edge.nextId++}`;
            return json(res, 200, { token: token(s, pid), stageArn: s.stageArn, participantId: pid, expiresAt: new Date(Date.now() + 3600e3).toISOString(), leaseId: id, leaseTtlSeconds, whipUrl: `${mediaUrl}/whip`, broadcast: edge.broadcast });
          }
        }
      }
      const open = edge.stages.filter((s) => (s.state === 'live' || s.state === 'warming') && s.leases.size < capacity)
        .sort((a, b) => (a.state === 'live' ? 0 : 1) - (b.state === 'live' ? 0 : 1) || a.leases.size - b.leases.size);
      const s = open[0];
      if (!s) return err(res, 503, 'no_capacity', { 'Retry-After': '1' });
      const leaseId = `default.${Math.random().toString(36).slice(2, 12)}`;
      edge.leases.set(leaseId, { stageArn: s.stageArn, userId: data.userId, expires: Date.now() + leaseTtlSeconds * 1000 });
      s.leases.add(leaseId);
      const pid = `viewer-${edge.nextId++}`;
      return json(res, 200, { token: token(s, pid), stageArn: s.stageArn, participantId: pid, expiresAt: new Date(Date.now() + 3600e3).toISOString(), leaseId, leaseTtlSeconds, whipUrl: `${mediaUrl}/whip`, broadcast: edge.broadcast });
    }
    if (p === '/api/viewer/heartbeat') {
      const l = edge.leases.get(data.leaseId);
      if (!l) return err(res, 404, 'lease_not_found');
      l.expires = Date.now() + leaseTtlSeconds * 1000;
      return json(res, 200, { leaseId: data.leaseId, expiresAt: new Date(l.expires).toISOString() });
    }
    if (p === '/api/viewer/leave') {
      const l = edge.leases.get(data.leaseId);
      if (l) { edge.leases.delete(data.leaseId); edge.stages.find((s) => s.stageArn === l.stageArn)?.leases.delete(data.leaseId); }
      return json(res, 200, { left: true });
    }
    if (p === '/api/broadcasts') return json(res, 200, { broadcasts: [summary()] });
    if (p === `/api/broadcasts/${edge.broadcast}`) return json(res, 200, summary());
    // Static pages, like workers assets with html_handling = auto-trailing-slash.
    let file = normalize(p === '/' ? '/index.html' : p).replace(/^(\.\.[/\\])+/, '');
    if (!extname(file)) file += '.html';
    try {
      const content = await readFile(join(DIST, file));
      res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
      return res.end(content);
    } catch {
      return err(res, 404, 'not_found');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  edge.url = `http://127.0.0.1:${server.address().port}`;
  edge.hostKey = hostKey;
  edge.stop = () => new Promise((r) => server.close(r));
  return edge;
}
