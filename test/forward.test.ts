// The forward pass against the float64 numpy reference (tools/reference_qwen2.py), layer by layer
// and at the logits, for one synthetic model of each family; the plain reference forward
// (src/model/reference.ts) against the same goldens and as the oracle of the quantized formats;
// and the KV cache.
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '../src/index.js';
import { newReferenceCache, referenceForward, referenceWeights } from '../src/model/reference.js';
import { ropeFrequencies } from '../src/tensor/ops.js';
import { argmax, makeTempModel, readGolden, removeDir, sha256File, type Golden } from './helpers/models.js';

// f32 accumulation over hidden 64 / intermediate 160 against a float64 reference: the largest
// difference seen is ~3e-6, so 1e-4 absolute leaves room without hiding a real error (a wrong
// rope sign or kv-head mapping moves logits by > 1).
const TOLERANCE = 1e-4;

const golden = readGolden();
let dir: string;

beforeAll(() => {
  dir = makeTempModel({ preset: 'tiny', seed: golden.model.seed });
});
afterAll(() => removeDir(dir));

type GoldenPrompt = Golden['prompts'][number];

function maxLogitError(logits: Float32Array, vocab: number, p: GoldenPrompt, g: Golden = golden): number {
  let err = 0;
  for (let i = 0; i < p.tokenIds.length; i++) {
    g.columns.forEach((c, j) => {
      err = Math.max(err, Math.abs(logits[i * vocab + c] - p.logits[i][j]));
    });
    let mx = -Infinity,
      sum = 0;
    for (let v = 0; v < vocab; v++) mx = Math.max(mx, logits[i * vocab + v]);
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[i * vocab + v] - mx);
    err = Math.max(err, Math.abs(mx + Math.log(sum) - p.logsumexp[i]), Math.abs(mx - p.max[i]));
  }
  return err;
}

/**
 * The first layer whose residual stream differs from the golden by more than the tolerance at
 * some position, as "layer L position P: got X, expected Y", or null. hidden[l] is [positions, hidden].
 */
function firstLayerDifference(hidden: Float32Array[], p: GoldenPrompt, tolerance: number): string | null {
  for (let l = 0; l < p.layers.length; l++) {
    const width = p.layers[l][0].length;
    for (let pos = 0; pos < p.tokenIds.length; pos++) {
      for (let i = 0; i < width; i++) {
        const got = hidden[l][pos * width + i],
          want = p.layers[l][pos][i];
        // The residual stream grows to ~10 in magnitude: relative beyond 1.
        if (!(Math.abs(got - want) <= tolerance * Math.max(1, Math.abs(want))))
          return `layer ${l} position ${pos} element ${i}: got ${got}, expected ${want}`;
      }
    }
  }
  return null;
}

/** Runs `forward` with the model's per-layer hook on and returns the residual stream after each layer. */
async function withLayerOutputs<T>(
  model: Model,
  positions: number,
  run: () => Promise<T>,
): Promise<[T, Float32Array[]]> {
  const hidden = model.dims.hidden;
  const layers = Array.from({ length: model.config.numLayers }, () => new Float32Array(positions * hidden));
  let row0 = 0; // first position of the chunk being run
  model.onLayerOutput = (l, x, rows) => {
    layers[l].set(x.subarray(0, rows * hidden), row0 * hidden);
    if (l === layers.length - 1) row0 += rows;
  };
  try {
    return [await run(), layers];
  } finally {
    model.onLayerOutput = null;
  }
}

const FAMILIES = [
  { golden: 'tiny', what: 'Qwen2.5: q/k/v biases, tied head' },
  { golden: 'tiny-qwen3', what: 'Qwen3: head_dim 32 != 64/4, q_norm/k_norm, no biases' },
  { golden: 'tiny-llama3', what: 'Llama 3: llama3 rope scaling, no biases, untied head' },
  { golden: 'tiny-llama3-bias', what: 'Llama 3 with attention_bias (q, k, v, o) and mlp_bias' },
];

for (const { golden: name, what } of FAMILIES) {
  describe(`${name} (${what}) vs the numpy reference`, () => {
    const g = readGolden(name);
    const preset = g.model.preset;
    let modelDir: string;
    beforeAll(() => {
      modelDir = makeTempModel({ preset, seed: g.model.seed, overrides: g.model.overrides ?? undefined });
    });
    afterAll(() => removeDir(modelDir));

    it('make-model writes the exact model the goldens were computed from', () => {
      expect(sha256File(path.join(modelDir, 'model.safetensors'))).toBe(g.model.safetensorsSha256);
    });

    it(`the plain reference forward (reference.ts) matches layer by layer and at the logits within ${TOLERANCE}`, async () => {
      const model = await loadModel(modelDir, { weights: 'f32', threads: 1 });
      const c = model.config;
      const w = referenceWeights(model.weights);
      await model.close();
      for (const p of g.prompts) {
        const n = p.tokenIds.length;
        const cache = newReferenceCache(c, n);
        const hidden = Array.from({ length: c.numLayers }, () => new Float32Array(n * c.hiddenSize));
        const logits = new Float32Array(n * c.vocabSize);
        for (let pos = 0; pos < n; pos++) {
          const onLayer = (l: number, x: Float32Array) => hidden[l].set(x, pos * c.hiddenSize);
          logits.set(referenceForward(c, w, cache, p.tokenIds[pos], pos, onLayer), pos * c.vocabSize);
        }
        expect(firstLayerDifference(hidden, p, TOLERANCE)).toBeNull();
        expect(maxLogitError(logits, c.vocabSize, p, g)).toBeLessThan(TOLERANCE);
      }
    });

    it(`the fast forward matches layer by layer and at the logits (f32, 1 thread, prefill chunks of 7)`, async () => {
      const model = await loadModel(modelDir, { weights: 'f32', threads: 1, maxBatchTokens: 7 });
      try {
        for (const p of g.prompts) {
          const n = p.tokenIds.length;
          const [logits, hidden] = await withLayerOutputs(model, n, () =>
            model.forward(p.tokenIds, { allLogits: true }),
          );
          expect(firstLayerDifference(hidden, p, TOLERANCE)).toBeNull();
          expect(maxLogitError(logits, model.config.vocabSize, p, g)).toBeLessThan(TOLERANCE);
        }
      } finally {
        await model.close();
      }
    });

    const combos: ['f32' | 'bf16', number][] =
      name === 'tiny'
        ? [
            ['f32', 2],
            ['bf16', 1],
            ['bf16', 2],
          ]
        : [
            ['f32', 2],
            ['bf16', 2],
          ];
    for (const [weights, threads] of combos) {
      it(`logits of every position match within ${TOLERANCE} (${weights}, ${threads} thread${threads > 1 ? 's' : ''})`, async () => {
        const model = await loadModel(modelDir, { weights, threads });
        try {
          const vocab = model.config.vocabSize;
          for (const p of g.prompts) {
            const logits = await model.forward(p.tokenIds, { allLogits: true });
            expect(logits.length).toBe(p.tokenIds.length * vocab);
            expect(maxLogitError(logits, vocab, p, g)).toBeLessThan(TOLERANCE);
            for (let i = 0; i < p.tokenIds.length; i++) expect(argmax(logits, i * vocab, vocab)).toBe(p.argmax[i]);
          }
        } finally {
          await model.close();
        }
      });
    }

    it('decode token by token equals the prefill, and a batched decode equals separate ones', async () => {
      const model = await loadModel(modelDir, { weights: 'f32', threads: 2 });
      try {
        const vocab = model.config.vocabSize;
        const p = g.prompts[1];
        const prefill = await model.forward(p.tokenIds, { allLogits: true, seq: 0 });
        let err = 0;
        for (let i = 0; i < p.tokenIds.length; i++) {
          const decoded = await model.forward([p.tokenIds[i]], { startPos: i, seq: 1 });
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(decoded[v] - prefill[i * vocab + v]));
        }
        expect(err).toBeLessThan(1e-5);
        expect(maxLogitError(prefill, vocab, p, g)).toBeLessThan(TOLERANCE);

        const a = g.prompts[0].tokenIds;
        await model.forward(a.slice(0, -1), { seq: 2 });
        const batched = await model.decodeBatch([
          { seq: 2, token: a[a.length - 1], pos: a.length - 1 },
          { seq: 1, token: p.tokenIds[0], pos: p.tokenIds.length }, // seq 1 continues after the prompt
        ]);
        const fullA = await model.forward(a, { seq: 3 });
        const fullP = await model.forward([...p.tokenIds, p.tokenIds[0]], { seq: 4 });
        err = 0;
        for (let v = 0; v < vocab; v++)
          err = Math.max(err, Math.abs(batched[v] - fullA[v]), Math.abs(batched[vocab + v] - fullP[v]));
        expect(err).toBeLessThan(1e-5);
      } finally {
        await model.close();
      }
    });
  });
}

describe('q8_0 and q4_0 against the plain reference run on the same dequantized weights', () => {
  // What is left between the fast path and the reference on the dequantized weights is the int8
  // quantization of activations (both formats, prefill and decode), measured at most 0.33 on logits of
  // magnitude up to 12.6 (a wrong bias, norm or rotation moves them by several units). For q4_0
  // the dequantized weights themselves move the logits 10x more (up to 3.4), so there the fast
  // path must also be far closer to the reference than to the f32 goldens.
  for (const preset of ['tiny', 'tiny-qwen3', 'tiny-llama3']) {
    for (const weights of ['q8_0', 'q4_0'] as const) {
      const threads = weights === 'q8_0' ? 1 : 2;
      it(`${preset}, ${weights}, ${threads} thread${threads > 1 ? 's' : ''}: prefill and decode`, async () => {
        const g = readGolden(preset);
        const d = makeTempModel({ preset, seed: g.model.seed });
        const model = await loadModel(d, { weights, threads });
        try {
          const c = model.config,
            vocab = c.vocabSize;
          const w = referenceWeights(model.weights);
          let toReference = 0,
            toGolden = 0,
            agree = 0,
            total = 0;
          for (const [k, p] of g.prompts.slice(0, 2).entries()) {
            const n = p.tokenIds.length;
            // Prompt 0 token by token (the decode kernels), prompt 1 in one prefill.
            const logits = new Float32Array(n * vocab);
            if (k === 0)
              for (let i = 0; i < n; i++) logits.set(await model.forward([p.tokenIds[i]], { startPos: i }), i * vocab);
            else logits.set(await model.forward(p.tokenIds, { allLogits: true }));
            const cache = newReferenceCache(c, n);
            for (let pos = 0; pos < n; pos++) {
              const ref = referenceForward(c, w, cache, p.tokenIds[pos], pos);
              for (let v = 0; v < vocab; v++)
                toReference = Math.max(toReference, Math.abs(logits[pos * vocab + v] - ref[v]));
              g.columns.forEach((col, j) => {
                toGolden = Math.max(toGolden, Math.abs(logits[pos * vocab + col] - p.logits[pos][j]));
              });
              agree += argmax(logits, pos * vocab, vocab) === argmax(ref, 0, vocab) ? 1 : 0;
              total++;
            }
          }
          expect(toReference).toBeLessThan(0.5);
          if (weights === 'q4_0') expect(toReference).toBeLessThan(toGolden / 5);
          expect(agree / total).toBeGreaterThanOrEqual(0.9);
        } finally {
          await model.close();
          removeDir(d);
        }
      });
    }
  }
});

describe('q8_0 and q4_0: the float64-lanes kernels (prefill, batches) equal the integer kernels (one token)', () => {
  // Both quantize the activations the same way and sum the same integers exactly, then scale them in
  // the same order, so a prefill or a batch of 8 must give the logits of one-token decodes.
  for (const weights of ['q8_0', 'q4_0'] as const) {
    it(`tiny, ${weights}, 2 threads: prefill == token-by-token decode, decodeBatch of 8 == separate decodes`, async () => {
      const g = readGolden('tiny');
      const d = makeTempModel({ preset: 'tiny', seed: g.model.seed });
      const model = await loadModel(d, { weights, threads: 2, maxSequences: 16 });
      try {
        const vocab = model.config.vocabSize;
        const p = g.prompts[1].tokenIds; // 20 tokens: lanes for both formats (q4_0 from 8 rows)
        const prefill = await model.forward(p, { allLogits: true, seq: 0 });
        let err = 0;
        for (let i = 0; i < p.length; i++) {
          const decoded = await model.forward([p[i]], { startPos: i, seq: 1 });
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(decoded[v] - prefill[i * vocab + v]));
        }
        expect(err).toBeLessThan(1e-5);

        // 8 sequences with prompts of different lengths, then one decode step for all of them.
        const steps = Array.from({ length: 8 }, (_, s) => ({ seq: 2 + s, prompt: p.slice(0, 3 + s) }));
        for (const { seq, prompt } of steps) await model.forward(prompt.slice(0, -1), { seq });
        const batched = await model.decodeBatch(
          steps.map(({ seq, prompt }) => ({ seq, token: prompt[prompt.length - 1], pos: prompt.length - 1 })),
        );
        err = 0;
        for (const [i, { prompt }] of steps.entries()) {
          const alone = await model.forward(prompt, { seq: 10 });
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(batched[i * vocab + v] - alone[v]));
        }
        expect(err).toBeLessThan(1e-5);
      } finally {
        await model.close();
        removeDir(d);
      }
    });
  }
});

describe('llama3 rope scaling', () => {
  it('changes the frequencies and the logits of tiny-llama3 (so its goldens test the scaling)', async () => {
    const g = readGolden('tiny-llama3');
    const d = makeTempModel({ preset: 'tiny-llama3', seed: g.model.seed });
    const model = await loadModel(d, { weights: 'f32', threads: 1 });
    const c = model.config;
    const w = referenceWeights(model.weights);
    await model.close();
    removeDir(d);
    expect(c.ropeScaling?.type).toBe('llama3');
    const scaled = ropeFrequencies(c.headDim, c.ropeTheta, c.ropeScaling);
    const plain = ropeFrequencies(c.headDim, c.ropeTheta, null);
    // head_dim 16: wavelengths 6.3 (kept), 32 (blended), then 167 and up (divided by 8).
    expect(scaled[0]).toBe(plain[0]);
    expect(scaled[1] / plain[1]).toBeGreaterThan(1 / 8);
    expect(scaled[1] / plain[1]).toBeLessThan(1);
    for (let j = 2; j < scaled.length; j++) expect(scaled[j] / plain[j]).toBeCloseTo(1 / 8, 12);
    // Without the scaling the logits of the 20-token prompt move by far more than the tolerance.
    const p = g.prompts[1];
    const unscaled = { ...c, ropeScaling: null };
    const cache = newReferenceCache(c, p.tokenIds.length);
    let diff = 0;
    for (let pos = 0; pos < p.tokenIds.length; pos++) {
      const logits = referenceForward(unscaled, w, cache, p.tokenIds[pos], pos);
      g.columns.forEach((col, j) => (diff = Math.max(diff, Math.abs(logits[col] - p.logits[pos][j]))));
    }
    expect(diff).toBeGreaterThan(100 * TOLERANCE);
  });
});

describe('KV cache', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(dir, { weights: 'f32', threads: 2 });
  });
  afterAll(() => model.close());

  it('prefill of n tokens then decode of token n+1 equals one prefill of n+1 tokens', async () => {
    const ids = golden.prompts[2].tokenIds; // 80 tokens: crosses several 16-position cache blocks
    const vocab = model.config.vocabSize;
    for (const n of [1, 15, 16, 40, 79]) {
      await model.forward(ids.slice(0, n));
      const decoded = await model.forward([ids[n]], { startPos: n });
      const full = await model.forward(ids.slice(0, n + 1));
      let err = 0;
      for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(decoded[v] - full[v]));
      expect(err).toBeLessThan(1e-5);
    }
  });

  it('a token-by-token decode reproduces the reference logits at every position', async () => {
    const p = golden.prompts[1];
    const vocab = model.config.vocabSize;
    for (let i = 0; i < p.tokenIds.length; i++) {
      const logits = await model.forward([p.tokenIds[i]], { startPos: i });
      golden.columns.forEach((c, j) => expect(Math.abs(logits[c] - p.logits[i][j])).toBeLessThan(TOLERANCE));
      expect(argmax(logits, 0, vocab)).toBe(p.argmax[i]);
    }
  });

  it('sequences in different slots do not disturb each other, and decodeBatch equals separate decodes', async () => {
    const a = golden.prompts[0].tokenIds,
      b = golden.prompts[1].tokenIds;
    const vocab = model.config.vocabSize;
    await model.forward(a.slice(0, -1), { seq: 0 });
    await model.forward(b.slice(0, -1), { seq: 1 });
    const batched = await model.decodeBatch([
      { seq: 0, token: a[a.length - 1], pos: a.length - 1 },
      { seq: 1, token: b[b.length - 1], pos: b.length - 1 },
    ]);
    const fullA = await model.forward(a, { seq: 2 });
    const fullB = await model.forward(b, { seq: 3 });
    let err = 0;
    for (let v = 0; v < vocab; v++) {
      err = Math.max(err, Math.abs(batched[v] - fullA[v]), Math.abs(batched[vocab + v] - fullB[v]));
    }
    expect(err).toBeLessThan(1e-5);
    model.resetCache();
  });

  it('rejects positions past what is cached, bad token ids and bad slots with clear errors', async () => {
    model.resetCache();
    expect(() => model.forward([1, 2], { startPos: 5 })).toThrow(/startPos 5 must be an integer from 0 to 0/);
    expect(() => model.forward([151936])).toThrow(/token id 151936 at index 0 is outside the vocabulary/);
    expect(() => model.forward([1], { seq: 99 })).toThrow(/seq 99 is out of range/);
    expect(() => model.forward([])).toThrow(/empty/);
  });
});

describe('storage dtypes and layouts', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach(removeDir));

  it('the same weights stored as bf16, f16, f32 and in 3 shards give matching logits', async () => {
    const p = golden.prompts[0];
    const results: Float32Array[] = [];
    for (const [dtype, shards] of [
      ['bf16', 1],
      ['f16', 1],
      ['f32', 1],
      ['bf16', 3],
    ] as const) {
      const d = makeTempModel({ preset: 'tiny', seed: golden.model.seed, dtype, shards });
      dirs.push(d);
      const model = await loadModel(d, { weights: 'f32', threads: 1 });
      results.push(await model.forward(p.tokenIds, { allLogits: true }));
      await model.close();
    }
    for (const r of results.slice(1)) {
      let err = 0;
      for (let i = 0; i < r.length; i++) err = Math.max(err, Math.abs(r[i] - results[0][i]));
      // f16 keeps every bf16 value except the tiniest (subnormal in f16): differences ~1e-6.
      expect(err).toBeLessThan(1e-4);
    }
  });

  it('an untied model (lm_head.weight) loads and differs from the tied one', async () => {
    const d = makeTempModel({ preset: 'tiny', seed: 0, overrides: { tie_word_embeddings: false } });
    dirs.push(d);
    const model = await loadModel(d, { weights: 'bf16', threads: 1 });
    expect(model.weights.lmHead).not.toBe(model.weights.embed);
    const logits = await model.forward([1, 2, 3]);
    expect(logits.every(Number.isFinite)).toBe(true);
    await model.close();
  });
});
