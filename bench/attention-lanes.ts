// The attention kernel of before P·V was blocked by queries x values (main 5050074), kept as
// bench/attention-decode.ts's baseline: P·V over two queries x eight positions.
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
  // widening). f32 and bf16 keys and values are read from a Float32Array, the f32 cache itself or
  // a tile of bf16 widened to f32 (exactly: bf16 is an f32's top half); q8_0 keys and values are
  // read as int8 where they lie (tileScoresQ8, tileValuesQ8).
  queries: Float64Array; // [maxQueries rounded up to 4, headDim]: the queries times the scale
  kTile: Float32Array; // [blockSize, headDim]
  vTile: Float32Array;
  kTile32: Int32Array; // the same memory as kTile (bf16 pairs are widened through it)
  vTile32: Int32Array;
  scaleTile: Float32Array; // q8_0 scales of one tile of keys
  vScaleTile: Float32Array; // and of values
  // q8_0 keys: the queries as integers (quantizeQueriesQ8), two per double (tileScoresQ8).
  qPacked: Float64Array; // [maxQueries rounded up to 4 / 2 + Q8_SPARE_PAIRS, headDim]
  qScale: Float64Array; // [as many queries, headDim / group at most]: each group's scale
  scores: Float64Array; // [as many queries, blockSize]: scores, then probabilities
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
    qPacked: new Float64Array((padded / 2 + Q8_SPARE_PAIRS) * headDim),
    qScale: new Float64Array((padded + 2 * Q8_SPARE_PAIRS) * headDim),
    scores: new Float64Array((padded + 2 * Q8_SPARE_PAIRS) * blockSize),
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
  if (kv.format === KV_Q8_0) quantizeQueriesQ8(s, queries, hd, kv.group);
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
      loadTileBf16(s.kTile32, kv.k32!, base, tileLen * hd);
      loadTileBf16(s.vTile32, kv.v32!, base, tileLen * hd);
    } else {
      f16ArrayToF32(kv.kScale!, base / kv.group, s.scaleTile, 0, (tileLen * hd) / kv.group);
      f16ArrayToF32(kv.vScale!, base / kv.group, s.vScaleTile, 0, (tileLen * hd) / kv.group);
    }
    // Rows before firstRow see none of this tile (causal); the queries from a multiple of 4 at or
    // below its first query on are computed, the ones that see nothing get probability 0.
    const firstRow = Math.max(0, t0 - pos0);
    const q0 = (firstRow * group) & ~3;
    if (kv.format === KV_Q8_0)
      tileScoresQ8(
        s.scores,
        s.qPacked,
        s.qScale,
        kv.k as Int8Array,
        base,
        s.scaleTile,
        q0,
        queries,
        tileLen,
        hd,
        bs,
        kv.group,
      );
    else tileScores(s.scores, qs, k, kvOff, q0, queries, tileLen, hd, bs);
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

// ---- q8_0 keys: integer scores, two queries per double (the lanes of formats/lanes.ts). A query
// head is rounded to integers with a scale per group of the cache (|q| <= queryMaxQ8(group)), and
// two queries are packed in one double, A + B·2^26. Times an int8 key value that is two products
// in one multiply; summed over a group, each lane's sum stays below group·128·queryMaxQ8 < 2^25,
// so the double holds both exactly and rounding splits them. The query keeps 13 bits plus sign for
// groups of 32 (8191 steps of its largest value) where llama.cpp's q8_0 query keeps 8: a step
// much finer than the keys' own (1/127 of theirs).
const LANE = 67108864; // 2^26
const INV_LANE = 1 / LANE;
const ROUND = 6755399441055744; // x + ROUND - ROUND rounds a double to an integer (|x| < 2^51)
const Q8_SPARE_PAIRS = 4; // zero query pairs past the last, so tileScoresQ8's blocks of 4 never run out

/** The largest |integer| a query value is rounded to for groups of `group` values. */
function queryMaxQ8(group: number): number {
  return Math.floor((LANE / 2 - 1) / (group * 128));
}

/**
 * x[off..off+n) rounded in groups of `group` as tileScoresQ8 rounds a query (n a multiple of
 * group): the oracle's queries for a q8_0 cache, as kvRoundTrip gives its keys.
 */
export function roundQueryQ8(x: Float32Array, off: number, n: number, group: number): void {
  const qmax = queryMaxQ8(group);
  for (let o = off; o < off + n; o += group) {
    let amax = 0;
    for (let j = o; j < o + group; j++) amax = Math.max(amax, Math.abs(x[j]));
    const inv = amax === 0 ? 0 : qmax / amax;
    for (let j = o; j < o + group; j++) x[j] = (x[j] * inv + ROUND - ROUND) * (amax / qmax);
  }
}

/**
 * s.qPacked[i*hd + j] = round(q_2i[j] / scale) + round(q_2i+1[j] / scale') · 2^26 for the (scaled)
 * queries in s.queries, with the scale of each query's group of `group` values in s.qScale (the
 * padding queries are zero).
 */
function quantizeQueriesQ8(s: AttentionScratch, queries: number, hd: number, group: number): void {
  const qs = s.queries,
    packed = s.qPacked,
    qScale = s.qScale;
  const qmax = queryMaxQ8(group);
  const groups = hd / group;
  for (let qi = 0; qi < queries; qi++) {
    const po = (qi >> 1) * hd;
    const lane = qi & 1 ? LANE : 1;
    for (let g = 0; g < groups; g++) {
      const o = qi * hd + g * group;
      let amax = 0;
      for (let j = o; j < o + group; j++) amax = Math.max(amax, Math.abs(qs[j]));
      const inv = amax === 0 ? 0 : qmax / amax;
      qScale[qi * groups + g] = amax / qmax;
      for (let j = 0; j < group; j++) {
        const x = qs[o + j] * inv + ROUND - ROUND;
        if (lane === 1) packed[po + g * group + j] = x;
        else packed[po + g * group + j] += x * lane;
      }
    }
  }
  // An odd last query's pair has a zero second lane, and four zero pairs follow for tileScoresQ8.
  const pairs = (queries + 1) >> 1;
  packed.fill(0, pairs * hd, (pairs + Q8_SPARE_PAIRS) * hd);
  qScale.fill(0, queries * groups, 2 * (pairs + Q8_SPARE_PAIRS) * groups);
}

/**
 * scores[qi*bs + t] = q_qi · k_t for queries q0..q1 (q0 even) over positions 0..n-1 of a q8_0
 * tile read as int8 where it lies: per group, the integer sums of four query pairs (8 queries) x
 * two positions, split into lanes and scaled by the query's and the key's scales. A decode row of
 * Qwen2.5-0.5B has 7 queries: 4 pairs, one lane of padding.
 */
function tileScoresQ8(
  scores: Float64Array,
  qp: Float64Array,
  qScale: Float64Array,
  k: Int8Array,
  kOff: number,
  kScale: Float32Array,
  q0: number,
  q1: number,
  n: number,
  hd: number,
  bs: number,
  group: number,
): void {
  const groups = hd / group;
  const p1 = (q1 + 1) >> 1;
  let p = q0 >> 1;
  for (; p < p1; p += 4) {
    // Fewer than four pairs left: the block runs four anyway, the extra ones on zero padding
    // queries (quantizeQueriesQ8 leaves four zero pairs past the last) whose scores nobody reads.
    const pb = p + 1,
      pc = p + 2,
      pd = p + 3;
    const xa = p * hd,
      xb = pb * hd,
      xc = pc * hd,
      xd = pd * hd;
    for (let t = 0; t < n; t += 2) {
      // n is even except for a sequence's last, partly filled block: there k1 repeats k0.
      const second = t + 1 < n;
      const k0 = kOff + t * hd,
        k1 = second ? k0 + hd : k0;
      for (let g = 0; g < groups; g++) {
        let a0 = 0,
          a1 = 0,
          b0 = 0,
          b1 = 0,
          c0 = 0,
          c1 = 0,
          d0 = 0,
          d1 = 0;
        const j0 = g * group;
        for (let j = j0; j < j0 + group; j++) {
          const x = k[k0 + j],
            y = k[k1 + j];
          const wa = qp[xa + j],
            wb = qp[xb + j],
            wc = qp[xc + j],
            wd = qp[xd + j];
          a0 += wa * x;
          a1 += wa * y;
          b0 += wb * x;
          b1 += wb * y;
          c0 += wc * x;
          c1 += wc * y;
          d0 += wd * x;
          d1 += wd * y;
        }
        const ks0 = kScale[t * groups + g],
          ks1 = kScale[(second ? t + 1 : t) * groups + g];
        addScoresQ8(scores, a0, 2 * p, t, bs, qScale, groups, g, ks0);
        addScoresQ8(scores, b0, 2 * pb, t, bs, qScale, groups, g, ks0);
        addScoresQ8(scores, c0, 2 * pc, t, bs, qScale, groups, g, ks0);
        addScoresQ8(scores, d0, 2 * pd, t, bs, qScale, groups, g, ks0);
        if (second) {
          addScoresQ8(scores, a1, 2 * p, t + 1, bs, qScale, groups, g, ks1);
          addScoresQ8(scores, b1, 2 * pb, t + 1, bs, qScale, groups, g, ks1);
          addScoresQ8(scores, c1, 2 * pc, t + 1, bs, qScale, groups, g, ks1);
          addScoresQ8(scores, d1, 2 * pd, t + 1, bs, qScale, groups, g, ks1);
        }
      }
    }
  }
}

/**
 * Splits a pair's group sum (queries qa and qa+1 against position t) into its two integer lanes
 * and adds each times its query's and the key's scales to the scores (the first group sets them).
 */
function addScoresQ8(
  scores: Float64Array,
  sum: number,
  qa: number,
  t: number,
  bs: number,
  qScale: Float64Array,
  groups: number,
  g: number,
  ks: number,
): void {
  const hi = sum * INV_LANE + ROUND - ROUND;
  const lo = sum - hi * LANE;
  const sa = lo * qScale[qa * groups + g] * ks,
    sb = hi * qScale[(qa + 1) * groups + g] * ks;
  const oa = qa * bs + t,
    ob = oa + bs;
  if (g === 0) {
    scores[oa] = sa;
    scores[ob] = sb;
  } else {
    scores[oa] += sa;
    scores[ob] += sb;
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

/** tile[0..n) = the cache's bf16 values from word base/2 on, widened to f32 (bf16 is an f32's top half). */
function loadTileBf16(tile32: Int32Array, src: Int32Array, base: number, n: number): void {
  // base and n are even (headDim is), so values come in pairs.
  const p0 = base >> 1;
  for (let j = 0; j < n >> 1; j++) {
    const w = src[p0 + j];
    tile32[2 * j] = w << 16;
    tile32[2 * j + 1] = w & -65536;
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
