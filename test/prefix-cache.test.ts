// Automatic prefix caching over the paged KV cache: exact logits on a hit, chat turns that
// prefill only their new tokens, LRU eviction under a small budget, shared prefixes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { BLOCK_SIZE, KV_CACHE_DTYPES } from '../src/model/kv-cache.js';
import { loadModel } from '../src/model/load.js';
import type { Qwen2Model } from '../src/model/qwen2.js';
import { makeTempModel, removeDir } from './helpers/models.js';

let dir: string;
const greedy = { temperature: 0, ignoreEos: true, maxTokens: 8 };
const ids = (n: number, from: number) => Array.from({ length: n }, (_, i) => from + ((i * 7919) % 3000));

beforeAll(() => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
});
afterAll(() => removeDir(dir));

/** Compute positions [from, tokens.length) of `seq` in chunks of 7 rows; logits of the last one. */
async function prefill(model: Qwen2Model, seq: number, tokens: number[], from: number): Promise<Float32Array> {
  let logits = new Float32Array(0);
  for (let p = from; p < tokens.length; p += 7) {
    const rows = tokens.slice(p, p + 7).map((token, i) => ({ seq, token, pos: p + i }));
    logits = await model.forwardBatch(rows, p + 7 >= tokens.length ? 1 : 0);
  }
  return logits;
}

// Every cache dtype: a hit reuses blocks stored in that dtype, so it must equal a fresh prefill exactly.
for (const kvCacheDtype of KV_CACHE_DTYPES)
  describe(`KvCache prefix matching (${kvCacheDtype} cache)`, () => {
    let model: Qwen2Model;
    beforeAll(async () => {
      model = await loadModel(dir, { threads: 2, maxSequences: 4, kvCacheDtype });
    });
    afterAll(async () => {
      await model?.close();
    });

    it('logits with a cache hit equal those computed from scratch (1e-5)', async () => {
      const cache = model.kvCache;
      const a = ids(70, 100);
      await prefill(model, 0, a, 0);
      cache.registerFullBlocks(0, (p) => a[p]);
      // b shares a's first 53 tokens: 3 full blocks (48 tokens) can be reused.
      const b = [...a.slice(0, 53), ...ids(30, 5000)];
      const cached = cache.matchPrefix(1, b, b.length - 1);
      expect(cached).toBe(3 * BLOCK_SIZE);
      const hit = await prefill(model, 1, b, cached);
      const scratch = await prefill(model, 2, b, 0);
      let maxDiff = 0;
      for (let i = 0; i < hit.length; i++) maxDiff = Math.max(maxDiff, Math.abs(hit[i] - scratch[i]));
      expect(maxDiff).toBeLessThanOrEqual(1e-5);
      // The shared blocks stay read-only: a's cache still gives a's logits for its next token.
      const next = await model.forwardBatch([{ seq: 0, token: 42, pos: a.length }], 1);
      const fresh = await prefill(model, 3, [...a, 42], 0);
      for (let i = 0; i < next.length; i++) expect(Math.abs(next[i] - fresh[i])).toBeLessThanOrEqual(1e-5);
      for (let s = 0; s < 4; s++) cache.release(s);
      expect(cache.freeTokens).toBe(cache.capacityTokens);
    });

    it('never matches the whole prompt: the last token is left to compute', async () => {
      const cache = model.kvCache;
      const a = ids(32, 300);
      await prefill(model, 0, a, 0);
      cache.registerFullBlocks(0, (p) => a[p]);
      cache.release(0);
      expect(cache.matchPrefix(1, a, a.length - 1)).toBe(BLOCK_SIZE);
      cache.release(1);
      expect(cache.matchPrefix(1, a, a.length)).toBe(2 * BLOCK_SIZE);
      cache.release(1);
    });
  });

describe('LLM with prefix caching', () => {
  let llm: LLM;
  let plain: LLM;
  beforeAll(async () => {
    [llm, plain] = await Promise.all([
      LLM.load(dir, { threads: 1 }),
      LLM.load(dir, { threads: 1, prefixCaching: false }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([llm?.close(), plain?.close()]);
  });

  it('turn 2 of a chat prefills only its new tokens', async () => {
    const messages = [
      { role: 'system', content: 'You are a helpful assistant. Answer briefly and precisely, in English.' },
      { role: 'user', content: 'What is a stock market, and why do prices move every day?' },
    ];
    const [t1] = await llm.chat(messages, greedy);
    expect(t1.metrics.cachedTokens).toBe(0);
    const turn2 = [...messages, { role: 'assistant', content: t1.outputs[0].text }, { role: 'user', content: 'Why?' }];
    const [t2] = await llm.chat(turn2, greedy);
    // Computed in turn 1: its prompt and every generated token but the last.
    const computed = [...t1.promptTokenIds, ...t1.outputs[0].tokenIds.slice(0, -1)];
    let common = 0;
    while (common < computed.length && computed[common] === t2.promptTokenIds[common]) common++;
    expect(common).toBeGreaterThanOrEqual(t1.promptTokenIds.length);
    const expected = Math.floor(Math.min(common, t2.promptTokenIds.length - 1) / BLOCK_SIZE) * BLOCK_SIZE;
    expect(t2.metrics.cachedTokens).toBe(expected);
    expect(t2.metrics.cachedTokens).toBeGreaterThanOrEqual(Math.floor(t1.promptTokenIds.length / BLOCK_SIZE) * 16);
    const [ref] = await plain.chat(turn2, greedy);
    expect(ref.metrics.cachedTokens).toBe(0);
    expect(t2.outputs[0].tokenIds).toEqual(ref.outputs[0].tokenIds);
    expect(llm.state.cachedPromptTokens).toBeGreaterThanOrEqual(expected);
  });

  it('concurrent sequences sharing a cached prefix each get their own continuation', async () => {
    const system = ids(50, 9000);
    await llm.generate({ promptTokenIds: system }, greedy); // caches the first 48 tokens
    const prompts = [1, 2, 3].map((k) => ({ promptTokenIds: [...system, ...ids(5 + k, 20000 + k * 100)] }));
    const shared = await llm.generate(prompts, greedy);
    const alone = await plain.generate(prompts, greedy);
    shared.forEach((r, i) => {
      expect(r.metrics.cachedTokens).toBe(48);
      expect(r.outputs[0].tokenIds).toEqual(alone[i].outputs[0].tokenIds);
    });
    expect(new Set(shared.map((r) => r.outputs[0].tokenIds.join())).size).toBe(3);
  });
});

describe('eviction', () => {
  it('under a small KV budget, cached blocks are evicted least recently used first, results unchanged', async () => {
    // tiny: 512 bytes per token, so 64 KiB holds 128 tokens (8 blocks).
    const small = await LLM.load(dir, { threads: 1, kvCacheBytes: 64 * 1024 });
    const plain = await LLM.load(dir, { threads: 1, prefixCaching: false });
    try {
      const x = { promptTokenIds: ids(40, 100) };
      const y = { promptTokenIds: ids(100, 7000) };
      const [x1] = await small.generate(x, greedy);
      // x computed 47 positions (40 + 8 - 1): its 2 full blocks stay cached after it finished.
      expect((await small.stats()).cachedIdleTokens).toBe(32);
      const [x2] = await small.generate(x, greedy);
      expect(x2.metrics.cachedTokens).toBe(32);
      // y needs 7 of the 8 blocks: one of x's must go, the tail first (released last-block-first).
      const [y1] = await small.generate(y, greedy);
      expect(y1.metrics.cachedTokens).toBe(0);
      const [x3] = await small.generate(x, greedy);
      expect(x3.metrics.cachedTokens).toBe(16);
      const [xr] = await plain.generate(x, greedy);
      const [yr] = await plain.generate(y, greedy);
      for (const r of [x1, x2, x3]) expect(r.outputs[0].tokenIds).toEqual(xr.outputs[0].tokenIds);
      expect(y1.outputs[0].tokenIds).toEqual(yr.outputs[0].tokenIds);
      const s = await small.stats();
      expect(s.freeTokens).toBe(s.capacityTokens);
    } finally {
      await Promise.all([small.close(), plain.close()]);
    }
  });
});
