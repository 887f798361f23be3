// Downloads from a loopback server that answers as the Hugging Face hub does (helpers/mock-hub.ts):
// the cache layout, only the needed files, revisions, GGUF choice, and every failure with its message.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveModel, type DownloadProgress, type ResolveOptions } from '../src/model/sources/index.js';
import { removeDir } from './helpers/models.js';
import { startMockHub, type MockHub } from './helpers/mock-hub.js';
import { consoleProgress } from '../src/model/sources/progress.js';

const STORIES = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const COMMIT = 'a'.repeat(40);
const V1 = 'b'.repeat(40);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const stories: Record<string, Buffer> = Object.fromEntries(
  ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map((f) => [
    f,
    fs.readFileSync(path.join(STORIES, f)),
  ]),
);
const weights = stories['model.safetensors'];

let hub: MockHub;
let cache: string;
let tmp: string;

beforeAll(async () => {
  hub = await startMockHub({
    'Org/Stories': {
      commit: COMMIT,
      refs: { v1: V1 },
      files: {
        ...stories,
        'README.md': Buffer.from('# stories\n'),
        '.gitattributes': Buffer.from('*.safetensors filter=lfs\n'),
        'pytorch_model.bin': Buffer.alloc(5000, 1),
        'onnx/model.onnx': Buffer.alloc(3000, 2),
      },
    },
    'Org/Sharded': {
      commit: COMMIT,
      files: {
        'config.json': stories['config.json'],
        'tokenizer.json': stories['tokenizer.json'],
        'tokenizer_config.json': stories['tokenizer_config.json'],
        'model.safetensors.index.json': Buffer.from(
          JSON.stringify({
            metadata: {},
            weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
          }),
        ),
        'model-00001-of-00002.safetensors': Buffer.alloc(4000, 3),
        'model-00002-of-00002.safetensors': Buffer.alloc(4000, 4),
        'consolidated.safetensors': Buffer.alloc(8000, 5),
      },
    },
    'Org/Gated': { commit: COMMIT, token: 'hf_right', files: stories },
    'Org/Torch': {
      commit: COMMIT,
      files: { 'config.json': stories['config.json'], 'pytorch_model.bin': Buffer.alloc(10) },
    },
    'Org/M-GGUF': {
      commit: COMMIT,
      files: {
        'README.md': Buffer.from('quants\n'),
        'm-q8_0.gguf': Buffer.alloc(3000, 8),
        'm-q4_k_m.gguf': Buffer.alloc(2000, 4),
        'm-f16-00001-of-00002.gguf': Buffer.alloc(2500, 16),
        'm-f16-00002-of-00002.gguf': Buffer.alloc(2500, 17),
        'mmproj-m-f16.gguf': Buffer.alloc(100, 1),
      },
    },
  });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-hub-'));
});
afterAll(async () => {
  await hub.close();
  removeDir(tmp);
});

let n = 0;
afterEach(() => {
  hub.cuts.clear();
  hub.corrupt.clear();
  hub.announceSize.clear();
  hub.missing.clear();
});

/** A fresh cache folder per test, and the options that point at the mock hub. */
function fresh(extra: ResolveOptions = {}): ResolveOptions {
  cache = path.join(tmp, `cache${n++}`);
  return {
    endpoint: hub.url,
    cacheDir: cache,
    ollamaDir: path.join(tmp, 'no-ollama'),
    progressBar: false,
    env: {},
    ...extra,
  };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

const repoDir = (repo: string) => path.join(cache, `models--${repo.replace('/', '--')}`);
const since = (start: number) => hub.requests.slice(start);

describe('a download into the Hugging Face cache layout', () => {
  it('fetches only the needed files into blobs/ named by ETag, links snapshots/<commit>/ to them and writes refs/main', async () => {
    const opts = fresh();
    const progress: DownloadProgress[] = [];
    const start = hub.requests.length;
    const r = await resolveModel('Org/Stories', { ...opts, onProgress: (p) => progress.push(p) });
    const snapshot = path.join(repoDir('Org/Stories'), 'snapshots', COMMIT);
    expect(r).toEqual({ path: snapshot, format: 'safetensors', source: 'hub', name: 'Org/Stories', commit: COMMIT });
    expect(fs.readFileSync(path.join(repoDir('Org/Stories'), 'refs', 'main'), 'utf8')).toBe(COMMIT);
    expect(fs.readdirSync(snapshot).sort()).toEqual(Object.keys(stories).sort());
    const link = fs.readlinkSync(path.join(snapshot, 'model.safetensors'));
    expect(link).toBe(`../../blobs/${sha256(weights)}`);
    expect(fs.readFileSync(path.join(snapshot, 'model.safetensors')).equals(weights)).toBe(true);
    for (const f of Object.keys(stories))
      expect(fs.readFileSync(path.join(snapshot, f)).equals(stories[f]), f).toBe(true);
    // No README, .gitattributes, PyTorch or ONNX weights were asked for.
    expect(since(start).filter((q) => /README|gitattributes|pytorch|onnx/.test(q))).toEqual([]);
    expect(since(start)[0]).toBe('GET /api/models/Org/Stories/revision/main');
    // The weights come by the redirect to the CDN; progress ends with the whole file, done.
    expect(since(start)).toContain(`GET /cdn/${sha256(weights)}`);
    const last = progress.filter((p) => p.file === 'model.safetensors').at(-1)!;
    expect(last).toMatchObject({ repo: 'Org/Stories', bytes: weights.length, totalBytes: weights.length, done: true });
    expect(fs.readdirSync(path.join(repoDir('Org/Stories'), 'blobs')).filter((f) => f.endsWith('.incomplete'))).toEqual(
      [],
    );

    // Found again in the cache without a request, offline or not.
    const before = hub.requests.length;
    const again = await resolveModel('Org/Stories', { ...opts });
    const offline = await resolveModel('Org/Stories', { ...opts, offline: true, endpoint: 'http://127.0.0.1:1' });
    expect(again).toMatchObject({ path: snapshot, source: 'hf-cache' });
    expect(offline).toMatchObject({ path: snapshot, source: 'hf-cache' });
    expect(hub.requests.length).toBe(before);
  });

  it('takes a sharded model by its index: the shards named there, not other safetensors files', async () => {
    const opts = fresh();
    const start = hub.requests.length;
    const r = await resolveModel('Org/Sharded', opts);
    expect(fs.readdirSync(r.path).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(since(start).filter((q) => q.includes('consolidated'))).toEqual([]);
  });

  it('a revision (branch or tag) fetches its commit and writes refs/<revision>; an unknown one is a 404 that says so', async () => {
    const opts = fresh({ revision: 'v1' });
    const r = await resolveModel('Org/Stories', opts);
    expect(r.path).toBe(path.join(repoDir('Org/Stories'), 'snapshots', V1));
    expect(fs.readFileSync(path.join(repoDir('Org/Stories'), 'refs', 'v1'), 'utf8')).toBe(V1);
    expect(fs.existsSync(path.join(repoDir('Org/Stories'), 'refs', 'main'))).toBe(false);
    await expect(resolveModel('Org/Stories', { ...opts, revision: 'v9' })).rejects.toThrow(
      'Org/Stories has no revision "v9" (404)',
    );
  });

  it('a gated model: 401 without a token says to set HF_TOKEN; a wrong token is named; the right one (HF_TOKEN) works', async () => {
    const opts = fresh();
    await expect(resolveModel('Org/Gated', opts)).rejects.toThrow(/Org\/Gated needs a login \(401\).*set HF_TOKEN/);
    await expect(resolveModel('Org/Gated', { ...opts, token: 'hf_wrong' })).rejects.toThrow(
      /the hub refused HF_TOKEN for Org\/Gated \(401\)/,
    );
    const r = await resolveModel('Org/Gated', { ...opts, env: { HF_TOKEN: 'hf_right' } });
    expect(fs.readFileSync(path.join(r.path, 'model.safetensors')).equals(weights)).toBe(true);
  });

  it('404s: an unknown repository and a file that vanished name what is missing; nothing is left as if complete', async () => {
    const opts = fresh();
    await expect(resolveModel('Org/Nope', opts)).rejects.toThrow(`no model Org/Nope on ${hub.url} (404)`);
    hub.missing.add('model.safetensors');
    await expect(resolveModel('Org/Stories', opts)).rejects.toThrow(
      `Org/Stories has no file model.safetensors at revision ${COMMIT} (404)`,
    );
    // The small files arrived, the snapshot is not a model: offline it is not found.
    await expect(resolveModel('Org/Stories', { ...opts, offline: true })).rejects.toThrow(/HF_HUB_OFFLINE=1/);
  });

  it('a repository with only PyTorch weights says safetensors are needed and how to get them', async () => {
    await expect(resolveModel('Org/Torch', fresh())).rejects.toThrow(
      /Org\/Torch has only PyTorch weights \(pytorch_model\.bin\); qwen-ts reads safetensors.*save_pretrained/,
    );
  });

  it('the hub unreachable: a clear error naming HF_HUB_OFFLINE and HF_ENDPOINT', async () => {
    const closed = await closedPort();
    await expect(resolveModel('Org/Stories', { ...fresh(), endpoint: `http://127.0.0.1:${closed}` })).rejects.toThrow(
      new RegExp(`cannot reach http://127\\.0\\.0\\.1:${closed} \\(ECONNREFUSED\\).*HF_HUB_OFFLINE=1.*HF_ENDPOINT`),
    );
  });
});

describe('failures mid-file', () => {
  it('a connection cut mid-file is resumed with a Range request, and the file is whole', async () => {
    const opts = fresh();
    hub.cuts.set('model.safetensors', { afterBytes: 300_000, times: 1 });
    const start = hub.requests.length;
    const r = await resolveModel('Org/Stories', opts);
    expect(since(start).filter((q) => q.startsWith('GET /cdn/'))).toEqual([
      `GET /cdn/${sha256(weights)}`,
      `GET /cdn/${sha256(weights)} bytes=300000-`,
    ]);
    expect(fs.readFileSync(path.join(r.path, 'model.safetensors')).equals(weights)).toBe(true);
  });

  it('cut again and again: an error that says how to resume, the partial file kept as .incomplete only; the next run resumes', async () => {
    const opts = fresh();
    hub.cuts.set('model.safetensors', { afterBytes: 100_000, times: 100 });
    await expect(resolveModel('Org/Stories', opts)).rejects.toThrow(
      /downloading Org\/Stories model\.safetensors failed 4 times .*400\.0 KB of 1\.0 MB are kept in .*\.incomplete: run the same command again to resume/,
    );
    const blob = path.join(repoDir('Org/Stories'), 'blobs', sha256(weights));
    expect(fs.existsSync(blob)).toBe(false);
    expect(fs.statSync(`${blob}.incomplete`).size).toBe(400_000);
    expect(fs.existsSync(path.join(repoDir('Org/Stories'), 'snapshots', COMMIT, 'model.safetensors'))).toBe(false);
    await expect(resolveModel('Org/Stories', { ...opts, offline: true })).rejects.toThrow(/not in the local caches/);

    hub.cuts.clear();
    const start = hub.requests.length;
    const r = await resolveModel('Org/Stories', opts);
    expect(since(start).filter((q) => q.startsWith('GET /cdn/'))).toEqual([
      `GET /cdn/${sha256(weights)} bytes=400000-`,
    ]);
    expect(fs.readFileSync(path.join(r.path, 'model.safetensors')).equals(weights)).toBe(true);
    expect(fs.existsSync(`${blob}.incomplete`)).toBe(false);
  });

  it('a wrong checksum is an error; the bad bytes are deleted, never linked', async () => {
    const opts = fresh();
    hub.corrupt.add('model.safetensors');
    await expect(resolveModel('Org/Stories', opts)).rejects.toThrow(
      new RegExp(
        `Org/Stories model\\.safetensors: checksum mismatch \\(SHA-256 [0-9a-f]{64}, the hub's ETag says ${sha256(weights)}\\)`,
      ),
    );
    const blobs = path.join(repoDir('Org/Stories'), 'blobs');
    expect(fs.readdirSync(blobs).filter((f) => f.startsWith(sha256(weights)))).toEqual([]);
    expect(fs.existsSync(path.join(repoDir('Org/Stories'), 'snapshots', COMMIT, 'model.safetensors'))).toBe(false);
  });

  it.skipIf(!fs.existsSync('/dev/full'))(
    'a full disk (writes to /dev/full fail with ENOSPC): a clear error, no blob, no link',
    async () => {
      const opts = fresh();
      const blobs = path.join(repoDir('Org/Stories'), 'blobs');
      fs.mkdirSync(blobs, { recursive: true });
      fs.symlinkSync('/dev/full', path.join(blobs, `${sha256(weights)}.incomplete`));
      await expect(resolveModel('Org/Stories', opts)).rejects.toThrow(
        /disk full while downloading Org\/Stories model\.safetensors \(1\.0 MB\).*ENOSPC.*set HF_HUB_CACHE to a folder on a larger disk/,
      );
      expect(fs.existsSync(path.join(blobs, sha256(weights)))).toBe(false);
      expect(fs.existsSync(path.join(repoDir('Org/Stories'), 'snapshots', COMMIT, 'model.safetensors'))).toBe(false);
    },
  );

  it('a file larger than the free space is refused before a byte is written', async () => {
    const opts = fresh();
    hub.announceSize.set('model.safetensors', 1e15);
    const start = hub.requests.length;
    await expect(resolveModel('Org/Stories', opts)).rejects.toThrow(
      /not enough disk space for Org\/Stories model\.safetensors: it needs 1000\.0 TB more/,
    );
    expect(since(start).filter((q) => q.startsWith('GET /cdn/'))).toEqual([]);
  });
});

describe('a lock per repository', () => {
  it('two downloads at once: the second waits for the first, and every file is fetched once', async () => {
    const opts = fresh();
    const start = hub.requests.length;
    const [a, b] = await Promise.all([resolveModel('Org/Stories', opts), resolveModel('Org/Stories', opts)]);
    expect(a.path).toBe(b.path);
    expect(since(start).filter((q) => q.startsWith('GET /cdn/'))).toHaveLength(1);
    expect(since(start).filter((q) => q.startsWith('HEAD /Org/Stories/resolve/'))).toHaveLength(5);
    expect(since(start).filter((q) => q.startsWith('GET /api/resolve-cache/models/Org/Stories/'))).toHaveLength(4);
    expect(fs.readFileSync(path.join(a.path, 'model.safetensors')).equals(weights)).toBe(true);
  });

  it('waits while another live process holds the lock, and takes it over when that process is gone', async () => {
    const opts = fresh();
    const holder: ChildProcess = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const lock = path.join(cache, '.locks', 'models--Org--Stories', 'qwen-ts-download.lock');
    fs.mkdirSync(path.dirname(lock), { recursive: true });
    fs.writeFileSync(lock, JSON.stringify({ pid: holder.pid, host: os.hostname() }));
    const start = hub.requests.length;
    let done = false;
    const p = resolveModel('Org/Stories', opts).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 800));
    expect(done).toBe(false);
    expect(since(start).filter((q) => q.includes('/resolve/'))).toEqual([]); // only the listing so far
    const exited = new Promise((r) => holder.once('exit', r));
    holder.kill();
    await exited;
    const r = await p;
    expect(fs.readFileSync(path.join(r.path, 'model.safetensors')).equals(weights)).toBe(true);
    expect(fs.existsSync(lock)).toBe(false);
  });
});

describe('a GGUF repository', () => {
  it('Org/Repo:TAG fetches the one file of that quantization; no tag means Q4_K_M; split files come whole', async () => {
    const opts = fresh();
    const snapshot = path.join(repoDir('Org/M-GGUF'), 'snapshots', COMMIT);
    const start = hub.requests.length;
    const q8 = await resolveModel('Org/M-GGUF:Q8_0', opts);
    expect(q8).toMatchObject({ path: path.join(snapshot, 'm-q8_0.gguf'), format: 'gguf', source: 'hub' });
    expect(fs.readdirSync(snapshot)).toEqual(['m-q8_0.gguf']);
    expect(since(start).filter((q) => q.includes('README') || q.includes('mmproj'))).toEqual([]);
    expect((await resolveModel('Org/M-GGUF', opts)).path).toBe(path.join(snapshot, 'm-q4_k_m.gguf'));
    const f16 = await resolveModel('Org/M-GGUF:f16', opts);
    expect(f16.path).toBe(path.join(snapshot, 'm-f16-00001-of-00002.gguf'));
    expect(fs.existsSync(path.join(snapshot, 'm-f16-00002-of-00002.gguf'))).toBe(true);
    // From the cache afterwards, offline.
    expect(await resolveModel('Org/M-GGUF:Q8_0', { ...opts, offline: true })).toMatchObject({
      path: path.join(snapshot, 'm-q8_0.gguf'),
      source: 'hf-cache',
    });
    await expect(resolveModel('Org/M-GGUF:Q5_K_M', opts)).rejects.toThrow(
      'Org/M-GGUF has no GGUF file for "Q5_K_M"; it has: F16, Q4_K_M, Q8_0 (e.g. Org/M-GGUF:F16)',
    );
  });
});

describe('the progress bar', () => {
  it('draws bytes, speed and ETA on a terminal, and ends a half-drawn bar before an error', () => {
    let out = '';
    const stream = { isTTY: true, write: (s: string) => ((out += s), true) } as unknown as NodeJS.WriteStream;
    const bar = consoleProgress(stream);
    const p = { repo: 'Org/M', file: 'model.safetensors', totalBytes: 4_000_000, bytesPerSec: 1_000_000 };
    bar({ ...p, bytes: 1_000_000, etaSeconds: 3, done: false });
    expect(out).toBe('\rmodel.safetensors  [######..................]  25%  1.0 MB/4.0 MB  1.0 MB/s  ETA 00:03\x1b[K');
    bar.interrupt();
    expect(out.endsWith('\x1b[K\n')).toBe(true);
    out = '';
    const quiet = consoleProgress({
      isTTY: false,
      write: (s: string) => ((out += s), true),
    } as unknown as NodeJS.WriteStream);
    quiet({ ...p, bytes: 0, etaSeconds: NaN, done: false });
    quiet({ ...p, bytes: 2_000_000, etaSeconds: 2, done: false });
    quiet({ ...p, bytes: 4_000_000, etaSeconds: 0, done: true });
    expect(out).toBe(
      'qwen-ts: downloading Org/M model.safetensors (4.0 MB)\nqwen-ts: downloaded model.safetensors (4.0 MB) in 4.0 s, 1.0 MB/s\n',
    );
  });
});
