// Synthetic models for tests, written once per test file into a temp folder.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSyntheticModel, type SyntheticOptions } from '../../src/model/synthetic.js';

export function makeTempModel(opts: SyntheticOptions): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qwen-ts-${opts.preset}-`));
  writeSyntheticModel(dir, opts);
  return dir;
}

export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function removeDir(dir: string | undefined): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

export interface Golden {
  model: { preset: string; seed: number; overrides?: SyntheticOptions['overrides'] | null; safetensorsSha256: string };
  columns: number[];
  prompts: {
    tokenIds: number[];
    logits: number[][];
    argmax: number[];
    max: number[];
    logsumexp: number[];
    layers: number[][][]; // [layer][position][hidden]: the residual stream after each layer
  }[];
}

/** Goldens of a synthetic preset from tools/make_goldens.py (test/fixtures/golden/PRESET.json). */
export function readGolden(preset = 'tiny'): Golden {
  return JSON.parse(fs.readFileSync(new URL(`../fixtures/golden/${preset}.json`, import.meta.url), 'utf8')) as Golden;
}

export function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i] > x[off + best]) best = i;
  return best;
}
