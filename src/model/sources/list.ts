// The models on this machine, as `ollama list` shows them: from the Hugging Face cache (every
// snapshot a ref points to, or each snapshot when none does) and Ollama's store.
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  COMMIT_HASH,
  folderBytes,
  ggufFiles,
  hubCacheDir,
  inspectModelFolder,
  listFiles,
  listSnapshots,
  repoFromFolderName,
} from './hf-cache.js';
import { listOllamaModels, ollamaModelDirs } from './ollama.js';

export interface ListedModel {
  /** The name to give --model. */
  name: string;
  /** safetensors, gguf, or why it cannot be loaded (incomplete, pytorch only). */
  format: string;
  bytes: number;
  /** The folder or file. */
  where: string;
  source: 'hf-cache' | 'ollama';
}

function refsOf(repoDir: string): Map<string, string[]> {
  const byCommit = new Map<string, string[]>();
  const walk = (dir: string, prefix: string) => {
    for (const e of safeReaddir(dir)) {
      const p = path.join(dir, e);
      if (fs.statSync(p).isDirectory()) walk(p, `${prefix}${e}/`);
      else {
        const commit = fs.readFileSync(p, 'utf8').trim();
        if (COMMIT_HASH.test(commit)) byCommit.set(commit, [...(byCommit.get(commit) ?? []), `${prefix}${e}`]);
      }
    }
  };
  walk(path.join(repoDir, 'refs'), '');
  return byCommit;
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** The models of the Hugging Face cache. */
export function listHubCache(cacheDir: string): ListedModel[] {
  const out: ListedModel[] = [];
  for (const folder of safeReaddir(cacheDir)) {
    const repo = repoFromFolderName(folder);
    if (!repo) continue;
    const repoDir = path.join(cacheDir, folder);
    const refs = refsOf(repoDir);
    for (const snapshot of listSnapshots(repoDir).sort()) {
      const commit = path.basename(snapshot);
      const names = refs.get(commit) ?? [];
      const revision = names.includes('main') ? '' : names.length > 0 ? names[0] : commit;
      const shown = revision === '' ? repo : `${repo}@${revision}`;
      const state = inspectModelFolder(snapshot);
      if (state.complete) {
        out.push({
          name: shown,
          format: 'safetensors',
          bytes: folderBytes(snapshot, listFiles(snapshot, true)),
          where: snapshot,
          source: 'hf-cache',
        });
        continue;
      }
      const ggufs = ggufFiles(snapshot).filter((f) => !/(^|\/)mmproj/i.test(f));
      for (const f of ggufs) {
        const split = /-(\d{5})-of-\d{5}\.gguf$/i.exec(f);
        if (split && split[1] !== '00001') continue;
        const tag = /[-_.](I?Q\d\w*|BF16|F16|F32)(?:-\d{5}-of-\d{5})?\.gguf$/i.exec(f);
        out.push({
          name: tag ? `${shown}:${tag[1].toUpperCase()}` : shown,
          format: 'gguf',
          bytes: folderBytes(snapshot, [f]),
          where: path.join(snapshot, f),
          source: 'hf-cache',
        });
      }
      if (ggufs.length === 0)
        out.push({
          name: shown,
          format: state.pytorchOnly ? 'pytorch (unusable)' : 'incomplete',
          bytes: folderBytes(snapshot, listFiles(snapshot, true)),
          where: snapshot,
          source: 'hf-cache',
        });
    }
  }
  return out;
}

/** Every model in the Hugging Face cache and Ollama's store. */
export function listModels(
  options: { cacheDir?: string; ollamaDir?: string; env?: NodeJS.ProcessEnv } = {},
): ListedModel[] {
  const env = options.env ?? process.env;
  const hub = listHubCache(options.cacheDir ?? hubCacheDir(env));
  const ollama = listOllamaModels(options.ollamaDir ? [options.ollamaDir] : ollamaModelDirs(env)).map(
    (m): ListedModel => ({ name: m.name, format: 'gguf', bytes: m.bytes, where: m.file, source: 'ollama' }),
  );
  return [...hub, ...ollama];
}
