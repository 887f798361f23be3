// The qwen-ts command line, run as a user runs it (node dist/src/cli/main.js) on the tiny synthetic model.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempModel, removeDir } from './helpers/models.js';

const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
let model: string;
let cache: string;

function run(
  args: string[],
  opts: { input?: string; env?: Record<string, string> } = {},
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    input: opts.input ?? '',
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, QWEN_TS_CACHE: cache, QWEN_TS_DEBUG: '', NO_COLOR: '1', ...opts.env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const STATS =
  /\[(\d+) prompt tokens?, (\d+) generated \((\w+)\) \| TTFT [\d.]+ s \| prefill [\d.]+ tok\/s \| decode [\d.-]+ tok\/s\]/g;
const stats = (stderr: string) =>
  [...stderr.matchAll(STATS)].map((m) => ({ prompt: Number(m[1]), generated: Number(m[2]), reason: m[3] }));

beforeAll(() => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: build first (npx tsc -p tsconfig.json)`);
  model = makeTempModel({ preset: 'tiny', seed: 0 });
  cache = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-cli-cache-'));
});
afterAll(() => {
  removeDir(model);
  removeDir(cache);
});

describe('qwen-ts generate', () => {
  let streamed = '';

  it('streams a completion and prints the stats line and the load time on stderr', () => {
    const r = run(['generate', '--model', model, '--threads', '1', '--max-tokens', '8', '--temperature', '0', 'Hello']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/loaded .* \(f32, 1 thread\) in [\d.]+ s/);
    expect(stats(r.stderr)).toEqual([{ prompt: 1, generated: 8, reason: 'length' }]);
    streamed = r.stdout;
  });

  it('--json prints the whole RequestOutput, with the same greedy text as the stream', () => {
    const r = run([
      'generate',
      '--model',
      model,
      '--threads',
      '1',
      '--max-tokens',
      '8',
      '--temperature',
      '0',
      '--json',
      'Hello',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.outputs[0].tokenIds).toHaveLength(8);
    expect(out.outputs[0].finishReason).toBe('length');
    expect(out.outputs[0].text).toBe(streamed);
    expect(out.prompt).toBe('Hello');
    expect(out.metrics.timeToFirstToken).toBeGreaterThan(0);
  });

  it('the same --seed gives the same text; --chat/--system apply the chat template', () => {
    const args = [
      'generate',
      '--model',
      model,
      '--threads',
      '1',
      '--max-tokens',
      '6',
      '--seed',
      '7',
      '--system',
      'Be brief.',
      'Hi',
    ];
    const a = run(args);
    const b = run(args);
    expect(a.code, a.stderr).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    // system + user turns and the assistant header: far more than the 1 token of "Hi".
    expect(stats(a.stderr)[0].prompt).toBeGreaterThan(10);
  });

  it('bad values exit 2 with a one-line message naming the flag, and no stack trace', () => {
    const cases: [string[], RegExp][] = [
      [['--top-p', '2'], /^qwen-ts: --top-p must be a number in \(0, 1\], got "2"$/m],
      [['--top-p', 'abc'], /--top-p must be .*got "abc"/],
      [['--max-tokens', '0'], /--max-tokens must be an integer/],
      [['--presence-penalty', '-3'], /--presence-penalty must be a number in \[-2, 2\], got "-3"/],
      [['--weights', 'q5'], /--weights must be one of/],
      [['--threads', 'x'], /--threads must be an integer/],
      [['--no-such-flag'], /^qwen-ts: unknown option --no-such-flag$/m],
      [['--temprature', '0'], /^qwen-ts: unknown option --temprature; did you mean --temperature\?$/m],
    ];
    for (const [flags, message] of cases) {
      const r = run(['generate', '--model', model, ...flags, 'Hi']);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
    const missing = run(['generate', '--model', path.join(model, 'nope'), 'Hi']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^qwen-ts: --model: .*nope does not exist/m);
  });

  it('user errors from the library exit 2 without the debugging hint; a broken GGUF file and a foreign-script prompt to the demo model say what to do', () => {
    const gguf = path.join(cache, 'model.gguf');
    fs.writeFileSync(gguf, 'GGUF');
    const r = run(['generate', '--model', gguf, 'Hi']);
    // GGUF files load; a broken one is a user error naming the file and what is wrong.
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`qwen-ts: ${gguf}: only 4 bytes, too short for a GGUF header`);
    expect(r.stderr).not.toContain('QWEN_TS_DEBUG');
    // A prompt longer than the context: exit 2.
    const long = run([
      'generate',
      '--model',
      model,
      '--threads',
      '1',
      '--context-length',
      '8',
      'a b c d e f g h i j k',
    ]);
    expect(long.code, long.stderr).toBe(2);
    expect(long.stderr).toMatch(/does not fit/);
    const zh = run(['generate', '--max-tokens', '1', '--threads', '1', '跟我讲讲股市运行的逻辑']);
    expect(zh.code, zh.stderr).toBe(0);
    expect(zh.stderr).toContain('the stories260K demo model knows only English');
    const en = run(['generate', '--max-tokens', '1', '--threads', '1', 'Once upon a time']);
    expect(en.stderr).not.toContain('knows only English');
  });
});

describe('qwen-ts chat', () => {
  it('answers each line of a piped stdin, keeps the history, /reset clears it, and exits 0 at EOF', () => {
    const r = run(['chat', '--model', model, '--threads', '1', '--max-tokens', '4'], {
      input: 'Hello\nHello\n/reset\nHello\n',
    });
    expect(r.code, r.stderr).toBe(0);
    const s = stats(r.stderr);
    expect(s).toHaveLength(3);
    expect(s.every((t) => t.generated <= 4)).toBe(true);
    expect(s[1].prompt).toBeGreaterThan(s[0].prompt); // the first turn is in the second prompt
    expect(s[2].prompt).toBe(s[0].prompt); // after /reset, the conversation starts over
    expect(r.stderr).toContain('(conversation cleared)');
  });
});

describe('qwen-ts --preset', () => {
  it('makes the synthetic model in the cache once, then reuses it', () => {
    const args = ['generate', '--preset', 'tiny', '--threads', '1', '--max-tokens', '2', 'Hi'];
    const dir = path.join(cache, 'models', 'tiny-seed0');
    const first = run(args);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain(
      `--preset tiny: using a synthetic tiny Qwen2.5-shaped model with random weights (its text is meaningless) at ${dir}`,
    );
    expect(first.stderr).toMatch(/made the synthetic model in [\d.]+ s/);
    expect(fs.existsSync(path.join(dir, 'config.json'))).toBe(true);
    const mtime = fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs;
    const second = run(args);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toContain(`at ${dir}`);
    expect(second.stderr).not.toMatch(/made the synthetic model/);
    expect(fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs).toBe(mtime);
    // No temporary folders are left next to it.
    expect(fs.readdirSync(path.join(cache, 'models'))).toEqual(['tiny-seed0']);
  });
});

describe('qwen-ts help and commands', () => {
  it('--help for the program and each command exits 0', () => {
    for (const args of [
      ['--help'],
      ['help'],
      ['generate', '--help'],
      ['chat', '--help'],
      ['make-model', '--help'],
      ['help', 'chat'],
      ['serve', '--help'],
      ['bench', '--help'],
    ]) {
      const r = run(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stdout + r.stderr).toMatch(/usage/i);
    }
    const top = run(['--help']).stdout;
    for (const cmd of ['generate', 'chat', 'serve', 'bench', 'make-model']) expect(top).toContain(cmd);
  });

  it('--version prints the package version; unknown commands and options exit 2 with the usage', () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    expect(run(['--version']).stdout.trim()).toBe(`qwen-ts ${pkg.version}`);
    const typo = run(['generat']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/^qwen-ts: unknown command "generat"; did you mean generate\?$/m);
    expect(run(['--help']).stdout).toContain('Qwen3');
    for (const args of [['frobnicate'], ['--frobnicate'], ['chat', '--model', model, 'extra-argument']]) {
      const r = run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^qwen-ts: (unknown|unexpected)/m);
      expect(r.stderr).toMatch(/usage: qwen-ts/);
    }
  });

  it('make-model writes a model, like npm run make-model', () => {
    const out = path.join(cache, 'made');
    const r = run(['make-model', '--preset', 'tiny', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
  });
});
