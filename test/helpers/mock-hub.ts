// A loopback server that answers as the Hugging Face hub does for downloads: the revision listing
// (/api/models/{repo}/revision/{rev}), /{repo}/resolve/{rev}/{file} (LFS files by a 302 to an
// absolute CDN URL with X-Linked-Etag / X-Linked-Size / X-Repo-Commit, small files by a relative
// 307 to /api/resolve-cache/... that has their git ETag), Range requests on the CDN, and the
// failures a download meets (401, 404s, a cut, bad bytes).
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MockRepo {
  commit: string;
  files: Record<string, Buffer>;
  /** Other revisions (branch or tag -> commit) besides main. */
  refs?: Record<string, string>;
  /** Answer 401 unless this token is sent. */
  token?: string;
}

export interface MockHub {
  url: string;
  /** `METHOD path [range]` of every request, in order. */
  requests: string[];
  /** Per file name: cut the connection after this many bytes, for the next `times` GETs. */
  cuts: Map<string, { afterBytes: number; times: number }>;
  /** File names whose bytes are served with one byte changed. */
  corrupt: Set<string>;
  /** File names whose size is announced as this many bytes (for the disk-space check). */
  announceSize: Map<string, number>;
  /** File names listed by the API that /resolve answers with 404 (a file removed meanwhile). */
  missing: Set<string>;
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer) =>
  createHash('sha1')
    .update(Buffer.concat([Buffer.from(`blob ${b.length}\0`), b]))
    .digest('hex');
const isLfs = (file: string) => /\.(safetensors|gguf|bin)$/.test(file);

export async function startMockHub(repos: Record<string, MockRepo>): Promise<MockHub> {
  const requests: string[] = [];
  let base = '';
  const cuts = new Map<string, { afterBytes: number; times: number }>();
  const corrupt = new Set<string>();
  const announceSize = new Map<string, number>();
  const missing = new Set<string>();
  const bySha = new Map<string, { file: string; bytes: Buffer }>();
  for (const repo of Object.values(repos))
    for (const [file, bytes] of Object.entries(repo.files)) if (isLfs(file)) bySha.set(sha256(bytes), { file, bytes });

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(
      `${req.method} ${decodeURIComponent(url.pathname)}${req.headers.range ? ` ${req.headers.range}` : ''}`,
    );
    const fail = (status: number, code?: string) => {
      res.writeHead(status, code ? { 'x-error-code': code, 'content-type': 'application/json' } : {});
      res.end(JSON.stringify({ error: code ?? String(status) }));
    };
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    const cached = /^\/api\/resolve-cache\/models\/([^/]+\/[^/]+)\/([0-9a-f]{40})\/(.+)$/.exec(url.pathname);
    const repoOf = (name: string) => {
      const repo = repos[name];
      if (!repo) return fail(404, 'RepoNotFound');
      if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) return fail(401);
      return repo;
    };
    const commitOf = (repo: MockRepo, rev: string) => {
      const r = decodeURIComponent(rev);
      if (r === 'main' || r === repo.commit) return repo.commit;
      return repo.refs?.[r] ?? Object.values(repo.refs ?? {}).find((c) => c === r);
    };
    if (api) {
      const repo = repoOf(api[1]);
      if (!repo) return;
      const commit = commitOf(repo, api[2]);
      if (!commit) return fail(404, 'RevisionNotFound');
      const siblings = Object.entries(repo.files).map(([rfilename, bytes]) => ({
        rfilename,
        size: bytes.length,
        ...(isLfs(rfilename) ? { lfs: { sha256: sha256(bytes), size: bytes.length, pointerSize: 130 } } : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ id: api[1], sha: commit, siblings }));
    }
    if (resolve) {
      const repo = repoOf(resolve[1]);
      if (!repo) return;
      const commit = commitOf(repo, resolve[2]);
      if (!commit) return fail(404, 'RevisionNotFound');
      const file = decodeURIComponent(resolve[3]);
      const bytes = repo.files[file];
      if (!bytes || missing.has(file)) return fail(404, 'EntryNotFound');
      const size = announceSize.get(file) ?? bytes.length;
      if (isLfs(file)) {
        const sha = sha256(bytes);
        res.writeHead(302, {
          location: `${base}/cdn/${sha}`,
          etag: `"${gitSha1(bytes)}"`,
          'x-linked-etag': `"${sha}"`,
          'x-linked-size': String(size),
          'x-repo-commit': commit,
          'content-length': '0',
        });
        return res.end();
      }
      // Small files, as the hub serves them now: a relative redirect to its resolve cache, which has the ETag.
      res.writeHead(307, {
        location: `/api/resolve-cache/models/${resolve[1]}/${commit}/${resolve[3]}`,
        'x-repo-commit': commit,
      });
      return res.end();
    }
    if (cached) {
      const repo = repoOf(cached[1]);
      if (!repo) return;
      const file = decodeURIComponent(cached[3]);
      const bytes = repo.files[file];
      if (!bytes || cached[2] !== commitOf(repo, cached[2])) return fail(404, 'EntryNotFound');
      const size = announceSize.get(file) ?? bytes.length;
      res.writeHead(200, { etag: `"${gitSha1(bytes)}"`, 'x-repo-commit': cached[2], 'content-length': String(size) });
      return res.end(req.method === 'HEAD' ? undefined : bytes);
    }
    if (cdn) {
      const entry = bySha.get(cdn[1]);
      if (!entry) return fail(404);
      let bytes = entry.bytes;
      if (corrupt.has(entry.file)) {
        bytes = Buffer.from(bytes);
        bytes[bytes.length >> 1] ^= 0xff;
      }
      let start = 0;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (range) {
        start = Number(range[1]);
        if (start >= bytes.length) {
          res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
          return res.end();
        }
        res.writeHead(206, {
          'content-length': String(bytes.length - start),
          'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}`,
        });
      } else {
        res.writeHead(200, { 'content-length': String(bytes.length) });
      }
      const cut = cuts.get(entry.file);
      if (cut && cut.times > 0 && req.method === 'GET') {
        cut.times--;
        res.write(bytes.subarray(start, Math.min(bytes.length, start + cut.afterBytes)), () => res.destroy());
        return;
      }
      return res.end(req.method === 'HEAD' ? undefined : bytes.subarray(start));
    }
    fail(404);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    cuts,
    corrupt,
    announceSize,
    missing,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
