// Ollama's model store: models/manifests/<host>/<namespace>/<model>/<tag> is a JSON manifest whose
// layer of media type application/vnd.ollama.image.model is the GGUF, at models/blobs/sha256-<hex>.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expandHome, isDir, isFile } from './hf-cache.js';

export const OLLAMA_MODEL_LAYER = 'application/vnd.ollama.image.model';
const DEFAULT_HOST = 'registry.ollama.ai';
const DEFAULT_NAMESPACE = 'library';

/** $OLLAMA_MODELS, else ~/.ollama/models, else the Linux service's /usr/share/ollama/.ollama/models. */
export function ollamaModelDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.OLLAMA_MODELS) return [path.resolve(expandHome(env.OLLAMA_MODELS))];
  return [path.join(os.homedir(), '.ollama', 'models'), '/usr/share/ollama/.ollama/models'];
}

export interface OllamaName {
  host: string;
  namespace: string;
  model: string;
  tag: string;
}

/** `qwen2.5:0.5b`, `user/model:tag`, `hf.co/Org/Repo:Q4_K_M`; the tag defaults to latest. */
export function parseOllamaName(name: string): OllamaName | null {
  const m = /^(?:([\w.-]+\.[\w.-]+(?::\d+)?)\/)?(?:([\w.-]+)\/)?([\w.-]+)(?::([\w.-]+))?$/.exec(name);
  if (!m) return null;
  return { host: m[1] ?? DEFAULT_HOST, namespace: m[2] ?? DEFAULT_NAMESPACE, model: m[3], tag: m[4] ?? 'latest' };
}

/** How Ollama prints a name: the default host and namespace left out. */
export function ollamaDisplayName(n: OllamaName): string {
  const prefix =
    n.host === DEFAULT_HOST
      ? n.namespace === DEFAULT_NAMESPACE
        ? ''
        : `${n.namespace}/`
      : `${n.host}/${n.namespace}/`;
  return `${prefix}${n.model}:${n.tag}`;
}

interface Manifest {
  layers?: { mediaType?: string; digest?: string; size?: number }[];
}

export interface OllamaModel {
  name: string;
  /** The GGUF blob. */
  file: string;
  bytes: number;
  manifest: string;
}

function blobPath(modelsDir: string, digest: string): string | null {
  const m = /^sha256[:-]([0-9a-f]{64})$/.exec(digest);
  return m ? path.join(modelsDir, 'blobs', `sha256-${m[1]}`) : null;
}

/** The manifest of a name in one store, or null; throws naming the manifest when it is unreadable. */
function readModel(modelsDir: string, n: OllamaName, manifestPath: string): OllamaModel | null {
  if (!isFile(manifestPath)) return null;
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as Manifest;
  } catch (e) {
    throw new Error(`Ollama manifest ${manifestPath} is not JSON: ${(e as Error).message}`);
  }
  const layer = manifest.layers?.find((l) => l.mediaType === OLLAMA_MODEL_LAYER);
  const file = layer?.digest ? blobPath(modelsDir, layer.digest) : null;
  if (!layer || !file)
    throw new Error(`Ollama manifest ${manifestPath} has no ${OLLAMA_MODEL_LAYER} layer with a sha256 digest`);
  if (!isFile(file))
    throw new Error(
      `Ollama's manifest ${manifestPath} names the blob ${file}, which is missing; run \`ollama pull ${ollamaDisplayName(n)}\` again`,
    );
  return { name: ollamaDisplayName(n), file, bytes: fs.statSync(file).size, manifest: manifestPath };
}

/** The GGUF of an Ollama name in the first store that has it, or null. */
export function findOllamaModel(name: OllamaName, dirs: string[]): OllamaModel | null {
  for (const dir of dirs) {
    const manifest = path.join(dir, 'manifests', name.host, name.namespace, name.model, name.tag);
    const found = readModel(dir, name, manifest);
    if (found) return found;
  }
  return null;
}

/** Every model in the stores (for `qwen-ts list`); unreadable manifests are skipped. */
export function listOllamaModels(dirs: string[]): OllamaModel[] {
  const out: OllamaModel[] = [];
  for (const dir of dirs) {
    const root = path.join(dir, 'manifests');
    if (!isDir(root)) continue;
    for (const host of readdir(root))
      for (const namespace of readdir(path.join(root, host)))
        for (const model of readdir(path.join(root, host, namespace)))
          for (const tag of readdir(path.join(root, host, namespace, model))) {
            try {
              const m = readModel(dir, { host, namespace, model, tag }, path.join(root, host, namespace, model, tag));
              if (m) out.push(m);
            } catch {
              // a broken manifest is not a model
            }
          }
  }
  return out;
}

function readdir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}
