#!/usr/bin/env node
// The qwen-ts command. In an installed package dist/ is always there (built by `prepack`); in a
// fresh clone after `npm install` it is not yet, so the first run builds it (tsc) and says so.
// After editing src/, rebuild with `npm run build` (npm test builds too).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const main = new URL('../dist/src/cli/main.js', import.meta.url);

if (!fs.existsSync(main)) {
  const tsc = new URL('../node_modules/typescript/bin/tsc', import.meta.url);
  const inClone = fs.existsSync(new URL('../tsconfig.json', import.meta.url)) && fs.existsSync(tsc);
  if (!inClone) {
    process.stderr.write(`qwen-ts: ${fileURLToPath(main)} is missing: the package is not built (reinstall it)\n`);
    process.exit(1);
  }
  process.stderr.write('qwen-ts: first run in this clone: building dist/ (npm run build) ...\n');
  const r = spawnSync(process.execPath, [fileURLToPath(tsc), '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write('qwen-ts: the build failed (see above)\n');
    process.exit(1);
  }
}

const { run } = await import(main.href);
run(process.argv.slice(2));
