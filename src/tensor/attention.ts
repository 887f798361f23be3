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
import { f16ArrayToF32 } from './dtype.js';

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
  kTile: Float32Array; // [blockSize, headDim]
  vTile: Float32Array;
  kTile32: Int32Array; // the same memory, for widening bf16
  vTile32: Int32Array;
  scaleTile: Float32Array; // q8_0 scales of one tile
  scores: Float32Array; // [2, blockSize]: two queries' scores, then probabilities, within a tile
  acc: Float32Array; // [maxQueries, headDim]: unnormalised output
  max: Float64Array; // [maxQueries]: running max of the scores
  sum: Float64Array; // [maxQueries]: running sum of exp(score - max)
}

export function allocAttentionScratch(maxQueries: number, blockSize: number, headDim: number): AttentionScratch {
  const kTile = new Float32Array(blockSize * headDim);
  const vTile = new Float32Array(blockSize * headDim);
  return {
    kTile,
    vTile,
    kTile32: new Int32Array(kTile.buffer),
    vTile32: new Int32Array(vTile.buffer),
    scaleTile: new Float32Array(blockSize * headDim),
    scores: new Float32Array(2 * blockSize),
    acc: new Float32Array(maxQueries * headDim),
    max: new Float64Array(maxQueries),
    sum: new Float64Array(maxQueries),
  };
}

/**
 * Attention of `rows` consecutive rows of one sequence, at positions pos0, pos0+1, ..., for the
 * `group` query heads of kv head `kvHead` (heads kvHead*group ...): row i attends to positions
 * 0..pos0+i. Query head h of row i is q[qOff + i*rowStride + h*headDim ..]; its output goes to the
 * same offset of `out`. scale is the factor of the scores (1/√headDim).
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
  for (let qi = 0; qi < queries; qi++) {
    s.max[qi] = -Infinity;
    s.sum[qi] = 0;
  }
  s.acc.fill(0, 0, queries * hd);
  const end = pos0 + rows; // positions 0..end-1 are read by the last row
  for (let t0 = 0; t0 < end; t0 += bs) {
    const block = kv.blockTables[tableOff + t0 / bs];
    const base = (block * kv.kvHeads + kvHead) * bs * hd;
    const tileLen = Math.min(bs, end - t0);
    let k: Float32Array, kOff: number, v: Float32Array, vOff: number;
    if (kv.format === KV_F32) {
      k = kv.k as Float32Array;
      v = kv.v as Float32Array;
      kOff = vOff = base;
    } else {
      loadTile(s.kTile, s.kTile32, kv, kv.k, kv.k32, kv.kScale, base, tileLen * hd, s.scaleTile);
      loadTile(s.vTile, s.vTile32, kv, kv.v, kv.v32, kv.vScale, base, tileLen * hd, s.scaleTile);
      k = s.kTile;
      v = s.vTile;
      kOff = vOff = 0;
    }
    for (let i = 0; i < rows; i++) {
      const visible = Math.min(tileLen, pos0 + i + 1 - t0);
      if (visible <= 0) continue;
      const qo = qOff + i * rowStride + kvHead * group * hd;
      let g = 0;
      for (; g + 2 <= group; g += 2)
        attendTilePair(q, qo + g * hd, k, kOff, v, vOff, visible, hd, scale, s, i * group + g);
      if (g < group) attendTile(q, qo + g * hd, k, kOff, v, vOff, visible, hd, scale, s, i * group + g);
    }
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

/** Fold positions 0..n-1 of one tile (keys at k[kOff..], values at v[vOff..]) into query qi's state. */
function attendTile(
  q: Float32Array,
  qo: number,
  k: Float32Array,
  kOff: number,
  v: Float32Array,
  vOff: number,
  n: number,
  hd: number,
  scale: number,
  s: AttentionScratch,
  qi: number,
): void {
  const scores = s.scores,
    acc = s.acc;
  // Scores, four positions at a time: each q value loaded once for four keys.
  let t = 0;
  for (; t + 4 <= n; t += 4) {
    const k0 = kOff + t * hd,
      k1 = k0 + hd,
      k2 = k1 + hd,
      k3 = k2 + hd;
    let s0 = 0,
      s1 = 0,
      s2 = 0,
      s3 = 0;
    for (let d = 0; d < hd; d++) {
      const x = q[qo + d];
      s0 += x * k[k0 + d];
      s1 += x * k[k1 + d];
      s2 += x * k[k2 + d];
      s3 += x * k[k3 + d];
    }
    scores[t] = s0 * scale;
    scores[t + 1] = s1 * scale;
    scores[t + 2] = s2 * scale;
    scores[t + 3] = s3 * scale;
  }
  for (; t < n; t++) {
    const k0 = kOff + t * hd;
    let s0 = 0;
    for (let d = 0; d < hd; d++) s0 += q[qo + d] * k[k0 + d];
    scores[t] = s0 * scale;
  }

  softmaxStep(s, qi, 0, n, hd);
  const ao = qi * hd;

  // acc += p·V, four positions at a time: each accumulator loaded and stored once for four values.
  t = 0;
  for (; t + 4 <= n; t += 4) {
    const v0 = vOff + t * hd,
      v1 = v0 + hd,
      v2 = v1 + hd,
      v3 = v2 + hd;
    const p0 = scores[t],
      p1 = scores[t + 1],
      p2 = scores[t + 2],
      p3 = scores[t + 3];
    for (let d = 0; d < hd; d++) acc[ao + d] += p0 * v[v0 + d] + p1 * v[v1 + d] + p2 * v[v2 + d] + p3 * v[v3 + d];
  }
  for (; t < n; t++) {
    const v0 = vOff + t * hd;
    const p = scores[t];
    for (let d = 0; d < hd; d++) acc[ao + d] += p * v[v0 + d];
  }
}

/**
 * attendTile for queries qi and qi+1, whose q rows are adjacent (two heads of one group): each key
 * and value is loaded once for both, the loop that bounds the speed of decode at long contexts.
 */
function attendTilePair(
  q: Float32Array,
  qo: number,
  k: Float32Array,
  kOff: number,
  v: Float32Array,
  vOff: number,
  n: number,
  hd: number,
  scale: number,
  s: AttentionScratch,
  qi: number,
): void {
  const scores = s.scores,
    acc = s.acc;
  const qb = qo + hd; // the second query
  const sb = n; // its scores follow the first's
  // Scores, two queries x two positions at a time: 2 + 2 loads for 4 multiply-adds.
  let t = 0;
  for (; t + 2 <= n; t += 2) {
    const k0 = kOff + t * hd,
      k1 = k0 + hd;
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0;
    for (let d = 0; d < hd; d++) {
      const x = q[qo + d],
        y = q[qb + d];
      const u = k[k0 + d],
        w = k[k1 + d];
      a0 += x * u;
      a1 += x * w;
      b0 += y * u;
      b1 += y * w;
    }
    scores[t] = a0 * scale;
    scores[t + 1] = a1 * scale;
    scores[sb + t] = b0 * scale;
    scores[sb + t + 1] = b1 * scale;
  }
  for (; t < n; t++) {
    const k0 = kOff + t * hd;
    let a0 = 0,
      b0 = 0;
    for (let d = 0; d < hd; d++) {
      const u = k[k0 + d];
      a0 += q[qo + d] * u;
      b0 += q[qb + d] * u;
    }
    scores[t] = a0 * scale;
    scores[sb + t] = b0 * scale;
  }
  softmaxStep(s, qi, 0, n, hd);
  softmaxStep(s, qi + 1, sb, n, hd);

  // acc += p·V for both queries, two positions at a time.
  const aa = qi * hd,
    ab = aa + hd;
  t = 0;
  for (; t + 2 <= n; t += 2) {
    const v0 = vOff + t * hd,
      v1 = v0 + hd;
    const pa0 = scores[t],
      pa1 = scores[t + 1],
      pb0 = scores[sb + t],
      pb1 = scores[sb + t + 1];
    for (let d = 0; d < hd; d++) {
      const x = v[v0 + d],
        y = v[v1 + d];
      acc[aa + d] += pa0 * x + pa1 * y;
      acc[ab + d] += pb0 * x + pb1 * y;
    }
  }
  for (; t < n; t++) {
    const v0 = vOff + t * hd;
    const pa = scores[t],
      pb = scores[sb + t];
    for (let d = 0; d < hd; d++) {
      const x = v[v0 + d];
      acc[aa + d] += pa * x;
      acc[ab + d] += pb * x;
    }
  }
}

/**
 * Online softmax for query qi over the n scores at s.scores[off..]: they become exp(score - max)
 * with the running max, and the accumulator and sum are rescaled when the max grows.
 */
function softmaxStep(s: AttentionScratch, qi: number, off: number, n: number, hd: number): void {
  const scores = s.scores,
    acc = s.acc;
  let tileMax = -Infinity;
  for (let j = off; j < off + n; j++) if (scores[j] > tileMax) tileMax = scores[j];
  const oldMax = s.max[qi];
  const newMax = tileMax > oldMax ? tileMax : oldMax;
  let sum = s.sum[qi];
  if (newMax !== oldMax) {
    const correction = Math.exp(oldMax - newMax); // 0 on the first tile
    sum *= correction;
    for (let d = qi * hd; d < (qi + 1) * hd; d++) acc[d] *= correction;
    s.max[qi] = newMax;
  }
  for (let j = off; j < off + n; j++) {
    const p = Math.exp(scores[j] - newMax);
    scores[j] = p;
    sum += p;
  }
  s.sum[qi] = sum;
}

/** tile[0..n) = the cache's values at base.. widened to f32 (bf16 or q8_0). */
function loadTile(
  tile: Float32Array,
  tile32: Int32Array,
  kv: PagedKv,
  store: Float32Array | Uint16Array | Int8Array,
  store32: Int32Array | null,
  scales: Uint16Array | null,
  base: number,
  n: number,
  scaleTile: Float32Array,
): void {
  if (kv.format === KV_BF16) {
    // bf16 is the top half of an f32; base and n are even (headDim is), so values come in pairs.
    const src = store32!;
    const p0 = base >> 1;
    for (let j = 0; j < n >> 1; j++) {
      const w = src[p0 + j];
      tile32[2 * j] = w << 16;
      tile32[2 * j + 1] = w & -65536;
    }
    return;
  }
  const qs = store as Int8Array;
  const group = kv.group;
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
