// Q5_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d and min dmin, eight
// 32-value sub-blocks with 6-bit scale sc and min m each (packed as Q4_K's), and 5-bit levels q:
// w = d*sc * q - dmin*m. Q4_K's kernels (q4_k.ts) with Q5_0's fifth bits (q5_0.ts): the low
// nibbles in q4_0's row-pair SWAR layout and the fifth bits beside them, 184 bytes per row and
// super-block against the file's 176 (d and dmin widen to f32).
//
// Storage, rows even, cols % 256 == 0:
//   q      [rows/2, cols/32, 10] words as Q5_0's (8 nibble words, then the fifth bits of columns
//          0..15 and 16..31, row r in the low 16 bits, row r+1 in the high);
//   scales [rows, cols/256, 2]: d, dmin;
//   u8     [rows, cols/32, 2]: sc, m.
// Decode: per sub-block, (sum_k lo_k x_k + 16 sum_k hi_k x_k) * d1 - m1 * sum_k x_k, the nibble sums
// by SWAR, the fifth bits' by Q5_0's table of 4-column activation subset sums. Prefill: float64
// lanes on q - 16 (lanes 2^17 apart, as Q5_0), the min folded into an offset: d1*q - m1 =
// d1*(q - 16) + (16*d1 - m1).
import { makeMatrix, Q5_K, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At, scaleMinK4 } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';
import { subsetSums } from './q5_0.js';

const fround = Math.fround;
const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 10;

export const matmulQ5_KMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q5_K, m, n))
    matmulLanes(LANES_Q5_K, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ5_K(m, xq!, n, y, yOff, yStride, r0, r1);
};

const smK4 = new Int32Array(2);

/** An empty Q5_K matrix with shared storage (rows even, cols a multiple of 256), filled by packQ5_KRows. */
export function allocQ5_K(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`q5_K matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(Q5_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows / 2) * (cols / QBLOCK) * PAIR_WORDS * 4)),
    scales: new Float32Array(new SharedArrayBuffer((rows * cols) / 32)),
    u8: new Uint8Array(new SharedArrayBuffer((rows * cols) / 16)),
    ggmlType: 13,
  });
}

/** ggml Q5_K blocks (176 bytes per 256 values: d, dmin, scales[12], qh[32], qs[128]) of rows [r0, r0 + nRows) into m. */
export function packQ5_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK,
    supers = cols / 256;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const nib = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let s = 0; s < supers; s++) {
      const o = 176 * ((r - r0) * supers + s);
      m.scales[2 * (r * supers + s)] = f16At(src, o);
      m.scales[2 * (r * supers + s) + 1] = f16At(src, o + 2);
      for (let j = 0; j < 8; j++) {
        const b = s * 8 + j;
        scaleMinK4(src, o + 4, j, smK4);
        m.u8[2 * (r * blocks + b)] = smK4[0];
        m.u8[2 * (r * blocks + b) + 1] = smK4[1];
        // Sub-block j: 32 bytes at o + 48 + 32 * (j >> 1), low nibbles (j even) or high (j odd);
        // its fifth bits are bit j of qh[0..32).
        const qo = o + 48 + 32 * (j >> 1),
          shift = 4 * (j & 1);
        for (let l = 0; l < 32; l++) nib[l] = (src[qo + l] >> shift) & 0xf;
        const ho = ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1);
        for (let w = 0; w < 8; w++)
          halves[ho + 2 * w] = nib[4 * w] | (nib[4 * w + 1] << 4) | (nib[4 * w + 2] << 8) | (nib[4 * w + 3] << 12);
        let h0 = 0,
          h1 = 0;
        for (let l = 0; l < 16; l++) {
          h0 |= ((src[o + 16 + l] >> j) & 1) << l;
          h1 |= ((src[o + 32 + l] >> j) & 1) << l;
        }
        halves[ho + 16] = h0;
        halves[ho + 18] = h1;
      }
    }
  }
}

/** Sub-block b of row r: d1 = d*sc and m1 = dmin*m as ggml's floats. */
function subScale(m: Matrix, r: number, b: number): number {
  return fround(m.scales[2 * (r * (m.cols >> 8) + (b >> 3))] * m.u8[2 * (r * (m.cols >> 5) + b)]);
}
function subMin(m: Matrix, r: number, b: number): number {
  return fround(m.scales[2 * (r * (m.cols >> 8) + (b >> 3)) + 1] * m.u8[2 * (r * (m.cols >> 5) + b) + 1]);
}

/** Row r as ggml dequantizes it: fround(fround(d1 * q) - m1). */
export function readRowQ5_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK;
  const shift = 16 * (r & 1);
  const q = m.q;
  for (let b = 0; b < blocks; b++) {
    const d1 = subScale(m, r, b),
      m1 = subMin(m, r, b);
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    const hi = ((q[wo + 8] >>> shift) & 0xffff) | (((q[wo + 9] >>> shift) & 0xffff) << 16);
    const o = outOff + b * QBLOCK;
    for (let j = 0; j < 8; j++) {
      const word = q[wo + j] >>> shift;
      for (let c = 0; c < 4; c++) {
        const k = 4 * j + c;
        out[o + k] = fround(fround(d1 * (((word >>> (4 * c)) & 0xf) | (((hi >>> k) & 1) << 4))) - m1);
      }
    }
  }
}

/** One token at a time: 4 rows (two row pairs) per pass, a last row pair alone. */
function matvecQ5_K(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q5_K: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (m.q.length > OFFSET_MASK || 4 * xq.q.length > OFFSET_MASK) throw new RangeError('q5_K: matrix too large');
  const hs = subsetSums(xq, n);
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, xq, xo, xso, y, yo, hs, 4 * xo);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, xq, xo, xso, y, yo, hs, 4 * xo);
  }
}

/** Rows r..r+3 against one token: nibble lanes split every 16 columns, fifth bits from the subset sums. */
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
    xv = xq.q,
    xs = xq.scales,
    xsum = xq.sums,
    dd = m.scales,
    sm = m.u8;
  const pairStride = blocks * PAIR_WORDS;
  // Each row's d, dmin (2 per super-block) and sc, m (2 per sub-block) start here.
  const d0 = (r * (blocks >> 2)) & OFFSET_MASK,
    d1 = (d0 + (blocks >> 2)) & OFFSET_MASK,
    d2 = (d1 + (blocks >> 2)) & OFFSET_MASK,
    d3 = (d2 + (blocks >> 2)) & OFFSET_MASK;
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
    const sb = (b >> 3) << 1,
      ub = b << 1;
    acc0 +=
      ((lo0 + 16 * f0) * fround(dd[d0 + sb] * sm[u0 + ub]) - bsum * fround(dd[d0 + sb + 1] * sm[u0 + ub + 1])) * xd;
    acc1 +=
      ((hi0 + 16 * f1) * fround(dd[d1 + sb] * sm[u1 + ub]) - bsum * fround(dd[d1 + sb + 1] * sm[u1 + ub + 1])) * xd;
    acc2 +=
      ((lo1 + 16 * g0) * fround(dd[d2 + sb] * sm[u2 + ub]) - bsum * fround(dd[d2 + sb + 1] * sm[u2 + ub + 1])) * xd;
    acc3 +=
      ((hi1 + 16 * g1) * fround(dd[d3 + sb] * sm[u3 + ub]) - bsum * fround(dd[d3 + sb + 1] * sm[u3 + ub + 1])) * xd;
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
  hs: Int32Array,
  ho: number,
): void {
  const wq = m.q,
    xv = xq.q;
  let acc0 = 0,
    acc1 = 0;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
    let lo = 0,
      hi = 0,
      f0 = 0,
      f1 = 0;
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
        const tj = ho + 128 * b + 16 * j;
        f0 += hs[tj + (h & 15)];
        f1 += hs[tj + ((h >>> 16) & 15)];
        h >>>= 4;
      }
      const l = (s << 16) >> 16;
      lo += l;
      hi += (s - l) >> 16;
    }
    const xd = xq.scales[xso + b],
      bsum = xq.sums[xso + b];
    acc0 += ((lo + 16 * f0) * subScale(m, r, b) - bsum * subMin(m, r, b)) * xd;
    if (r + 1 < r1) acc1 += ((hi + 16 * f1) * subScale(m, r + 1, b) - bsum * subMin(m, r + 1, b)) * xd;
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): levels - 16 (-16..15), three tokens per double 2^17 apart, 2 rows x 3
// groups; widenRow also leaves each sub-block's d1 and offset 16*d1 - m1 for the block kernel.

// Per panel row (0, 1): [blocks] d1 and offsets of the rows widened last.
let panelScale = new Float64Array(0);
let panelOffset = new Float64Array(0);

function widenRowQ5_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
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
    const d1 = subScale(m, r, b);
    panelScale[i * blocks + b] = d1;
    panelOffset[i * blocks + b] = 16 * d1 - subMin(m, r, b);
  }
}

const L1 = 131072,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As Q4_K's rowPairQ4_K with lanes 2^17 apart: acc[2t + i] += row (A, B)[i] . token t, 9 tokens from t0. */
function rowPairQ5_K(
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
      offA = panelOffset[b],
      offB = panelOffset[blocks + b];
    splitQ5_K(a0, b0, dA, dB, offA, offB, xsT, xsumT, so, acc, o);
    splitQ5_K(a1, b1, dA, dB, offA, offB, xsT, xsumT, so + 3, acc, o + 6);
    splitQ5_K(a2, b2, dA, dB, offA, offB, xsT, xsumT, so + 6, acc, o + 12);
  }
}

/** The three tokens' lanes of rows A and B, each scaled and offset by its sub-block's. */
function splitQ5_K(
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

const LANES_Q5_K: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ5_K,
  block: rowPairQ5_K,
};
