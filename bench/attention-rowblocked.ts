// The attention kernel of before the decode split (commit 8ce0d1e), kept as bench/attention-decode.ts's
// baseline: one thread per (sequence, kv head) in decode, a padding query for a group of 7, Math.exp.
// Causal scaled dot-product attention over a paged KV cache, blocked as flash attention is.
// Keys/values of kv head `kvHead` for position t live at
//   ((blockTable[tableOff + t / blockSize] * kvHeads + kvHead) * blockSize + t % blockSize) * headDim.
//
// One call serves the `group` query heads that share a kv head (GQA) for a run of consecutive
// rows of one sequence (a prefill's query block, or one decode row): each block of keys and values
// is read (and widened from bf16 / q8_0) once for all of those queries. The softmax is online: per
// query a running max and sum, and the output accumulator rescaled when the max grows, so memory
// is O(queries x headDim) whatever the context, never an [n x n] matrix.
// src/model/reference.ts keeps the plain two-pass attention that the tests compare this with.
import { f16ArrayToF32 } from '../src/tensor/dtype.js';

/** Storage formats of the cache (the model's kvCacheDtype): f32, bf16 bits, q8_0 int8 + f16 scales. */
export const KV_F32 = 0;
export const KV_BF16 = 1;
export const KV_Q8_0 = 2;

/** One layer of a paged KV cache: k and v are [numBlocks, kvHeads, blockSize, headDim]. */
export interface PagedKv {
  format: number;
  k: Float32Array | Uint16Array | Int8Array;
  v: Float32Array | Uint16Array | Int8Array;
  /** bf16: the same storage as pairs of values (one 32-bit load widens two). */
  k32: Int32Array | null;
  v32: Int32Array | null;
  /** q8_0: the f16 scale of each `group` consecutive values. */
  kScale: Uint16Array | null;
  vScale: Uint16Array | null;
  group: number;
  blockTables: Int32Array;
  kvHeads: number;
  headDim: number;
  blockSize: number;
}

/** A thread's working memory for attendRows: tiles of one cache block, and per-query state. */
export interface AttentionScratch {
  // Everything the inner loops read is f64: JavaScript computes in doubles, so an f64 load needs no
  // widening, and a tile or query widened once is reused by every query block / position it meets.
  queries: Float64Array; // [maxQueries rounded up to 4, headDim]: the queries times the scale
  kTile: Float64Array; // [blockSize, headDim]
  vTile: Float64Array;
  stage: Float32Array; // [blockSize * headDim]: bf16 widened to f32 before the f64 tile
  stage32: Int32Array; // the same memory
  scaleTile: Float32Array; // q8_0 scales of one tile
  scores: Float64Array; // [maxQueries rounded up to 4, blockSize]: scores, then probabilities
  acc: Float64Array; // [maxQueries rounded up to 4, headDim]: unnormalised output
  max: Float64Array; // running max of each query's scores
  sum: Float64Array; // running sum of exp(score - max)
}

/** Queries go through the score kernel four at a time; the padding queries are zero and ignored. */
function paddedQueries(queries: number): number {
  return (queries + 3) & ~3;
}

export function allocAttentionScratch(maxQueries: number, blockSize: number, headDim: number): AttentionScratch {
  const padded = paddedQueries(maxQueries);
  const stage = new Float32Array(blockSize * headDim);
  return {
    queries: new Float64Array(padded * headDim),
    kTile: new Float64Array(blockSize * headDim),
    vTile: new Float64Array(blockSize * headDim),
    stage,
    stage32: new Int32Array(stage.buffer),
    scaleTile: new Float32Array(blockSize * headDim),
    scores: new Float64Array(padded * blockSize),
    acc: new Float64Array(padded * headDim),
    max: new Float64Array(padded),
    sum: new Float64Array(padded),
  };
}

/**
 * Attention of `rows` consecutive rows of one sequence, at positions pos0, pos0+1, ..., for the
 * `group` query heads of kv head `kvHead` (heads kvHead*group ...): row i attends to positions
 * 0..pos0+i. Query head h of row i is q[qOff + i*rowStride + h*headDim ..]; its output goes to the
 * same offset of `out`. scale is the factor of the scores (1/√headDim).
 *
 * Per cache block of blockSize positions it is two small matrix products, as in flash attention:
 * scores [queries x positions] = Q·Kᵀ, then acc [queries x headDim] += P·V, each register-blocked
 * (tileScores, tileValues) like the matmul kernels, with the online softmax between them.
 */
export function attendRows(
  out: Float32Array,
  q: Float32Array,
  qOff: number,
  rowStride: number,
  rows: number,
  pos0: number,
  kv: PagedKv,
  tableOff: number,
  kvHead: number,
  group: number,
  scale: number,
  s: AttentionScratch,
): void {
  const hd = kv.headDim,
    bs = kv.blockSize;
  const queries = rows * group;
  const padded = paddedQueries(queries);
  const qs = s.queries;
  for (let i = 0; i < rows; i++) {
    const src = qOff + i * rowStride + kvHead * group * hd;
    const dst = i * group * hd;
    for (let j = 0; j < group * hd; j++) qs[dst + j] = q[src + j] * scale;
  }
  qs.fill(0, queries * hd, padded * hd);
  s.max.fill(-Infinity, 0, padded);
  s.sum.fill(0, 0, padded);
  s.acc.fill(0, 0, padded * hd);
  const end = pos0 + rows; // positions 0..end-1 are read by the last row
  for (let t0 = 0; t0 < end; t0 += bs) {
    const block = kv.blockTables[tableOff + t0 / bs];
    const base = (block * kv.kvHeads + kvHead) * bs * hd;
    const tileLen = Math.min(bs, end - t0);
    let k: Float32Array | Float64Array = s.kTile,
      v: Float32Array | Float64Array = s.vTile,
      kvOff = 0;
    if (kv.format === KV_F32) {
      k = kv.k as Float32Array;
      v = kv.v as Float32Array;
      kvOff = base;
    } else {
      loadTile(s.kTile, kv, kv.k, kv.k32, kv.kScale, base, tileLen * hd, s);
      loadTile(s.vTile, kv, kv.v, kv.v32, kv.vScale, base, tileLen * hd, s);
    }
    // Rows before firstRow see none of this tile (causal); the queries from a multiple of 4 at or
    // below its first query on are computed, the ones that see nothing get probability 0.
    const firstRow = Math.max(0, t0 - pos0);
    const q0 = (firstRow * group) & ~3;
    tileScores(s.scores, qs, k, kvOff, q0, padded, tileLen, hd, bs);
    for (let qi = q0; qi < padded; qi++) {
      const row = qi < queries ? (qi / group) | 0 : rows - 1;
      const visible = Math.max(0, Math.min(tileLen, pos0 + row + 1 - t0));
      softmaxStep(s, qi, qi * bs, visible, tileLen, hd);
    }
    tileValues(s.acc, s.scores, v, kvOff, q0, padded, tileLen, hd, bs);
  }
  for (let i = 0; i < rows; i++) {
    for (let g = 0; g < group; g++) {
      const qi = i * group + g;
      const oo = qOff + i * rowStride + (kvHead * group + g) * hd;
      const inv = 1 / s.sum[qi];
      for (let d = 0; d < hd; d++) out[oo + d] = s.acc[qi * hd + d] * inv;
    }
  }
}

/**
 * scores[qi*bs + t] = q_qi · k_t for queries q0..q1 (q1 - q0 a multiple of 4) and positions 0..n-1
 * of the tile: four queries x two positions at a time, 6 loads for 8 multiply-adds.
 */
function tileScores(
  scores: Float64Array,
  q: Float64Array,
  k: Float32Array | Float64Array,
  kOff: number,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
): void {
  for (let qi = q0; qi < q1; qi += 4) {
    const qa = qi * hd,
      qb = qa + hd,
      qc = qb + hd,
      qd = qc + hd;
    const sa = qi * bs,
      sb = sa + bs,
      sc = sb + bs,
      sd = sc + bs;
    let t = 0;
    for (; t + 2 <= n; t += 2) {
      const k0 = kOff + t * hd,
        k1 = k0 + hd;
      let a0 = 0,
        a1 = 0,
        b0 = 0,
        b1 = 0,
        c0 = 0,
        c1 = 0,
        d0 = 0,
        d1 = 0;
      for (let j = 0; j < hd; j++) {
        const x = k[k0 + j],
          y = k[k1 + j];
        const wa = q[qa + j],
          wb = q[qb + j],
          wc = q[qc + j],
          wd = q[qd + j];
        a0 += wa * x;
        a1 += wa * y;
        b0 += wb * x;
        b1 += wb * y;
        c0 += wc * x;
        c1 += wc * y;
        d0 += wd * x;
        d1 += wd * y;
      }
      scores[sa + t] = a0;
      scores[sa + t + 1] = a1;
      scores[sb + t] = b0;
      scores[sb + t + 1] = b1;
      scores[sc + t] = c0;
      scores[sc + t + 1] = c1;
      scores[sd + t] = d0;
      scores[sd + t + 1] = d1;
    }
    if (t < n) {
      const k0 = kOff + t * hd;
      let a0 = 0,
        b0 = 0,
        c0 = 0,
        d0 = 0;
      for (let j = 0; j < hd; j++) {
        const x = k[k0 + j];
        a0 += q[qa + j] * x;
        b0 += q[qb + j] * x;
        c0 += q[qc + j] * x;
        d0 += q[qd + j] * x;
      }
      scores[sa + t] = a0;
      scores[sb + t] = b0;
      scores[sc + t] = c0;
      scores[sd + t] = d0;
    }
  }
}

/**
 * acc[qi*hd ..] += Σ_t p[qi*bs + t] · v_t for queries q0..q1 (an even count) over positions 0..n-1:
 * two queries x four positions at a time, the eight probabilities held in registers.
 */
function tileValues(
  acc: Float64Array,
  p: Float64Array,
  v: Float32Array | Float64Array,
  vOff: number,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
): void {
  for (let qi = q0; qi < q1; qi += 2) {
    const aa = qi * hd,
      ab = aa + hd;
    const pa = qi * bs,
      pb = pa + bs;
    let t = 0;
    for (; t + 4 <= n; t += 4) {
      const v0 = vOff + t * hd,
        v1 = v0 + hd,
        v2 = v1 + hd,
        v3 = v2 + hd;
      const a0 = p[pa + t],
        a1 = p[pa + t + 1],
        a2 = p[pa + t + 2],
        a3 = p[pa + t + 3];
      const b0 = p[pb + t],
        b1 = p[pb + t + 1],
        b2 = p[pb + t + 2],
        b3 = p[pb + t + 3];
      for (let j = 0; j < hd; j++) {
        const x0 = v[v0 + j],
          x1 = v[v1 + j],
          x2 = v[v2 + j],
          x3 = v[v3 + j];
        acc[aa + j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3;
        acc[ab + j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3;
      }
    }
    for (; t < n; t++) {
      const v0 = vOff + t * hd;
      const a0 = p[pa + t],
        b0 = p[pb + t];
      for (let j = 0; j < hd; j++) {
        const x = v[v0 + j];
        acc[aa + j] += a0 * x;
        acc[ab + j] += b0 * x;
      }
    }
  }
}

/**
 * Online softmax for query qi over the first `visible` of the n scores at s.scores[off..]: they
 * become exp(score - max) with the running max, the rest (masked) 0, and the accumulator and sum
 * are rescaled when the max grows.
 */
function softmaxStep(s: AttentionScratch, qi: number, off: number, visible: number, n: number, hd: number): void {
  const scores = s.scores,
    acc = s.acc;
  let tileMax = -Infinity;
  for (let j = off; j < off + visible; j++) if (scores[j] > tileMax) tileMax = scores[j];
  const oldMax = s.max[qi];
  const newMax = tileMax > oldMax ? tileMax : oldMax;
  let sum = s.sum[qi];
  if (newMax !== oldMax) {
    const correction = Math.exp(oldMax - newMax); // 0 on the first tile
    sum *= correction;
    for (let d = qi * hd; d < (qi + 1) * hd; d++) acc[d] *= correction;
    s.max[qi] = newMax;
  }
  for (let j = off; j < off + visible; j++) {
    const p = Math.exp(scores[j] - newMax);
    scores[j] = p;
    sum += p;
  }
  for (let j = off + visible; j < off + n; j++) scores[j] = 0;
  s.sum[qi] = sum;
}

/** tile[0..n) = the cache's values at base.. widened to f64 (from f32, bf16 or q8_0). */
function loadTile(
  tile: Float64Array,
  kv: PagedKv,
  store: Float32Array | Uint16Array | Int8Array,
  store32: Int32Array | null,
  scales: Uint16Array | null,
  base: number,
  n: number,
  s: AttentionScratch,
): void {
  if (kv.format === KV_F32) {
    const src = store as Float32Array;
    for (let j = 0; j < n; j++) tile[j] = src[base + j];
    return;
  }
  if (kv.format === KV_BF16) {
    // bf16 is the top half of an f32; base and n are even (headDim is), so values come in pairs.
    const src = store32!,
      stage32 = s.stage32,
      stage = s.stage;
    const p0 = base >> 1;
    for (let j = 0; j < n >> 1; j++) {
      const w = src[p0 + j];
      stage32[2 * j] = w << 16;
      stage32[2 * j + 1] = w & -65536;
    }
    for (let j = 0; j < n; j++) tile[j] = stage[j];
    return;
  }
  const qs = store as Int8Array;
  const group = kv.group;
  const scaleTile = s.scaleTile;
  f16ArrayToF32(scales!, base / group, scaleTile, 0, n / group);
  for (let g = 0; g < n / group; g++) {
    const d = scaleTile[g];
    const o = g * group;
    for (let i = 0; i < group; i++) tile[o + i] = qs[base + o + i] * d;
  }
}

/**
 * The plain attention of one query head over positions 0..len-1 (scores for all positions, one
 * softmax, then the V sum): the oracle of attendRows in the tests.
 */
export function attendHeadNaive(
  out: Float32Array,
  outOff: number,
  q: Float32Array,
  qOff: number,
  keyAt: (t: number, d: number) => number,
  valueAt: (t: number, d: number) => number,
  headDim: number,
  len: number,
  scale: number,
): void {
  const scores = new Float64Array(len);
  let max = -Infinity;
  for (let t = 0; t < len; t++) {
    let dot = 0;
    for (let d = 0; d < headDim; d++) dot += q[qOff + d] * keyAt(t, d);
    scores[t] = dot * scale;
    if (scores[t] > max) max = scores[t];
  }
  let sum = 0;
  for (let t = 0; t < len; t++) {
    scores[t] = Math.exp(scores[t] - max);
    sum += scores[t];
  }
  for (let d = 0; d < headDim; d++) {
    let a = 0;
    for (let t = 0; t < len; t++) a += (scores[t] / sum) * valueAt(t, d);
    out[outOff + d] = a;
  }
}
