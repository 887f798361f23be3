// The package as a user imports it: `import { loadModel, LLM } from 'qwen-ts'` from plain Node,
// resolved through package.json "exports" to the built JS (npm test builds first).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

describe('package entry point', () => {
  it("import { loadModel, LLM } from 'qwen-ts' works from plain Node", () => {
    const script =
      "const m = await import('qwen-ts'); console.log([typeof m.loadModel, typeof m.LLM, typeof m.QwenTokenizer, typeof m.Sampler].join(','));";
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: root,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function,function,function,function');
  });
});
