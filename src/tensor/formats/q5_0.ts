// ggml's Q5_0: every 32 weights of a row share an f16 scale d and keep 5-bit levels q (0..31) with
// w = d * (q - 16). Qwen2.5-0.5B "Q4_K_M" files hold most tensors in Q5_0 (896-wide rows have no
// 256-blocks), so it gets SWAR kernels on row pairs, 24 bytes per row and block against the file's
// 22 (the scale widens to f32).
//
// Storage, rows even: q [rows/2, blocks, 10] words, a word's low 16 bits row r's and its high 16
// bits row r+1's. Words 5h..5h+4 hold columns 16h..16h+15 of the block: each 16-bit lane of word
// 5h+i has the levels of columns 16h+3i, +1, +2 in bits 0..4, 5..9, 10..14, and in bit 15 bit i of
// the level of column 16h+15 (the lanes' spare bits spell that column). Q5_K (q5_k.ts) shares it.
// scales [rows, blocks]: d.
//
// Decode: a column's levels of both rows come out of a word with one shift and mask (the 16th
// column's out of five) into one Math.imul by the activation: two rows' multiply-adds. Unsigned
// levels times int8 could overflow a 16-bit lane after 8 columns; subtracting 16 * (the 16 columns'
// activation sum) from both lanes at once makes them sums of (q - 16) x, |16 * 16 * 127| < 2^15, so
// 16 columns share one split. Prefill: float64 lanes on q - 16 (-16..15): |32 products| <= 32 * 16
// * 127 = 65024 < 2^16, so three tokens per double 2^17 apart (q4_0's are 2^16 apart).
import { makeMatrix, Q5_0, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 10;
const LEVELS5 = 0x1f001f;

export const matmulQ5_0Matrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q5_0, m, n))
    matmulLanes(LANES_Q5_0, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ5_0(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty Q5_0 matrix with shared storage (rows even, cols a multiple of 32), filled by packQ5_0Rows. */
export function allocQ5_0(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % QBLOCK !== 0)
    throw new Error(`q5_0 matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 32`);
  return makeMatrix(Q5_0, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows / 2) * (cols / QBLOCK) * PAIR_WORDS * 4)),
    scales: new Float32Array(new SharedArrayBuffer((rows * cols) / 8)),
    ggmlType: 6,
  });
}

/** ggml Q5_0 blocks (22 bytes: f16 d, u32 fifth bits, 16 bytes of nibbles j | j+16) of rows [r0, r0 + nRows) into m. */
export function packQ5_0Rows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const levels = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = 22 * ((r - r0) * blocks + b);
      m.scales[r * blocks + b] = f16At(src, o);
      for (let j = 0; j < 16; j++) {
        const h = src[o + 2 + (j >> 3)] >> (j & 7),
          h16 = src[o + 4 + (j >> 3)] >> (j & 7);
        levels[j] = (src[o + 6 + j] & 0xf) | ((h & 1) << 4);
        levels[j + 16] = (src[o + 6 + j] >> 4) | ((h16 & 1) << 4);
      }
      packLevels5(levels, halves, ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1));
    }
  }
}

/** A row's 32 levels (0..31) of a block into its 16-bit halves halves[ho + 2w] of the block's 10 words. */
export function packLevels5(levels: Uint8Array, halves: Uint16Array, ho: number): void {
  for (let h = 0; h < 2; h++)
    for (let i = 0; i < 5; i++) {
      const k = 16 * h + 3 * i;
      halves[ho + 2 * (5 * h + i)] =
        levels[k] | (levels[k + 1] << 5) | (levels[k + 2] << 10) | (((levels[16 * h + 15] >> i) & 1) << 15);
    }
}

/** Row r's (shift: 16 * (r & 1)) 32 levels of the block at words q[wo, wo + 10), minus `offset`, into out[o, o + 32). */
export function unpackLevels5(
  q: Int32Array,
  wo: number,
  shift: number,
  offset: number,
  out: Float32Array | Float64Array,
  o: number,
): void {
  for (let h = 0; h < 2; h++) {
    let last = 0;
    for (let i = 0; i < 5; i++) {
      const w = q[wo + 5 * h + i] >>> shift;
      const k = o + 16 * h + 3 * i;
      out[k] = (w & 31) - offset;
      out[k + 1] = ((w >>> 5) & 31) - offset;
      out[k + 2] = ((w >>> 10) & 31) - offset;
      last |= ((w >>> 15) & 1) << i;
    }
    out[o + 16 * h + 15] = last - offset;
  }
}

// This thread's levels of one block (readRow).
const blockLevels = new Float32Array(32);

/** Row r as ggml dequantizes it: (q - 16) * d in f32. */
export function readRowQ5_0(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = m.scales[r * blocks + b];
    unpackLevels5(m.q, ((r >> 1) * blocks + b) * PAIR_WORDS, shift, 16, blockLevels, 0);
    for (let k = 0; k < 32; k++) out[outOff + b * QBLOCK + k] = blockLevels[k] * d;
  }
}

// Per thread: lane16[t, g] = Math.imul(0x100010, sum of token t's int8 activations at columns
// 16g..16g+15): subtracted from a SWAR sum of unsigned 5-bit levels, it leaves both lanes' sums of
// (q - 16) * x. Built once per quantized activations (xq.version) and token count.
let lane16 = new Int32Array(0);
let lane16From: QuantizedActivations | null = null;
let lane16Version = -1;
let lane16N = 0;

export function laneOffsets16(xq: QuantizedActivations, n: number): Int32Array {
  if (lane16From === xq && lane16Version === xq.version && lane16N >= n) return lane16;
  const groups = (n * xq.cols) >> 4;
  if (lane16.length < groups) lane16 = new Int32Array(groups);
  const xv = xq.q;
  for (let g = 0; g < groups; g++) {
    let s = 0;
    for (let k = 16 * g; k < 16 * g + 16; k++) s += xv[k];
    lane16[g] = Math.imul(0x100010, s);
  }
  lane16From = xq;
  lane16Version = xq.version;
  lane16N = n;
  return lane16;
}

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair alone. */
function matvecQ5_0(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q5_0: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q5_0: matrix too large');
  const c16 = laneOffsets16(xq, n);
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      co = t * (cols >> 4),
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, xq, xo, xso, c16, co, y, yo);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, xq, xo, xso, c16, co, y, yo);
  }
}

/**
 * Both row pairs' SWAR sums of the 16 columns of half h of the block at words wq[wo..] (row pair 0)
 * and wq[wo + w1..] (row pair 1) with xv[xj, xj + 16), made signed by c: sums[0..1] = rows 0, 1 and
 * sums[2..3] = rows 2, 3 of (q - 16) * x. Shared with Q5_K.
 */
export function halfSums5(
  wq: Int32Array,
  wo: number,
  w1: number,
  xv: Int32Array,
  xj: number,
  c: number,
  sums: Int32Array,
): void {
  let s = 0,
    u = 0,
    sl = 0,
    ul = 0;
  for (let i = 0; i < 5; i++) {
    const xi = (xj + 3 * i) & OFFSET_MASK;
    const x0 = xv[xi],
      x1 = xv[xi + 1],
      x2 = xv[xi + 2];
    const p = wq[(wo + i) & OFFSET_MASK],
      q = wq[(wo + w1 + i) & OFFSET_MASK];
    s =
      (s + Math.imul(p & 0x1f001f, x0) + Math.imul((p >>> 5) & 0x1f001f, x1) + Math.imul((p >>> 10) & 0x1f001f, x2)) |
      0;
    u =
      (u + Math.imul(q & 0x1f001f, x0) + Math.imul((q >>> 5) & 0x1f001f, x1) + Math.imul((q >>> 10) & 0x1f001f, x2)) |
      0;
    // Bit 15 of each lane is bit i of the 16th column's level.
    const bit = 0x10001 << i;
    sl |= (p >>> (15 - i)) & bit;
    ul |= (q >>> (15 - i)) & bit;
  }
  const x15 = xv[(xj + 15) & OFFSET_MASK];
  s = (s + Math.imul(sl, x15) - c) | 0;
  u = (u + Math.imul(ul, x15) - c) | 0;
  let l = (s << 16) >> 16;
  sums[0] = l;
  sums[1] = (s - l) >> 16;
  l = (u << 16) >> 16;
  sums[2] = l;
  sums[3] = (u - l) >> 16;
}

// This thread's four row sums of halfSums5.
const sums4 = new Int32Array(4);

/** Rows r..r+3: both row pairs' lanes against one token, 16 columns between lane splits. */
function rows4(
  m: Matrix,
  r: number,
  blocks: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  c16: Int32Array,
  co: number,
  y: Float32Array,
  yo: number,
): void {
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales;
  const pairStride = blocks * PAIR_WORDS;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  let wo = ((r >> 1) * pairStride) & OFFSET_MASK;
  const w1 = pairStride & OFFSET_MASK;
  let so = r * blocks;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS, so++) {
    const xb = (xo + b * QBLOCK) & OFFSET_MASK;
    let l0 = 0,
      l1 = 0,
      l2 = 0,
      l3 = 0;
    for (let h = 0; h < 2; h++) {
      const xh = (xb + 16 * h) & OFFSET_MASK,
        wh = (wo + 5 * h) & OFFSET_MASK;
      let s = 0,
        u = 0,
        sl = 0,
        ul = 0;
      for (let i = 0; i < 5; i++) {
        const xi = (xh + 3 * i) & OFFSET_MASK;
        const x0 = xv[xi],
          x1 = xv[xi + 1],
          x2 = xv[xi + 2];
        const p = wq[wh + i],
          q = wq[wh + w1 + i];
        s =
          (s + Math.imul(p & LEVELS5, x0) + Math.imul((p >>> 5) & LEVELS5, x1) + Math.imul((p >>> 10) & LEVELS5, x2)) |
          0;
        u =
          (u + Math.imul(q & LEVELS5, x0) + Math.imul((q >>> 5) & LEVELS5, x1) + Math.imul((q >>> 10) & LEVELS5, x2)) |
          0;
        // Bit 15 of each lane is bit i of the 16th column's level.
        const bit = 0x10001 << i;
        sl |= (p >>> (15 - i)) & bit;
        ul |= (q >>> (15 - i)) & bit;
      }
      const x15 = xv[xh + 15],
        c = c16[co + 2 * b + h];
      s = (s + Math.imul(sl, x15) - c) | 0;
      u = (u + Math.imul(ul, x15) - c) | 0;
      let l = (s << 16) >> 16;
      l0 += l;
      l1 += (s - l) >> 16;
      l = (u << 16) >> 16;
      l2 += l;
      l3 += (u - l) >> 16;
    }
    const xd = xs[xso + b];
    acc0 += l0 * ws[so] * xd;
    acc1 += l1 * ws[so + blocks] * xd;
    acc2 += l2 * ws[so + 2 * blocks] * xd;
    acc3 += l3 * ws[so + 3 * blocks] * xd;
  }
  y[yo + r] = acc0;
  y[yo + r + 1] = acc1;
  y[yo + r + 2] = acc2;
  y[yo + r + 3] = acc3;
}

/** The row pair (r, r + 1) as rows4 computes each row, the second written only when below r1. */
function rowPair(
  m: Matrix,
  r: number,
  r1: number,
  blocks: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  c16: Int32Array,
  co: number,
  y: Float32Array,
  yo: number,
): void {
  const wq = m.q,
    ws = m.scales,
    xv = xq.q;
  const sums = sums4;
  let acc0 = 0,
    acc1 = 0;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
    const xb = xo + b * QBLOCK;
    // The same pair twice (w1 = 0): rows 2, 3 of the sums repeat rows 0, 1.
    halfSums5(wq, wo, 0, xv, xb, c16[co + 2 * b], sums);
    let l0 = sums[0],
      l1 = sums[1];
    halfSums5(wq, wo + 5, 0, xv, xb + 16, c16[co + 2 * b + 1], sums);
    l0 += sums[0];
    l1 += sums[1];
    const xd = xq.scales[xso + b];
    acc0 += l0 * ws[r * blocks + b] * xd;
    if (r + 1 < r1) acc1 += l1 * ws[(r + 1) * blocks + b] * xd;
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): levels - 16 (-16..15), three tokens per double 2^17 apart, 2 rows x 3 groups.

/** Widen row r (any parity) into panel[po, po + cols) as signed integers -16..15. */
function widenRowQ5_0(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const blocks = m.cols / QBLOCK;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++)
    unpackLevels5(m.q, ((r >> 1) * blocks + b) * PAIR_WORDS, shift, 16, panel, po + b * QBLOCK);
}

const L1 = 131072,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As q4_0's rowPairQ4 with lanes 2^17 apart: acc[2t + i] += row (rA, rB)[i] . token t, 9 tokens from t0. */
function rowPairQ5_0(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  ws: Float32Array,
  rA: number,
  rB: number,
  _rC: number,
  xsT: Float64Array,
  nPad: number,
  t0: number,
  acc: Float64Array,
): void {
  const c = cols & 0x1fffffff;
  const xa = xOff & OFFSET_MASK,
    xb = (xa + c) & OFFSET_MASK,
    xc = (xb + c) & OFFSET_MASK;
  const blocks = c / QBLOCK;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      a2 = 0,
      b0 = 0,
      b1 = 0,
      b2 = 0;
    const k0 = (b * QBLOCK) & OFFSET_MASK;
    for (let k = k0; k < k0 + QBLOCK; k += 2) {
      let x0 = packed[xa + k],
        x1 = packed[xb + k],
        x2 = packed[xc + k];
      let p = panel[k],
        q = panel[c + k];
      a0 += p * x0;
      a1 += p * x1;
      a2 += p * x2;
      b0 += q * x0;
      b1 += q * x1;
      b2 += q * x2;
      x0 = packed[xa + k + 1];
      x1 = packed[xb + k + 1];
      x2 = packed[xc + k + 1];
      p = panel[k + 1];
      q = panel[c + k + 1];
      a0 += p * x0;
      a1 += p * x1;
      a2 += p * x2;
      b0 += q * x0;
      b1 += q * x1;
      b2 += q * x2;
    }
    const wA = ws[rA * blocks + b],
      wB = ws[rB * blocks + b];
    const so = b * nPad + t0;
    const o = 2 * t0;
    splitQ5_0(a0, b0, wA, wB, xsT, so, acc, o);
    splitQ5_0(a1, b1, wA, wB, xsT, so + 3, acc, o + 6);
    splitQ5_0(a2, b2, wA, wB, xsT, so + 6, acc, o + 12);
  }
}

/** The three tokens' lanes of rows A and B (top lane first), scaled, into acc[o + 2i + row]. */
function splitQ5_0(
  sa: number,
  sb: number,
  wA: number,
  wB: number,
  xsT: Float64Array,
  so: number,
  acc: Float64Array,
  o: number,
): void {
  const ha = sa * INV_L2 + ROUND - ROUND,
    hb = sb * INV_L2 + ROUND - ROUND;
  const ra = sa - ha * L2,
    rb = sb - hb * L2;
  const ma = ra * INV_L1 + ROUND - ROUND,
    mb = rb * INV_L1 + ROUND - ROUND;
  const d0 = xsT[so],
    d1 = xsT[so + 1],
    d2 = xsT[so + 2];
  acc[o] += (ra - ma * L1) * wA * d0;
  acc[o + 1] += (rb - mb * L1) * wB * d0;
  acc[o + 2] += ma * wA * d1;
  acc[o + 3] += mb * wB * d1;
  acc[o + 4] += ha * wA * d2;
  acc[o + 5] += hb * wB * d2;
}

const LANES_Q5_0: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ5_0,
  block: rowPairQ5_0,
};
