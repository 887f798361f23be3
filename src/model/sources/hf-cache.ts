// The Hugging Face hub cache, shared with huggingface_hub (Python) and transformers:
//   <cache>/models--Org--Name/blobs/<etag>                the file contents, named by ETag
//   <cache>/models--Org--Name/snapshots/<commit>/<file>   links into blobs/, one folder per commit
//   <cache>/models--Org--Name/refs/<revision>             the commit a branch or tag pointed to
// so a model fetched by Python tools is found here offline, and one we fetch is theirs too.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return path.resolve(expandHome(env.HF_HUB_CACHE));
  if (env.HF_HOME) return path.resolve(expandHome(env.HF_HOME), 'hub');
  if (env.XDG_CACHE_HOME) return path.resolve(expandHome(env.XDG_CACHE_HOME), 'huggingface', 'hub');
  return path.join(os.homedir(), '.cache', 'huggingface', 'hub');
}

export function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

/** `Org/Name` -> `models--Org--Name` (huggingface_hub's repo_folder_name). */
export function repoFolderName(repo: string): string {
  return `models--${repo.split('/').join('--')}`;
}

/** `models--Org--Name` -> `Org/Name`, or null for another folder name. */
export function repoFromFolderName(folder: string): string | null {
  const m = /^models--(.+)$/.exec(folder);
  return m ? m[1].split('--').join('/') : null;
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** The commit of `revision` in a cache repo folder: itself if a commit hash, else refs/<revision>, else null. */
export function commitOf(repoDir: string, revision: string): string | null {
  if (COMMIT_HASH.test(revision)) return revision;
  const ref = path.join(repoDir, 'refs', ...revision.split('/'));
  try {
    const commit = fs.readFileSync(ref, 'utf8').trim();
    return COMMIT_HASH.test(commit) ? commit : null;
  } catch {
    return null;
  }
}

/** The snapshot folders of a cache repo folder, newest first. */
export function listSnapshots(repoDir: string): string[] {
  const dir = path.join(repoDir, 'snapshots');
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => path.join(dir, n))
    .filter((p) => isDir(p))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
}

export function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile(); // follows the snapshot's links: a dangling link is no file
  } catch {
    return false;
  }
}

export type SnapshotState =
  | { complete: true; format: 'safetensors' | 'gguf'; files: string[] }
  | { complete: false; missing: string[]; pytorchOnly: boolean };

/**
 * What a model folder (a snapshot, or any folder) holds: complete when config.json, tokenizer.json
 * and every safetensors file the loader reads are there (the index's shards, else model.safetensors).
 * A half-fetched snapshot (Python tools link each file as it arrives) is therefore never taken for a model.
 */
export function inspectModelFolder(dir: string): SnapshotState {
  const missing: string[] = [];
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json'])
    if (!isFile(path.join(dir, f))) missing.push(f);
  const index = path.join(dir, 'model.safetensors.index.json');
  const weights: string[] = [];
  if (isFile(index)) {
    const shards = shardsOfIndex(fs.readFileSync(index, 'utf8'));
    for (const s of shards ?? []) if (!isFile(path.join(dir, s))) missing.push(s);
    if (shards === null) missing.push('model.safetensors.index.json (unreadable)');
    weights.push(...(shards ?? []));
  } else if (isFile(path.join(dir, 'model.safetensors'))) {
    weights.push('model.safetensors');
  } else {
    missing.push('model.safetensors');
  }
  if (missing.length > 0) {
    const pytorchOnly =
      weights.length === 0 && listFiles(dir).some((f) => /^pytorch_model.*\.bin$|\.pt$|\.pth$/.test(f));
    return { complete: false, missing, pytorchOnly };
  }
  return { complete: true, format: 'safetensors', files: weights };
}

/** The shard file names of a model.safetensors.index.json, or null when it is not one. */
export function shardsOfIndex(text: string): string[] | null {
  try {
    const index = JSON.parse(text) as { weight_map?: Record<string, unknown> };
    const map = index.weight_map;
    if (!map || typeof map !== 'object') return null;
    const shards = new Set<string>();
    for (const v of Object.values(map)) {
      if (typeof v !== 'string' || !isSafeRelative(v)) return null;
      shards.add(v);
    }
    return [...shards].sort();
  } catch {
    return null;
  }
}

/** A repository path that stays inside the folder it is joined to. */
export function isSafeRelative(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && !p.includes('\\') && !p.split('/').some((s) => s === '..' || s === '');
}

/** The .gguf files under a folder (relative paths), as a GGUF repository's snapshot holds them. */
export function ggufFiles(dir: string): string[] {
  return listFiles(dir, true).filter((f) => f.toLowerCase().endsWith('.gguf'));
}

/** Names of the files in a folder (relative, '/'-separated), recursing into subfolders when asked. */
export function listFiles(dir: string, recursive = false): string[] {
  try {
    const entries = fs.readdirSync(dir, { recursive, withFileTypes: false }) as string[];
    return entries.map((e) => e.split(path.sep).join('/')).filter((e) => isFile(path.join(dir, e)));
  } catch {
    return [];
  }
}

/** Bytes of the files a snapshot links to (their blobs). */
export function folderBytes(dir: string, files: string[]): number {
  let n = 0;
  for (const f of files) {
    try {
      n += fs.statSync(path.join(dir, f)).size;
    } catch {
      // a dangling link counts nothing
    }
  }
  return n;
}
