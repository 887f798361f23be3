// Speculative decoding (ngram): the proposer, the KV cache cut, and exactness end to end on the
// trained stories260K: greedy token ids identical with and without speculation for every weight
// format; seeded sampling (penalties, logit bias, min_tokens, stop strings) identical too, since
// each position is sampled with the same logits and draws; a chi-square test over sampled
// continuations with different seeds; stops and maxTokens inside an accepted run; abort; prefix
// caching after rejected proposals.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { NgramProposer, resolveSpeculativeConfig } from '../src/engine/speculation/ngram.js';
import { BLOCK_SIZE } from '../src/model/kv-cache.js';
import { loadModel } from '../src/model/load.js';
import { WEIGHT_FORMATS } from '../src/model/load.js';
import { Metrics } from '../src/server/metrics.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const NGRAM = { method: 'ngram', num_speculative_tokens: 4 } as const;
// Propose whatever extra rows cost (the engine threads read it when they start): on this tiny f32
// model the measured costs make the engine propose only near-certain runs, and these tests need
// rejected proposals too. The cost-based choice itself: test/speculation-gate.test.ts.
process.env.QWEN_TS_DEBUG_SPEC_PROPOSE_ALWAYS = '1';

// A prompt the model partly repeats (its greedy story, then the story's opening again): proposals
// are made and some are accepted, some rejected. And run.c's two reference prompts.
const STORY =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do.";
const PROMPTS = [STORY + '\nOnce upon a time', 'Once upon a time', 'Tom and his dog'];

describe('NgramProposer', () => {
  const p = (max = 4, min = 2, k = 4) =>
    new NgramProposer(
      resolveSpeculativeConfig({
        method: 'ngram',
        numSpeculativeTokens: k,
        promptLookupMax: max,
        promptLookupMin: min,
      }),
    );

  it('proposes what followed the latest earlier occurrence of the longest matching suffix', () => {
    // ... 1 2 3 [9 9] ... 1 2 3 [7 7 7] ... 2 3  -> the latest "2 3" is followed by 7 7 7
    expect(p().propose([1, 2, 3, 9, 9, 5, 1, 2, 3, 7, 7, 7, 5], [2, 3], 4)).toEqual([7, 7, 7, 5]);
    // The longer suffix "1 2 3" wins over a later "2 3".
    expect(p().propose([1, 2, 3, 8, 8, 0, 2, 3, 6], [4, 1, 2, 3], 2)).toEqual([8, 8]);
  });

  it('continues a repeating pattern past the end of the sequence', () => {
    expect(p().propose([5, 6, 5, 6], [5], 4)).toEqual([6, 5, 6, 5]);
  });

  it('proposes nothing without a match of at least promptLookupMin tokens, or with no room', () => {
    expect(p().propose([1, 2, 3, 4], [5, 6], 4)).toEqual([]);
    expect(p(4, 3).propose([1, 2, 9, 1, 2], [], 4)).toEqual([]);
    expect(p(4, 2).propose([1, 2, 9, 1, 2], [], 4)).toEqual([9, 1, 2, 9]);
    expect(p(4, 2).propose([1, 2, 9, 1, 2], [], 0)).toEqual([]);
    expect(p(4, 2, 2).propose([1, 2, 9, 1, 2], [], 4)).toEqual([9, 1]);
  });

  it("resolves vLLM's config with snake_case or camelCase names and rejects bad ones by name", () => {
    expect(resolveSpeculativeConfig(NGRAM)).toEqual({
      method: 'ngram',
      numSpeculativeTokens: 4,
      promptLookupMax: 4,
      promptLookupMin: 2,
    });
    expect(resolveSpeculativeConfig({ method: 'ngram', numSpeculativeTokens: 3, prompt_lookup_max: 1 })).toEqual({
      method: 'ngram',
      numSpeculativeTokens: 3,
      promptLookupMax: 1,
      promptLookupMin: 1,
    });
    expect(() => resolveSpeculativeConfig({ method: 'eagle', num_speculative_tokens: 4 })).toThrow(
      /method must be "ngram"/,
    );
    expect(() => resolveSpeculativeConfig({ method: 'ngram' })).toThrow(/num_speculative_tokens is required/);
    expect(() => resolveSpeculativeConfig({ method: 'ngram', num_speculative_tokens: 0 })).toThrow(
      /numSpeculativeTokens must be an integer from 1/,
    );
    expect(() => resolveSpeculativeConfig({ ...NGRAM, prompt_lookup_min: 5 })).toThrow(/must not exceed/);
    expect(() => resolveSpeculativeConfig({ ...NGRAM, draft_model: 'x' })).toThrow(/unknown field "draft_model"/);
    expect(() => resolveSpeculativeConfig('ngram')).toThrow(/must be an object/);
  });
});

describe('KvCache.truncate', () => {
  it('forgets positions past the cut, keeps the blocks, never cuts a registered block', async () => {
    const model = await loadModel(MODEL, { threads: 1, maxSequences: 2, contextLength: 128 });
    try {
      const cache = model.kvCache;
      const ids = Array.from({ length: 40 }, (_, i) => 3 + ((i * 37) % 500));
      await model.forward(ids, { startPos: 0, seq: 0 });
      const free = cache.freeTokens;
      cache.registerFullBlocks(0, (p) => ids[p]);
      cache.truncate(0, 35);
      expect(cache.lengths[0]).toBe(35);
      expect(cache.freeTokens).toBe(free);
      expect(() => cache.truncate(0, 36)).toThrow(/from 32 \(its registered blocks\) to 35/);
      expect(() => cache.truncate(0, 2 * BLOCK_SIZE - 1)).toThrow(RangeError);
      // Rows after the cut start at the new length; logits equal a fresh computation.
      const next = await model.forwardBatch([{ seq: 0, token: 7, pos: 35 }], 1);
      const fresh = await model.forward([...ids.slice(0, 35), 7], { startPos: 0, seq: 1 });
      expect(Array.from(next)).toEqual(Array.from(fresh));
    } finally {
      await model.close();
    }
  });
});

describe('greedy: identical token ids with and without speculation', () => {
  for (const weights of WEIGHT_FORMATS) {
    it(`${weights}`, async () => {
      const plain = await LLM.load(MODEL, { threads: 2, weights });
      const spec = await LLM.load(MODEL, { threads: 2, weights, speculativeConfig: NGRAM });
      try {
        expect(spec.model.speculativeConfig).toEqual(resolveSpeculativeConfig(NGRAM));
        let accepted = 0,
          rejected = 0;
        for (const [prompt, maxTokens] of [
          [PROMPTS[0], 80],
          [PROMPTS[2], 40],
        ] as const) {
          const params = { temperature: 0, maxTokens };
          const [a] = await plain.generate(prompt, params);
          const [b] = await spec.generate(prompt, params);
          expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
          expect(b.outputs[0].text).toBe(a.outputs[0].text);
          expect(a.metrics.specDraftTokens).toBe(0);
          accepted += b.metrics.specAcceptedTokens;
          rejected += b.metrics.specDraftTokens - b.metrics.specAcceptedTokens;
        }
        // Both paths were taken: accepted proposals and rejected ones (q4_0's text departs from
        // f32's and repeats itself less: few proposals survive the acceptance pause there).
        expect(accepted).toBeGreaterThan(0);
        expect(rejected).toBeGreaterThan(0);
        expect(accepted + rejected).toBeGreaterThan(5);
      } finally {
        await plain.close();
        await spec.close();
      }
    });
  }
});

describe('engine behaviour with speculation (f32)', () => {
  let plain: LLM;
  let spec: LLM;
  beforeAll(async () => {
    plain = await LLM.load(MODEL, { threads: 2, maxSequences: 8 });
    spec = await LLM.load(MODEL, { threads: 2, maxSequences: 8, speculativeConfig: NGRAM });
  });
  afterAll(async () => {
    await plain?.close();
    await spec?.close();
  });

  it('seeded sampling with penalties, logit bias, min_tokens and stop strings gives the same tokens', async () => {
    const cases = [
      { temperature: 0.7, seed: 1 },
      { temperature: 1, topK: 20, topP: 0.9, seed: 2 },
      { temperature: 0.5, minP: 0.1, repetitionPenalty: 1.2, presencePenalty: 0.3, frequencyPenalty: 0.2, seed: 3 },
      { temperature: 0.4, logitBias: { 261: 2, 378: -3 }, minTokens: 30, seed: 4 },
      { temperature: 0, stop: ['park', 'ball'] },
      { temperature: 0.3, stop: ['Lily was'], seed: 5 },
    ];
    let drafts = 0;
    for (const params of cases) {
      for (const prompt of [PROMPTS[0]]) {
        const p = { ...params, maxTokens: 40 };
        const [a] = await plain.generate(prompt, p);
        const [b] = await spec.generate(prompt, p);
        expect(b.outputs[0].tokenIds, JSON.stringify(params)).toEqual(a.outputs[0].tokenIds);
        expect(b.outputs[0].text).toBe(a.outputs[0].text);
        expect(b.outputs[0].finishReason).toBe(a.outputs[0].finishReason);
        expect(b.outputs[0].stopReason).toBe(a.outputs[0].stopReason);
        drafts += b.metrics.specDraftTokens;
      }
    }
    expect(drafts).toBeGreaterThan(20);
  });

  it('maxTokens and stop strings that fall inside an accepted run cut it exactly there', async () => {
    const [ref] = await plain.generate(PROMPTS[0], { temperature: 0, maxTokens: 40 });
    const text = ref.outputs[0].text;
    for (const maxTokens of [1, 2, 3, 5, 8, 11, 13]) {
      const [b] = await spec.generate(PROMPTS[0], { temperature: 0, maxTokens });
      expect(b.outputs[0].tokenIds).toEqual(ref.outputs[0].tokenIds.slice(0, maxTokens));
      expect(b.outputs[0].finishReason).toBe('length');
    }
    // Stop at every word of the reference text in turn: each cut falls where plain decoding cuts.
    for (const word of [...new Set(text.split(/[ ,.\n"]+/).filter((w) => w.length > 2))].slice(0, 6)) {
      const [a] = await plain.generate(PROMPTS[0], { temperature: 0, maxTokens: 40, stop: [word] });
      const [b] = await spec.generate(PROMPTS[0], { temperature: 0, maxTokens: 40, stop: [word] });
      expect(b.outputs[0].text).toBe(a.outputs[0].text);
      expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
      expect(b.outputs[0].stopReason).toBe(word);
    }
  });

  it('streams the same text in whole deltas, and an abort ends the stream', async () => {
    const deltas: string[] = [];
    for await (const d of spec.stream(PROMPTS[0], { temperature: 0, maxTokens: 60 })) deltas.push(d);
    const [a] = await plain.generate(PROMPTS[0], { temperature: 0, maxTokens: 60 });
    expect(deltas.join('')).toBe(a.outputs[0].text);

    const controller = new AbortController();
    let finish = '';
    let got = '';
    const stream = spec.stream(
      PROMPTS[0],
      { temperature: 0, maxTokens: 200 },
      { signal: controller.signal, onFinish: (o) => (finish = o.finishReason) },
    );
    try {
      for await (const d of stream) {
        got += d;
        controller.abort();
      }
    } catch (e) {
      expect((e as Error).name).toBe('AbortError');
    }
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(a.outputs[0].text.length);
    expect(finish === '' || finish === 'abort').toBe(true);
    // The engine goes on serving.
    const [after] = await spec.generate(PROMPTS[1], { temperature: 0, maxTokens: 20 });
    expect(after.outputs[0].tokenIds).toHaveLength(20);
  });

  it('8 concurrent requests give the same tokens as without speculation', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => PROMPTS[i % 3] + (i >= 3 ? ' ' + 'Lily'.repeat(i - 2) : ''));
    const params = { temperature: 0, maxTokens: 30 };
    const a = await plain.generate(prompts, params);
    const b = await spec.generate(prompts, params);
    for (let i = 0; i < 8; i++) expect(b[i].outputs[0].tokenIds).toEqual(a[i].outputs[0].tokenIds);
  });

  it('a prefix-cache block never holds a rejected token: a follow-up prompt reusing them decodes the same', async () => {
    const [first] = await spec.generate(PROMPTS[0], { temperature: 0, maxTokens: 60 });
    expect(first.metrics.specDraftTokens).toBeGreaterThan(first.metrics.specAcceptedTokens);
    const follow = { promptTokenIds: [...first.promptTokenIds, ...first.outputs[0].tokenIds] };
    const [b] = await spec.generate(follow, { temperature: 0, maxTokens: 20 });
    expect(b.metrics.cachedTokens).toBeGreaterThan(first.promptTokenIds.length);
    const [a] = await plain.generate(follow, { temperature: 0, maxTokens: 20 });
    expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
  });

  it('the engine state counts proposals and acceptances', async () => {
    const before = await spec.stats();
    const [r] = await spec.generate(PROMPTS[0], { temperature: 0, maxTokens: 30 });
    const after = await spec.stats();
    expect(after.specDraftTokens - before.specDraftTokens).toBe(r.metrics.specDraftTokens);
    expect(after.specAcceptedTokens - before.specAcceptedTokens).toBe(r.metrics.specAcceptedTokens);
    expect(after.specDrafts).toBeGreaterThan(before.specDrafts);
  });
});

describe('structured output with speculation (synthetic tiny Qwen2.5, its tokenizer)', () => {
  it('a regex-constrained generation, greedy and seeded, gives the same tokens with and without', async () => {
    const dir = makeTempModel({ preset: 'tiny', seed: 0 });
    const plain = await LLM.load(dir, { threads: 2 });
    const spec = await LLM.load(dir, { threads: 2, speculativeConfig: NGRAM });
    try {
      // The prompt repeats the pattern's text, so proposals are made inside the constrained value.
      const prompt = 'id: abc-123-abc-123-abc-123; id: abc-123-abc-123-abc-123; id: abc-';
      const structuredOutput = { type: 'regex', pattern: '([a-c]{3}-[0-9]{3}-){2,6}done' } as const;
      let drafts = 0;
      for (const p of [{ temperature: 0 }, { temperature: 1, seed: 3, topK: 5 }]) {
        const params = { ...p, maxTokens: 14, structuredOutput };
        const [a] = await plain.generate(prompt, params);
        const [b] = await spec.generate(prompt, params);
        expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
        expect(a.outputs[0].text).toMatch(/^([a-c]{3}-[0-9]{3}-){2,6}(done)?$/);
        drafts += b.metrics.specDraftTokens;
      }
      expect(drafts).toBeGreaterThan(0);
    } finally {
      await plain.close();
      await spec.close();
      removeDir(dir);
    }
  }, 300_000);
});

describe('sampling distribution: chi-square, with and without speculation (different seeds)', () => {
  it('the first four tokens of 400 sampled continuations agree in distribution', async () => {
    const plain = await LLM.load(MODEL, { threads: 2, maxSequences: 16 });
    const spec = await LLM.load(MODEL, { threads: 2, maxSequences: 16, speculativeConfig: NGRAM });
    try {
      // A prompt whose continuation the proposer guesses (the repeated phrase): most steps verify
      // proposals, mostly rejected at this temperature, sometimes accepted.
      const prompt = 'Lily said, "I want to play with the ball." Lily said, "I want to play with the ball." Lily said,';
      const N = 400;
      const ids = plain.tokenizer.encode(prompt);
      const run = async (llm: LLM, seed0: number) => {
        const outs = await Promise.all(
          Array.from({ length: N }, (_, i) => llm.submit(ids, { temperature: 0.8, maxTokens: 4, seed: seed0 + i })),
        );
        return outs.map((o) => ({ key: o.output.tokenIds.join(','), m: o.metrics }));
      };
      const a = await run(plain, 0);
      const b = await run(spec, 1_000_000);
      expect(b.reduce((s, r) => s + r.m.specDraftTokens, 0)).toBeGreaterThan(N);
      expect(b.reduce((s, r) => s + r.m.specAcceptedTokens, 0)).toBeGreaterThan(10);
      // Categories: continuations seen at least 10 times in both runs together, the rest pooled.
      const count = (rs: { key: string }[]) => {
        const m = new Map<string, number>();
        for (const r of rs) m.set(r.key, (m.get(r.key) ?? 0) + 1);
        return m;
      };
      const ca = count(a),
        cb = count(b);
      const keys = [...new Set([...ca.keys(), ...cb.keys()])];
      const big = keys.filter((k) => (ca.get(k) ?? 0) + (cb.get(k) ?? 0) >= 10);
      const cells = big.map((k) => [ca.get(k) ?? 0, cb.get(k) ?? 0]);
      const rest = [N - cells.reduce((s, c) => s + c[0], 0), N - cells.reduce((s, c) => s + c[1], 0)];
      if (rest[0] + rest[1] > 0) cells.push(rest);
      expect(cells.length).toBeGreaterThanOrEqual(5);
      // Two samples of equal size: chi2 = sum (a - b)^2 / (a + b), df = cells - 1.
      const chi2 = cells.reduce((s, [x, y]) => s + (x - y) ** 2 / (x + y), 0);
      const df = cells.length - 1;
      // Critical value at p = 0.001 (Wilson-Hilferty approximation of the chi-square quantile).
      const z = 3.09;
      const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
      expect(chi2, `chi2 ${chi2.toFixed(1)} with ${df} degrees of freedom`).toBeLessThan(critical);
    } finally {
      await plain.close();
      await spec.close();
    }
  }, 300_000);
});

describe('options', () => {
  it('LLM.load rejects a bad speculative config before loading, naming the field', async () => {
    await expect(
      LLM.load(MODEL, { speculativeConfig: { method: 'ngram', num_speculative_tokens: 99 } }),
    ).rejects.toThrow(/speculativeConfig.numSpeculativeTokens must be an integer from 1 to 16, got 99/);
  });
});

describe('CLI and /metrics', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [MAIN, 'generate', '--threads', '1', ...args], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: '1' },
    });

  it('generate --speculative-config: same text, acceptance in the stats line', () => {
    const prompt = 'Tom and his dog';
    const plain = cli('--temperature', '0', '--max-tokens', '60', prompt);
    const spec = cli(
      '--temperature',
      '0',
      '--max-tokens',
      '60',
      '--speculative-config',
      '{"method":"ngram","num_speculative_tokens":4}',
      prompt,
    );
    expect(spec.status, spec.stderr).toBe(0);
    expect(spec.stdout).toBe(plain.stdout);
    expect(spec.stderr).toMatch(/accepted \d+\/\d+ proposed \(\d+%\)/);
    expect(plain.stderr).not.toMatch(/proposed/);
  });

  it('a bad --speculative-config is a one-line error naming the field', () => {
    const bad = cli('--speculative-config', '{"method":"ngram"}', 'Hi');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--speculative-config: num_speculative_tokens is required');
    const notJson = cli('--speculative-config', 'ngram', 'Hi');
    expect(notJson.status).toBe(2);
    expect(notJson.stderr).toContain('--speculative-config must be JSON');
  });

  it("/metrics exposes vLLM's spec_decode counters and the mean acceptance length", () => {
    const m = new Metrics({
      engine: () => ({ running: 0, waiting: 0, specDrafts: 10, specDraftTokens: 30, specAcceptedTokens: 15 }),
      server: () => ({ running: 0, queued: 0 }),
    });
    const text = m.render();
    expect(text).toContain('qwen_ts_spec_decode_num_drafts_total 10\n');
    expect(text).toContain('qwen_ts_spec_decode_num_draft_tokens_total 30\n');
    expect(text).toContain('qwen_ts_spec_decode_num_accepted_tokens_total 15\n');
    expect(text).toContain('qwen_ts_spec_decode_mean_acceptance_length 2.5\n');
  });
});
