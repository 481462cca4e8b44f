// Runs the worker locally with wrangler's own dev server (the engine `wrangler dev` runs:
// Miniflare + workerd, local SQLite Durable Objects, the same wrangler.toml), minus one thing:
// the devtools inspector, unless STAGEFAN_INSPECT=1.
//
// Why not the `wrangler dev` command itself: it always attaches an inspector to the runtime and
// turns on devtools' Network domain, so every subrequest (each Durable Object call included)
// becomes three devtools events that wrangler forwards to its Node process and appends to a
// debug log file. Measured on this 2-core machine (docs/benchmarks.md): about 1.3 ms of Node
// and 0.9 ms of proxy CPU per Durable Object call, more than the call itself, and a debug log
// growing by ~3.5 KiB per viewer. Production has no inspector, so the local stack does not
// either, by default.
//
//   node scripts/dev-worker.mjs --ip 127.0.0.1 --port 8787 --env-file F --persist-to DIR
//        [--config wrangler.toml]  (default: the repository's; scripts/stack.sh passes its own)
//        [--inspector-port N]      (with STAGEFAN_INSPECT=1)
import { unstable_startWorker } from 'wrangler';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const known = new Set(['--ip', '--port', '--env-file', '--persist-to', '--inspector-port', '--config']);
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (!known.has(flag) || value === undefined) {
      throw new Error(`dev-worker: unknown or incomplete argument ${flag ?? ''} (known: ${[...known].join(' ')})`);
    }
    args[flag.slice(2)] = value;
  }
  for (const required of ['port', 'env-file', 'persist-to']) {
    if (!args[required]) throw new Error(`dev-worker: --${required} is required`);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const hostname = args.ip ?? '127.0.0.1';
const inspect = process.env.STAGEFAN_INSPECT === '1';

const worker = await unstable_startWorker({
  config: args.config ? path.resolve(args.config) : path.join(root, 'wrangler.toml'),
  envFiles: [path.resolve(args['env-file'])],
  dev: {
    server: { hostname, port: Number(args.port) },
    inspector: inspect
      ? { hostname, port: args['inspector-port'] ? Number(args['inspector-port']) : undefined }
      : false,
    persist: path.resolve(args['persist-to']),
    logLevel: process.env.WRANGLER_LOG ?? 'warn',
    watch: false,
    liveReload: false,
  },
});
await worker.ready;
const url = await worker.url;
console.log(`dev-worker: serving ${url}${inspect ? ' (inspector on)' : ''}`);

let stopping = false;
async function stop(signal) {
  if (stopping) process.exit(130);
  stopping = true;
  console.log(`dev-worker: ${signal}, stopping`);
  try {
    await worker.dispose();
  } finally {
    process.exit(0);
  }
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
