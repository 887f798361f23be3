// Download from the Hugging Face hub into the shared cache layout (hf-cache.ts), as huggingface_hub
// does: list the revision's files, then per file ask /resolve for its ETag, commit and size (the hub
// answers LFS files with a redirect carrying X-Linked-Etag / X-Linked-Size), fetch it into
// blobs/<etag>.incomplete (resuming with Range after a cut), check LFS files' SHA-256 against the
// ETag, rename it to blobs/<etag> and link snapshots/<commit>/<file> to it. A file is therefore
// either whole under its final name or absent; the snapshot is a model only once every file is linked.
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelSourceError, formatBytes } from './errors.js';
import { COMMIT_HASH, isFile, isSafeRelative, repoFolderName, shardsOfIndex } from './hf-cache.js';
import { acquireLock } from './lock.js';
import type { DownloadProgress, ProgressSink } from './progress.js';
import { SAFETENSORS_INDEX, SAFETENSORS_SINGLE, SMALL_FILES, chooseGguf } from './select-files.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Attempts per file before a cut transfer is reported (each resumes where the last stopped). */
const ATTEMPTS = 4;
/** A transfer with no byte for this long is cut and resumed. */
const STALL_MS = 60_000;
const API_TIMEOUT_MS = 60_000;

export interface HubOptions {
  endpoint: string;
  token?: string;
  cacheDir: string;
  onProgress?: ProgressSink;
  /** Told when another process holds the download lock of this repository. */
  onWait?: (message: string) => void;
  signal?: AbortSignal;
}

export interface Downloaded {
  /** The snapshot folder. */
  dir: string;
  commit: string;
  /** For a GGUF repository: the file to load inside the snapshot. */
  gguf?: string;
}

interface Sibling {
  rfilename: string;
  size?: number;
  lfs?: { sha256?: string; size?: number };
}

interface RepoInfo {
  sha?: string;
  siblings?: Sibling[];
}

function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}

function headers(opts: HubOptions, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { 'user-agent': 'qwen-ts', ...extra };
  if (opts.token) h.authorization = `Bearer ${opts.token}`;
  return h;
}

/** The message for a refused request: what the status means on the hub and what to do about it. */
function httpError(res: Response, repo: string, revision: string, opts: HubOptions, file?: string): ModelSourceError {
  const code = res.headers.get('x-error-code') ?? '';
  const page = `${opts.endpoint}/${repo}`;
  switch (res.status) {
    case 401:
      return new ModelSourceError(
        opts.token
          ? `the hub refused HF_TOKEN for ${repo} (401): the token is invalid or expired; make a read token at ${opts.endpoint}/settings/tokens and set HF_TOKEN`
          : `${repo} needs a login (401): it is gated or private (or the name is misspelt). Accept its terms at ${page}, then set HF_TOKEN to a read token from ${opts.endpoint}/settings/tokens`,
      );
    case 403:
      return new ModelSourceError(
        `${repo} is gated and this token has no access yet (403): request access at ${page}, then run the command again`,
      );
    case 404:
      if (code === 'RevisionNotFound')
        return new ModelSourceError(`${repo} has no revision ${JSON.stringify(revision)} (404); see ${page}/tree/main`);
      if (code === 'EntryNotFound' || (file !== undefined && code !== 'RepoNotFound'))
        return new ModelSourceError(`${repo} has no file ${file ?? '?'} at revision ${revision} (404)`);
      return new ModelSourceError(
        `no model ${repo} on ${opts.endpoint} (404): check the name (Org/Name, as in ${opts.endpoint}/Qwen/Qwen2.5-0.5B-Instruct)`,
      );
    default:
      return new ModelSourceError(
        `${opts.endpoint} answered ${res.status} ${res.statusText} for ${repo}${file ? ` ${file}` : ''}; try again later`,
        res.status === 400,
      );
  }
}

async function request(url: string, init: RequestInit, opts: HubOptions): Promise<Response> {
  const signals = [AbortSignal.timeout(API_TIMEOUT_MS), ...(opts.signal ? [opts.signal] : [])];
  try {
    return await fetch(url, { ...init, signal: AbortSignal.any(signals) });
  } catch (e) {
    opts.signal?.throwIfAborted();
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new ModelSourceError(
      `cannot reach ${opts.endpoint} (${cause?.code ?? cause?.message ?? (e as Error).message}): offline? HF_HUB_OFFLINE=1 uses only the local caches; HF_ENDPOINT points to a mirror`,
      false,
    );
  }
}

/** The revision's commit and files, from /api/models/{repo}/revision/{revision}. */
async function repoInfo(
  repo: string,
  revision: string,
  opts: HubOptions,
): Promise<{ commit: string; files: Sibling[] }> {
  const url = `${opts.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  const res = await request(url, { headers: headers(opts) }, opts);
  if (!res.ok) throw httpError(res, repo, revision, opts);
  const info = (await res.json()) as RepoInfo;
  if (typeof info.sha !== 'string' || !COMMIT_HASH.test(info.sha) || !Array.isArray(info.siblings))
    throw new ModelSourceError(`${url} did not answer with a commit (sha) and a file list (siblings)`, false);
  const files = info.siblings.filter((s) => typeof s?.rfilename === 'string' && isSafeRelative(s.rfilename));
  return { commit: info.sha, files };
}

/** What to fetch for the weights: a GGUF (by tag), or the safetensors of a transformers repository. */
function weightsPlan(
  repo: string,
  names: Set<string>,
  tag: string | undefined,
): { gguf?: ReturnType<typeof chooseGguf>; index?: string; single?: string } {
  const hasSafetensors = names.has(SAFETENSORS_INDEX) || names.has(SAFETENSORS_SINGLE);
  const hasGguf = [...names].some((n) => n.toLowerCase().endsWith('.gguf'));
  if (tag !== undefined || (!hasSafetensors && hasGguf)) return { gguf: chooseGguf(repo, [...names], tag) };
  if (names.has(SAFETENSORS_INDEX)) return { index: SAFETENSORS_INDEX };
  if (names.has(SAFETENSORS_SINGLE)) return { single: SAFETENSORS_SINGLE };
  const pytorch = [...names].filter((n) => /^pytorch_model.*\.bin$/.test(n));
  if (pytorch.length > 0)
    throw new ModelSourceError(
      `${repo} has only PyTorch weights (${pytorch[0]}); qwen-ts reads safetensors (it never runs pickle files). ` +
        `Look for a safetensors or GGUF version of the model on the hub, or convert it once with Python: ` +
        `python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('${repo}').save_pretrained('./${repo.split('/')[1]}')" ` +
        `and give that folder to --model`,
    );
  throw new ModelSourceError(`${repo} has no model.safetensors, model.safetensors.index.json or .gguf file to load`);
}

/**
 * Fetch what `repo` at `revision` needs into the cache (only the files missing there) and return its
 * snapshot. With `tag` (or a repository of GGUF files only) the one GGUF file of that quantization.
 */
export async function downloadModel(
  repo: string,
  revision: string,
  tag: string | undefined,
  opts: HubOptions,
): Promise<Downloaded> {
  const { commit, files } = await repoInfo(repo, revision, opts);
  const names = new Set(files.map((f) => f.rfilename));
  const plan = weightsPlan(repo, names, tag);
  const repoDir = path.join(opts.cacheDir, repoFolderName(repo));
  const snapshot = path.join(repoDir, 'snapshots', commit);
  const lock = await acquireLock(path.join(opts.cacheDir, '.locks', repoFolderName(repo), 'qwen-ts-download.lock'), {
    signal: opts.signal,
    onWait: (owner) =>
      opts.onWait?.(
        `waiting for another download of ${repo}${owner ? ` (pid ${owner.pid} on ${owner.host})` : ''} to finish`,
      ),
  });
  try {
    const wanted = plan.gguf ? [...plan.gguf.files] : SMALL_FILES.filter((f) => names.has(f));
    if (plan.index) wanted.push(plan.index);
    if (plan.single) wanted.push(plan.single);
    for (const file of wanted) await fetchFile(repo, commit, file, repoDir, opts);
    if (plan.index) {
      const shards = shardsOfIndex(fs.readFileSync(path.join(snapshot, plan.index), 'utf8'));
      if (shards === null) throw new ModelSourceError(`${repo}: ${plan.index} has no weight_map of file names`, false);
      for (const shard of shards) {
        if (!names.has(shard))
          throw new ModelSourceError(
            `${repo}: ${plan.index} names ${shard}, which the repository does not have`,
            false,
          );
        await fetchFile(repo, commit, shard, repoDir, opts);
      }
    }
    if (!COMMIT_HASH.test(revision)) writeRef(repoDir, revision, commit);
  } finally {
    lock.release();
  }
  return { dir: snapshot, commit, gguf: plan.gguf?.main };
}

function writeRef(repoDir: string, revision: string, commit: string): void {
  const ref = path.join(repoDir, 'refs', ...revision.split('/'));
  fs.mkdirSync(path.dirname(ref), { recursive: true });
  const tmp = `${ref}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, commit);
  fs.renameSync(tmp, ref);
}

/** The ETag a header carries: quotes and the weak prefix removed. */
function etagOf(value: string | null): string | null {
  if (!value) return null;
  return value.replace(/^W\//, '').replace(/^"|"$/g, '') || null;
}

/** Link snapshots/<commit>/<file> to blobs/<etag>, relatively, as huggingface_hub does (a copy where links are refused). */
function linkSnapshot(blob: string, pointer: string): void {
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  const tmp = `${pointer}.tmp-${process.pid}`;
  fs.rmSync(tmp, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), tmp);
  } catch {
    fs.copyFileSync(blob, tmp);
  }
  fs.renameSync(tmp, pointer);
}

async function hashPrefix(file: string, hash: Hash): Promise<void> {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
}

function diskFull(incomplete: string, repo: string, file: string, size: number, e: unknown): ModelSourceError {
  return new ModelSourceError(
    `disk full while downloading ${repo} ${file} (${formatBytes(size)}) into ${path.dirname(incomplete)}: ${(e as Error).message}. ` +
      `Free some space (the partial file ${incomplete} is kept to resume) or set HF_HUB_CACHE to a folder on a larger disk, then run again`,
    false,
  );
}

/** One file of the snapshot: skipped when linked already, else fetched (resumed) into its blob. */
async function fetchFile(repo: string, commit: string, file: string, repoDir: string, opts: HubOptions): Promise<void> {
  const pointer = path.join(repoDir, 'snapshots', commit, ...file.split('/'));
  if (isFile(pointer)) return;
  // As huggingface_hub: follow the hub's own (relative) redirects for the metadata, not the CDN's.
  let url = `${opts.endpoint}/${repo}/resolve/${commit}/${encodePath(file)}`;
  let head = await request(url, { method: 'HEAD', redirect: 'manual', headers: headers(opts) }, opts);
  for (let hops = 0; hops < 5 && head.status >= 300 && head.status < 400; hops++) {
    const next = head.headers.get('location');
    if (!next || /^[a-z][a-z+.-]*:/i.test(next) || next.startsWith('//')) break;
    url = new URL(next, url).href;
    head = await request(url, { method: 'HEAD', redirect: 'manual', headers: headers(opts) }, opts);
  }
  if (head.status >= 400) throw httpError(head, repo, commit, opts, file);
  const etag = etagOf(head.headers.get('x-linked-etag') ?? head.headers.get('etag'));
  const size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length'));
  if (!etag || !/^[\w.-]+$/.test(etag) || !Number.isSafeInteger(size) || size < 0)
    throw new ModelSourceError(`${url}: the hub sent no usable ETag and size (got ${etag}, ${size})`, false);
  const location =
    head.status >= 300 && head.headers.get('location') ? new URL(head.headers.get('location')!, url).href : url;
  const blobs = path.join(repoDir, 'blobs');
  const blob = path.join(blobs, etag);
  fs.mkdirSync(blobs, { recursive: true });
  if (!isFile(blob)) await fetchBlob(repo, commit, file, location, blob, etag, size, opts);
  linkSnapshot(blob, pointer);
}

async function fetchBlob(
  repo: string,
  commit: string,
  file: string,
  location: string,
  blob: string,
  etag: string,
  size: number,
  opts: HubOptions,
): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  // An LFS file's ETag is the SHA-256 of its contents; a small git file's is a git object id (not checked).
  const sha256 = /^[0-9a-f]{64}$/.test(etag) ? etag : null;
  const sameOrigin = new URL(location).origin === new URL(opts.endpoint).origin;
  const t0 = performance.now();
  let firstByte = -1;
  const report = (bytes: number, done: boolean) => {
    if (!opts.onProgress) return;
    const secs = (performance.now() - t0) / 1000;
    const fetched = firstByte < 0 ? 0 : bytes - firstByte;
    const bytesPerSec = secs > 0 ? fetched / secs : 0;
    const p: DownloadProgress = {
      repo,
      file,
      bytes,
      totalBytes: size,
      bytesPerSec,
      etaSeconds: bytesPerSec > 0 ? (size - bytes) / bytesPerSec : NaN,
      done,
    };
    opts.onProgress(p);
  };
  for (let attempt = 1; ; attempt++) {
    let start = 0;
    try {
      start = fs.statSync(incomplete).size;
    } catch {
      // nothing yet
    }
    if (start > size) {
      fs.rmSync(incomplete, { force: true });
      start = 0;
    }
    checkSpace(path.dirname(blob), size - start, repo, file);
    if (firstByte < 0) firstByte = start;
    report(start, false);
    const hash = sha256 ? createHash('sha256') : null;
    let written = start;
    let cut: unknown = null;
    if (start < size) {
      const stall = new AbortController();
      let timer = setTimeout(() => stall.abort(), STALL_MS);
      const signals = [stall.signal, ...(opts.signal ? [opts.signal] : [])];
      try {
        const res = await fetch(location, {
          headers: headers(
            sameOrigin ? opts : { ...opts, token: undefined },
            start > 0 ? { range: `bytes=${start}-` } : {},
          ),
          signal: AbortSignal.any(signals),
        });
        if (res.status === 416 && start > 0) {
          // The server will not resume: start over.
          fs.rmSync(incomplete, { force: true });
          await res.body?.cancel();
          continue;
        }
        if (!res.ok || !res.body) throw httpError(res, repo, commit, opts, file);
        const resumed = res.status === 206 && start > 0;
        if (!resumed) {
          start = 0;
          written = 0;
        } else if (hash) await hashPrefix(incomplete, hash);
        const out = fs.openSync(incomplete, resumed ? 'a' : 'w');
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            clearTimeout(timer);
            timer = setTimeout(() => stall.abort(), STALL_MS);
            if (written + chunk.length > size)
              throw new ModelSourceError(`${location}: the server sent more than the ${size} bytes announced`, false);
            try {
              fs.writeSync(out, chunk);
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || (e as NodeJS.ErrnoException).code === 'EDQUOT')
                throw diskFull(incomplete, repo, file, size, e);
              throw e;
            }
            hash?.update(chunk);
            written += chunk.length;
            report(written, false);
          }
        } finally {
          fs.closeSync(out);
        }
      } catch (e) {
        if (e instanceof ModelSourceError) throw e;
        opts.signal?.throwIfAborted();
        cut = e;
      } finally {
        clearTimeout(timer);
      }
    } else if (hash) {
      await hashPrefix(incomplete, hash);
    }
    if (cut === null && written < size) cut = new Error(`the connection ended after ${written} of ${size} bytes`);
    if (cut !== null) {
      if (attempt < ATTEMPTS) {
        await new Promise((r) => setTimeout(r, 100 * attempt));
        continue;
      }
      throw new ModelSourceError(
        `downloading ${repo} ${file} failed ${ATTEMPTS} times (last: ${(cut as Error).message}); ` +
          `${formatBytes(written)} of ${formatBytes(size)} are kept in ${incomplete}: run the same command again to resume`,
        false,
      );
    }
    if (size === 0) fs.writeFileSync(incomplete, '');
    const got = hash?.digest('hex');
    if (sha256 && got !== sha256) {
      fs.rmSync(incomplete, { force: true });
      throw new ModelSourceError(
        `${repo} ${file}: checksum mismatch (SHA-256 ${got}, the hub's ETag says ${sha256}); the download was deleted, run the command again`,
        false,
      );
    }
    fs.renameSync(incomplete, blob);
    report(size, true);
    return;
  }
}

/** Refuse before writing when the disk cannot hold the rest of the file. */
function checkSpace(dir: string, needed: number, repo: string, file: string): void {
  let free: number;
  try {
    const s = fs.statfsSync(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // no statfs here: the writes will tell
  }
  if (needed > free)
    throw new ModelSourceError(
      `not enough disk space for ${repo} ${file}: it needs ${formatBytes(needed)} more, ${dir} has ${formatBytes(free)} free; ` +
        `free some space or set HF_HUB_CACHE to a folder on a larger disk`,
      false,
    );
}
