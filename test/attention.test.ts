// The blocked attention (src/tensor/attention.ts) against the plain one, for every KV cache dtype:
// the kernel on its own over a paged cache whose blocks are interleaved with another sequence's,
// and the whole forward pass against the reference forward run on keys and values rounded as the
// cache stores them; prefill == token-by-token decode and batched == single for every dtype.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, KV_CACHE_DTYPES, type KvCacheDtype } from '../src/index.js';
import type { ModelConfig } from '../src/model/config.js';
import { BLOCK_SIZE, KvCache, kvRoundTrip, queryRoundTrip } from '../src/model/kv-cache.js';
import { newReferenceCache, referenceForward, referenceWeights } from '../src/model/reference.js';
import { hadamard } from '../src/tensor/ops.js';
import {
  allocAttentionScratch,
  attendHeadNaive,
  attendRowPart,
  attendRows,
  KV_F32,
  mergeRowParts,
  rowPartLength,
  rowPartSize,
  type PagedKv,
} from '../src/tensor/attention.js';
import { makeTempModel, removeDir } from './helpers/models.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function cacheConfig(heads: number, kvHeads: number, headDim: number): ModelConfig {
  return { numLayers: 2, numHeads: heads, numKvHeads: kvHeads, headDim } as ModelConfig;
}

function pagedLayer(cache: KvCache, layer: number, c: ModelConfig): PagedKv {
  const a = cache.arrays;
  const words = (x: Float32Array | Uint16Array | Int8Array) =>
    new Int32Array(x.buffer, x.byteOffset, x.byteLength >> 2);
  return {
    format: a.format,
    k: a.k[layer],
    v: a.v[layer],
    k32: a.format !== KV_F32 ? words(a.k[layer]) : null,
    v32: a.format !== KV_F32 ? words(a.v[layer]) : null,
    kScale: a.kScale[layer] ?? null,
    vScale: a.vScale[layer] ?? null,
    group: a.group,
    blockTables: a.blockTables,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    blockSize: BLOCK_SIZE,
  };
}

describe('attendRows against the plain attention, over a paged cache of every dtype', () => {
  // Queries go through the kernels in fours: a group of 3 (6 / 2) leaves padding after every query
  // block and decode row, 7 (the 0.5B's 14 / 2) after a decode row, 2 (8 / 4) after a decode row only.
  for (const [heads, kvHeads, headDim] of [
    [6, 2, 64],
    [14, 2, 64],
    [8, 4, 8],
    [4, 2, 16],
  ]) {
    for (const dtype of KV_CACHE_DTYPES) {
      it(`${dtype}, ${heads} heads / ${kvHeads} kv heads of ${headDim}: prefill blocks and decode rows within 1e-5`, () => {
        const c = cacheConfig(heads, kvHeads, headDim);
        const kvDim = kvHeads * headDim,
          qDim = heads * headDim;
        const cache = new KvCache(c, 2, 128, 1 << 24, dtype);
        const random = rng(7);
        const len = 75;
        const k = new Float32Array(len * kvDim).map(() => 2 * random());
        const v = new Float32Array(len * kvDim).map(() => random());
        // Sequence 1's blocks interleave with sequence 0's: the block table is not the identity.
        for (let pos = 0; pos < len; pos++) {
          cache.ensure(0, pos + 1);
          cache.ensure(1, pos + 1);
          for (let layer = 0; layer < 2; layer++) cache.write(layer, 1, pos, k, pos * kvDim, v, pos * kvDim);
        }
        expect(cache.length(1)).toBe(len);
        expect(cache.arrays.blockTables[1 * cache.arrays.maxBlocksPerSeq + 1]).not.toBe(1);

        // What the cache holds, widened: the oracle reads these.
        const ks = new Float32Array(len * kvDim),
          vs = new Float32Array(len * kvDim);
        for (let pos = 0; pos < len; pos++) cache.read(1, 1, pos, ks, pos * kvDim, vs, pos * kvDim);
        // ... and they are the inputs rounded as the dtype says.
        const rounded = k.slice();
        kvRoundTrip(dtype, rounded, 0, rounded.length, headDim, true);
        expect(ks).toEqual(rounded);
        // |k| < 1: bf16 keeps 8 bits (error <= 2^-9). q8_0 rounds each of the (rotated) values to half
        // a step of max / 127, plus the f16 rounding of the scale; the rotation keeps a row's L2 norm.
        for (let r = 0; r < len * kvHeads; r++) {
          const o = r * headDim;
          const rotated = k.slice(o, o + headDim);
          if (cache.rotatesKeys) hadamard(rotated, 0, headDim);
          const step = Math.max(...rotated.map(Math.abs)) / 127;
          let l2 = 0,
            maxErr = 0;
          for (let i = o; i < o + headDim; i++) {
            l2 += (ks[i] - k[i]) ** 2;
            maxErr = Math.max(maxErr, Math.abs(ks[i] - k[i]));
          }
          if (dtype === 'f32') expect(maxErr).toBe(0);
          else if (dtype === 'bf16') expect(maxErr).toBeLessThanOrEqual(2 ** -9);
          else expect(Math.sqrt(l2)).toBeLessThanOrEqual(Math.sqrt(headDim) * (step / 2) * 1.001);
        }

        const rows = 23; // crosses cache blocks and is longer than a query block of 16
        const pos0 = len - rows;
        const q = new Float32Array(rows * qDim).map(() => random());
        // The cache holds q8_0 keys rotated: the kernel gets the queries rotated alike (as the model's forward does).
        const qKernel = q.slice();
        if (cache.rotatesKeys) for (let h = 0; h < rows * heads; h++) hadamard(qKernel, h * headDim, headDim);
        // and rounds them as a q8_0 cache's score kernel does (the oracle's queries likewise).
        const qNaive = q.slice();
        queryRoundTrip(dtype, qNaive, 0, qNaive.length, headDim);
        const out = new Float32Array(rows * qDim);
        const scratch = allocAttentionScratch(rows * (heads / kvHeads), BLOCK_SIZE, headDim);
        const scale = 1 / Math.sqrt(headDim);
        const layer = pagedLayer(cache, 1, c);
        const table = 1 * cache.arrays.maxBlocksPerSeq;
        for (let h = 0; h < kvHeads; h++)
          attendRows(out, qKernel, 0, qDim, rows, pos0, layer, table, h, heads / kvHeads, scale, scratch);
        const decodeOut = new Float32Array(qDim);
        const last = (rows - 1) * qDim;
        for (let h = 0; h < kvHeads; h++)
          attendRows(
            decodeOut,
            qKernel.subarray(last),
            0,
            qDim,
            1,
            len - 1,
            layer,
            table,
            h,
            heads / kvHeads,
            scale,
            scratch,
          );

        const want = new Float32Array(qDim);
        let err = 0;
        for (let i = 0; i < rows; i++) {
          for (let h = 0; h < heads; h++) {
            const kvh = Math.floor(h / (heads / kvHeads));
            const at = (a: Float32Array) => (t: number, d: number) => a[t * kvDim + kvh * headDim + d];
            attendHeadNaive(
              want,
              h * headDim,
              qNaive,
              i * qDim + h * headDim,
              at(ks),
              at(vs),
              headDim,
              pos0 + i + 1,
              scale,
            );
          }
          for (let j = 0; j < qDim; j++) err = Math.max(err, Math.abs(out[i * qDim + j] - want[j]));
        }
        expect(err).toBeLessThan(1e-5);
        let decodeErr = 0;
        for (let j = 0; j < qDim; j++) decodeErr = Math.max(decodeErr, Math.abs(decodeOut[j] - want[j]));
        expect(decodeErr).toBeLessThan(1e-5);
      });
    }
  }

  for (const dtype of KV_CACHE_DTYPES) {
    it(`${dtype}: a decode row over 4,200 positions split into parts by position and merged (split-K) equals the plain attention within 1e-5`, () => {
      const [heads, kvHeads, headDim] = [14, 2, 64];
      const group = heads / kvHeads;
      const c = cacheConfig(heads, kvHeads, headDim);
      const kvDim = kvHeads * headDim,
        qDim = heads * headDim;
      const len = 4200;
      const cache = new KvCache(c, 1, len, 1 << 26, dtype);
      const random = rng(5);
      const k = new Float32Array(len * kvDim).map(() => 4 * random());
      const v = new Float32Array(len * kvDim).map(() => random());
      cache.ensure(0, len);
      for (let pos = 0; pos < len; pos++) cache.write(0, 0, pos, k, pos * kvDim, v, pos * kvDim);
      const ks = new Float32Array(len * kvDim),
        vs = new Float32Array(len * kvDim);
      for (let pos = 0; pos < len; pos++) cache.read(0, 0, pos, ks, pos * kvDim, vs, pos * kvDim);

      const partLength = rowPartLength(len, BLOCK_SIZE);
      const count = Math.ceil(len / partLength);
      expect([partLength, count]).toEqual([1056, 4]); // whole cache blocks, the last part shorter
      expect(rowPartLength(2047, BLOCK_SIZE)).toBe(2047); // under 2 x 1,024 positions: not split

      const q = new Float32Array(qDim).map(() => random());
      const qKernel = q.slice();
      if (cache.rotatesKeys) for (let h = 0; h < heads; h++) hadamard(qKernel, h * headDim, headDim);
      const qNaive = q.slice();
      queryRoundTrip(dtype, qNaive, 0, qNaive.length, headDim);
      const scale = 1 / Math.sqrt(headDim);
      const layer = pagedLayer(cache, 0, c);
      const scratch = allocAttentionScratch(group, BLOCK_SIZE, headDim);
      const size = rowPartSize(group, headDim);
      const parts = new Float64Array(count * size);
      const split = new Float32Array(qDim),
        whole = new Float32Array(qDim);
      for (let h = 0; h < kvHeads; h++) {
        // Parts in any order: each writes its own slot.
        for (const p of [2, 0, 3, 1]) {
          const to = Math.min(len, (p + 1) * partLength);
          attendRowPart(parts, p * size, qKernel, 0, len - 1, p * partLength, to, layer, 0, h, group, scale, scratch);
        }
        mergeRowParts(split, h * group * headDim, parts, 0, count, group, headDim);
        attendRows(whole, qKernel, 0, qDim, 1, len - 1, layer, 0, h, group, scale, scratch);
      }
      const want = new Float32Array(qDim);
      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor(h / group);
        const at = (a: Float32Array) => (t: number, d: number) => a[t * kvDim + kvh * headDim + d];
        attendHeadNaive(want, h * headDim, qNaive, h * headDim, at(ks), at(vs), headDim, len, scale);
      }
      let err = 0,
        wholeErr = 0;
      for (let j = 0; j < qDim; j++) {
        err = Math.max(err, Math.abs(split[j] - want[j]));
        wholeErr = Math.max(wholeErr, Math.abs(whole[j] - want[j]));
      }
      expect(err).toBeLessThan(1e-5);
      expect(wholeErr).toBeLessThan(1e-5);
    });
  }

  it('a q8_0 cache takes about half the memory of bf16 and a quarter of f32 (0.5B shape: 2 kv heads of 64)', () => {
    const c = cacheConfig(14, 2, 64);
    const bytes = (dtype: KvCacheDtype) => new KvCache({ ...c, numLayers: 24 }, 1, 64, 1 << 20, dtype).bytesPerToken;
    expect(bytes('f32')).toBe(24 * 2 * 2 * 64 * 4);
    expect(bytes('bf16')).toBe(24 * 2 * 2 * 64 * 2);
    expect(bytes('q8_0')).toBe(24 * 2 * 2 * (64 + 2 * 2)); // llama.cpp's Q8_0: 34 bytes per 32 values
  });
});

describe('the forward pass with every KV cache dtype', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempModel({ preset: 'tiny', seed: 11 });
  });
  afterAll(() => removeDir(dir));

  for (const dtype of KV_CACHE_DTYPES) {
    it(`${dtype}: prefill == token-by-token decode == the reference on rounded keys/values; batched == single`, async () => {
      // Chunks of 24 rows: query blocks of 16 and 8, prompts longer than a chunk and several cache blocks.
      const model = await loadModel(dir, { threads: 2, maxSequences: 6, maxBatchTokens: 24, kvCacheDtype: dtype });
      try {
        expect(model.kvCache.dtype).toBe(dtype);
        const vocab = model.config.vocabSize;
        const random = rng(3);
        const prompt = Array.from({ length: 53 }, () => Math.floor((random() + 0.5) * 5000));
        const prefill = model.forward(prompt, { allLogits: true, seq: 0 });

        let decodeErr = 0;
        for (let i = 0; i < prompt.length; i++) {
          const decoded = model.forward([prompt[i]], { startPos: i, seq: 1 });
          for (let t = 0; t < vocab; t++)
            decodeErr = Math.max(decodeErr, Math.abs(decoded[t] - prefill[i * vocab + t]));
        }
        expect(decodeErr).toBeLessThan(1e-5);

        const c = model.config;
        const w = referenceWeights(model.weights);
        const refCache = newReferenceCache(c, prompt.length);
        const round = (x: Float32Array, isKey: boolean) => kvRoundTrip(dtype, x, 0, x.length, c.headDim, isKey);
        const roundQuery = (x: Float32Array) => queryRoundTrip(dtype, x, 0, x.length, c.headDim);
        let refErr = 0;
        for (let i = 0; i < prompt.length; i++) {
          const ref = referenceForward(c, w, refCache, prompt[i], i, undefined, round, roundQuery);
          for (let t = 0; t < vocab; t++) refErr = Math.max(refErr, Math.abs(ref[t] - prefill[i * vocab + t]));
        }
        expect(refErr).toBeLessThan(1e-4);

        // Four sequences at different lengths, one decode step for all, against each alone.
        const seqs = [2, 3, 4, 5];
        for (const [j, seq] of seqs.entries()) model.forward(prompt.slice(0, 10 + 9 * j), { seq });
        const batched = model.decodeBatch(seqs.map((seq, j) => ({ seq, token: prompt[10 + 9 * j], pos: 10 + 9 * j })));
        let batchErr = 0;
        for (const [j] of seqs.entries()) {
          const alone = prefill.subarray((10 + 9 * j) * vocab, (11 + 9 * j) * vocab);
          for (let t = 0; t < vocab; t++) batchErr = Math.max(batchErr, Math.abs(batched[j * vocab + t] - alone[t]));
        }
        expect(batchErr).toBeLessThan(1e-5);
      } finally {
        await model.close();
      }
    });
  }

  for (const dtype of KV_CACHE_DTYPES) {
    it(`${dtype}: a decode row at position 2,100 (split into parts over 2 threads) equals the prefill's last row, alone and in a batch`, async () => {
      const model = await loadModel(dir, { threads: 2, maxSequences: 3, contextLength: 2200, kvCacheDtype: dtype });
      try {
        const vocab = model.config.vocabSize;
        const random = rng(9);
        const prompt = Array.from({ length: 2101 }, () => Math.floor((random() + 0.5) * 5000));
        const prefill = model.forward(prompt, { seq: 0 }).slice(); // the last row is in a block of 53 rows: not split
        model.forward(prompt.slice(0, 2100), { seq: 1 });
        const decoded = model.forward([prompt[2100]], { startPos: 2100, seq: 1 }).slice();
        let err = 0;
        for (let t = 0; t < vocab; t++) err = Math.max(err, Math.abs(decoded[t] - prefill[t]));
        expect(err).toBeLessThan(1e-5);

        // Beside a short sequence's row, in one step: the same parts, the same logits.
        model.forward(prompt.slice(0, 30), { seq: 2 });
        const batched = model.decodeBatch([
          { seq: 2, token: prompt[30], pos: 30 },
          { seq: 1, token: prompt[2100], pos: 2100 },
        ]);
        let batchErr = 0;
        for (let t = 0; t < vocab; t++) batchErr = Math.max(batchErr, Math.abs(batched[vocab + t] - decoded[t]));
        expect(batchErr).toBe(0);
      } finally {
        await model.close();
      }
    });
  }

  it('rejects an unknown kvCacheDtype, naming the choices', async () => {
    await expect(loadModel(dir, { kvCacheDtype: 'fp8' as KvCacheDtype })).rejects.toThrow(
      /option kvCacheDtype must be one of f32, bf16, q8_0, got "fp8"/,
    );
  });
});
