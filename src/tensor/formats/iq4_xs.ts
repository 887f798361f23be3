// ggml's IQ4_XS: super-blocks of 256 values with an f16 scale d and eight 32-value sub-blocks with
// a 6-bit scale ls each, indices into IQ4_NL's 16 non-linear int8 levels V: w = fround(d * (ls - 32))
// * V[i]. A sub-block's product with x is an exact integer sum times ggml's dl = fround(d * (ls - 32))
// and the activation scale, as IQ4_NL's blocks are with their d.
//
// Storage (repacked at load, 140 bytes per row and 256 values against the file's 136):
//   q      [rows/2, cols/32, 8] words: IQ4_NL's row-pair index bytes (iq4_nl.ts); rows even;
//   u8     [rows, cols/32]: ls (0..63);
//   scales [rows, cols/256]: d widened to f32.
// Decode: IQ4_NL's pair table (one load and one multiply-add per column serve both rows); prefill:
// IQ4_NL's lanes kernel, whose widenRow gives each block dl. Both scale a block's exact integer sum
// the same way, (sum * dl) * xd, so a token's outputs are those of its one-token call bit for bit.
import { IQ4_XS, makeMatrix, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At } from './ggml-dequantize.js';
import { IQ4_LEVELS, LANES_IQ4_NL } from './iq4_nl.js';
import { lanesApply, matmulLanes, ROUND } from './lanes.js';

const LANES_MIN_TOKENS = 4;

const fround = Math.fround;
const M1 = 1048576,
  INV_M1 = 1 / M1;

/** pairLevels[i_r | i_r+1 << 4] = V[i_r] + V[i_r+1] * 2^20. */
const pairLevels = new Float64Array(256);
for (let i = 0; i < 256; i++) pairLevels[i] = IQ4_LEVELS[i & 15] + IQ4_LEVELS[i >> 4] * M1;

export const matmulIQ4_XSMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_IQ4_NL, m, n))
    matmulLanes(LANES_IQ4_NL, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecIQ4_XS(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair as both pairs. */
function matvecIQ4_XS(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`iq4_xs: row slices start on even rows (row pairs), got ${r0}`);
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('iq4_xs: matrix too large');
  for (let t = 0; t < n; t++) {
    const yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, r + 2, xq, t, y, yo, r1);
    for (; r < r1; r += 2) rows4(m, r, r, xq, t, y, yo, r1);
  }
}

/** An empty IQ4_XS matrix with shared storage (rows even, cols a multiple of 256), filled by packIQ4_XSRows. */
export function allocIQ4_XS(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`iq4_xs matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(IQ4_XS, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 2)),
    u8: new Uint8Array(new SharedArrayBuffer((rows * cols) / 32)),
    scales: new Float32Array(new SharedArrayBuffer((rows * cols) / 64)),
    ggmlType: 23,
  });
}

/**
 * ggml IQ4_XS blocks (136 bytes: f16 d, u16 scales_h, 4 bytes scales_l, 8 x 16 bytes of indices
 * j | j+16 per sub-block) of rows [r0, r0 + nRows) into m.
 */
export function packIQ4_XSRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK,
    supers = m.cols / 256;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  for (let r = r0; r < r0 + nRows; r++) {
    const shift = 4 * (r & 1);
    for (let s = 0; s < supers; s++) {
      const o = 136 * ((r - r0) * supers + s);
      m.scales[r * supers + s] = f16At(src, o);
      const scalesH = src[o + 2] | (src[o + 3] << 8);
      for (let ib = 0; ib < 8; ib++) {
        const b = s * 8 + ib;
        m.u8[r * blocks + b] = ((src[o + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((scalesH >> (2 * ib)) & 3) << 4);
        const qo = o + 8 + 16 * ib;
        const bo = ((r >> 1) * blocks + b) * 32;
        for (let j = 0; j < 16; j++) {
          bytes[bo + j] = (bytes[bo + j] & (0xf0 >> shift)) | ((src[qo + j] & 0xf) << shift);
          bytes[bo + j + 16] = (bytes[bo + j + 16] & (0xf0 >> shift)) | ((src[qo + j] >> 4) << shift);
        }
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(d * (ls - 32)) * V[i]). */
export function readRowIQ4_XS(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK,
    supers = m.cols / 256;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const shift = 4 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const dl = Math.fround(m.scales[r * supers + (b >> 3)] * (m.u8[r * blocks + b] - 32));
    const bo = ((r >> 1) * blocks + b) * 32;
    for (let k = 0; k < QBLOCK; k++)
      out[outOff + b * QBLOCK + k] = Math.fround(dl * IQ4_LEVELS[(bytes[bo + k] >> shift) & 15]);
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
  y: Float32Array,
  yo: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5;
  const wq = m.q,
    ls = m.u8,
    dd = m.scales,
    xv = xq.q,
    xs = xq.scales,
    T = pairLevels;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks;
  let pa = ((rA >> 1) * blocks * 8) & OFFSET_MASK;
  const pb = ((rB >> 1) * blocks * 8 - pa) & OFFSET_MASK;
  // Each row's ls (per sub-block) and d (per super-block) start here.
  const v0 = (rA * blocks) & OFFSET_MASK,
    v1 = (v0 + blocks) & OFFSET_MASK,
    v2 = (rB * blocks) & OFFSET_MASK,
    v3 = (v2 + blocks) & OFFSET_MASK;
  const d0 = (rA * (blocks >> 3)) & OFFSET_MASK,
    d1 = (d0 + (blocks >> 3)) & OFFSET_MASK,
    d2 = (rB * (blocks >> 3)) & OFFSET_MASK,
    d3 = (d2 + (blocks >> 3)) & OFFSET_MASK;
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
    // |32 * 127 * 127| < 2^19: the low lane is below half the spacing.
    const hA = sA * INV_M1 + ROUND - ROUND,
      hB = sB * INV_M1 + ROUND - ROUND;
    // Each block's scale as ggml's dl = fround(d * (ls - 32)), applied as IQ4_NL's lanes do (bit for bit).
    const xd = xs[xso + b],
      sb = b >> 3;
    acc0 += (sA - hA * M1) * fround(dd[d0 + sb] * (ls[v0 + b] - 32)) * xd;
    acc1 += hA * fround(dd[d1 + sb] * (ls[v1 + b] - 32)) * xd;
    acc2 += (sB - hB * M1) * fround(dd[d2 + sb] * (ls[v2 + b] - 32)) * xd;
    acc3 += hB * fround(dd[d3 + sb] * (ls[v3 + b] - 32)) * xd;
  }
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}
