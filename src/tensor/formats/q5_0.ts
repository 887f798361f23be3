// ggml's Q5_0: every 32 weights of a row share an f16 scale d and keep 5-bit levels q (0..31) with
// w = d * (q - 16). Qwen2.5-0.5B "Q4_K_M" files hold most tensors in Q5_0 (896-wide rows have no
// 256-blocks), so it gets q4_0's kernels: the low 4 bits of each level in q4_0's row-pair SWAR
// layout and the fifth bits as two more words per row pair and block, 24 bytes per row and block
// against the file's 22 (the scale widens to f32).
//
// Storage, rows even: q [rows/2, blocks, 10] words. Words 0..7 are q4_0's (word j: columns
// 4j..4j+3, row r in bits 4c..4c+3, row r+1 in bits 16+4c..); word 8 holds the fifth bits of columns
// 0..15 (row r in bits 0..15, row r+1 in bits 16..31), word 9 those of columns 16..31.
// scales [rows, blocks]: d.
//
// Decode: sum_k (q_k - 16) x_k = sum_k lo_k x_k + 16 sum_k hi_k x_k - 16 sum_k x_k, the first two
// sums by SWAR Math.imul on both rows at once (a fifth-bit pair is (h >>> c) & 0x10001). Prefill:
// float64 lanes on q - 16 (-16..15): |32 products| <= 32 * 16 * 127 = 65024 < 2^16, so three
// tokens per double 2^17 apart (q4_0's are 2^16 apart).
import { makeMatrix, Q5_0, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 10;

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
  const nib = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = 22 * ((r - r0) * blocks + b);
      m.scales[r * blocks + b] = f16At(src, o);
      for (let j = 0; j < 16; j++) {
        nib[j] = src[o + 6 + j] & 0xf;
        nib[j + 16] = src[o + 6 + j] >> 4;
      }
      // This row's 16-bit halves of the block's 10 words.
      const ho = ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1);
      for (let j = 0; j < 8; j++)
        halves[ho + 2 * j] = nib[4 * j] | (nib[4 * j + 1] << 4) | (nib[4 * j + 2] << 8) | (nib[4 * j + 3] << 12);
      // The file's qh: bit j is column j's fifth bit, little-endian.
      halves[ho + 16] = src[o + 2] | (src[o + 3] << 8);
      halves[ho + 18] = src[o + 4] | (src[o + 5] << 8);
    }
  }
}

/** Row r as ggml dequantizes it: (q - 16) * d in f32. */
export function readRowQ5_0(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK;
  const q = m.q;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = m.scales[r * blocks + b];
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    const o = outOff + b * QBLOCK;
    const hi = ((q[wo + 8] >>> shift) & 0xffff) | (((q[wo + 9] >>> shift) & 0xffff) << 16);
    for (let j = 0; j < 8; j++) {
      const word = q[wo + j] >>> shift;
      for (let c = 0; c < 4; c++) {
        const k = 4 * j + c;
        out[o + k] = ((((word >>> (4 * c)) & 0xf) | (((hi >>> k) & 1) << 4)) - 16) * d;
      }
    }
  }
}

// Per thread: hiSums[t, k/4, s] = the sum of token t's int8 activations at the columns k + i of the
// 4-column group for the bits i set in s (0..15), so that a row's fifth bits of 4 columns cost one
// load instead of four multiplies; built once per quantized activations (xq.version) and tokens.
let hiSums = new Int32Array(0);
let sumsFrom: QuantizedActivations | null = null;
let sumsVersion = -1;
let sumsN = 0;

export function subsetSums(xq: QuantizedActivations, n: number): Int32Array {
  if (sumsFrom === xq && sumsVersion === xq.version && sumsN >= n) return hiSums;
  const groups = (n * xq.cols) >> 2;
  if (hiSums.length < 16 * groups) hiSums = new Int32Array(16 * groups);
  const hs = hiSums,
    xv = xq.q;
  for (let g = 0; g < groups; g++) {
    const x0 = xv[4 * g],
      x1 = xv[4 * g + 1],
      x2 = xv[4 * g + 2],
      x3 = xv[4 * g + 3];
    const o = 16 * g;
    for (let s = 0; s < 16; s++) hs[o + s] = (s & 1 ? x0 : 0) + (s & 2 ? x1 : 0) + (s & 4 ? x2 : 0) + (s & 8 ? x3 : 0);
  }
  sumsFrom = xq;
  sumsVersion = xq.version;
  sumsN = n;
  return hs;
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
  if (m.q.length > OFFSET_MASK || 4 * xq.q.length > OFFSET_MASK) throw new RangeError('q5_0: matrix too large');
  const hs = subsetSums(xq, n);
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, xq, xo, xso, y, yo, hs, 4 * xo);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, xq, xo, xso, y, yo);
  }
}

/** Rows r..r+3: both row pairs' lanes against one token, 16 columns between lane splits. */
function rows4(
  m: Matrix,
  r: number,
  blocks: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  y: Float32Array,
  yo: number,
  hs: Int32Array,
  ho: number,
): void {
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales,
    xsum = xq.sums;
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
    let lo0 = 0,
      hi0 = 0,
      lo1 = 0,
      hi1 = 0,
      f = 0,
      g = 0;
    const tb = (ho + 128 * b) & OFFSET_MASK;
    for (let half = 0; half < 2; half++) {
      let s = 0,
        u = 0;
      for (let j = 4 * half; j < 4 * half + 4; j++) {
        const xj = (xb + 4 * j) & OFFSET_MASK;
        const x0 = xv[xj],
          x1 = xv[xj + 1],
          x2 = xv[xj + 2],
          x3 = xv[xj + 3];
        const p = wq[wo + j],
          q = wq[wo + w1 + j];
        s =
          (s +
            Math.imul(p & 0xf000f, x0) +
            Math.imul((p >>> 4) & 0xf000f, x1) +
            Math.imul((p >>> 8) & 0xf000f, x2) +
            Math.imul((p >>> 12) & 0xf000f, x3)) |
          0;
        u =
          (u +
            Math.imul(q & 0xf000f, x0) +
            Math.imul((q >>> 4) & 0xf000f, x1) +
            Math.imul((q >>> 8) & 0xf000f, x2) +
            Math.imul((q >>> 12) & 0xf000f, x3)) |
          0;
      }
      // Split the nibble lanes after 16 columns (|lane| <= 16 * 15 * 127 < 2^15).
      let l = (s << 16) >> 16;
      lo0 += l;
      hi0 += (s - l) >> 16;
      l = (u << 16) >> 16;
      lo1 += l;
      hi1 += (u - l) >> 16;
    }
    // The fifth bits of 4 columns index the activations' subset sums (hiSums), both rows of a pair
    // at once, in a loop of their own (fewer live registers than inside the nibble loop).
    for (let half = 0; half < 2; half++) {
      let hp = wq[wo + 8 + half],
        hq = wq[wo + w1 + 8 + half];
      for (let j = 4 * half; j < 4 * half + 4; j++) {
        const tj = (tb + 16 * j) & OFFSET_MASK;
        f = (f + hs[tj + (hp & 15)] + (hs[tj + ((hp >>> 16) & 15)] << 16)) | 0;
        g = (g + hs[tj + (hq & 15)] + (hs[tj + ((hq >>> 16) & 15)] << 16)) | 0;
        hp >>>= 4;
        hq >>>= 4;
      }
    }
    // The fifth bits' sums, two rows per int32 (|lane| <= 32 * 127): split once per block.
    let l = (f << 16) >> 16;
    const f0 = l,
      f1 = (f - l) >> 16;
    l = (g << 16) >> 16;
    const g0 = l,
      g1 = (g - l) >> 16;
    const xd = xs[xso + b],
      bsum = 16 * xsum[xso + b];
    acc0 += (lo0 + 16 * f0 - bsum) * ws[so] * xd;
    acc1 += (hi0 + 16 * f1 - bsum) * ws[so + blocks] * xd;
    acc2 += (lo1 + 16 * g0 - bsum) * ws[so + 2 * blocks] * xd;
    acc3 += (hi1 + 16 * g1 - bsum) * ws[so + 3 * blocks] * xd;
  }
  y[yo + r] = acc0;
  y[yo + r + 1] = acc1;
  y[yo + r + 2] = acc2;
  y[yo + r + 3] = acc3;
}

/** The row pair (r, r + 1), the second written only when below r1. */
function rowPair(
  m: Matrix,
  r: number,
  r1: number,
  blocks: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  y: Float32Array,
  yo: number,
): void {
  const wq = m.q,
    ws = m.scales,
    xv = xq.q;
  let acc0 = 0,
    acc1 = 0;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
    let lo = 0,
      hi = 0,
      f = 0;
    for (let half = 0; half < 2; half++) {
      let s = 0;
      let h = wq[wo + 8 + half];
      for (let j = 4 * half; j < 4 * half + 4; j++) {
        const word = wq[wo + j];
        const xj = xo + b * QBLOCK + 4 * j;
        s =
          (s +
            Math.imul(word & 0xf000f, xv[xj]) +
            Math.imul((word >>> 4) & 0xf000f, xv[xj + 1]) +
            Math.imul((word >>> 8) & 0xf000f, xv[xj + 2]) +
            Math.imul((word >>> 12) & 0xf000f, xv[xj + 3])) |
          0;
        f =
          (f +
            Math.imul(h & 0x10001, xv[xj]) +
            Math.imul((h >>> 1) & 0x10001, xv[xj + 1]) +
            Math.imul((h >>> 2) & 0x10001, xv[xj + 2]) +
            Math.imul((h >>> 3) & 0x10001, xv[xj + 3])) |
          0;
        h >>>= 4;
      }
      const l = (s << 16) >> 16;
      lo += l;
      hi += (s - l) >> 16;
    }
    const l = (f << 16) >> 16;
    const xd = xq.scales[xso + b],
      bsum = 16 * xq.sums[xso + b];
    acc0 += (lo + 16 * l - bsum) * ws[r * blocks + b] * xd;
    if (r + 1 < r1) acc1 += (hi + 16 * ((f - l) >> 16) - bsum) * ws[(r + 1) * blocks + b] * xd;
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): levels - 16 (-16..15), three tokens per double 2^17 apart, 2 rows x 3 groups.

/** Widen row r (any parity) into panel[po, po + cols) as signed integers -16..15. */
function widenRowQ5_0(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const blocks = m.cols / QBLOCK;
  const wq = m.q;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    let hi = ((wq[wo + 8] >>> shift) & 0xffff) | (((wq[wo + 9] >>> shift) & 0xffff) << 16);
    const k0 = po + b * QBLOCK;
    for (let j = 0; j < 8; j++) {
      const word = wq[wo + j] >>> shift;
      const k = k0 + 4 * j;
      panel[k] = ((word & 15) | ((hi & 1) << 4)) - 16;
      panel[k + 1] = (((word >>> 4) & 15) | ((hi & 2) << 3)) - 16;
      panel[k + 2] = (((word >>> 8) & 15) | ((hi & 4) << 2)) - 16;
      panel[k + 3] = (((word >>> 12) & 15) | ((hi & 8) << 1)) - 16;
      hi >>>= 4;
    }
  }
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
