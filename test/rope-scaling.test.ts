// rope_scaling "yarn" and "dynamic" against the float64 numpy goldens of
// tools/rope_scaling_reference.py (transformers' formulas written out independently), the context
// limit they give, and the forward pass of a tiny model with each against the reference forward.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { parseModelConfig } from '../src/model/config.js';
import { newReferenceCache, referenceForward, referenceWeights } from '../src/model/reference.js';
import { ropeAttentionFactor, ropeFrequencies, ropeTables } from '../src/tensor/ops.js';
import { makeTempModel, removeDir } from './helpers/models.js';

interface GoldenCase {
  name: string;
  head_dim: number;
  theta: number;
  max_pos: number;
  rope_scaling: Record<string, unknown>;
  inv_freq?: number[];
  inv_freq_by_seq_len?: { seq_len: number; inv_freq: number[] }[];
  attention_factor: number;
  rows: { pos: number; cos: number[]; sin: number[] }[];
}

const golden = JSON.parse(
  fs.readFileSync(fileURLToPath(new URL('./fixtures/rope-scaling.json', import.meta.url)), 'utf8'),
) as { cases: GoldenCase[] };

function configOf(c: GoldenCase) {
  return parseModelConfig({
    model_type: 'qwen2',
    hidden_size: c.head_dim * 2,
    intermediate_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 8,
    max_position_embeddings: c.max_pos,
    rope_theta: c.theta,
    rope_scaling: c.rope_scaling,
  });
}

function maxRelError(got: ArrayLike<number>, want: number[]): number {
  expect(got.length).toBe(want.length);
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]) / Math.abs(want[i]));
  return err;
}

describe('rope_scaling yarn and dynamic against the numpy goldens', () => {
  for (const c of golden.cases) {
    it(`${c.name}: frequencies (1e-12 relative), attention factor, and cos/sin rows (f32, 1e-6)`, () => {
      const config = configOf(c);
      const s = config.ropeScaling;
      expect(s?.type).toBe(c.rope_scaling.rope_type ?? c.rope_scaling.type);
      expect(ropeAttentionFactor(s)).toBeCloseTo(c.attention_factor, 14);
      if (c.inv_freq) expect(maxRelError(ropeFrequencies(c.head_dim, c.theta, s), c.inv_freq)).toBeLessThan(1e-12);
      for (const f of c.inv_freq_by_seq_len ?? [])
        expect(maxRelError(ropeFrequencies(c.head_dim, c.theta, s, f.seq_len), f.inv_freq)).toBeLessThan(1e-12);

      // The tables the forward pass uses, for the rows that fit in a small table; the far
      // positions from the frequencies directly (a 131k-row table is 64 MB).
      const half = c.head_dim / 2;
      const tablePositions = 2048;
      const tables = ropeTables(tablePositions, c.head_dim, c.theta, s);
      let err = 0;
      for (const row of c.rows) {
        for (let j = 0; j < half; j++) {
          let cos: number, sin: number;
          if (row.pos < tablePositions) {
            cos = tables.cos[row.pos * half + j];
            sin = tables.sin[row.pos * half + j];
          } else {
            const freq = ropeFrequencies(c.head_dim, c.theta, s, row.pos + 1);
            cos = Math.cos(row.pos * freq[j]) * ropeAttentionFactor(s);
            sin = Math.sin(row.pos * freq[j]) * ropeAttentionFactor(s);
          }
          err = Math.max(err, Math.abs(cos - row.cos[j]), Math.abs(sin - row.sin[j]));
        }
      }
      expect(err).toBeLessThan(1e-6);
    });
  }

  it('the context limit is the original length times the factor (Qwen2.5 yarn 4 x 32,768 = 131,072)', () => {
    const byName = (name: string) => configOf(golden.cases.find((c) => c.name === name)!);
    expect(byName('qwen2.5-yarn-4').contextLimit).toBe(131072);
    expect(byName('qwen3-yarn-4').contextLimit).toBe(131072);
    expect(byName('dynamic-2').contextLimit).toBe(65536);
    expect(configOf({ ...golden.cases[0], rope_scaling: { rope_type: 'default' } }).contextLimit).toBe(32768);
  });

  it('bad yarn fields are errors naming the field', () => {
    const c = golden.cases[0];
    expect(() => configOf({ ...c, rope_scaling: { rope_type: 'yarn' } })).toThrow(
      /field "rope_scaling.factor" must be a positive number, got undefined/,
    );
    expect(() =>
      configOf({ ...c, rope_scaling: { rope_type: 'yarn', factor: 4, beta_fast: 1, beta_slow: 8 } }),
    ).toThrow(/rope_scaling.beta_fast" \(1\) must not be smaller than beta_slow \(8\)/);
    expect(() => configOf({ ...c, rope_scaling: { rope_type: 'longrope', factor: 4 } })).toThrow(
      /supported rope scaling types are "linear", "llama3", "yarn", "dynamic" and "default"/,
    );
  });
});

describe('the forward pass with yarn and dynamic rope scaling', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach(removeDir));

  const cases = [
    // head_dim 16, original 16: dimension pair 0 keeps its frequency, the others are divided by 4;
    // q and k are scaled by 1 + 0.1 ln 4.
    { name: 'yarn', rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 } },
    // max_position_embeddings 32: positions from 32 on rotate with a raised theta.
    { name: 'dynamic', rope_scaling: { rope_type: 'dynamic', factor: 2 }, max_position_embeddings: 32 },
  ];
  for (const { name, rope_scaling, max_position_embeddings } of cases) {
    it(`${name}: prefill == token-by-token decode == the reference forward, which the scaling changes`, async () => {
      const dir = makeTempModel({
        preset: 'tiny',
        seed: 5,
        overrides: { rope_scaling, ...(max_position_embeddings ? { max_position_embeddings } : {}) },
      });
      dirs.push(dir);
      const model = await loadModel(dir, { threads: 2, maxSequences: 2, maxBatchTokens: 20 });
      try {
        const c = model.config;
        expect(c.ropeScaling?.type).toBe(name);
        const prompt = Array.from({ length: 45 }, (_, i) => (i * 7919 + 13) % 150000);
        const vocab = c.vocabSize;
        const prefill = model.forward(prompt, { allLogits: true, seq: 0 });
        const w = referenceWeights(model.weights);
        const cache = newReferenceCache(c, prompt.length),
          plainCache = newReferenceCache(c, prompt.length);
        let decodeErr = 0,
          refErr = 0,
          scalingEffect = 0;
        for (let i = 0; i < prompt.length; i++) {
          const decoded = model.forward([prompt[i]], { startPos: i, seq: 1 });
          const ref = referenceForward(c, w, cache, prompt[i], i);
          const plain = referenceForward({ ...c, ropeScaling: null }, w, plainCache, prompt[i], i);
          for (let t = 0; t < vocab; t++) {
            decodeErr = Math.max(decodeErr, Math.abs(decoded[t] - prefill[i * vocab + t]));
            refErr = Math.max(refErr, Math.abs(ref[t] - prefill[i * vocab + t]));
            scalingEffect = Math.max(scalingEffect, Math.abs(plain[t] - ref[t]));
          }
        }
        expect(decodeErr).toBeLessThan(1e-5);
        expect(refErr).toBeLessThan(1e-4);
        expect(scalingEffect).toBeGreaterThan(1e-2);
      } finally {
        await model.close();
      }
    });
  }
});
