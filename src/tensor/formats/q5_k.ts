// Q5_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d and min dmin, eight
// 32-value sub-blocks with 6-bit scale sc and min m each (packed as Q4_K's), and 5-bit levels q:
// w = d*sc * q - dmin*m. The levels in Q5_0's row-pair layout (q5_0.ts: three 5-bit levels per
// 16-bit lane), 184 bytes per row and super-block against the file's 176 (d and dmin widen to f32).
//
// Storage, rows even, cols % 256 == 0:
//   q      [rows/2, cols/32, 10] words as Q5_0's;
//   scales [rows, cols/256, 2]: d, dmin;
//   u8     [rows, cols/32, 2]: sc, m.
// Decode: Q5_0's SWAR sums give L = sum_k (q_k - 16) x_k per sub-block, so sum_k q_k x_k = L + 16 *
// sum_k x_k; times sc and m in integers, per 32-block times the activation scale, per super-block
// times d and dmin: sum_k w_k x_k = xd * (d * sc * (L + 16 xsum) - dmin * m * xsum). Prefill:
// float64 lanes on q - 16 (lanes 2^17 apart, as Q5_0), the min folded into an offset: d1*q - m1 =
// d1*(q - 16) + (16*d1 - m1).
import { makeMatrix, Q5_K, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At, scaleMinK4 } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';
import { halfSums5, laneOffsets16, packLevels5, unpackLevels5 } from './q5_0.js';

const fround = Math.fround;
const LANES_MIN_TOKENS = 8;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 10;
const LEVELS5 = 0x1f001f;

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
  const levels = new Uint8Array(32);
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
        for (let l = 0; l < 32; l++) levels[l] = ((src[qo + l] >> shift) & 0xf) | (((src[o + 16 + l] >> j) & 1) << 4);
        packLevels5(levels, halves, ((r >> 1) * blocks + b) * 2 * PAIR_WORDS + (r & 1));
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

// This thread's levels of one block (readRow).
const blockLevels = new Float32Array(32);

/** Row r as ggml dequantizes it: fround(fround(d1 * q) - m1). */
export function readRowQ5_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const d1 = subScale(m, r, b),
      m1 = subMin(m, r, b);
    unpackLevels5(m.q, ((r >> 1) * blocks + b) * PAIR_WORDS, shift, 0, blockLevels, 0);
    for (let k = 0; k < 32; k++) out[outOff + b * QBLOCK + k] = fround(fround(d1 * blockLevels[k]) - m1);
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
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q5_K: matrix too large');
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

// This thread's four row sums of halfSums5.
const sums4 = new Int32Array(4);

/** Rows r..r+3 against one token: per sub-block both row pairs' lane sums, then the scales and mins. */
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
  // The current super-block's scale and min sums, before d and dmin.
  let sc0 = 0,
    sc1 = 0,
    sc2 = 0,
    sc3 = 0,
    mn0 = 0,
    mn1 = 0,
    mn2 = 0,
    mn3 = 0;
  let wo = ((r >> 1) * pairStride) & OFFSET_MASK;
  const w1 = pairStride & OFFSET_MASK;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
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
    // sum_k q_k x_k = sum_k (q_k - 16) x_k + 16 sum_k x_k
    const xd = xs[xso + b],
      bsum = xsum[xso + b];
    const b16 = 16 * bsum;
    l0 += b16;
    l1 += b16;
    l2 += b16;
    l3 += b16;
    const ub = (2 * b) & OFFSET_MASK;
    sc0 += Math.imul(sm[u0 + ub], l0) * xd;
    sc1 += Math.imul(sm[u1 + ub], l1) * xd;
    sc2 += Math.imul(sm[u2 + ub], l2) * xd;
    sc3 += Math.imul(sm[u3 + ub], l3) * xd;
    mn0 += Math.imul(sm[u0 + ub + 1], bsum) * xd;
    mn1 += Math.imul(sm[u1 + ub + 1], bsum) * xd;
    mn2 += Math.imul(sm[u2 + ub + 1], bsum) * xd;
    mn3 += Math.imul(sm[u3 + ub + 1], bsum) * xd;
    if ((b & 7) === 7) {
      const sb = (b >> 3) << 1;
      acc0 += sc0 * dd[d0 + sb] - mn0 * dd[d0 + sb + 1];
      acc1 += sc1 * dd[d1 + sb] - mn1 * dd[d1 + sb + 1];
      acc2 += sc2 * dd[d2 + sb] - mn2 * dd[d2 + sb + 1];
      acc3 += sc3 * dd[d3 + sb] - mn3 * dd[d3 + sb + 1];
      sc0 = sc1 = sc2 = sc3 = 0;
      mn0 = mn1 = mn2 = mn3 = 0;
    }
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
    xv = xq.q,
    dd = m.scales,
    sm = m.u8;
  const sums = sums4;
  const d0 = r * (blocks >> 2),
    d1 = d0 + (blocks >> 2);
  const u0 = 2 * r * blocks,
    u1 = u0 + 2 * blocks;
  let acc0 = 0,
    acc1 = 0,
    sc0 = 0,
    sc1 = 0,
    mn0 = 0,
    mn1 = 0;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  for (let b = 0; b < blocks; b++, wo += PAIR_WORDS) {
    const xb = xo + b * QBLOCK;
    // The same pair twice (w1 = 0): rows 2, 3 of the sums repeat rows 0, 1.
    halfSums5(wq, wo, 0, xv, xb, c16[co + 2 * b], sums);
    let l0 = sums[0],
      l1 = sums[1];
    halfSums5(wq, wo + 5, 0, xv, xb + 16, c16[co + 2 * b + 1], sums);
    const xd = xq.scales[xso + b],
      bsum = xq.sums[xso + b];
    const b16 = 16 * bsum;
    l0 += sums[0] + b16;
    l1 += sums[1] + b16;
    sc0 += Math.imul(sm[u0 + 2 * b], l0) * xd;
    sc1 += Math.imul(sm[u1 + 2 * b], l1) * xd;
    mn0 += Math.imul(sm[u0 + 2 * b + 1], bsum) * xd;
    mn1 += Math.imul(sm[u1 + 2 * b + 1], bsum) * xd;
    if ((b & 7) === 7) {
      const sb = (b >> 3) << 1;
      acc0 += sc0 * dd[d0 + sb] - mn0 * dd[d0 + sb + 1];
      acc1 += sc1 * dd[d1 + sb] - mn1 * dd[d1 + sb + 1];
      sc0 = sc1 = mn0 = mn1 = 0;
    }
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
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    unpackLevels5(m.q, ((r >> 1) * blocks + b) * PAIR_WORDS, shift, 16, panel, po + b * QBLOCK);
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
