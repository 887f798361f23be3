// The command line with models by name, end to end against the loopback mock hub: `chat --model
// Org/Name` downloads into the Hugging Face cache with a progress line, a second run starts offline
// from the cache; `pull`, `list`, and the errors for names that cannot be found.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir } from './helpers/models.js';
import { startMockHub, type MockHub } from './helpers/mock-hub.js';

const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const STORIES = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const COMMIT = 'e'.repeat(40);

let hub: MockHub;
let tmp: string;
let env: Record<string, string>;

/** Run the CLI without blocking this thread (the mock hub answers from it). */
function run(
  args: string[],
  opts: { input?: string; env?: Record<string, string> } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill(), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

beforeAll(async () => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: build first (npx tsc -p tsconfig.json)`);
  const files = Object.fromEntries(fs.readdirSync(STORIES).map((f) => [f, fs.readFileSync(path.join(STORIES, f))]));
  hub = await startMockHub({
    'Org/Stories': { commit: COMMIT, files },
    'Org/Gated': { commit: COMMIT, token: 'hf_ok', files },
  });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-sources-cli-'));
  env = {
    HF_ENDPOINT: hub.url,
    HF_HUB_CACHE: path.join(tmp, 'hub'),
    OLLAMA_MODELS: path.join(tmp, 'ollama'),
    QWEN_TS_CACHE: path.join(tmp, 'qwen-ts'),
    HF_TOKEN: '',
    HF_HUB_OFFLINE: '',
    QWEN_TS_DEBUG: '',
    NO_COLOR: '1',
  };
});
afterAll(async () => {
  await hub.close();
  removeDir(tmp);
});

const snapshot = () => path.join(tmp, 'hub', 'models--Org--Stories', 'snapshots', COMMIT);

describe('qwen-ts chat --model Org/Name', () => {
  it('downloads into the Hugging Face cache with a progress line, then a second run starts offline from the cache', async () => {
    const first = await run(
      ['chat', '--model', 'Org/Stories', '--threads', '1', '--max-tokens', '8', '--temperature', '0'],
      {
        input: 'Once upon a time\n',
      },
    );
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('qwen-ts: downloading Org/Stories model.safetensors (1.0 MB)');
    expect(first.stderr).toMatch(/qwen-ts: downloaded model\.safetensors \(1\.0 MB\) in [\d.]+ s, [\d.]+ [KMG]?B\/s/);
    expect(first.stderr).toContain(`qwen-ts: Org/Stories: ${snapshot()}\n`);
    expect(first.stdout.trim().length).toBeGreaterThan(0);
    expect(fs.readFileSync(path.join(tmp, 'hub', 'models--Org--Stories', 'refs', 'main'), 'utf8')).toBe(COMMIT);

    const requests = hub.requests.length;
    const second = await run(
      ['chat', '--model', 'Org/Stories', '--threads', '1', '--max-tokens', '8', '--temperature', '0'],
      {
        input: 'Once upon a time\n',
        env: { HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' },
      },
    );
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).not.toContain('downloading');
    expect(second.stderr).toContain(`qwen-ts: Org/Stories: ${snapshot()} (from the Hugging Face cache)`);
    expect(second.stdout).toBe(first.stdout);
    expect(hub.requests.length).toBe(requests);
  });

  it('the downloaded model generates exactly what the bundled copy of it does', async () => {
    const args = ['--threads', '1', '--max-tokens', '24', '--temperature', '0', 'Once upon a time'];
    const byName = await run(['generate', '--model', 'Org/Stories', ...args], { env: { HF_HUB_OFFLINE: '1' } });
    const bundled = await run(['generate', '--model', STORIES, ...args]);
    expect(byName.code, byName.stderr).toBe(0);
    expect(bundled.code, bundled.stderr).toBe(0);
    expect(byName.stdout.length).toBeGreaterThan(20);
    expect(byName.stdout).toBe(bundled.stdout);
  });
});

describe('qwen-ts pull and list', () => {
  it('pull fetches without running and prints the snapshot; list shows it with format, size and place', async () => {
    const pulled = await run(['pull', 'Org/Gated'], { env: { HF_TOKEN: 'hf_ok' } });
    expect(pulled.code, pulled.stderr).toBe(0);
    const gated = path.join(tmp, 'hub', 'models--Org--Gated', 'snapshots', COMMIT);
    expect(pulled.stdout).toBe(`${gated}\n`);
    expect(pulled.stderr).toMatch(/qwen-ts: pulled Org\/Gated \(1\.1 MB in [\d.]+ s\) into /);
    const again = await run(['pull', 'Org/Gated'], { env: { HF_TOKEN: 'hf_ok' } });
    expect(again.stderr).toContain(`qwen-ts: Org/Gated is up to date in ${gated}`);

    const list = await run(['list']);
    expect(list.code, list.stderr).toBe(0);
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+FORMAT\s+SIZE\s+WHERE$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/))).toEqual([
      ['Org/Gated', 'safetensors', '1.1 MB', gated],
      ['Org/Stories', 'safetensors', '1.1 MB', snapshot()],
    ]);
  });

  it('errors say what to do, exit 2: a 401 names HF_TOKEN, an Ollama name says ollama pull, offline names qwen-ts pull', async () => {
    const gated = await run(['pull', 'Org/Gated', '--revision', 'main']);
    expect(gated.code).toBe(2);
    expect(gated.stderr).toMatch(/^qwen-ts: Org\/Gated needs a login \(401\).*set HF_TOKEN/m);
    const ollama = await run(['pull', 'qwen2.5:0.5b']);
    expect(ollama.code).toBe(2);
    expect(ollama.stderr).toContain(
      'qwen2.5:0.5b is not a hub name (Org/Name); for an Ollama model run `ollama pull qwen2.5:0.5b`',
    );
    const notPulled = await run(['generate', '--model', 'qwen2.5:0.5b', 'Hi']);
    expect(notPulled.code).toBe(2);
    expect(notPulled.stderr).toContain('Get it with `ollama pull qwen2.5:0.5b`');
    expect(notPulled.stderr).not.toContain('QWEN_TS_DEBUG');
    const offline = await run(['generate', '--model', 'Org/Other', 'Hi'], { env: { HF_HUB_OFFLINE: '1' } });
    expect(offline.code).toBe(2);
    expect(offline.stderr).toContain('Fetch it once online: qwen-ts pull Org/Other');
    const missing = await run(['generate', '--model', 'Org/Nope', 'Hi']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`--model: no model Org/Nope on ${hub.url} (404)`);
  });
});
