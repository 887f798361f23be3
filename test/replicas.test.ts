// Past one machine: two `qwen-ts serve` replicas behind nginx (Debian's) with affinity by
// conversation (`hash $http_x_session_id consistent`), so each chat keeps reaching the replica whose
// prefix cache holds its history: the second turn is served from cache. The README's example
// configuration is the one written here.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));
// CI installs nginx (.ci/run): there a missing nginx is a failure, not a skip.
const RUN = NGINX !== undefined || process.env.CI === 'true';
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));

let dir: string;
const children: ChildProcess[] = [];
let base: string;
const REPLICAS = ['127.0.0.2', '127.0.0.3'];
let replicaPort: number;

/** Start a child and resolve with the first stdout line matching `ready`. */
function start(cmd: string, args: string[], ready: RegExp): Promise<RegExpMatchArray> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) resolve(m);
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`${cmd} exited with ${code}: ${err}`)));
  });
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The nginx configuration of the README: a consistent hash of the X-Session-Id header. */
function nginxConfig(listen: number, replicas: string[], replicaPort: number, prefix: string): string {
  return `
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  upstream qwen_ts {
    hash $http_x_session_id consistent;
${replicas.map((r) => `    server ${r};`).join('\n')}
  }
  server {
    listen 127.0.0.1:${listen};
    location / {
      proxy_pass http://qwen_ts;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost:${replicaPort};
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
`;
}

beforeAll(async () => {
  if (!RUN) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-nginx-'));
  // The replicas share one port on two loopback addresses, so one upstream Host header
  // (localhost:PORT) passes the Host check of both.
  const port = await freePort();
  await Promise.all(
    REPLICAS.map((host) =>
      start(
        process.execPath,
        [
          MAIN,
          'serve',
          '--host',
          host,
          '--port',
          String(port),
          '--served-model-name',
          'stories',
          '--threads',
          '1',
          '--quiet',
        ],
        /listening on (\S+)/,
      ),
    ),
  );
  replicaPort = port;
  const listen = await freePort();
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    nginxConfig(
      listen,
      REPLICAS.map((h) => `${h}:${port}`),
      port,
      dir,
    ),
  );
  const check = spawnSync(NGINX!, ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf')], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`nginx -t: ${check.stderr}`);
  children.push(
    spawn(NGINX!, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore' }),
  );
  base = `http://127.0.0.1:${listen}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(base + '/health')).ok) return;
    } catch {
      // not yet listening
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('nginx did not come up');
}, 120_000);

afterAll(() => {
  for (const c of children) c.kill('SIGTERM');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Completion {
  choices: { text: string }[];
  usage: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens: number } };
}

async function complete(session: string, prompt: string): Promise<Completion> {
  const r = await fetch(base + '/v1/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Session-Id': session },
    body: JSON.stringify({ model: 'stories', prompt, max_tokens: 40, temperature: 0 }),
  });
  expect(r.status).toBe(200);
  return (await r.json()) as Completion;
}

describe.runIf(RUN)('two replicas behind nginx, affinity by X-Session-Id', () => {
  it('every conversation keeps its replica: each second turn is served from that replica’s prefix cache', async () => {
    // Six conversations: with two replicas, consistent hashing sends some to each.
    for (let c = 0; c < 6; c++) {
      const first = `Conversation ${c}: once upon a time there was a little dog named Spot who liked to run in the park`;
      const turn1 = await complete(`chat-${c}`, first);
      expect(turn1.usage.prompt_tokens_details?.cached_tokens ?? 0).toBe(0);
      const second = first + turn1.choices[0].text + ' Then';
      const turn2 = await complete(`chat-${c}`, second);
      // The whole first turn's full 16-token blocks come from the cache.
      expect(turn2.usage.prompt_tokens_details?.cached_tokens).toBeGreaterThanOrEqual(
        Math.floor(turn1.usage.prompt_tokens / 16) * 16,
      );
      expect(turn2.usage.prompt_tokens_details?.cached_tokens).toBeGreaterThan(0);
    }
    // Both replicas served some of them.
    const hits = await Promise.all(
      REPLICAS.map(async (host) => {
        const metrics = await (
          await fetch(`http://${host}:${replicaPort}/metrics`, { headers: { Host: `localhost:${replicaPort}` } })
        ).text();
        return Number(/^qwen_ts_prefix_cache_hits_total (\d+)/m.exec(metrics)?.[1] ?? 0);
      }),
    );
    expect(hits[0]).toBeGreaterThan(0);
    expect(hits[1]).toBeGreaterThan(0);
  });
});
