// ggml's Q5_1: every 32 weights of a row share an f16 scale d and an f16 min m and keep 5-bit levels
// q (0..31) with w = q * d + m. Qwen2.5-0.5B "Q5_K_M" files hold most matrices in it (llama-quantize's
// fallback for Q5_K where 896-wide rows have no 256-blocks).
//
// Storage (repacked at load: 26 bytes per row and block against the file's 24):
//   q   [rows/2, blocks, 11] words: word j holds the whole 5-bit levels of columns 3j..3j+2 (word 10:
//       columns 30, 31), row r in bits 5c..5c+4, row r+1 in bits 16+5c..; rows even;
//   u16 [rows, blocks, 2]: d, m as the file's f16 bits, widened by a table lookup where used.
// Decode: (word >>> 5c) & 0x001f001f puts both rows' levels of a column in 16-bit lanes, and one
// Math.imul by the activation multiplies both, as q4_0's nibbles: the fifth bit costs nothing but
// a lane split every 6 columns (|6 * 31 * 127| < 2^15) instead of every 16. Prefill: float64 lanes
// on q - 16 (-16..15), three tokens per double 2^17 apart as Q5_0's. Both scale a block's exact
// integer sum the same way, ((sum (q - 16) xq) * d + bsum * (m + 16d)) * xd, so a token's outputs
// do not depend on how many tokens share the call (bit for bit).
import { f16Values } from '../dtype.js';
import { makeMatrix, Q5_1, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 11;
const M5 = 0x001f001f;

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
  const level = new Uint8Array(33); // level[32] = 0: the empty third field of word 10
  for (let r = r0; r < r0 + nRows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = 24 * ((r - r0) * blocks + b);
      m.u16[2 * (r * blocks + b)] = src[o] | (src[o + 1] << 8);
      m.u16[2 * (r * blocks + b) + 1] = src[o + 2] | (src[o + 3] << 8);
      const qh = (src[o + 4] | (src[o + 5] << 8) | (src[o + 6] << 16) | (src[o + 7] << 24)) >>> 0;
      for (let j = 0; j < 16; j++) {
        level[j] = (src[o + 8 + j] & 0xf) | (((qh >>> j) & 1) << 4);
        level[j + 16] = (src[o + 8 + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      }
      const ho = ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1);
      for (let j = 0; j < PAIR_WORDS; j++)
        halves[ho + 2 * j] = level[3 * j] | (level[3 * j + 1] << 5) | (level[3 * j + 2] << 10);
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(q * d) + m). */
export function readRowQ5_1(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = f16[m.u16[2 * (r * blocks + b)]],
      mn = f16[m.u16[2 * (r * blocks + b) + 1]];
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    const o = outOff + b * QBLOCK;
    for (let k = 0; k < QBLOCK; k++) {
      const level = (m.q[wo + ((k / 3) | 0)] >>> (shift + 5 * (k % 3))) & 0x1f;
      out[o + k] = Math.fround(Math.fround(level * d) + mn);
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
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q5_1: matrix too large');
  const f16 = f16Values();
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, xq, xo, xso, y, yo, f16);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, xq, xo, xso, y, yo, f16);
  }
}

/** Rows r..r+3: both row pairs' lanes against one token, split every 6 columns. */
function rows4(
  m: Matrix,
  r: number,
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
      hi1 = 0;
    for (let j = 0; j < 10; j += 2) {
      const xj = (xb + 3 * j) & OFFSET_MASK;
      const x0 = xv[xj],
        x1 = xv[xj + 1],
        x2 = xv[xj + 2],
        x3 = xv[xj + 3],
        x4 = xv[xj + 4],
        x5 = xv[xj + 5];
      const p = wq[wo + j],
        pp = wq[wo + j + 1],
        q = wq[wo + w1 + j],
        qq = wq[wo + w1 + j + 1];
      const s =
        (Math.imul(p & M5, x0) +
          Math.imul((p >>> 5) & M5, x1) +
          Math.imul((p >>> 10) & M5, x2) +
          Math.imul(pp & M5, x3) +
          Math.imul((pp >>> 5) & M5, x4) +
          Math.imul((pp >>> 10) & M5, x5)) |
        0;
      const u =
        (Math.imul(q & M5, x0) +
          Math.imul((q >>> 5) & M5, x1) +
          Math.imul((q >>> 10) & M5, x2) +
          Math.imul(qq & M5, x3) +
          Math.imul((qq >>> 5) & M5, x4) +
          Math.imul((qq >>> 10) & M5, x5)) |
        0;
      let l = (s << 16) >> 16;
      lo0 += l;
      hi0 += (s - l) >> 16;
      l = (u << 16) >> 16;
      lo1 += l;
      hi1 += (u - l) >> 16;
    }
    {
      const xj = (xb + 30) & OFFSET_MASK;
      const x0 = xv[xj],
        x1 = xv[xj + 1];
      const p = wq[wo + 10],
        q = wq[wo + w1 + 10];
      const s = (Math.imul(p & M5, x0) + Math.imul((p >>> 5) & M5, x1)) | 0;
      const u = (Math.imul(q & M5, x0) + Math.imul((q >>> 5) & M5, x1)) | 0;
      let l = (s << 16) >> 16;
      lo0 += l;
      hi0 += (s - l) >> 16;
      l = (u << 16) >> 16;
      lo1 += l;
      hi1 += (u - l) >> 16;
    }
    const xd = xs[xso + b],
      bsum = xsum[xso + b],
      b16 = 16 * bsum;
    const ub = b << 1;
    const d0 = f16[dm[u0 + ub]],
      d1 = f16[dm[u1 + ub]],
      d2 = f16[dm[u2 + ub]],
      d3 = f16[dm[u3 + ub]];
    acc0 += ((lo0 - b16) * d0 + bsum * (f16[dm[u0 + ub + 1]] + 16 * d0)) * xd;
    acc1 += ((hi0 - b16) * d1 + bsum * (f16[dm[u1 + ub + 1]] + 16 * d1)) * xd;
    acc2 += ((lo1 - b16) * d2 + bsum * (f16[dm[u2 + ub + 1]] + 16 * d2)) * xd;
    acc3 += ((hi1 - b16) * d3 + bsum * (f16[dm[u3 + ub + 1]] + 16 * d3)) * xd;
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
      hi = 0;
    // Two words (6 columns) between lane splits; word 10 holds 2 columns (its third field is 0,
    // and the column after the block is read only when it exists).
    for (let j = 0; j < PAIR_WORDS; j += 2) {
      let s = 0;
      for (let i = j; i < j + 2 && i < PAIR_WORDS; i++) {
        const word = wq[wo + i];
        const xj = xo + b * QBLOCK + 3 * i;
        s = (s + Math.imul(word & M5, xv[xj]) + Math.imul((word >>> 5) & M5, xv[xj + 1])) | 0;
        if (i < 10) s = (s + Math.imul((word >>> 10) & M5, xv[xj + 2])) | 0;
      }
      const l = (s << 16) >> 16;
      lo += l;
      hi += (s - l) >> 16;
    }
    const xd = xq.scales[xso + b],
      bsum = xq.sums[xso + b];
    const dA = f16[dm[u0 + 2 * b]],
      dB = f16[dm[u1 + 2 * b]];
    acc0 += ((lo - 16 * bsum) * dA + bsum * (f16[dm[u0 + 2 * b + 1]] + 16 * dA)) * xd;
    if (r + 1 < r1) acc1 += ((hi - 16 * bsum) * dB + bsum * (f16[dm[u1 + 2 * b + 1]] + 16 * dB)) * xd;
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): levels - 16 (-16..15), three tokens per double 2^17 apart (|32 * 16 * 127| <
// 2^16), 2 rows x 3 groups; widenRow also leaves each block's d and offset m + 16d for the block kernel.

// Per panel row (0, 1): [blocks] d and m + 16d of the rows widened last.
let panelScale = new Float64Array(0);
let panelOffset = new Float64Array(0);

/** Widen row r (any parity) into panel[po, po + cols) as signed integers -16..15. */
function widenRowQ5_1(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const i = po / m.cols; // which panel row
  if (panelScale.length < 2 * blocks) {
    panelScale = new Float64Array(2 * blocks);
    panelOffset = new Float64Array(2 * blocks);
  }
  const wq = m.q;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    const k0 = po + b * QBLOCK;
    for (let j = 0; j < 10; j++) {
      const word = wq[wo + j] >>> shift;
      const k = k0 + 3 * j;
      panel[k] = (word & 31) - 16;
      panel[k + 1] = ((word >>> 5) & 31) - 16;
      panel[k + 2] = ((word >>> 10) & 31) - 16;
    }
    const last = wq[wo + 10] >>> shift;
    panel[k0 + 30] = (last & 31) - 16;
    panel[k0 + 31] = ((last >>> 5) & 31) - 16;
    const d = f16[m.u16[2 * (r * blocks + b)]];
    panelScale[i * blocks + b] = d;
    panelOffset[i * blocks + b] = f16[m.u16[2 * (r * blocks + b) + 1]] + 16 * d;
  }
}

const L1 = 131072,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As Q5_0's rowPairQ5_0, with each block's d and offset from widenRowQ5_1. */
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
  const ps = panelScale,
    po = panelOffset;
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
    const dA = ps[b],
      dB = ps[blocks + b],
      offA = po[b],
      offB = po[blocks + b];
    splitQ5_1(a0, b0, dA, dB, offA, offB, xsT, xsumT, so, acc, o);
    splitQ5_1(a1, b1, dA, dB, offA, offB, xsT, xsumT, so + 3, acc, o + 6);
    splitQ5_1(a2, b2, dA, dB, offA, offB, xsT, xsumT, so + 6, acc, o + 12);
  }
}

/** The three tokens' lanes of rows A and B (top lane first), each scaled and offset as the decode does. */
function splitQ5_1(
  sa: number,
  sb: number,
  dA: number,
  dB: number,
  offA: number,
  offB: number,
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
  const d0 = xsT[so],
    d1 = xsT[so + 1],
    d2 = xsT[so + 2];
  const s0 = xsumT[so],
    s1 = xsumT[so + 1],
    s2 = xsumT[so + 2];
  acc[o] += ((ra - ma * L1) * dA + s0 * offA) * d0;
  acc[o + 1] += ((rb - mb * L1) * dB + s0 * offB) * d0;
  acc[o + 2] += (ma * dA + s1 * offA) * d1;
  acc[o + 3] += (mb * dB + s1 * offB) * d1;
  acc[o + 4] += (ha * dA + s2 * offA) * d2;
  acc[o + 5] += (hb * dB + s2 * offB) * d2;
}

const LANES_Q5_1: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ5_1,
  block: rowPairQ5_1,
};
