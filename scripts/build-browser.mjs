// The browser build: dist/browser/, an ES module bundle of the engine for `qwen-ts/browser`.
// The platform seam's Node files (src/platform/X.ts) are replaced by their browser side
// (src/platform/X.browser.ts); everything else is the same source. Entry points, one file each in
// one folder, because the code finds its threads' modules beside itself (new URL('./x.js', import.meta.url)):
// index.js (the page), engine-thread.js (the engine worker), task-thread.js + worker.js (kernel
// pool workers) and runner.js (the kernels each worker runs); shared code is in chunk-*.js.
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const outdir = path.join(root, 'dist', 'browser');

const browserSide = {
  name: 'qwen-ts-platform-browser',
  setup(build) {
    build.onResolve({ filter: /\/platform\/[a-z-]+\.js$/ }, (args) => {
      const ts = path.resolve(args.resolveDir, args.path).replace(/\.js$/, '.ts');
      const browser = ts.replace(/\.ts$/, '.browser.ts');
      if (fs.existsSync(browser)) return { path: browser };
      return undefined;
    });
    // Anything Node-only that still reaches the bundle is a mistake in the seam: fail the build.
    build.onResolve({ filter: /^node:|^piscina$/ }, (args) => ({
      errors: [
        {
          text: `${args.path} imported by ${path.relative(root, args.importer)}: Node-only code must sit behind src/platform/`,
        },
      ],
    }));
  },
};

fs.rmSync(outdir, { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: root,
  entryPoints: {
    index: 'src/browser/index.ts',
    'engine-thread': 'src/engine/engine-thread.ts',
    'task-thread': 'src/browser/task-thread.ts',
    worker: 'src/tensor/worker.ts',
    runner: 'src/model/runner.ts',
  },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  outdir,
  sourcemap: true,
  logLevel: 'warning',
  plugins: [browserSide],
});
