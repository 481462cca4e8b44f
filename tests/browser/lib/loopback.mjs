// Starts the media crate's loopback example (ivs-local/media/examples/loopback.rs) on free ports.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './browser.mjs';

export function loopbackBinary({ release = false } = {}) {
  if (process.env.LOOPBACK_BIN) return process.env.LOOPBACK_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
  const bin = join(target, release ? 'release' : 'debug', 'examples', 'loopback');
  if (!existsSync(bin) || process.env.LOOPBACK_BUILD === '1') {
    const args = ['build', '-p', 'ivs-local-media', '--example', 'loopback'];
    if (release) args.push('--release');
    const r = spawnSync('cargo', args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('cargo build of the loopback example failed');
  }
  return bin;
}

/** Runs the loopback server; resolves to { url, proc, stop() } once it listens. */
export async function startLoopback({ release = false, env = {} } = {}) {
  const bin = loopbackBinary({ release });
  const proc = spawn(bin, ['--http', '127.0.0.1:0', '--media', '127.0.0.1:0'], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'ivs_local_media=warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('loopback did not start in 20 s')), 20000);
    proc.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`loopback exited (${code})`)); });
  });
  return {
    url,
    proc,
    async stop() {
      if (proc.exitCode !== null) return;
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
    },
  };
}
