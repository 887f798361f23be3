// Where the qwen-ts package lives on disk (a clone, or node_modules/qwen-ts after npm install):
// the nearest folder above this file whose package.json is named qwen-ts. The same walk works from
// src/ (tests run the TypeScript) and dist/src/ (the built package).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'qwen-ts';

function isPackageRoot(dir: string): boolean {
  const file = path.join(dir, 'package.json');
  if (!fs.existsSync(file)) return false;
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: unknown }).name === PACKAGE_NAME;
  } catch {
    return false;
  }
}

let cached: string | undefined;

export function packageRoot(): string {
  if (cached !== undefined) return cached;
  const start = path.dirname(fileURLToPath(import.meta.url));
  let dir = start;
  while (!isPackageRoot(dir)) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the ${PACKAGE_NAME} package.json above ${start}`);
    dir = up;
  }
  cached = dir;
  return dir;
}

/** A folder of assets/ shipped with the package (tokenizer files, the demo model). */
export function assetPath(...parts: string[]): string {
  return path.join(packageRoot(), 'assets', ...parts);
}

/**
 * The folder of the demo model shipped with the package: llama2.c's stories260K (MIT), a tiny
 * trained Llama-family story model with no chat template; `LLM.load(DEMO_MODEL_DIR)` runs it.
 */
export const DEMO_MODEL_DIR: string = assetPath('stories260K');
