// Q3_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d, sixteen 16-value
// sub-blocks with a 6-bit scale sc (stored + 32) each, and 3-bit levels: 2 low bits in qs and a high
// bit in hmask, w = d*(sc - 32) * (q - 4) with q = low + 4*high (0..7). ggml's dl = d*(sc - 32) is
// exact in f32 (11 by 6 bits). Llama.cpp's Q3_K_S/M/L files keep most matrices in it. Per 32
// columns (one activation scale xd, activations.ts) a row's product is
// xd * d * sum_sub (sc - 32) * (sum q xq - 4 * sum xq): integer sums, then one multiply.
//
// Storage (repacked at load: 114 bytes per row and super-block against the file's 110):
//   q   [rows/2, cols/16, 3] words: words 0, 1 the low bits as Q2_K's (q2_k.ts: columns 8w..8w+7,
//       row r in bits 2c..2c+1, row r+1 in bits 16+2c..), word 2 the high bits (column c: bit c for
//       row r, bit 16+c for row r+1); rows even;
//   u8  [rows, cols/16]: sc + 32 (0..63);
//   u16 [rows, cols/256]: d as the file's f16 bits.
// Decode: 4 rows per pass; a column's two levels are put together in both 16-bit lanes, ((lo >>>
// 2c) & 0x00030003) | (high bits moved to bit 2), and one Math.imul multiplies both rows; lanes are
// split once per sub-block (16 * 7 * 127 < 2^15). Prefill: float64 lanes on (sc - 32) * (q - 4),
// two tokens per double. Both scale a block's exact integer sum I the same way, d * I * xd, so
// every token's outputs are those of its one-token call, bit for bit.
import { f16Values } from '../dtype.js';
import { makeMatrix, Q3_K, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';
import { activationSums16, lowBitsK } from './q2_k.js';

const M2 = 0x00030003;
const M4 = 0x00040004;
/** Words per row pair and 16-column sub-block. */
const SUB_WORDS = 3;

const LANES_MIN_TOKENS = 4;

export const matmulQ3_KMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q3_K, m, n))
    matmulLanes(LANES_Q3_K, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ3_K(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty Q3_K matrix with shared storage (rows even, cols a multiple of 256), filled by packQ3_KRows. */
export function allocQ3_K(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`q3_K matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(Q3_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows / 2) * (cols / 16) * SUB_WORDS * 4)),
    u8: new Uint8Array(new SharedArrayBuffer((rows * cols) / 16)),
    u16: new Uint16Array(new SharedArrayBuffer((rows * cols) / 128)),
    ggmlType: 11,
  });
}

/** ggml Q3_K blocks (110 bytes: hmask[32], qs[64], scales[12], f16 d) of rows [r0, r0 + nRows) into m. */
export function packQ3_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const subs = m.cols / 16,
    supers = m.cols / 256;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let s = 0; s < supers; s++) {
      const o = 110 * ((r - r0) * supers + s);
      m.u16[r * supers + s] = src[o + 108] | (src[o + 109] << 8);
      for (let j = 0; j < 16; j++) {
        const sb = s * 16 + j;
        // Scale j: low 4 bits from bytes 0-7 (low nibbles first), top 2 bits from bytes 8-11.
        const low = j < 8 ? src[o + 96 + j] & 0xf : src[o + 96 + j - 8] >> 4;
        m.u8[r * subs + sb] = low | (((src[o + 104 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4);
        const ho = ((r >> 1) * subs + sb) * 2 * SUB_WORDS + (r & 1);
        for (let w = 0; w < 2; w++) {
          let half = 0;
          for (let c = 0; c < 8; c++) half |= lowBitsK(src, o + 32, 16 * j + 8 * w + c) << (2 * c);
          halves[ho + 2 * w] = half;
        }
        // Value v's high bit: bit v >> 5 of hmask byte v & 31.
        let high = 0;
        for (let c = 0; c < 16; c++) {
          const v = 16 * j + c;
          high |= ((src[o + (v & 31)] >> (v >> 5)) & 1) << c;
        }
        halves[ho + 4] = high;
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(dl * (q - 4)), dl = fround(d * (sc - 32)). */
export function readRowQ3_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const subs = m.cols / 16,
    supers = m.cols / 256;
  const shift = 16 * (r & 1);
  for (let sb = 0; sb < subs; sb++) {
    const dl = Math.fround(f16[m.u16[r * supers + (sb >> 4)]] * (m.u8[r * subs + sb] - 32));
    const wo = ((r >> 1) * subs + sb) * SUB_WORDS;
    const high = m.q[wo + 2] >>> shift;
    for (let k = 0; k < 16; k++) {
      const q = ((m.q[wo + (k >> 3)] >>> (shift + 2 * (k & 7))) & 3) | (((high >>> k) & 1) << 2);
      out[outOff + 16 * sb + k] = Math.fround(dl * (q - 4));
    }
  }
}

/** Every token in turn: 4 rows (two row pairs) per pass; a last row pair runs as both pairs. */
function matvecQ3_K(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q3_K: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q3_K: matrix too large');
  const s16 = activationSums16(xq, n);
  const f16 = f16Values();
  for (let t = 0; t < n; t++) {
    const yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, r + 2, xq, t, s16, f16, y, yo, r1);
    for (; r < r1; r += 2) rows4(m, r, r, xq, t, s16, f16, y, yo, r1);
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
  s16: Int32Array,
  f16: Float32Array,
  y: Float32Array,
  yo: number,
  r1: number,
): void {
  const cols = m.cols;
  const subs = cols >> 4,
    supers = cols >> 8,
    blocks = cols >> 5;
  const wq = m.q,
    sm = m.u8,
    dd = m.u16,
    xv = xq.q,
    xs = xq.scales;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks,
    so16 = (t * subs) & OFFSET_MASK;
  let pa = ((rA >> 1) * subs * SUB_WORDS) & OFFSET_MASK;
  const pb = ((rB >> 1) * subs * SUB_WORDS - pa) & OFFSET_MASK; // second pair's words, relative
  const e0 = (rA * subs) & OFFSET_MASK,
    e1 = (e0 + subs) & OFFSET_MASK,
    e2 = (rB * subs) & OFFSET_MASK,
    e3 = (e2 + subs) & OFFSET_MASK;
  const v0 = (rA * supers) & OFFSET_MASK,
    v1 = (v0 + supers) & OFFSET_MASK,
    v2 = (rB * supers) & OFFSET_MASK,
    v3 = (v2 + supers) & OFFSET_MASK;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  for (let s = 0; s < supers; s++) {
    const d0 = f16[dd[v0 + s]],
      d1 = f16[dd[v1 + s]],
      d2 = f16[dd[v2 + s]],
      d3 = f16[dd[v3 + s]];
    for (let b = 8 * s; b < 8 * s + 8; b++) {
      // Per row: sum over the block's two sub-blocks of (sc - 32) * sum (q - 4) xq.
      let i0 = 0,
        i1 = 0,
        i2 = 0,
        i3 = 0;
      for (let h = 0; h < 2; h++, pa += SUB_WORDS) {
        const sb = (2 * b + h) & OFFSET_MASK;
        const xb = (xo + 16 * sb) & OFFSET_MASK;
        let sA = 0,
          sB = 0;
        const hp = wq[pa + 2],
          hq = wq[pa + pb + 2];
        {
          const p = wq[pa + 0],
            q = wq[pa + pb + 0];
          {
            const x0 = xv[xb + 0],
              x1 = xv[xb + 1],
              x2 = xv[xb + 2],
              x3 = xv[xb + 3];
            sA =
              (sA +
                Math.imul((p & M2) | ((hp << 2) & M4), x0) +
                Math.imul(((p >>> 2) & M2) | ((hp << 1) & M4), x1) +
                Math.imul(((p >>> 4) & M2) | (hp & M4), x2) +
                Math.imul(((p >>> 6) & M2) | ((hp >>> 1) & M4), x3)) |
              0;
            sB =
              (sB +
                Math.imul((q & M2) | ((hq << 2) & M4), x0) +
                Math.imul(((q >>> 2) & M2) | ((hq << 1) & M4), x1) +
                Math.imul(((q >>> 4) & M2) | (hq & M4), x2) +
                Math.imul(((q >>> 6) & M2) | ((hq >>> 1) & M4), x3)) |
              0;
          }
          {
            const x0 = xv[xb + 4],
              x1 = xv[xb + 5],
              x2 = xv[xb + 6],
              x3 = xv[xb + 7];
            sA =
              (sA +
                Math.imul(((p >>> 8) & M2) | ((hp >>> 2) & M4), x0) +
                Math.imul(((p >>> 10) & M2) | ((hp >>> 3) & M4), x1) +
                Math.imul(((p >>> 12) & M2) | ((hp >>> 4) & M4), x2) +
                Math.imul(((p >>> 14) & M2) | ((hp >>> 5) & M4), x3)) |
              0;
            sB =
              (sB +
                Math.imul(((q >>> 8) & M2) | ((hq >>> 2) & M4), x0) +
                Math.imul(((q >>> 10) & M2) | ((hq >>> 3) & M4), x1) +
                Math.imul(((q >>> 12) & M2) | ((hq >>> 4) & M4), x2) +
                Math.imul(((q >>> 14) & M2) | ((hq >>> 5) & M4), x3)) |
              0;
          }
        }
        {
          const p = wq[pa + 1],
            q = wq[pa + pb + 1];
          {
            const x0 = xv[xb + 8],
              x1 = xv[xb + 9],
              x2 = xv[xb + 10],
              x3 = xv[xb + 11];
            sA =
              (sA +
                Math.imul((p & M2) | ((hp >>> 6) & M4), x0) +
                Math.imul(((p >>> 2) & M2) | ((hp >>> 7) & M4), x1) +
                Math.imul(((p >>> 4) & M2) | ((hp >>> 8) & M4), x2) +
                Math.imul(((p >>> 6) & M2) | ((hp >>> 9) & M4), x3)) |
              0;
            sB =
              (sB +
                Math.imul((q & M2) | ((hq >>> 6) & M4), x0) +
                Math.imul(((q >>> 2) & M2) | ((hq >>> 7) & M4), x1) +
                Math.imul(((q >>> 4) & M2) | ((hq >>> 8) & M4), x2) +
                Math.imul(((q >>> 6) & M2) | ((hq >>> 9) & M4), x3)) |
              0;
          }
          {
            const x0 = xv[xb + 12],
              x1 = xv[xb + 13],
              x2 = xv[xb + 14],
              x3 = xv[xb + 15];
            sA =
              (sA +
                Math.imul(((p >>> 8) & M2) | ((hp >>> 10) & M4), x0) +
                Math.imul(((p >>> 10) & M2) | ((hp >>> 11) & M4), x1) +
                Math.imul(((p >>> 12) & M2) | ((hp >>> 12) & M4), x2) +
                Math.imul(((p >>> 14) & M2) | ((hp >>> 13) & M4), x3)) |
              0;
            sB =
              (sB +
                Math.imul(((q >>> 8) & M2) | ((hq >>> 10) & M4), x0) +
                Math.imul(((q >>> 10) & M2) | ((hq >>> 11) & M4), x1) +
                Math.imul(((q >>> 12) & M2) | ((hq >>> 12) & M4), x2) +
                Math.imul(((q >>> 14) & M2) | ((hq >>> 13) & M4), x3)) |
              0;
          }
        }
        const lA = (sA << 16) >> 16,
          lB = (sB << 16) >> 16;
        const x4 = 4 * s16[so16 + sb];
        i0 += (sm[e0 + sb] - 32) * (lA - x4);
        i1 += (sm[e1 + sb] - 32) * (((sA - lA) >> 16) - x4);
        i2 += (sm[e2 + sb] - 32) * (lB - x4);
        i3 += (sm[e3 + sb] - 32) * (((sB - lB) >> 16) - x4);
      }
      const xd = xs[xso + b];
      acc0 += d0 * i0 * xd;
      acc1 += d1 * i1 * xd;
      acc2 += d2 * i2 * xd;
      acc3 += d3 * i3 * xd;
    }
  }
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}

// ---- lanes (prefill): the panel holds (sc - 32) * (q - 4) (|.| <= 128), so a 32-block's sum needs
// no split at the sub-block boundary: |32 products| <= 32 * 128 * 127 < 2^19, two tokens per double
// 2^20 apart, in q6_k's register block of 3 rows x 2 groups, scaled by d per 256 and xd.

// Per panel row (0..2): [supers] d of the rows widened last.
let panelScale = new Float64Array(0);

function widenRowQ3_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const cols = m.cols;
  const subs = cols >> 4,
    supers = cols >> 8;
  const i = po / cols; // which panel row
  if (panelScale.length < 3 * supers) panelScale = new Float64Array(3 * supers);
  for (let s = 0; s < supers; s++) panelScale[i * supers + s] = f16[m.u16[r * supers + s]];
  const wq = m.q;
  const shift = 16 * (r & 1);
  for (let sb = 0; sb < subs; sb++) {
    const sc = m.u8[r * subs + sb] - 32;
    const wo = ((r >> 1) * subs + sb) * SUB_WORDS;
    const high = wq[wo + 2] >>> shift;
    const k0 = po + 16 * sb;
    for (let w = 0; w < 2; w++) {
      const word = wq[wo + w] >>> shift;
      for (let c = 0; c < 8; c++) {
        const k = 8 * w + c;
        panel[k0 + k] = sc * ((((word >>> (2 * c)) & 3) | (((high >>> k) & 1) << 2)) - 4);
      }
    }
  }
}

/** q6_k's rowTripleQ6_K with lanes 2^20 apart: acc[3t + i] += row i . token t, 4 tokens from t0. */
function rowTripleQ3_K(
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
  const blocks = c >> 5,
    supers = c >> 8;
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
    const s = b >> 3;
    const wA = ps[s],
      wB = ps[supers + s],
      wC = ps[2 * supers + s];
    const so = b * nPad + t0;
    const o = 3 * t0;
    splitQ3_K(a0, b0, c0, wA, wB, wC, xsT, so, acc, o);
    splitQ3_K(a1, b1, c1, wA, wB, wC, xsT, so + 2, acc, o + 6);
  }
}

const M1 = 1048576,
  INV_M1 = 1 / M1;

/** Three rows' sums of a group of two tokens, split at M1 and scaled as the decode does, into acc[o + 3t + row]. */
function splitQ3_K(
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
  acc[o] += wA * (sa - ha * M1) * d0;
  acc[o + 1] += wB * (sb - hb * M1) * d0;
  acc[o + 2] += wC * (sc - hc * M1) * d0;
  acc[o + 3] += wA * ha * d1;
  acc[o + 4] += wB * hb * d1;
  acc[o + 5] += wC * hc * d1;
}

const LANES_Q3_K: LaneKernel = {
  lanes: 2,
  spacing: M1,
  rows: 3,
  groups: 2,
  widenRow: widenRowQ3_K,
  block: rowTripleQ3_K,
};
