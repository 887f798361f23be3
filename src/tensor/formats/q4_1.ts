// ggml's Q4_1: every 32 weights of a row share an f16 scale d and an f16 min m and keep 4-bit levels
// q (0..15) with w = q * d + m. Qwen2.5 Q4_1 files hold every matrix in it. A block's product with
// x is an integer dot product times d plus m times the activations' sum: sum_k w_k x_k = xd *
// (d * sum_k q_k xq_k + m * sum_k xq_k) with x ~ xd * xq (int8 activations per 32, activations.ts).
//
// Storage (repacked at load, exactly the file's 20 bytes per row and block):
//   q   [rows/2, blocks, 8] words: byte c of word j is the row pair's level byte of column 4j+c, row
//       r's level in the low nibble, row r+1's in the high (iq4_nl.ts's layout); rows even;
//   u16 [rows, blocks, 2]: d, m as the file's f16 bits, widened by a table lookup where they are
//       used (as f32 they would take 24 bytes per block: 1.2x the file).
// Decode: a 256-entry table gives both rows' levels of a column as one double, q_r + q_r+1 * 2^20,
// so one load and one multiply-add serve both rows (iq4_nl.ts; faster here than q4_0's SWAR
// Math.imul); prefill the float64 lanes (lanes.ts) on levels - 8, three tokens per double 2^16 apart
// as q4_0's. Both scale a block's exact integer sum the same way, ((sum (q - 8) xq) * d + bsum *
// (m + 8d)) * xd, so a token's outputs do not depend on how many tokens share the call (bit for bit).
import { f16Values } from '../dtype.js';
import { makeMatrix, Q4_1, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const LANES_MIN_TOKENS = 8;

export const matmulQ4_1Matrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q4_1, m, n))
    matmulLanes(LANES_Q4_1, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ4_1(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty Q4_1 matrix with shared storage (rows even, cols a multiple of 32), filled by packQ4_1Rows. */
export function allocQ4_1(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % QBLOCK !== 0)
    throw new Error(`q4_1 matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 32`);
  return makeMatrix(Q4_1, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 2)),
    u16: new Uint16Array(new SharedArrayBuffer((rows * cols) / 8)),
    ggmlType: 3,
  });
}

/** ggml Q4_1 blocks (20 bytes: f16 d, f16 m, 16 bytes of nibbles j | j+16) of rows [r0, r0 + nRows) into m. */
export function packQ4_1Rows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  for (let r = r0; r < r0 + nRows; r++) {
    const shift = 4 * (r & 1);
    for (let b = 0; b < blocks; b++) {
      const o = 20 * ((r - r0) * blocks + b);
      m.u16[2 * (r * blocks + b)] = src[o] | (src[o + 1] << 8);
      m.u16[2 * (r * blocks + b) + 1] = src[o + 2] | (src[o + 3] << 8);
      const bo = ((r >> 1) * blocks + b) * 32;
      for (let j = 0; j < 16; j++) {
        bytes[bo + j] = (bytes[bo + j] & (0xf0 >> shift)) | ((src[o + 4 + j] & 0xf) << shift);
        bytes[bo + j + 16] = (bytes[bo + j + 16] & (0xf0 >> shift)) | ((src[o + 4 + j] >> 4) << shift);
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(q * d) + m). */
export function readRowQ4_1(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const shift = 4 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = f16[m.u16[2 * (r * blocks + b)]],
      mn = f16[m.u16[2 * (r * blocks + b) + 1]];
    const bo = ((r >> 1) * blocks + b) * 32;
    for (let k = 0; k < QBLOCK; k++)
      out[outOff + b * QBLOCK + k] = Math.fround(Math.fround(((bytes[bo + k] >> shift) & 15) * d) + mn);
  }
}

/** pairLevels[q_r | q_r+1 << 4] = q_r + q_r+1 * 2^20. */
const D1 = 1048576,
  INV_D1 = 1 / D1;
const pairLevels = new Float64Array(256);
for (let i = 0; i < 256; i++) pairLevels[i] = (i & 15) + (i >> 4) * D1;

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair as both pairs. */
function matvecQ4_1(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q4_1: row slices start on even rows (row pairs), got ${r0}`);
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q4_1: matrix too large');
  const f16 = f16Values();
  for (let t = 0; t < n; t++) {
    const yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, r + 2, xq, t, f16, y, yo, r1);
    for (; r < r1; r += 2) rows4(m, r, r, xq, t, f16, y, yo, r1);
  }
}

/**
 * Rows (rA, rA + 1) and (rB, rB + 1) against token t; rB = rA when one pair is left (written once,
 * its second row only when below r1).
 */
function rows4(
  m: Matrix,
  rA: number,
  rB: number,
  xq: QuantizedActivations,
  t: number,
  f16: Float32Array,
  y: Float32Array,
  yo: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5;
  const wq = m.q,
    dm = m.u16,
    xv = xq.q,
    xs = xq.scales,
    xsum = xq.sums,
    T = pairLevels;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks;
  let pa = ((rA >> 1) * blocks * 8) & OFFSET_MASK;
  const pb = ((rB >> 1) * blocks * 8 - pa) & OFFSET_MASK;
  // Each row's (d, m) pairs start here.
  const u0 = (2 * rA * blocks) & OFFSET_MASK,
    u1 = (u0 + 2 * blocks) & OFFSET_MASK,
    u2 = (2 * rB * blocks) & OFFSET_MASK,
    u3 = (u2 + 2 * blocks) & OFFSET_MASK;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  for (let b = 0; b < blocks; b++, pa += 8) {
    const xb = (xo + 32 * b) & OFFSET_MASK;
    let sA = 0,
      sB = 0;
    for (let j = 0; j < 8; j++) {
      const xj = (xb + 4 * j) & OFFSET_MASK;
      const x0 = xv[xj],
        x1 = xv[xj + 1],
        x2 = xv[xj + 2],
        x3 = xv[xj + 3];
      const p = wq[pa + j],
        q = wq[pa + pb + j];
      sA += T[p & 0xff] * x0 + T[(p >>> 8) & 0xff] * x1 + T[(p >>> 16) & 0xff] * x2 + T[p >>> 24] * x3;
      sB += T[q & 0xff] * x0 + T[(q >>> 8) & 0xff] * x1 + T[(q >>> 16) & 0xff] * x2 + T[q >>> 24] * x3;
    }
    // |32 * 15 * 127| < 2^19: the low lane is below half the spacing.
    const hA = sA * INV_D1 + ROUND - ROUND,
      hB = sB * INV_D1 + ROUND - ROUND;
    const xd = xs[xso + b],
      bsum = xsum[xso + b],
      b8 = 8 * bsum;
    const ub = b << 1;
    const d0 = f16[dm[u0 + ub]],
      d1 = f16[dm[u1 + ub]],
      d2 = f16[dm[u2 + ub]],
      d3 = f16[dm[u3 + ub]];
    acc0 += ((sA - hA * D1 - b8) * d0 + bsum * (f16[dm[u0 + ub + 1]] + 8 * d0)) * xd;
    acc1 += ((hA - b8) * d1 + bsum * (f16[dm[u1 + ub + 1]] + 8 * d1)) * xd;
    acc2 += ((sB - hB * D1 - b8) * d2 + bsum * (f16[dm[u2 + ub + 1]] + 8 * d2)) * xd;
    acc3 += ((hB - b8) * d3 + bsum * (f16[dm[u3 + ub + 1]] + 8 * d3)) * xd;
  }
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}

// ---- lanes (prefill): levels - 8 (-8..7), three tokens per double 2^16 apart (|32 * 8 * 127| <
// 2^15), 2 rows x 3 groups; widenRow also leaves each block's d and offset m + 8d for the block kernel.

// Per panel row (0, 1): [blocks] d and m + 8d of the rows widened last.
let panelScale = new Float64Array(0);
let panelOffset = new Float64Array(0);

function widenRowQ4_1(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const i = po / cols; // which panel row
  if (panelScale.length < 2 * blocks) {
    panelScale = new Float64Array(2 * blocks);
    panelOffset = new Float64Array(2 * blocks);
  }
  const wq = m.q;
  const shift = 4 * (r & 1);
  const wo = (r >> 1) * blocks * 8;
  for (let w = 0; w < blocks * 8; w++) {
    const word = wq[wo + w] >>> shift;
    const k = po + 4 * w;
    panel[k] = (word & 15) - 8;
    panel[k + 1] = ((word >>> 8) & 15) - 8;
    panel[k + 2] = ((word >>> 16) & 15) - 8;
    panel[k + 3] = ((word >>> 24) & 15) - 8;
  }
  for (let b = 0; b < blocks; b++) {
    const d = f16[m.u16[2 * (r * blocks + b)]];
    panelScale[i * blocks + b] = d;
    panelOffset[i * blocks + b] = f16[m.u16[2 * (r * blocks + b) + 1]] + 8 * d;
  }
}

const L1 = 65536,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As q4_0's rowPairQ4, with each block's d and offset from widenRowQ4_1. */
function rowPairQ4_1(
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
    splitQ4_1(a0, b0, dA, dB, offA, offB, xsT, xsumT, so, acc, o);
    splitQ4_1(a1, b1, dA, dB, offA, offB, xsT, xsumT, so + 3, acc, o + 6);
    splitQ4_1(a2, b2, dA, dB, offA, offB, xsT, xsumT, so + 6, acc, o + 12);
  }
}

/** The three tokens' lanes of rows A and B (as q4_0's splitQ4), each scaled and offset as the decode does. */
function splitQ4_1(
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

const LANES_Q4_1: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ4_1,
  block: rowPairQ4_1,
};
