// ggml's IQ4_NL: every 32 weights of a row share an f16 scale d and keep 4-bit indices into a fixed
// table of 16 non-linear int8 levels V (-127..113): w = d * V[i] (exact in f32: 11 by 7 bits).
// Integer levels up to 127 leave no room for two rows in 16-bit lanes, so the decode uses float64
// lanes on the weights instead: a row pair's two indices of a column form one byte, and a 256-entry
// table gives V[i_r] + V[i_r+1] * 2^20 as one double: one load and one multiply-add per column serve
// both rows (|32 products| <= 32 * 127 * 127 < 2^19 per lane). Prefill: float64 lanes on V (two
// tokens per double 2^20 apart, q6_k's 3x2 register block). Both scale a block's exact integer sum
// the same way, (sum * d) * xd, so a token's outputs are those of its one-token call, bit for bit.
//
// Storage (repacked at load, exactly the file's 18 bytes per row and block):
//   q   [rows/2, blocks, 8] words: byte c of word j is the row pair's index byte of column 4j+c,
//       row r's index in the low nibble, row r+1's in the high; rows even;
//   u16 [rows, blocks]: d as the file's f16 bits.
import { f16Values } from '../dtype.js';
import { IQ4_NL, IQ4_XS, makeMatrix, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const LANES_MIN_TOKENS = 4;
/** ggml's kvalues_iq4nl. */
export const IQ4_LEVELS = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
const M1 = 1048576,
  INV_M1 = 1 / M1;

/** pairLevels[i_r | i_r+1 << 4] = V[i_r] + V[i_r+1] * 2^20. */
const pairLevels = new Float64Array(256);
for (let i = 0; i < 256; i++) pairLevels[i] = IQ4_LEVELS[i & 15] + IQ4_LEVELS[i >> 4] * M1;

export const matmulIQ4_NLMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_IQ4_NL, m, n))
    matmulLanes(LANES_IQ4_NL, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecIQ4_NL(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty IQ4_NL matrix with shared storage (rows even, cols a multiple of 32), filled by packIQ4_NLRows. */
export function allocIQ4_NL(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % QBLOCK !== 0)
    throw new Error(`iq4_nl matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 32`);
  return makeMatrix(IQ4_NL, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 2)),
    u16: new Uint16Array(new SharedArrayBuffer((rows * cols) / 16)),
    ggmlType: 20,
  });
}

/** ggml IQ4_NL blocks (18 bytes: f16 d, 16 bytes of indices j | j+16) of rows [r0, r0 + nRows) into m. */
export function packIQ4_NLRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  for (let r = r0; r < r0 + nRows; r++) {
    const shift = 4 * (r & 1);
    for (let b = 0; b < blocks; b++) {
      const o = 18 * ((r - r0) * blocks + b);
      m.u16[r * blocks + b] = src[o] | (src[o + 1] << 8);
      const bo = ((r >> 1) * blocks + b) * 32;
      for (let j = 0; j < 16; j++) {
        bytes[bo + j] = (bytes[bo + j] & (0xf0 >> shift)) | ((src[o + 2 + j] & 0xf) << shift);
        bytes[bo + j + 16] = (bytes[bo + j + 16] & (0xf0 >> shift)) | ((src[o + 2 + j] >> 4) << shift);
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(d * V[i]). */
export function readRowIQ4_NL(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const blocks = m.cols / QBLOCK;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const shift = 4 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d = f16[m.u16[r * blocks + b]];
    const bo = ((r >> 1) * blocks + b) * 32;
    for (let k = 0; k < QBLOCK; k++)
      out[outOff + b * QBLOCK + k] = Math.fround(d * IQ4_LEVELS[(bytes[bo + k] >> shift) & 15]);
  }
}

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair as both pairs. */
function matvecIQ4_NL(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`iq4_nl: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('iq4_nl: matrix too large');
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
    dd = m.u16,
    xv = xq.q,
    xs = xq.scales,
    T = pairLevels;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks;
  let pa = ((rA >> 1) * blocks * 8) & OFFSET_MASK;
  const pb = ((rB >> 1) * blocks * 8 - pa) & OFFSET_MASK;
  const v0 = (rA * blocks) & OFFSET_MASK,
    v1 = (v0 + blocks) & OFFSET_MASK,
    v2 = (rB * blocks) & OFFSET_MASK,
    v3 = (v2 + blocks) & OFFSET_MASK;
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
    const hA = sA * INV_M1 + ROUND - ROUND,
      hB = sB * INV_M1 + ROUND - ROUND;
    const xd = xs[xso + b];
    acc0 += (sA - hA * M1) * f16[dd[v0 + b]] * xd;
    acc1 += hA * f16[dd[v1 + b]] * xd;
    acc2 += (sB - hB * M1) * f16[dd[v2 + b]] * xd;
    acc3 += hB * f16[dd[v3 + b]] * xd;
  }
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}

// ---- lanes (prefill): the panel holds V[i] (|.| <= 127): |32 products| <= 32 * 127 * 127 < 2^19,
// two tokens per double 2^20 apart, in q6_k's register block of 3 rows x 2 groups, scaled by d and xd.

// Per panel row (0..2): [blocks] d of the rows widened last.
let panelScale = new Float64Array(0);

function widenRowIQ4_NL(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const cols = m.cols;
  const blocks = cols >> 5;
  const i = po / cols; // which panel row
  if (panelScale.length < 3 * blocks) panelScale = new Float64Array(3 * blocks);
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const shift = 4 * (r & 1);
  const bo = (r >> 1) * blocks * 32;
  // IQ4_XS (iq4_xs.ts) shares this layout; its block scale is ggml's fround(d * (ls - 32)).
  if (m.format === IQ4_XS)
    for (let b = 0; b < blocks; b++)
      panelScale[i * blocks + b] = Math.fround(m.scales[r * (blocks >> 3) + (b >> 3)] * (m.u8[r * blocks + b] - 32));
  else for (let b = 0; b < blocks; b++) panelScale[i * blocks + b] = f16[m.u16[r * blocks + b]];
  for (let k = 0; k < cols; k++) panel[po + k] = IQ4_LEVELS[(bytes[bo + k] >> shift) & 15];
}

/** q6_k's rowTripleQ6_K with lanes 2^20 apart and a scale per block: acc[3t + i] += row i . token t, 4 tokens from t0. */
function rowTripleIQ4_NL(
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
): void {
  const c = cols & 0x1fffffff;
  const c2 = (2 * c) & OFFSET_MASK;
  const xa = xOff & OFFSET_MASK,
    xb = (xa + c) & OFFSET_MASK;
  const blocks = c >> 5;
  const ps = panelScale;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0,
      c0 = 0,
      c1 = 0;
    const k0 = (b * 32) & OFFSET_MASK;
    for (let k = k0; k < k0 + 32; k += 2) {
      let x0 = packed[xa + k],
        x1 = packed[xb + k];
      let p = panel[k],
        q = panel[c + k],
        u = panel[c2 + k];
      a0 += p * x0;
      a1 += p * x1;
      b0 += q * x0;
      b1 += q * x1;
      c0 += u * x0;
      c1 += u * x1;
      x0 = packed[xa + k + 1];
      x1 = packed[xb + k + 1];
      p = panel[k + 1];
      q = panel[c + k + 1];
      u = panel[c2 + k + 1];
      a0 += p * x0;
      a1 += p * x1;
      b0 += q * x0;
      b1 += q * x1;
      c0 += u * x0;
      c1 += u * x1;
    }
    const wA = ps[b],
      wB = ps[blocks + b],
      wC = ps[2 * blocks + b];
    const so = b * nPad + t0;
    const o = 3 * t0;
    splitIQ4_NL(a0, b0, c0, wA, wB, wC, xsT, so, acc, o);
    splitIQ4_NL(a1, b1, c1, wA, wB, wC, xsT, so + 2, acc, o + 6);
  }
}

/** Three rows' sums of a group of two tokens, split at M1 and scaled as the decode does, into acc[o + 3t + row]. */
function splitIQ4_NL(
  sa: number,
  sb: number,
  sc: number,
  wA: number,
  wB: number,
  wC: number,
  xsT: Float64Array,
  so: number,
  acc: Float64Array,
  o: number,
): void {
  const ha = sa * INV_M1 + ROUND - ROUND,
    hb = sb * INV_M1 + ROUND - ROUND,
    hc = sc * INV_M1 + ROUND - ROUND;
  const d0 = xsT[so],
    d1 = xsT[so + 1];
  acc[o] += (sa - ha * M1) * wA * d0;
  acc[o + 1] += (sb - hb * M1) * wB * d0;
  acc[o + 2] += (sc - hc * M1) * wC * d0;
  acc[o + 3] += ha * wA * d1;
  acc[o + 4] += hb * wB * d1;
  acc[o + 5] += hc * wC * d1;
}

/** Also IQ4_XS's prefill (the same index bytes, a block scale per 32 from widenRowIQ4_NL). */
export const LANES_IQ4_NL: LaneKernel = {
  lanes: 2,
  spacing: M1,
  rows: 3,
  groups: 2,
  widenRow: widenRowIQ4_NL,
  block: rowTripleIQ4_NL,
};
