// The synthetic model the CLI runs for --preset NAME: written once into the cache folder
// and reused. It is written into a temporary folder next to its final place and renamed, so an
// interrupted write never leaves a half model behind that a later run would take for a whole one.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSyntheticModel } from '../model/synthetic.js';

const SEED = 0;
const TMP_PREFIX = '.tmp-';

/** $QWEN_TS_CACHE, else $XDG_CACHE_HOME/qwen-ts, else ~/.cache/qwen-ts. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.QWEN_TS_CACHE) return path.resolve(env.QWEN_TS_CACHE);
  if (env.XDG_CACHE_HOME) return path.resolve(env.XDG_CACHE_HOME, 'qwen-ts');
  return path.join(os.homedir(), '.cache', 'qwen-ts');
}

/** How the presets are named in messages. */
export function presetTitle(preset: string): string {
  const m = /^qwen2\.5-(\d+(?:\.\d+)?)b$/.exec(preset);
  return m ? `Qwen2.5-${m[1]}B` : `${preset} Qwen2.5-shaped model`;
}

export function syntheticModelDir(preset: string, root = cacheRoot()): string {
  return path.join(root, 'models', `${preset}-seed${SEED}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove temporary folders left by writers that were interrupted (their process is gone). */
function removeStaleTemps(modelsDir: string): void {
  for (const name of fs.readdirSync(modelsDir)) {
    const m = new RegExp(`^${TMP_PREFIX}.*-pid(\\d+)-`).exec(name);
    if (m && !isAlive(Number(m[1]))) fs.rmSync(path.join(modelsDir, name), { recursive: true, force: true });
  }
}

/**
 * The folder of the synthetic model `preset` (seed 0) in the cache, written first if missing.
 * `made` is false when it was already there.
 */
export function ensureSyntheticModel(
  preset: string,
  opts: {
    root?: string;
    onMaking?: (dir: string) => void;
    /** Bytes of weights written so far and in all, after each tensor. */
    onProgress?: (doneBytes: number, totalBytes: number) => void;
  } = {},
): { dir: string; made: boolean; seconds: number } {
  const dir = syntheticModelDir(preset, opts.root);
  if (fs.existsSync(path.join(dir, 'config.json'))) return { dir, made: false, seconds: 0 };
  const modelsDir = path.dirname(dir);
  fs.mkdirSync(modelsDir, { recursive: true });
  removeStaleTemps(modelsDir);
  opts.onMaking?.(dir);
  const t0 = performance.now();
  const tmp = fs.mkdtempSync(path.join(modelsDir, `${TMP_PREFIX}${path.basename(dir)}-pid${process.pid}-`));
  try {
    writeSyntheticModel(tmp, { preset, seed: SEED, onProgress: opts.onProgress });
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      // Another process finished the same model first: use theirs.
      if (!fs.existsSync(path.join(dir, 'config.json'))) throw e;
      return { dir, made: false, seconds: (performance.now() - t0) / 1000 };
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return { dir, made: true, seconds: (performance.now() - t0) / 1000 };
}
