// ggml's Q5_1: every 32 weights of a row share an f16 scale d and an f16 min m and keep 5-bit levels
// q (0..31) with w = q * d + m. Qwen2.5-0.5B "Q5_K_M" files hold most matrices in it (llama-quantize's
// fallback for Q5_K where 896-wide rows have no 256-blocks).
//
// Storage (repacked at load, exactly the file's 24 bytes per row and block): Q5_0's (q5_0.ts)
//   q   [rows/2, blocks, 10] words: words 0..7 the low nibbles in q4_0's row-pair SWAR layout, word 8
//       the fifth bits of columns 0..15 (row r in bits 0..15, row r+1 in bits 16..31), word 9 those
//       of columns 16..31; rows even;
//   u16 [rows, blocks, 2]: d, m as the file's f16 bits, widened by a table lookup where used.
// Decode: sum_k q_k xq_k = sum_k lo_k xq_k + 16 sum_k hi_k xq_k, the nibble sums by SWAR Math.imul
// on both rows at once, the fifth bits' by Q5_0's per-token subset sums of 4 activations; the block
// then adds (sum q xq * d + bsum * m) * xd. Prefill: float64 lanes on q - 16 (-16..15), three
// tokens per double 2^17 apart as Q5_0's, each block's lanes brought back to sum q xq and scaled
// exactly as the decode does, so a token's outputs do not depend on how many tokens share the call.
import { f16Values } from '../dtype.js';
import { makeMatrix, Q5_1, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';
import { subsetSums } from './q5_0.js';

const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 10;

export const matmulQ5_1Matrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q5_1, m, n))
    matmulLanes(LANES_Q5_1, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ5_1(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty Q5_1 matrix with shared storage (rows even, cols a multiple of 32), filled by packQ5_1Rows. */
export function allocQ5_1(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % QBLOCK !== 0)
    throw new Error(`q5_1 matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 32`);
  return makeMatrix(Q5_1, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows / 2) * (cols / QBLOCK) * PAIR_WORDS * 4)),
    u16: new Uint16Array(new SharedArrayBuffer((rows * cols) / 8)),
    ggmlType: 7,
  });
}

/** ggml Q5_1 blocks (24 bytes: f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles j | j+16) of rows [r0, r0 + nRows) into m. */
export function packQ5_1Rows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const nib = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = 24 * ((r - r0) * blocks + b);
      m.u16[2 * (r * blocks + b)] = src[o] | (src[o + 1] << 8);
      m.u16[2 * (r * blocks + b) + 1] = src[o + 2] | (src[o + 3] << 8);
      for (let j = 0; j < 16; j++) {
        nib[j] = src[o + 8 + j] & 0xf;
        nib[j + 16] = src[o + 8 + j] >> 4;
      }
      const ho = ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1);
      for (let j = 0; j < 8; j++)
        halves[ho + 2 * j] = nib[4 * j] | (nib[4 * j + 1] << 4) | (nib[4 * j + 2] << 8) | (nib[4 * j + 3] << 12);
      // The file's qh: bit j is column j's fifth bit, little-endian.
      halves[ho + 16] = src[o + 4] | (src[o + 5] << 8);
      halves[ho + 18] = src[o + 6] | (src[o + 7] << 8);
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(q * d) + m). */
export function readRowQ5_1(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const q = m.q;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = f16[m.u16[2 * (r * blocks + b)]],
      mn = f16[m.u16[2 * (r * blocks + b) + 1]];
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    const o = outOff + b * QBLOCK;
    const hi = ((q[wo + 8] >>> shift) & 0xffff) | (((q[wo + 9] >>> shift) & 0xffff) << 16);
    for (let j = 0; j < 8; j++) {
      const word = q[wo + j] >>> shift;
      for (let c = 0; c < 4; c++) {
        const k = 4 * j + c;
        out[o + k] = Math.fround(Math.fround((((word >>> (4 * c)) & 0xf) | (((hi >>> k) & 1) << 4)) * d) + mn);
      }
    }
  }
}

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair alone. */
function matvecQ5_1(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q5_1: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (m.q.length > OFFSET_MASK || 4 * xq.q.length > OFFSET_MASK) throw new RangeError('q5_1: matrix too large');
  const hs = subsetSums(xq, n);
  const f16 = f16Values();
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, xq, xo, xso, y, yo, hs, 4 * xo, f16);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, xq, xo, xso, y, yo, f16);
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
  f16: Float32Array,
): void {
  const wq = m.q,
    dm = m.u16,
    xv = xq.q,
    xs = xq.scales,
    xsum = xq.sums;
  const pairStride = blocks * PAIR_WORDS;
  const u0 = (2 * r * blocks) & OFFSET_MASK,
    u1 = (u0 + 2 * blocks) & OFFSET_MASK,
    u2 = (u1 + 2 * blocks) & OFFSET_MASK,
    u3 = (u2 + 2 * blocks) & OFFSET_MASK;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  let wo = ((r >> 1) * pairStride) & OFFSET_MASK;
  const w1 = pairStride & OFFSET_MASK;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
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
      let l = (s << 16) >> 16;
      lo0 += l;
      hi0 += (s - l) >> 16;
      l = (u << 16) >> 16;
      lo1 += l;
      hi1 += (u - l) >> 16;
    }
    // The fifth bits of 4 columns index the activations' subset sums, both rows of a pair at once.
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
    let l = (f << 16) >> 16;
    const f0 = l,
      f1 = (f - l) >> 16;
    l = (g << 16) >> 16;
    const g0 = l,
      g1 = (g - l) >> 16;
    const xd = xs[xso + b],
      bsum = xsum[xso + b];
    const ub = b << 1;
    acc0 += ((lo0 + 16 * f0) * f16[dm[u0 + ub]] + bsum * f16[dm[u0 + ub + 1]]) * xd;
    acc1 += ((hi0 + 16 * f1) * f16[dm[u1 + ub]] + bsum * f16[dm[u1 + ub + 1]]) * xd;
    acc2 += ((lo1 + 16 * g0) * f16[dm[u2 + ub]] + bsum * f16[dm[u2 + ub + 1]]) * xd;
    acc3 += ((hi1 + 16 * g1) * f16[dm[u3 + ub]] + bsum * f16[dm[u3 + ub + 1]]) * xd;
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
  f16: Float32Array,
): void {
  const wq = m.q,
    dm = m.u16,
    xv = xq.q;
  let acc0 = 0,
    acc1 = 0;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  const u0 = 2 * r * blocks,
    u1 = u0 + 2 * blocks;
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
      bsum = xq.sums[xso + b];
    acc0 += ((lo + 16 * l) * f16[dm[u0 + 2 * b]] + bsum * f16[dm[u0 + 2 * b + 1]]) * xd;
    if (r + 1 < r1) acc1 += ((hi + 16 * ((f - l) >> 16)) * f16[dm[u1 + 2 * b]] + bsum * f16[dm[u1 + 2 * b + 1]]) * xd;
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): levels - 16 (-16..15), three tokens per double 2^17 apart (|32 * 16 * 127| <
// 2^16), 2 rows x 3 groups; widenRow also leaves each block's d and m for the block kernel.

// Per panel row (0, 1): [blocks] d and m of the rows widened last.
let panelScale = new Float64Array(0);
let panelMin = new Float64Array(0);

/** Widen row r (any parity) into panel[po, po + cols) as signed integers -16..15. */
function widenRowQ5_1(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const i = po / m.cols; // which panel row
  if (panelScale.length < 2 * blocks) {
    panelScale = new Float64Array(2 * blocks);
    panelMin = new Float64Array(2 * blocks);
  }
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
    panelScale[i * blocks + b] = f16[m.u16[2 * (r * blocks + b)]];
    panelMin[i * blocks + b] = f16[m.u16[2 * (r * blocks + b) + 1]];
  }
}

const L1 = 131072,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As Q5_0's rowPairQ5_0, with each block's d and m from widenRowQ5_1. */
function rowPairQ5_1(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  _ws: Float32Array,
  _rA: number,
  _rB: number,
  _rC: number,
  xsT: Float64Array,
  nPad: number,
  t0: number,
  acc: Float64Array,
  xsumT: Float64Array,
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
    const so = b * nPad + t0;
    const o = 2 * t0;
    const dA = panelScale[b],
      dB = panelScale[blocks + b],
      mA = panelMin[b],
      mB = panelMin[blocks + b];
    splitQ5_1(a0, b0, dA, dB, mA, mB, xsT, xsumT, so, acc, o);
    splitQ5_1(a1, b1, dA, dB, mA, mB, xsT, xsumT, so + 3, acc, o + 6);
    splitQ5_1(a2, b2, dA, dB, mA, mB, xsT, xsumT, so + 6, acc, o + 12);
  }
}

/**
 * The three tokens' lanes of rows A and B (top lane first), each back to the decode's integer
 * sum q xq = sum (q - 16) xq + 16 * bsum and scaled as the decode does: (sum * d + bsum * m) * xd.
 */
function splitQ5_1(
  sa: number,
  sb: number,
  dA: number,
  dB: number,
  mA: number,
  mB: number,
  xsT: Float64Array,
  xsumT: Float64Array,
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
  const s0 = xsumT[so],
    s1 = xsumT[so + 1],
    s2 = xsumT[so + 2];
  acc[o] += ((ra - ma * L1 + 16 * s0) * dA + s0 * mA) * xsT[so];
  acc[o + 1] += ((rb - mb * L1 + 16 * s0) * dB + s0 * mB) * xsT[so];
  acc[o + 2] += ((ma + 16 * s1) * dA + s1 * mA) * xsT[so + 1];
  acc[o + 3] += ((mb + 16 * s1) * dB + s1 * mB) * xsT[so + 1];
  acc[o + 4] += ((ha + 16 * s2) * dA + s2 * mA) * xsT[so + 2];
  acc[o + 5] += ((hb + 16 * s2) * dB + s2 * mB) * xsT[so + 2];
}

const LANES_Q5_1: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ5_1,
  block: rowPairQ5_1,
};
