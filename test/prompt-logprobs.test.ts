// Prompt log-probabilities (promptLogprobs, vLLM's prompt_logprobs) and perplexity (as llama.cpp's
// llama-perplexity) on the bundled stories260K, against the float64 numpy reference
// (tools/make_logprob_goldens.py -> fixtures/stories260K/logprob-goldens.json), through the
// library, the CLI and /v1/completions with echo.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { perplexity, PerplexityInputError } from '../src/engine/perplexity.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const FIXTURES = fileURLToPath(new URL('./fixtures/stories260K/', import.meta.url));
const TEXT = path.join(FIXTURES, 'perplexity-stories.txt');

interface Golden {
  promptTokenIds: number[];
  promptLogprobs: ({ token: number; logprob: number; top: [number, number][] } | null)[];
  perplexity: { ctx: number; chunks: number; ppl: number; error: number }[];
}
const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'logprob-goldens.json'), 'utf8')) as Golden;
const TOLERANCE = 1e-4;

let llm: LLM;
let app: OpenAIServer;
let client: OpenAI;
let base: string;
beforeAll(async () => {
  // 16 rows per step: the 150-token prompt is read in 10 chunks.
  llm = await LLM.load(MODEL, { threads: 1, maxBatchTokens: 16 });
  app = createServer(llm, { modelName: 'stories', log: false });
  const addr = await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await app?.close();
  await llm?.close();
});

function expectGolden(
  lp: ({ token: number; logprob: number; topLogprobs: { token: number; logprob: number }[] } | null)[],
) {
  expect(lp.length).toBe(golden.promptTokenIds.length);
  expect(lp[0]).toBeNull();
  let worst = 0;
  for (let i = 1; i < lp.length; i++) {
    const g = golden.promptLogprobs[i]!;
    expect(lp[i]!.token).toBe(g.token);
    worst = Math.max(worst, Math.abs(lp[i]!.logprob - g.logprob));
    expect(lp[i]!.topLogprobs.map((t) => t.token)).toEqual(g.top.map((t) => t[0]));
    lp[i]!.topLogprobs.forEach((t, k) => (worst = Math.max(worst, Math.abs(t.logprob - g.top[k][1]))));
  }
  expect(worst).toBeLessThanOrEqual(TOLERANCE);
}

describe('promptLogprobs (library)', () => {
  it('the text tokenizes to the ids the reference used', async () => {
    const ids = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'perplexity-stories.ids.json'), 'utf8'));
    expect(await llm.tokenize(fs.readFileSync(TEXT, 'utf8'))).toEqual(ids);
  });

  it('every position equals numpy float64 log_softmax within 1e-4, top-3 in order; nothing generated with maxTokens 0', async () => {
    const [r] = await llm.generate({ promptTokenIds: golden.promptTokenIds }, { promptLogprobs: 3, maxTokens: 0 });
    expectGolden(r.promptLogprobs!);
    expect(r.outputs[0].tokenIds).toEqual([]);
    expect(r.outputs[0].finishReason).toBe('length');
    // rank: 1 when the prompt's token is the most likely one
    for (const p of r.promptLogprobs!.slice(1)) expect(p!.rank === 1).toBe(p!.topLogprobs[0].token === p!.token);
  });

  it('does not skip positions held in the prefix cache, and generates as without it', async () => {
    const ids = golden.promptTokenIds;
    const [plain] = await llm.generate({ promptTokenIds: ids }, { temperature: 0, maxTokens: 8 });
    const [again] = await llm.generate({ promptTokenIds: ids }, { temperature: 0, maxTokens: 8 });
    expect(again.metrics.cachedTokens).toBeGreaterThan(100); // the prompt's blocks are cached now
    const [scored] = await llm.generate({ promptTokenIds: ids }, { temperature: 0, maxTokens: 8, prompt_logprobs: 3 });
    expect(scored.metrics.cachedTokens).toBe(0);
    expectGolden(scored.promptLogprobs!);
    expect(scored.outputs[0].tokenIds).toEqual(plain.outputs[0].tokenIds);
  });

  it('bad values name the parameter', async () => {
    await expect(llm.generate('Once', { promptLogprobs: 21 })).rejects.toThrow(
      /prompt_logprobs must be an integer from 0 to 20, got 21/,
    );
    await expect(llm.generate('Once', { maxTokens: 0 })).rejects.toThrow(
      /max_tokens must be an integer of at least 1, got 0/,
    );
  });
});

describe('promptLogprobs (CLI)', () => {
  it('generate --prompt-logprobs prints the JSON result with them', () => {
    const r = spawnSync(
      process.execPath,
      [
        MAIN,
        'generate',
        '--prompt-logprobs',
        '2',
        '--max-tokens',
        '0',
        '--threads',
        '1',
        'Once upon a time, there was a little girl',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as {
      promptTokenIds: number[];
      promptLogprobs: ({ logprob: number; topLogprobs: unknown[] } | null)[];
    };
    expect(out.promptTokenIds.slice(0, 9)).toEqual(golden.promptTokenIds.slice(0, 9)); // "Once upon a time, there was a"
    expect(out.promptLogprobs[0]).toBeNull();
    expect(out.promptLogprobs[1]!.topLogprobs.length).toBe(2);
    expect(Math.abs(out.promptLogprobs[1]!.logprob - golden.promptLogprobs[1]!.logprob)).toBeLessThanOrEqual(TOLERANCE);
  });
});

describe('perplexity', () => {
  it('equals the numpy reference (same windows) to 4 significant digits, ctx 128', async () => {
    const g = golden.perplexity.find((p) => p.ctx === 128)!;
    const chunks: number[] = [];
    const r = await llm.perplexity(fs.readFileSync(TEXT, 'utf8'), { ctx: 128, onChunk: (c) => chunks.push(c.chunk) });
    expect(r.chunks).toBe(g.chunks);
    expect(chunks).toEqual(Array.from({ length: g.chunks }, (_, i) => i + 1));
    expect(r.scoredTokens).toBe(g.chunks * 63);
    expect(r.ppl.toPrecision(4)).toBe(g.ppl.toPrecision(4));
    expect(Math.abs(r.ppl / g.ppl - 1)).toBeLessThan(1e-4);
    expect(Math.abs(r.error / g.error - 1)).toBeLessThan(1e-3);
  });

  it('a text shorter than 2 * ctx tokens is an error naming it and the minimum', async () => {
    await expect(perplexity(llm, 'Once upon a time', { ctx: 128 }, 'short.txt')).rejects.toThrow(PerplexityInputError);
    await expect(perplexity(llm, 'Once upon a time', { ctx: 128 }, 'short.txt')).rejects.toThrow(
      /short.txt has 5 tokens: perplexity with a context of 128 needs at least 256/,
    );
    await expect(llm.perplexity('Once upon a time', { ctx: 100000 })).rejects.toThrow(
      /ctx must be an integer from 4 to the context length 512/,
    );
  });

  it('CLI: running estimates, the final line, and exit 2 for a short file', () => {
    const g = golden.perplexity.find((p) => p.ctx === 512)!;
    const r = spawnSync(process.execPath, [MAIN, 'perplexity', '--ctx', '512', '--threads', '1', TEXT], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toMatch(/3161 tokens, 6 windows of 512/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\[1\][\d.]+ \+\/- [\d.]+, \[2\]/);
    const m = /Final estimate: PPL = ([\d.]+) \+\/- ([\d.]+)/.exec(r.stdout)!;
    expect(Number(m[1]).toPrecision(4)).toBe(g.ppl.toPrecision(4));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ppl-'));
    const short = path.join(dir, 'short.txt');
    fs.writeFileSync(short, 'Once upon a time there was a dog.');
    const bad = spawnSync(process.execPath, [MAIN, 'perplexity', short], { encoding: 'utf8', timeout: 60_000 });
    fs.rmSync(dir, { recursive: true });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain(`perplexity: ${short} has`);
    expect(bad.stderr).toContain('needs at least 1024 (2 * ctx)');
  });
});

describe('/v1/completions echo + logprobs', () => {
  it('returns the prompt tokens with their logprobs (first null) as OpenAI does; max_tokens 0 gives only the prompt', async () => {
    const ids = golden.promptTokenIds;
    const r = await client.completions.create({
      model: 'stories',
      prompt: ids,
      echo: true,
      logprobs: 3,
      max_tokens: 0,
    });
    const c = r.choices[0];
    const lp = c.logprobs!;
    expect(c.text).toBe(llm.tokenizer.decode(ids));
    expect(lp.tokens!.length).toBe(ids.length);
    expect(lp.token_logprobs![0]).toBeNull();
    expect(lp.top_logprobs![0]).toBeNull();
    expect(lp.text_offset![0]).toBe(0);
    for (let i = 1; i < ids.length; i++) {
      expect(Math.abs(lp.token_logprobs![i]! - golden.promptLogprobs[i]!.logprob)).toBeLessThanOrEqual(TOLERANCE);
      expect(Object.keys(lp.top_logprobs![i]!).length).toBeGreaterThanOrEqual(3);
      expect(lp.text_offset![i]).toBe(lp.text_offset![i - 1] + lp.tokens![i - 1].length);
    }
    expect(r.usage!.completion_tokens).toBe(0);
  });

  it('echo + logprobs with generated tokens: the prompt first, then the completion', async () => {
    const r = await client.completions.create({
      model: 'stories',
      prompt: 'Once upon a time',
      echo: true,
      logprobs: 1,
      max_tokens: 4,
      temperature: 0,
    });
    const lp = r.choices[0].logprobs!;
    const promptLen = (await llm.tokenize('Once upon a time')).length;
    expect(lp.tokens!.length).toBe(promptLen + 4);
    expect(lp.token_logprobs!.filter((x) => x === null).length).toBe(1);
    expect(r.choices[0].text.startsWith('Once upon a time')).toBe(true);
  });

  it('bad combinations are 400s naming the parameter', async () => {
    const post = (body: unknown) =>
      fetch(`${base}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    for (const [body, param] of [
      [{ prompt: 'Once', echo: true, logprobs: 1, n: 2 }, 'n'],
      [{ prompt: 'Once', echo: true, logprobs: 1, stream: true }, 'stream'],
      [{ prompt: 'Once', max_tokens: 0 }, 'max_tokens'],
      [{ prompt: 'Once', echo: true, logprobs: 21 }, 'logprobs'],
    ] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).toBe(param);
    }
  });
});
