// The engine thread's scheduling: chunked prefill mixed with decode, abort mid-prefill, fault
// isolation (a throwing callback, NaN logits of one sequence), and a script that never calls close().
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { makeTempModel, removeDir } from './helpers/models.js';
import { poisonEmbeddingRow } from './helpers/poison.js';

let dir: string;
let llm: LLM;
const greedy = { temperature: 0, ignoreEos: true };
// A prompt of 120 tokens the tokenizer never sees (ids in the middle of the vocabulary).
const longPrompt = Array.from({ length: 120 }, (_, i) => 1000 + ((i * 7919) % 5000));

beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  llm = await LLM.load(dir, { threads: 2, maxBatchTokens: 8 });
});
afterAll(async () => {
  await llm?.close();
  removeDir(dir);
});

describe('chunked prefill', () => {
  it('gives the same greedy tokens as one whole-prompt chunk (prefix cache off)', async () => {
    const whole = await LLM.load(dir, { threads: 1, maxBatchTokens: 256, prefixCaching: false });
    const chunked = await LLM.load(dir, { threads: 1, maxBatchTokens: 5, prefixCaching: false });
    try {
      const params = { ...greedy, maxTokens: 16 };
      const [a] = await whole.generate({ promptTokenIds: longPrompt }, params);
      const [b] = await chunked.generate({ promptTokenIds: longPrompt }, params);
      expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
      // And with other sequences decoding in the same steps.
      const [c, d] = await chunked.generate([{ promptTokenIds: [9, 10, 11] }, { promptTokenIds: longPrompt }], params);
      expect(d.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
      const [alone] = await whole.generate({ promptTokenIds: [9, 10, 11] }, params);
      expect(c.outputs[0].tokenIds).toEqual(alone.outputs[0].tokenIds);
    } finally {
      await Promise.all([whole.close(), chunked.close()]);
    }
  });

  it('a running stream keeps producing tokens while a long prompt is prefilled', async () => {
    const ac = new AbortController();
    let streamed = 0;
    const a = llm.submit(
      [9, 10, 11],
      { ...greedy, maxTokens: 2000, logprobs: 0 },
      {
        signal: ac.signal,
        onDelta: () => streamed++,
      },
    );
    while (streamed < 3) await new Promise((r) => setTimeout(r, 5));
    // 120 prompt tokens in steps of 8 rows, one of them A's: 18 steps before B's first token.
    const before = streamed;
    const b = await llm.submit(longPrompt, { ...greedy, maxTokens: 1 });
    const during = streamed - before;
    ac.abort();
    const ra = await a;
    expect(b.output.tokenIds).toHaveLength(1);
    expect(ra.output.finishReason).toBe('abort');
    // Each step gives A a token; a token whose text is incomplete UTF-8 is streamed with the next.
    expect(during).toBeGreaterThanOrEqual(10);
  });

  it('an abort during a long prefill ends it at the next step and frees its cache', async () => {
    const ac = new AbortController();
    const p = llm.submit(
      Array.from({ length: 2000 }, (_, i) => 2000 + i),
      { ...greedy, maxTokens: 4 },
      {
        signal: ac.signal,
      },
    );
    while (llm.load.running === 0) await new Promise((r) => setTimeout(r, 2));
    ac.abort();
    const r = await p;
    expect(r.output.finishReason).toBe('abort');
    expect(r.output.tokenIds).toEqual([]); // stopped before the prompt was read (250 steps)
    const s = await llm.stats();
    expect(s.running).toBe(0);
    expect(s.freeTokens).toBe(s.capacityTokens);
  });
});

describe('admission', () => {
  it('two prompts that cannot both fit in the KV cache run one after the other', async () => {
    // tiny: 512 bytes per token, so 64 KiB holds 128 tokens; each prompt needs 71 (5 blocks).
    const small = await LLM.load(dir, { threads: 1, kvCacheBytes: 64 * 1024, maxBatchTokens: 8 });
    try {
      const params = { ...greedy, maxTokens: 4 };
      const prompts = [longPrompt.slice(0, 70), longPrompt.slice(40, 110)].map((p) => ({ promptTokenIds: p }));
      const together = await small.generate(prompts, params);
      for (let i = 0; i < 2; i++) {
        const [alone] = await small.generate(prompts[i], params);
        expect(together[i].outputs[0].tokenIds).toEqual(alone.outputs[0].tokenIds);
        expect(together[i].outputs[0].finishReason).toBe('length');
      }
      // The second waited for the first to finish: its queue time covers the first's whole run.
      const [first, second] = together.map((r) => r.metrics);
      expect(second.queueSeconds).toBeGreaterThanOrEqual(first.totalSeconds - first.queueSeconds - 0.05);
    } finally {
      await small.close();
    }
  });
});

describe('fault isolation', () => {
  it('an onDelta that throws fails that request with its error; the others and the next one go on', async () => {
    const boom = new Error('boom in onDelta');
    const params = { ...greedy, maxTokens: 12 };
    const [ref] = await llm.generate({ promptTokenIds: [5, 6, 7] }, params);
    const bad = llm.submit([9, 10, 11], params, {
      onDelta: () => {
        throw boom;
      },
    });
    const good = llm.generate({ promptTokenIds: [5, 6, 7] }, params);
    await expect(bad).rejects.toBe(boom);
    expect((await good)[0].outputs[0].tokenIds).toEqual(ref.outputs[0].tokenIds);
    const [next] = await llm.generate({ promptTokenIds: [5, 6, 7] }, params);
    expect(next.outputs[0].tokenIds).toEqual(ref.outputs[0].tokenIds);
    const s = await llm.stats();
    expect(s.freeTokens).toBe(s.capacityTokens);
  });

  it('NaN logits fail only the sequence that has them, with a clear error', async () => {
    const poisoned = makeTempModel({ preset: 'tiny', seed: 0, overrides: { tie_word_embeddings: false } });
    const token = 4000;
    poisonEmbeddingRow(poisoned, token);
    const p = await LLM.load(poisoned, { threads: 2 });
    try {
      const params = { ...greedy, maxTokens: 8 };
      const [ref] = await p.generate({ promptTokenIds: [9, 10, 11] }, params);
      const results = await Promise.allSettled([
        p.generate({ promptTokenIds: [9, token, 11] }, params),
        p.generate({ promptTokenIds: [9, 10, 11] }, params),
      ]);
      expect(results[0].status).toBe('rejected');
      expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/NaN logits .* NaN or Inf values/);
      expect(results[1].status).toBe('fulfilled');
      expect((results[1] as PromiseFulfilledResult<(typeof ref)[]>).value[0].outputs[0].tokenIds).toEqual(
        ref.outputs[0].tokenIds,
      );
      const s = await p.stats();
      expect(s.freeTokens).toBe(s.capacityTokens);
    } finally {
      await p.close();
      removeDir(poisoned);
    }
  });
});

describe('process lifetime', () => {
  it('a script that never calls close() exits by itself', async () => {
    const script = path.join(dir, 'no-close.mjs');
    const entry = new URL('../dist/src/index.js', import.meta.url).href;
    fs.writeFileSync(
      script,
      `import { LLM } from ${JSON.stringify(entry)};\n` +
        `const llm = await LLM.load(${JSON.stringify(dir)}, { threads: 2 });\n` +
        `const [r] = await llm.generate('Hello', { temperature: 0, maxTokens: 4 });\n` +
        `console.log('generated', r.outputs[0].tokenIds.length);\n`,
    );
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [script], { timeout: 100_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      );
      child.stdin?.end();
    });
    expect(out.stderr).toBe('');
    expect(out.stdout).toBe('generated 4\n');
    expect(out.code).toBe(0);
  });
});
