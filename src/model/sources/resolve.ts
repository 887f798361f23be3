// resolve(name): where a model comes from, tried in this order:
//   1. a path: a model folder, a .gguf file, or a hub cache root (models--Org--Name, its snapshot chosen);
//   2. the Hugging Face cache, for Org/Name (Org/Name:TAG for a GGUF repository's quantization);
//   3. Ollama's store, for name:tag (namespace/name:tag, hf.co/Org/Repo:TAG);
//   4. a download from the hub into the Hugging Face cache (unless HF_HUB_OFFLINE=1).
// A name found in a cache is used without asking the network; `qwen-ts pull` refreshes it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelSourceError } from './errors.js';
import {
  commitOf,
  expandHome,
  ggufFiles,
  hubCacheDir,
  inspectModelFolder,
  isDir,
  listSnapshots,
  repoFolderName,
  repoFromFolderName,
} from './hf-cache.js';
import { DEFAULT_ENDPOINT, downloadModel } from './hub.js';
import { findOllamaModel, ollamaDisplayName, ollamaModelDirs, parseOllamaName } from './ollama.js';
import { consoleProgress, type ProgressSink } from './progress.js';
import { chooseGguf } from './select-files.js';

export interface ResolveOptions {
  /** Branch, tag or commit of a hub model. Default "main". */
  revision?: string;
  /** The Hugging Face hub cache. Default $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Ollama's model store. Default $OLLAMA_MODELS, ~/.ollama/models. */
  ollamaDir?: string;
  /** The hub. Default $HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Token for gated and private models. Default $HF_TOKEN. */
  token?: string;
  /** Never use the network (only paths and caches). Default $HF_HUB_OFFLINE=1. */
  offline?: boolean;
  /** Ask the hub for the revision's files even when the cache has the model (`qwen-ts pull`). Default false. */
  refresh?: boolean;
  /** Download progress; when absent, a bar on stderr (a line per file when stderr is not a TTY). */
  onProgress?: ProgressSink;
  /** The bar on stderr: false never, true also beside onProgress. Default: when there is no onProgress. */
  progressBar?: boolean;
  signal?: AbortSignal;
  /** Where the variables above are read. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedModel {
  /** A model folder (safetensors) or a .gguf file. */
  path: string;
  format: 'safetensors' | 'gguf';
  /** Where it was found. */
  source: 'path' | 'hf-cache' | 'hub' | 'ollama';
  /** A name for it: the name given for a cache or hub model, the folder or file name for a path. */
  name: string;
  /** The snapshot's commit, for the hub cache. */
  commit?: string;
}

const TRUE = new Set(['1', 'on', 'yes', 'true']);

/** `Org/Name` or `Org/Name:TAG` (`hf.co/` and `huggingface.co/` in front accepted, as Ollama writes them). */
export function parseHubName(name: string): { repo: string; tag?: string } | null {
  const m = /^(?:(?:hf\.co|huggingface\.co)\/)?([\w][\w.-]*\/[\w][\w.-]*)(?::([\w.-]+))?$/.exec(name);
  if (!m || m[1].includes('..')) return null;
  return { repo: m[1], tag: m[2] };
}

function looksLikePath(name: string): boolean {
  return /^(\.{1,2}([/\\]|$)|[/\\~]|[A-Za-z]:[/\\])/.test(name) || /\.gguf$/i.test(name);
}

/** The model `name` names, as a local folder or .gguf file; downloaded first when it is only on the hub. */
export async function resolveModel(name: string, options: ResolveOptions = {}): Promise<ResolvedModel> {
  if (typeof name !== 'string' || name.trim() === '')
    throw new ModelSourceError('a model name must be a path, a hub name (Org/Name) or an Ollama name (name:tag)');
  const env = options.env ?? process.env;
  const revision = options.revision ?? 'main';
  if (typeof revision !== 'string' || !/^[\w./-]+$/.test(revision) || revision.split('/').includes('..'))
    throw new ModelSourceError(`revision must be a branch, tag or commit, got ${JSON.stringify(options.revision)}`);
  const local = expandHome(name);
  if (fs.existsSync(local)) return resolvePath(local, options.revision);
  if (looksLikePath(name)) throw new ModelSourceError(`${name} does not exist (no such folder or file)`);

  const cacheDir = options.cacheDir ?? hubCacheDir(env);
  const ollamaDirs = options.ollamaDir ? [options.ollamaDir] : ollamaModelDirs(env);
  const offline = options.offline ?? TRUE.has((env.HF_HUB_OFFLINE ?? '').toLowerCase());
  const hub = parseHubName(name);
  const ollama = parseOllamaName(name);
  const looked: string[] = [];

  if (hub && !options.refresh) {
    const repoDir = path.join(cacheDir, repoFolderName(hub.repo));
    const found = fromCache(repoDir, hub.repo, revision, hub.tag, offline);
    if (found) return { ...found, name };
    looked.push(`the Hugging Face cache (${repoDir})`);
  }
  if (ollama && !options.refresh) {
    const found = findOllamaModel(ollama, ollamaDirs);
    if (found) return { path: found.file, format: 'gguf', source: 'ollama', name: found.name };
    looked.push(`Ollama's store (${ollamaDirs.join(', ')})`);
  }
  if (hub && !offline) {
    const token = options.token ?? (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined);
    const endpoint = (options.endpoint ?? (env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, '');
    const quiet = options.progressBar === false || (options.onProgress !== undefined && options.progressBar !== true);
    const bar = quiet ? undefined : consoleProgress();
    const onProgress: ProgressSink | undefined =
      options.onProgress && bar
        ? (p) => {
            options.onProgress!(p);
            bar(p);
          }
        : (options.onProgress ?? bar);
    let got;
    try {
      got = await downloadModel(hub.repo, revision, hub.tag, {
        endpoint,
        token,
        cacheDir,
        onProgress,
        onWait: options.progressBar === false ? undefined : (m) => process.stderr.write(`qwen-ts: ${m}\n`),
        signal: options.signal,
      });
    } catch (e) {
      bar?.interrupt();
      throw e;
    }
    const file = got.gguf ? path.join(got.dir, ...got.gguf.split('/')) : got.dir;
    return { path: file, format: got.gguf ? 'gguf' : 'safetensors', source: 'hub', name, commit: got.commit };
  }
  throw notFound(name, hub, ollama ? ollamaDisplayName(ollama) : null, looked, offline);
}

function notFound(
  name: string,
  hub: { repo: string } | null,
  ollama: string | null,
  looked: string[],
  offline: boolean,
): ModelSourceError {
  const where = [`a folder or file ./${name}`, ...looked].join('; ');
  if (hub && offline)
    return new ModelSourceError(
      `${name} is not in the local caches and HF_HUB_OFFLINE=1 forbids downloading it. Looked in: ${where}. ` +
        `Fetch it once online: qwen-ts pull ${name}`,
    );
  if (ollama && !hub)
    return new ModelSourceError(
      `${name} not found. Looked in: ${where}. Get it with \`ollama pull ${ollama}\`, or give a Hugging Face name (Org/Name, e.g. Qwen/Qwen2.5-0.5B-Instruct) or a model folder`,
    );
  return new ModelSourceError(
    `${JSON.stringify(name)} is not a model folder, a hub name (Org/Name) or an Ollama name (name:tag); looked for ${where}`,
  );
}

/**
 * A complete snapshot of `repo` at `revision` in the cache, or null. Without a tag a GGUF
 * repository's snapshot answers with Q4_K_M (as the hub would), or offline with its only model.
 */
function fromCache(
  repoDir: string,
  repo: string,
  revision: string,
  tag: string | undefined,
  offline: boolean,
): Omit<ResolvedModel, 'name'> | null {
  const commit = commitOf(repoDir, revision);
  if (!commit) return null;
  const snapshot = path.join(repoDir, 'snapshots', commit);
  if (!isDir(snapshot)) return null;
  const ggufs = ggufFiles(snapshot);
  if (tag !== undefined || (ggufs.length > 0 && !inspectModelFolder(snapshot).complete)) {
    if (ggufs.length === 0) return null;
    try {
      const choice = chooseGguf(repo, ggufs, tag, !offline);
      if (!choice.files.every((f) => fs.existsSync(path.join(snapshot, f)))) return null;
      return { path: path.join(snapshot, choice.main), format: 'gguf', source: 'hf-cache', commit };
    } catch {
      return null; // not the tag wanted: the hub may have it
    }
  }
  return inspectModelFolder(snapshot).complete
    ? { path: snapshot, format: 'safetensors', source: 'hf-cache', commit }
    : null;
}

/** A path given by the user: a model folder, a .gguf file, or a hub cache root whose snapshot is chosen. */
function resolvePath(p: string, revision: string | undefined): ResolvedModel {
  const full = path.resolve(p);
  const stat = fs.statSync(full);
  if (stat.isFile()) {
    return {
      path: full,
      format: full.toLowerCase().endsWith('.gguf') ? 'gguf' : 'safetensors',
      source: 'path',
      name: path.basename(full),
    };
  }
  const repo = repoFromFolderName(path.basename(full));
  if (repo !== null || (isDir(path.join(full, 'snapshots')) && isDir(path.join(full, 'blobs')))) {
    const snapshot = chooseSnapshot(full, repo ?? path.basename(full), revision);
    return {
      ...resolveFolder(snapshot, repo ?? p),
      name: repo ?? path.basename(full),
      commit: path.basename(snapshot),
    };
  }
  return { ...resolveFolder(full, p), name: path.basename(full) };
}

function chooseSnapshot(root: string, repo: string, revision: string | undefined): string {
  const snapshots = listSnapshots(root);
  const commit = commitOf(root, revision ?? 'main');
  if (commit && isDir(path.join(root, 'snapshots', commit))) return path.join(root, 'snapshots', commit);
  if (revision !== undefined)
    throw new ModelSourceError(
      `${root} has no snapshot for revision ${revision}; it has: ${snapshots.map((s) => path.basename(s)).join(', ') || 'none'}`,
    );
  if (snapshots.length === 1) return snapshots[0];
  if (snapshots.length === 0)
    throw new ModelSourceError(
      `${root} is a hub cache folder with no snapshot (snapshots/<commit>/): the download did not finish; run qwen-ts pull ${repo}`,
    );
  throw new ModelSourceError(
    `${root} is a hub cache folder with several snapshots and no refs/main; give --revision one of: ${snapshots.map((s) => path.basename(s)).join(', ')}, or the folder snapshots/<commit> itself`,
  );
}

/** A model folder: checked for the one mistake worth catching before loading (PyTorch weights only). */
function resolveFolder(dir: string, shown: string): Omit<ResolvedModel, 'name'> {
  const state = inspectModelFolder(dir);
  if (!state.complete && state.pytorchOnly)
    throw new ModelSourceError(
      `${shown} holds PyTorch weights (pytorch_model.bin) but no safetensors, which qwen-ts reads (it never runs pickle files). ` +
        `If the model is on the hub with safetensors, \`qwen-ts pull Org/Name\` fetches only those; otherwise convert it once with Python: ` +
        `python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('${dir}').save_pretrained('${dir}-safetensors')"`,
    );
  if (!state.complete && !fs.existsSync(path.join(dir, 'config.json'))) {
    const ggufs = ggufFiles(dir).filter((f) => !/(^|\/)mmproj/i.test(f));
    if (ggufs.length === 1) return { path: path.join(dir, ggufs[0]), format: 'gguf', source: 'path' };
    if (ggufs.length > 1)
      throw new ModelSourceError(
        `${shown} holds several GGUF files; give one of them: ${ggufs.map((f) => path.join(shown, f)).join(', ')}`,
      );
  }
  return { path: dir, format: 'safetensors', source: 'path' };
}
