// The attention kernel of before the q8_0 lanes score kernel (commit f2e4559), kept as
// bench/attention-decode.ts's baseline: q8_0 keys widened to an f32 tile before the scores.
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
  /** bf16 and q8_0: the same storage as 32-bit words (one load widens two bf16 or four int8); else null. */
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
  // The queries and per-query state are f64 (JavaScript computes in doubles; an f64 load needs no
  // widening). Keys and values are always read from a Float32Array, the f32 cache itself or a tile
  // of bf16 / q8_0 widened to f32 (exactly: bf16 is an f32's top half, an int8 times an f16 scale
  // fits f32's mantissa), so the kernels see one array type whatever the cache's dtype.
  queries: Float64Array; // [maxQueries rounded up to 4, headDim]: the queries times the scale
  kTile: Float32Array; // [blockSize, headDim]
  vTile: Float32Array;
  kTile32: Int32Array; // the same memory as kTile (bf16 pairs are widened through it)
  vTile32: Int32Array;
  scaleTile: Float32Array; // q8_0 scales of one tile of keys
  vScaleTile: Float32Array; // and of values (which tileValuesQ8 reads as int8, never widened)
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
  const kTile = new Float32Array(blockSize * headDim),
    vTile = new Float32Array(blockSize * headDim);
  return {
    queries: new Float64Array(padded * headDim),
    kTile,
    vTile,
    kTile32: new Int32Array(kTile.buffer),
    vTile32: new Int32Array(vTile.buffer),
    scaleTile: new Float32Array(blockSize * headDim),
    vScaleTile: new Float32Array(blockSize * headDim),
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
  const hd = kv.headDim;
  attendRange(q, qOff, rowStride, rows, pos0, 0, pos0 + rows, kv, tableOff, kvHead, group, scale, s);
  for (let i = 0; i < rows; i++) {
    for (let g = 0; g < group; g++) {
      const qi = i * group + g;
      const oo = qOff + i * rowStride + (kvHead * group + g) * hd;
      const inv = 1 / s.sum[qi];
      for (let d = 0; d < hd; d++) out[oo + d] = s.acc[qi * hd + d] * inv;
    }
  }
}

// A decode row over a long context is split into parts by position (flash-decoding's split-K), so
// that its kv heads' work can be shared by more threads than there are kv heads, and a thread that
// was switched out does not hold up the others: each part leaves its running max, sum and output
// (unnormalised), and mergeRowParts combines them. Every part is a whole number of cache blocks
// and at least ROW_PART_MIN positions (~1M multiply-adds for Qwen2.5-0.5B), so the parts' claims
// and the merge cost nothing next to them; the split depends on the row's length only, so a row
// gives the same result in any batch and with any number of threads.
export const MAX_ROW_PARTS = 8;
const ROW_PART_MIN = 1024;

/** Positions per part of a decode row that attends to `len` positions (the whole row when that is len). */
export function rowPartLength(len: number, blockSize: number): number {
  const parts = Math.min(MAX_ROW_PARTS, Math.floor(len / ROW_PART_MIN));
  if (parts <= 1) return len;
  return Math.ceil(len / parts / blockSize) * blockSize;
}

/** Doubles one part of a row takes: per query head its max, its sum and its output. */
export function rowPartSize(group: number, headDim: number): number {
  return group * (headDim + 2);
}

/**
 * Part of a decode row's attention: positions from..to-1 (from a multiple of blockSize) of the row
 * at position `pos`, for the query heads of kv head `kvHead`; their max, sum and unnormalised
 * output go to part[partOff ..] (rowPartSize doubles).
 */
export function attendRowPart(
  part: Float64Array,
  partOff: number,
  q: Float32Array,
  qOff: number,
  pos: number,
  from: number,
  to: number,
  kv: PagedKv,
  tableOff: number,
  kvHead: number,
  group: number,
  scale: number,
  s: AttentionScratch,
): void {
  const hd = kv.headDim;
  attendRange(q, qOff, 0, 1, pos, from, to, kv, tableOff, kvHead, group, scale, s);
  for (let g = 0; g < group; g++) {
    part[partOff + g] = s.max[g];
    part[partOff + group + g] = s.sum[g];
  }
  const accOff = partOff + 2 * group;
  for (let j = 0; j < group * hd; j++) part[accOff + j] = s.acc[j];
}

/**
 * out[outOff + g*headDim ..] = the attention of query head g of a row from its `count` parts at
 * part[partOff ..], partOff + rowPartSize, ...: each part's sum and output scaled by exp(its max -
 * the overall max), summed in part order.
 */
export function mergeRowParts(
  out: Float32Array,
  outOff: number,
  part: Float64Array,
  partOff: number,
  count: number,
  group: number,
  hd: number,
): void {
  const size = rowPartSize(group, hd);
  for (let g = 0; g < group; g++) {
    let max = -Infinity;
    for (let c = 0; c < count; c++) max = Math.max(max, part[partOff + c * size + g]);
    let sum = 0;
    for (let c = 0; c < count; c++) {
      const po = partOff + c * size;
      sum += part[po + group + g] * Math.exp(part[po + g] - max);
    }
    const oo = outOff + g * hd;
    for (let d = 0; d < hd; d++) {
      let a = 0;
      for (let c = 0; c < count; c++) {
        const po = partOff + c * size;
        a += part[po + 2 * group + g * hd + d] * Math.exp(part[po + g] - max);
      }
      out[oo + d] = a / sum;
    }
  }
}

/**
 * The online-softmax state (s.max, s.sum, s.acc per query) of `rows` rows at positions pos0.. over
 * the cached positions from..to-1 (from a multiple of blockSize, to <= pos0 + rows; row i sees
 * positions up to pos0 + i).
 *
 * Per cache block of blockSize positions it is two small matrix products, as in flash attention:
 * scores [queries x positions] = Q·Kᵀ, then acc [queries x headDim] += P·V, each register-blocked
 * (tileScores, tileValues) like the matmul kernels, with the online softmax between them.
 */
function attendRange(
  q: Float32Array,
  qOff: number,
  rowStride: number,
  rows: number,
  pos0: number,
  from: number,
  to: number,
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
  for (let t0 = from; t0 < to; t0 += bs) {
    const block = kv.blockTables[tableOff + t0 / bs];
    const base = (block * kv.kvHeads + kvHead) * bs * hd;
    const tileLen = Math.min(bs, to - t0);
    let k = s.kTile,
      v = s.vTile,
      kvOff = 0;
    if (kv.format === KV_F32) {
      k = kv.k as Float32Array;
      v = kv.v as Float32Array;
      kvOff = base;
    } else if (kv.format === KV_BF16) {
      loadTile(s.kTile, s.kTile32, kv, kv.k, kv.k32, kv.kScale, base, tileLen * hd, s.scaleTile);
      loadTile(s.vTile, s.vTile32, kv, kv.v, kv.v32, kv.vScale, base, tileLen * hd, s.scaleTile);
    } else {
      loadTile(s.kTile, s.kTile32, kv, kv.k, kv.k32, kv.kScale, base, tileLen * hd, s.scaleTile);
      f16ArrayToF32(kv.vScale!, base / kv.group, s.vScaleTile, 0, (tileLen * hd) / kv.group);
    }
    // Rows before firstRow see none of this tile (causal); the queries from a multiple of 4 at or
    // below its first query on are computed, the ones that see nothing get probability 0.
    const firstRow = Math.max(0, t0 - pos0);
    const q0 = (firstRow * group) & ~3;
    tileScores(s.scores, qs, k, kvOff, q0, queries, tileLen, hd, bs);
    for (let qi = q0; qi < queries; qi++) {
      const row = (qi / group) | 0;
      const visible = Math.max(0, Math.min(tileLen, pos0 + row + 1 - t0));
      softmaxStep(s, qi, qi * bs, visible, tileLen, hd);
    }
    if (kv.format === KV_Q8_0)
      tileValuesQ8(s.acc, s.scores, kv.v as Int8Array, base, s.vScaleTile, kv.group, q0, queries, tileLen, hd, bs);
    else tileValues(s.acc, s.scores, v, kvOff, q0, queries, tileLen, hd, bs);
  }
}

/**
 * scores[qi*bs + t] = q_qi · k_t for queries q0..q1 and positions 0..n-1 of the tile: four
 * queries x two positions at a time (6 loads for 8 multiply-adds), the last one to three queries
 * three at a time (a decode row of Qwen2.5-0.5B has 7 = 4 + 3: no padding query). Every query's
 * sum runs over j in the same order whichever block it falls in, so a prefill row and a decode
 * row give the same scores.
 */
function tileScores(
  scores: Float64Array,
  q: Float64Array,
  k: Float32Array,
  kOff: number,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
): void {
  let qi = q0;
  for (; qi + 4 <= q1; qi += 4) {
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
  if (qi < q1) {
    // One to three queries left: three rows of q are read, the ones past q1 are zero padding
    // (paddedQueries) whose scores nobody reads.
    const qa = qi * hd,
      qb = qa + hd,
      qc = qb + hd;
    const sa = qi * bs,
      sb = sa + bs,
      sc = sb + bs;
    for (let t = 0; t < n; t += 2) {
      // n is even except for a sequence's last, partly filled block: there k1 repeats k0.
      const k0 = kOff + t * hd,
        k1 = t + 1 < n ? k0 + hd : k0;
      let a0 = 0,
        a1 = 0,
        b0 = 0,
        b1 = 0,
        c0 = 0,
        c1 = 0;
      for (let j = 0; j < hd; j++) {
        const x = k[k0 + j],
          y = k[k1 + j];
        const wa = q[qa + j],
          wb = q[qb + j],
          wc = q[qc + j];
        a0 += wa * x;
        a1 += wa * y;
        b0 += wb * x;
        b1 += wb * y;
        c0 += wc * x;
        c1 += wc * y;
      }
      scores[sa + t] = a0;
      scores[sb + t] = b0;
      scores[sc + t] = c0;
      if (t + 1 < n) {
        scores[sa + t + 1] = a1;
        scores[sb + t + 1] = b1;
        scores[sc + t + 1] = c1;
      }
    }
  }
}

/**
 * acc[qi*hd + d] += Σ_t p[qi*bs + t] · v_t[d] for queries q0..q1 over positions 0..n-1: two
 * queries x eight positions at a time (the sixteen probabilities in registers; per value of d
 * eight loads of v and one load and store of each accumulator), an odd last query alone. Each
 * query's sum runs over t in the same order in either kernel.
 */
function tileValues(
  acc: Float64Array,
  p: Float64Array,
  v: Float32Array,
  vOff: number,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
): void {
  let qi = q0;
  for (; qi + 2 <= q1; qi += 2) {
    const aa = qi * hd,
      ab = aa + hd;
    const pa = qi * bs,
      pb = pa + bs;
    let t = 0;
    for (; t + 8 <= n; t += 8) {
      const v0 = vOff + t * hd,
        v1 = v0 + hd,
        v2 = v1 + hd,
        v3 = v2 + hd,
        v4 = v3 + hd,
        v5 = v4 + hd,
        v6 = v5 + hd,
        v7 = v6 + hd;
      const a0 = p[pa + t],
        a1 = p[pa + t + 1],
        a2 = p[pa + t + 2],
        a3 = p[pa + t + 3],
        a4 = p[pa + t + 4],
        a5 = p[pa + t + 5],
        a6 = p[pa + t + 6],
        a7 = p[pa + t + 7];
      const b0 = p[pb + t],
        b1 = p[pb + t + 1],
        b2 = p[pb + t + 2],
        b3 = p[pb + t + 3],
        b4 = p[pb + t + 4],
        b5 = p[pb + t + 5],
        b6 = p[pb + t + 6],
        b7 = p[pb + t + 7];
      for (let j = 0; j < hd; j++) {
        const x0 = v[v0 + j],
          x1 = v[v1 + j],
          x2 = v[v2 + j],
          x3 = v[v3 + j],
          x4 = v[v4 + j],
          x5 = v[v5 + j],
          x6 = v[v6 + j],
          x7 = v[v7 + j];
        acc[aa + j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7;
        acc[ab + j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7;
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
  if (qi < q1) {
    const aa = qi * hd,
      pa = qi * bs;
    let t = 0;
    for (; t + 8 <= n; t += 8) {
      const v0 = vOff + t * hd,
        v1 = v0 + hd,
        v2 = v1 + hd,
        v3 = v2 + hd,
        v4 = v3 + hd,
        v5 = v4 + hd,
        v6 = v5 + hd,
        v7 = v6 + hd;
      const a0 = p[pa + t],
        a1 = p[pa + t + 1],
        a2 = p[pa + t + 2],
        a3 = p[pa + t + 3],
        a4 = p[pa + t + 4],
        a5 = p[pa + t + 5],
        a6 = p[pa + t + 6],
        a7 = p[pa + t + 7];
      for (let j = 0; j < hd; j++)
        acc[aa + j] +=
          a0 * v[v0 + j] +
          a1 * v[v1 + j] +
          a2 * v[v2 + j] +
          a3 * v[v3 + j] +
          a4 * v[v4 + j] +
          a5 * v[v5 + j] +
          a6 * v[v6 + j] +
          a7 * v[v7 + j];
    }
    for (; t < n; t++) {
      const v0 = vOff + t * hd;
      const a0 = p[pa + t];
      for (let j = 0; j < hd; j++) acc[aa + j] += a0 * v[v0 + j];
    }
  }
}

/**
 * tileValues over a q8_0 tile read as int8 where it lies: v_t[d] = int8 times the scale of its
 * group, and the scale is folded into the probability (p·scale, once per position and group), so
 * the values are never widened into a tile (that was a fifth of a q8_0 decode step's attention).
 * Two queries x eight positions, group by group; each query's sum runs over t in the same order
 * in every call.
 */
function tileValuesQ8(
  acc: Float64Array,
  p: Float64Array,
  v: Int8Array,
  vOff: number,
  scales: Float32Array,
  group: number,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
): void {
  const groups = hd / group;
  for (let qi = q0; qi < q1; qi += 2) {
    // An odd last query goes alone (its neighbour's probabilities, padding, are read, not used).
    const aa = qi * hd,
      ab = aa + hd;
    const pa = qi * bs,
      pb = pa + bs;
    const second = qi + 1 < q1;
    let t = 0;
    for (; t + 8 <= n; t += 8) {
      for (let g = 0; g < groups; g++) {
        const s0 = t * groups + g;
        const d0 = scales[s0],
          d1 = scales[s0 + groups],
          d2 = scales[s0 + 2 * groups],
          d3 = scales[s0 + 3 * groups],
          d4 = scales[s0 + 4 * groups],
          d5 = scales[s0 + 5 * groups],
          d6 = scales[s0 + 6 * groups],
          d7 = scales[s0 + 7 * groups];
        const a0 = p[pa + t] * d0,
          a1 = p[pa + t + 1] * d1,
          a2 = p[pa + t + 2] * d2,
          a3 = p[pa + t + 3] * d3,
          a4 = p[pa + t + 4] * d4,
          a5 = p[pa + t + 5] * d5,
          a6 = p[pa + t + 6] * d6,
          a7 = p[pa + t + 7] * d7;
        const v0 = vOff + t * hd + g * group,
          v1 = v0 + hd,
          v2 = v1 + hd,
          v3 = v2 + hd,
          v4 = v3 + hd,
          v5 = v4 + hd,
          v6 = v5 + hd,
          v7 = v6 + hd;
        const oa = aa + g * group;
        if (second) {
          const b0 = p[pb + t] * d0,
            b1 = p[pb + t + 1] * d1,
            b2 = p[pb + t + 2] * d2,
            b3 = p[pb + t + 3] * d3,
            b4 = p[pb + t + 4] * d4,
            b5 = p[pb + t + 5] * d5,
            b6 = p[pb + t + 6] * d6,
            b7 = p[pb + t + 7] * d7;
          const ob = ab + g * group;
          for (let j = 0; j < group; j++) {
            const x0 = v[v0 + j],
              x1 = v[v1 + j],
              x2 = v[v2 + j],
              x3 = v[v3 + j],
              x4 = v[v4 + j],
              x5 = v[v5 + j],
              x6 = v[v6 + j],
              x7 = v[v7 + j];
            acc[oa + j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7;
            acc[ob + j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7;
          }
        } else {
          for (let j = 0; j < group; j++)
            acc[oa + j] +=
              a0 * v[v0 + j] +
              a1 * v[v1 + j] +
              a2 * v[v2 + j] +
              a3 * v[v3 + j] +
              a4 * v[v4 + j] +
              a5 * v[v5 + j] +
              a6 * v[v6 + j] +
              a7 * v[v7 + j];
        }
      }
    }
    for (; t < n; t++) {
      for (let g = 0; g < groups; g++) {
        const d = scales[t * groups + g];
        const a0 = p[pa + t] * d,
          b0 = p[pb + t] * d;
        const v0 = vOff + t * hd + g * group;
        const oa = aa + g * group,
          ob = ab + g * group;
        for (let j = 0; j < group; j++) {
          const x = v[v0 + j];
          acc[oa + j] += a0 * x;
          if (second) acc[ob + j] += b0 * x;
        }
      }
    }
  }
}

// exp(x) for x <= 0 (a score minus the running max) without a call: x = -(i + f) ln2/64 with
// integer i, and exp(x) = 2^-(i>>6) · 2^-((i&63)/64) · e^(-f ln2/64), the last a cubic (|f ln2/64|
// < 0.011: relative error below 1e-9). Math.exp costs ~10 ns; this ~3, and a decode step at 16k
// takes 5.5M of them.
const EXP_STEPS = 64 / Math.LN2;
const EXP_STEP = Math.LN2 / 64;
const EXP_HI = Float64Array.from({ length: 1100 }, (_, i) => Math.pow(2, -i));
const EXP_LO = Float64Array.from({ length: 64 }, (_, i) => Math.pow(2, -i / 64));

function expNonPositive(x: number): number {
  if (x < -700) return 0; // e^-700 ~ 1e-304: nothing next to the max's 1 (NaN goes on below)
  const t = -x * EXP_STEPS;
  const i = t | 0;
  const f = (t - i) * EXP_STEP;
  return EXP_HI[i >> 6] * EXP_LO[i & 63] * (1 - f * (1 - f * (0.5 - f * (1 / 6))));
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
    const p = expNonPositive(scores[j] - newMax);
    scores[j] = p;
    sum += p;
  }
  for (let j = off + visible; j < off + n; j++) scores[j] = 0;
  s.sum[qi] = sum;
}

/** tile[0..n) = the cache's bf16 or q8_0 values at base.. widened to f32. */
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
  const group = kv.group;
  f16ArrayToF32(scales!, base / group, scaleTile, 0, n / group);
  if (store32 !== null && (group & 3) === 0) {
    // Four int8 per 32-bit load (base is a multiple of headDim, so of 4), sign-extended by shifts.
    const w0 = base >> 2;
    for (let g = 0; g < n / group; g++) {
      const d = scaleTile[g];
      const o = g * group;
      for (let i = o; i < o + group; i += 4) {
        const w = store32[w0 + (i >> 2)];
        tile[i] = ((w << 24) >> 24) * d;
        tile[i + 1] = ((w << 16) >> 24) * d;
        tile[i + 2] = ((w << 8) >> 24) * d;
        tile[i + 3] = (w >> 24) * d;
      }
    }
    return;
  }
  const qs = store as Int8Array;
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
