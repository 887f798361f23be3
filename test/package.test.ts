// The package as a user gets it: `npm pack`, the tarball installed into an empty folder outside the
// source tree, then the qwen-ts command and `import { LLM } from 'qwen-ts'` from plain Node there.
// npm test builds dist/ first; the pack skips the prepack build (--ignore-scripts) to stay fast, and
// the install resolves the dependencies from npm's cache (filled by npm ci), so it works offline.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
const RUN_C = fs.readFileSync(path.join(root, 'test/fixtures/stories260K/once-upon-a-time.txt'), 'utf8');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let tmp: string;
let app: string;

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, QWEN_TS_CACHE: path.join(tmp, 'cache'), NO_COLOR: '1', ...env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  if (!fs.existsSync(path.join(root, 'dist/src/index.js')))
    throw new Error('dist/ is missing: build first (npm run build)');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-package-'));
  app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  const pack = run(npm, ['pack', '--ignore-scripts', '--silent', '--pack-destination', tmp], root);
  expect(pack.code, pack.stderr).toBe(0);
  const tarball = path.join(tmp, `qwen-ts-${pkg.version}.tgz`);
  const install = run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], app);
  expect(install.code, install.stderr).toBe(0);
  // A consumer install runs no build script (prepack is the maintainer's).
  expect(install.stderr).not.toMatch(/prepare|tsc/);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the packed tarball, installed in an empty folder', () => {
  it('ships the built code, the launcher, the tokenizer assets and the demo model with its license', () => {
    const installed = path.join(app, 'node_modules', 'qwen-ts');
    for (const f of [
      'bin/qwen-ts.js',
      'dist/src/index.js',
      'dist/src/synthetic.js',
      'assets/qwen2.5-tokenizer/tokenizer.json',
      'assets/stories260K/model.safetensors',
      'assets/stories260K/LICENSE',
      'assets/stories260K/NOTICE.md',
    ])
      expect(fs.existsSync(path.join(installed, f)), f).toBe(true);
    expect(fs.existsSync(path.join(installed, 'src'))).toBe(false);
    expect(fs.existsSync(path.join(installed, 'test'))).toBe(false);
  });

  it('ships qwen-ts/browser (dist/browser, no Node imports) and the demo page; the export resolves', () => {
    const installed = path.join(app, 'node_modules', 'qwen-ts');
    for (const f of [
      'dist/browser/index.js',
      'dist/browser/engine-thread.js',
      'dist/browser/task-thread.js',
      'dist/browser/worker.js',
      'dist/browser/runner.js',
      'dist/src/browser/index.d.ts',
      'dist/src/demo/index.html',
      'dist/src/demo/demo.js',
    ])
      expect(fs.existsSync(path.join(installed, f)), f).toBe(true);
    for (const f of fs.readdirSync(path.join(installed, 'dist/browser')).filter((f) => f.endsWith('.js')))
      expect(fs.readFileSync(path.join(installed, 'dist/browser', f), 'utf8'), f).not.toMatch(
        /from\s*["']node:|require\(/,
      );
    const r = run(
      process.execPath,
      ['--input-type=module', '-e', "console.log(import.meta.resolve('qwen-ts/browser'))"],
      app,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/node_modules\/qwen-ts\/dist\/browser\/index\.js$/);
  });

  it('npx qwen-ts --version', () => {
    const r = run('npx', ['--no-install', 'qwen-ts', '--version'], app);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`qwen-ts ${pkg.version}\n`);
    expect(r.stderr).toBe('');
  });

  it("npx qwen-ts generate runs the bundled stories260K and writes run.c's greedy text", () => {
    const r = run(
      'npx',
      ['--no-install', 'qwen-ts', 'generate', '--temperature', '0', '--max-tokens', '12', 'Once upon a time'],
      app,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('using the bundled stories260K demo model');
    expect(r.stderr).not.toMatch(/qwen-ts: qwen-ts:/);
    expect(r.stdout.length).toBeGreaterThan(20);
    expect(RUN_C.startsWith('Once upon a time' + r.stdout)).toBe(true);
  });

  it("import { LLM } from 'qwen-ts' and 'qwen-ts/synthetic' from plain Node", () => {
    const script = `
      import { LLM, createServer, loadModel } from 'qwen-ts';
      import { writeSyntheticModel, PRESETS } from 'qwen-ts/synthetic';
      import * as path from 'node:path';
      const llm = await LLM.load(path.resolve('node_modules/qwen-ts/assets/stories260K'), { threads: 1 });
      const [r] = await llm.generate('Once upon a time', { temperature: 0, max_tokens: 12 });
      await llm.close();
      console.log(JSON.stringify({ text: r.outputs[0].text, kinds: [typeof createServer, typeof loadModel, typeof writeSyntheticModel, typeof PRESETS.tiny] }));`;
    fs.writeFileSync(path.join(app, 'main.js'), script);
    const r = run(process.execPath, ['main.js'], app);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { text: string; kinds: string[] };
    expect(out.kinds).toEqual(['function', 'function', 'function', 'object']);
    expect(out.text.length).toBeGreaterThan(20);
    expect(RUN_C.startsWith('Once upon a time' + out.text)).toBe(true);
  });
});

describe('CommonJS consumers (an app with "type": "commonjs", as `npm init -y` writes)', () => {
  it('require("qwen-ts") and require("qwen-ts/synthetic") on a Node that can require ES modules; a clear error otherwise', () => {
    const cjs = path.join(tmp, 'cjs-app');
    fs.mkdirSync(cjs, { recursive: true });
    fs.writeFileSync(
      path.join(cjs, 'package.json'),
      JSON.stringify({ name: 'cjs-app', private: true, type: 'commonjs' }),
    );
    // The installed package, without a second install: node_modules of the ESM app, found by NODE_PATH.
    const script = `
      const { LLM, DEMO_MODEL_DIR } = require('qwen-ts');
      const { PRESETS } = require('qwen-ts/synthetic');
      (async () => {
        const llm = await LLM.load(DEMO_MODEL_DIR, { threads: 1 });
        const [r] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 12 });
        await llm.close();
        console.log(JSON.stringify({ text: r.outputs[0].text, tiny: typeof PRESETS.tiny }));
      })();`;
    fs.writeFileSync(path.join(cjs, 'main.js'), script);
    const r = run(process.execPath, ['main.js'], cjs, { NODE_PATH: path.join(app, 'node_modules') });
    if ((process.features as { require_module?: boolean }).require_module) {
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { text: string; tiny: string };
      expect(out.tiny).toBe('object');
      expect(RUN_C.startsWith('Once upon a time' + out.text)).toBe(true);
    } else {
      // Node before 20.19 / 22.12: require of an ES module fails by name (the README says to use import()).
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('ERR_REQUIRE_ESM');
    }
  });
});
