// Q4_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d and min dmin, eight
// 32-value sub-blocks with 6-bit scale sc and min m each, and 4-bit levels q: w = d*sc * q - dmin*m.
// A sub-block's product with x is an integer dot product times a scale minus a min times the
// activations' sum: sum_k w_k x_k = xd * (d1 * sum_k q_k xq_k - m1 * sum_k xq_k) with x ~ xd * xq
// (int8 activations per 32, activations.ts) and d1 = d*sc, m1 = dmin*m as ggml computes them.
//
// Storage (repacked at load from the GGUF blocks, ~6% over the file's bytes):
//   q      [rows/2, cols/32, 8] words: byte c of word j is the row pair's level byte of column 4j+c,
//          row r's level in the low nibble, row r+1's in the high (q4_1.ts's layout); rows even,
//          cols % 256 == 0;
//   scales [rows, cols/256, 2]: d, dmin widened to f32;
//   u8     [rows, cols/32, 2]: sc, m.
// Decode: q4_1's pair table (a byte of two rows' levels is one double, one multiply-add for both
// rows), each sub-block's exact integer lane sums times sc and the min per sub-block; prefill runs
// the float64 lanes (lanes.ts) on levels - 8 with the min folded into an offset per sub-block:
// d1*q - m1 = d1*(q - 8) + (8*d1 - m1).
import { makeMatrix, Q4_K, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { f16At, scaleMinK4 } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const fround = Math.fround;
const LANES_MIN_TOKENS = 8;

export const matmulQ4_KMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q4_K, m, n))
    matmulLanes(LANES_Q4_K, m, xq!, n, y, yOff, yStride, r0, r1);
  else matvecQ4_K(m, xq!, n, y, yOff, yStride, r0, r1);
};

const smK4 = new Int32Array(2);

/** An empty Q4_K matrix with shared storage (rows even, cols a multiple of 256), filled by packQ4_KRows. */
export function allocQ4_K(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`q4_K matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(Q4_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 2)),
    scales: new Float32Array(new SharedArrayBuffer((rows * cols) / 32)),
    u8: new Uint8Array(new SharedArrayBuffer((rows * cols) / 16)),
    ggmlType: 12,
  });
}

/** ggml Q4_K blocks (144 bytes per 256 values) of rows [r0, r0 + nRows) (src: those rows) into m. */
export function packQ4_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK,
    supers = cols / 256;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  for (let r = r0; r < r0 + nRows; r++) {
    const shift = 4 * (r & 1);
    for (let s = 0; s < supers; s++) {
      const o = 144 * ((r - r0) * supers + s);
      m.scales[2 * (r * supers + s)] = f16At(src, o);
      m.scales[2 * (r * supers + s) + 1] = f16At(src, o + 2);
      for (let j = 0; j < 8; j++) {
        const b = s * 8 + j;
        scaleMinK4(src, o + 4, j, smK4);
        m.u8[2 * (r * blocks + b)] = smK4[0];
        m.u8[2 * (r * blocks + b) + 1] = smK4[1];
        // Sub-block j: 32 bytes at o + 16 + 32 * (j >> 1), low nibbles (j even) or high (j odd).
        const qo = o + 16 + 32 * (j >> 1),
          nibShift = 4 * (j & 1);
        const bo = ((r >> 1) * blocks + b) * 32;
        for (let l = 0; l < 32; l++)
          bytes[bo + l] = (bytes[bo + l] & (0xf0 >> shift)) | (((src[qo + l] >> nibShift) & 0xf) << shift);
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(d1 * q) - m1). */
export function readRowQ4_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK,
    supers = m.cols / 256;
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const shift = 4 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const s = r * supers + (b >> 3);
    const d1 = fround(m.scales[2 * s] * m.u8[2 * (r * blocks + b)]);
    const m1 = fround(m.scales[2 * s + 1] * m.u8[2 * (r * blocks + b) + 1]);
    const bo = ((r >> 1) * blocks + b) * 32;
    const o = outOff + b * QBLOCK;
    for (let k = 0; k < QBLOCK; k++) out[o + k] = fround(fround(d1 * ((bytes[bo + k] >> shift) & 15)) - m1);
  }
}

/** pairLevels[q_r | q_r+1 << 4] = q_r + q_r+1 * 2^20 (as q4_1.ts). */
const D1 = 1048576,
  INV_D1 = 1 / D1;
const pairLevels = new Float64Array(256);
for (let i = 0; i < 256; i++) pairLevels[i] = (i & 15) + (i >> 4) * D1;

/**
 * One token at a time (decode): 4 rows (two row pairs) per pass, each sub-block's lane sums scaled
 * by its sc and corrected by its min; a last row pair as both pairs.
 */
function matvecQ4_K(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q4_K: row slices start on even rows (row pairs), got ${r0}`);
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q4_K: matrix too large');
  const bsx = scaledSums(xq, n);
  for (let t = 0; t < n; t++) {
    const yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, r + 2, xq, bsx, t, y, yo, r1);
    for (; r < r1; r += 2) rows4(m, r, r, xq, bsx, t, y, yo, r1);
  }
}

// Per thread: the activations' block sums times their scales (what a sub-block's min multiplies),
// built once per quantized activations (xq.version) and token count.
let sumsScaled = new Float64Array(0);
let scaledFrom: QuantizedActivations | null = null;
let scaledVersion = -1;
let scaledN = 0;

function scaledSums(xq: QuantizedActivations, n: number): Float64Array {
  if (scaledFrom === xq && scaledVersion === xq.version && scaledN >= n) return sumsScaled;
  const count = n * (xq.cols >> 5);
  if (sumsScaled.length < count) sumsScaled = new Float64Array(count);
  for (let i = 0; i < count; i++) sumsScaled[i] = xq.sums[i] * xq.scales[i];
  scaledFrom = xq;
  scaledVersion = xq.version;
  scaledN = n;
  return sumsScaled;
}

/** Sub-block b of row r: d1 = d*sc and m1 = dmin*m as ggml's floats. */
function subScale(m: Matrix, r: number, b: number): number {
  return fround(m.scales[2 * (r * (m.cols >> 8) + (b >> 3))] * m.u8[2 * (r * (m.cols >> 5) + b)]);
}
function subMin(m: Matrix, r: number, b: number): number {
  return fround(m.scales[2 * (r * (m.cols >> 8) + (b >> 3)) + 1] * m.u8[2 * (r * (m.cols >> 5) + b) + 1]);
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
  bsx: Float64Array,
  t: number,
  y: Float32Array,
  yo: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5;
  const wq = m.q,
    xv = xq.q,
    xs = xq.scales,
    dd = m.scales,
    sm = m.u8,
    T = pairLevels;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks;
  let pa = ((rA >> 1) * blocks * 8) & OFFSET_MASK;
  const pb = ((rB >> 1) * blocks * 8 - pa) & OFFSET_MASK;
  // Each row's d, dmin (2 per super-block) and sc, m (2 per sub-block) start here.
  const d0 = (rA * (blocks >> 2)) & OFFSET_MASK,
    d1 = (d0 + (blocks >> 2)) & OFFSET_MASK,
    d2 = (rB * (blocks >> 2)) & OFFSET_MASK,
    d3 = (d2 + (blocks >> 2)) & OFFSET_MASK;
  const u0 = (2 * rA * blocks) & OFFSET_MASK,
    u1 = (u0 + 2 * blocks) & OFFSET_MASK,
    u2 = (2 * rB * blocks) & OFFSET_MASK,
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
    // The sub-block's scale and min on exact integers (|32 * 15 * 127 * 63| < 2^22), the activation
    // scale per block, d and dmin per super-block.
    const xd = xs[xso + b],
      bs = bsx[xso + b];
    const ub = (b << 1) & OFFSET_MASK;
    sc0 += sm[u0 + ub] * (sA - hA * D1) * xd;
    sc1 += sm[u1 + ub] * hA * xd;
    sc2 += sm[u2 + ub] * (sB - hB * D1) * xd;
    sc3 += sm[u3 + ub] * hB * xd;
    mn0 += sm[u0 + ub + 1] * bs;
    mn1 += sm[u1 + ub + 1] * bs;
    mn2 += sm[u2 + ub + 1] * bs;
    mn3 += sm[u3 + ub + 1] * bs;
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
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}

// ---- lanes (prefill): levels - 8 (-8..7) as q4_0's, three tokens per double 2^16 apart, 2 rows x
// 3 groups; widenRow also leaves each sub-block's d1 and offset 8*d1 - m1 for the block kernel.

// Per panel row (0, 1): [blocks] d1 and offsets of the rows widened last.
let panelScale = new Float64Array(0);
let panelOffset = new Float64Array(0);

function widenRowQ4_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const blocks = m.cols / QBLOCK;
  const i = po / m.cols; // which panel row
  if (panelScale.length < 2 * blocks) {
    panelScale = new Float64Array(2 * blocks);
    panelOffset = new Float64Array(2 * blocks);
  }
  const wq = m.q;
  const wo = (r >> 1) * blocks * 8;
  const shift = 4 * (r & 1);
  for (let w = 0; w < blocks * 8; w++) {
    const word = wq[wo + w] >>> shift;
    const k = po + 4 * w;
    panel[k] = (word & 15) - 8;
    panel[k + 1] = ((word >>> 8) & 15) - 8;
    panel[k + 2] = ((word >>> 16) & 15) - 8;
    panel[k + 3] = ((word >>> 24) & 15) - 8;
  }
  for (let b = 0; b < blocks; b++) {
    const d1 = subScale(m, r, b);
    panelScale[i * blocks + b] = d1;
    panelOffset[i * blocks + b] = 8 * d1 - subMin(m, r, b);
  }
}

const L1 = 65536,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/** As q4_0's rowPairQ4, with each sub-block's scale and offset from widenRowQ4_K. */
function rowPairQ4_K(
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
    splitQ4_K(
      a0,
      b0,
      panelScale[b],
      panelScale[blocks + b],
      panelOffset[b],
      panelOffset[blocks + b],
      xsT,
      xsumT,
      so,
      acc,
      o,
    );
    splitQ4_K(
      a1,
      b1,
      panelScale[b],
      panelScale[blocks + b],
      panelOffset[b],
      panelOffset[blocks + b],
      xsT,
      xsumT,
      so + 3,
      acc,
      o + 6,
    );
    splitQ4_K(
      a2,
      b2,
      panelScale[b],
      panelScale[blocks + b],
      panelOffset[b],
      panelOffset[blocks + b],
      xsT,
      xsumT,
      so + 6,
      acc,
      o + 12,
    );
  }
}

/** The three tokens' lanes of rows A and B (as q4_0's splitQ4), each scaled and offset by its sub-block's. */
function splitQ4_K(
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

const LANES_Q4_K: LaneKernel = {
  lanes: 3,
  spacing: L1,
  rows: 2,
  groups: 3,
  widenRow: widenRowQ4_K,
  block: rowPairQ4_K,
};
