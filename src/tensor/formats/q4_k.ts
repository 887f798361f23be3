// Q4_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d and min dmin, eight
// 32-value sub-blocks with 6-bit scale sc and min m each, and 4-bit levels q: w = d*sc * q - dmin*m.
// A sub-block's product with x is an integer dot product times a scale minus a min times the
// activations' sum: sum_k w_k x_k = xd * (d1 * sum_k q_k xq_k - m1 * sum_k xq_k) with x ~ xd * xq
// (int8 activations per 32, activations.ts) and d1 = d*sc, m1 = dmin*m as ggml computes them.
//
// Storage (repacked at load from the GGUF blocks, ~5% over the file's bytes):
//   q      the levels 0..15 in q4_0's row-pair SWAR layout (q4_0.ts): rows even, cols % 256 == 0;
//   scales [rows, cols/256, 2]: d, dmin widened to f32;
//   u8     [rows, cols/32, 2]: sc, m.
// Decode runs q4_0's SWAR loop (two rows' multiply-adds per Math.imul) with the scale and min per
// sub-block; prefill runs the float64 lanes (lanes.ts) on levels - 8 with the min folded into an
// offset per sub-block: d1*q - m1 = d1*(q - 8) + (8*d1 - m1).
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
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const nib = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
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
          shift = 4 * (j & 1);
        for (let l = 0; l < 32; l++) nib[l] = (src[qo + l] >> shift) & 0xf;
        const ho = ((r >> 1) * blocks + b) * 16 + (r & 1);
        for (let w = 0; w < 8; w++)
          halves[ho + 2 * w] = nib[4 * w] | (nib[4 * w + 1] << 4) | (nib[4 * w + 2] << 8) | (nib[4 * w + 3] << 12);
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(d1 * q) - m1). */
export function readRowQ4_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK,
    supers = m.cols / 256;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const s = r * supers + (b >> 3);
    const d1 = fround(m.scales[2 * s] * m.u8[2 * (r * blocks + b)]);
    const m1 = fround(m.scales[2 * s + 1] * m.u8[2 * (r * blocks + b) + 1]);
    const wo = ((r >> 1) * blocks + b) * 8;
    const o = outOff + b * QBLOCK;
    for (let j = 0; j < 8; j++) {
      const word = m.q[wo + j] >>> shift;
      for (let c = 0; c < 4; c++) out[o + 4 * j + c] = fround(fround(d1 * ((word >>> (4 * c)) & 0xf)) - m1);
    }
  }
}

/**
 * One token at a time (decode): 4 rows (two row pairs) per pass as q4_0's rows4Q4_0, each
 * sub-block's lane sums scaled by its d1 and corrected by its min; a last row pair alone.
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
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const pairStride = blocks * 8;
  const wq = m.q,
    xv = xq.q;
  if (wq.length > OFFSET_MASK || xv.length > OFFSET_MASK) throw new RangeError('q4_K: matrix too large');
  const bsx = scaledSums(xq, n);
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, blocks, pairStride, xq, bsx, xo, xso, y, yo);
    for (; r < r1; r += 2) rowPair(m, r, r1, blocks, pairStride, xq, bsx, xo, xso, y, yo);
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

function rows4(
  m: Matrix,
  r: number,
  blocks: number,
  pairStride: number,
  xq: QuantizedActivations,
  bsx: Float64Array,
  xo: number,
  xso: number,
  y: Float32Array,
  yo: number,
): void {
  const wq = m.q,
    xv = xq.q,
    xs = xq.scales,
    dd = m.scales,
    sm = m.u8;
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
  for (let b = 0; b < blocks; b++, wo += 8) {
    const xb = (xo + b * QBLOCK) & OFFSET_MASK;
    let s = 0,
      u = 0;
    for (let j = 0; j < 4; j++) {
      const xj = (xb + 4 * j) & OFFSET_MASK;
      const x0 = xv[xj],
        x1 = xv[xj + 1],
        x2 = xv[xj + 2],
        x3 = xv[xj + 3];
      const p = wq[wo + j],
        q = wq[wo + pairStride + j];
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
    // Split the lanes after 16 columns, before they can overflow.
    let l = (s << 16) >> 16;
    let lo0 = l,
      hi0 = (s - l) >> 16;
    l = (u << 16) >> 16;
    let lo1 = l,
      hi1 = (u - l) >> 16;
    s = 0;
    u = 0;
    for (let j = 4; j < 8; j++) {
      const xj = (xb + 4 * j) & OFFSET_MASK;
      const x0 = xv[xj],
        x1 = xv[xj + 1],
        x2 = xv[xj + 2],
        x3 = xv[xj + 3];
      const p = wq[wo + j],
        q = wq[wo + pairStride + j];
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
    l = (s << 16) >> 16;
    lo0 += l;
    hi0 += (s - l) >> 16;
    l = (u << 16) >> 16;
    lo1 += l;
    hi1 += (u - l) >> 16;
    // The sub-block's scale and min in integers (|16 * 15 * 127 * 2 * 63| < 2^22), the activation
    // scale per block, d and dmin per super-block.
    const xd = xs[xso + b],
      bs = bsx[xso + b];
    const ub = (b << 1) & OFFSET_MASK;
    sc0 += Math.imul(sm[u0 + ub], lo0) * xd;
    sc1 += Math.imul(sm[u1 + ub], hi0) * xd;
    sc2 += Math.imul(sm[u2 + ub], lo1) * xd;
    sc3 += Math.imul(sm[u3 + ub], hi1) * xd;
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
  pairStride: number,
  xq: QuantizedActivations,
  bsx: Float64Array,
  xo: number,
  xso: number,
  y: Float32Array,
  yo: number,
): void {
  const wq = m.q,
    xv = xq.q,
    dd = m.scales,
    sm = m.u8;
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
  let wo = (r >> 1) * pairStride;
  for (let b = 0; b < blocks; b++, wo += 8) {
    let lo = 0,
      hi = 0;
    for (let h = 0; h < 8; h += 4) {
      let s = 0;
      for (let j = h; j < h + 4; j++) {
        const word = wq[wo + j];
        const xj = xo + b * QBLOCK + 4 * j;
        s =
          (s +
            Math.imul(word & 0xf000f, xv[xj]) +
            Math.imul((word >>> 4) & 0xf000f, xv[xj + 1]) +
            Math.imul((word >>> 8) & 0xf000f, xv[xj + 2]) +
            Math.imul((word >>> 12) & 0xf000f, xv[xj + 3])) |
          0;
      }
      const l = (s << 16) >> 16;
      lo += l;
      hi += (s - l) >> 16;
    }
    const xd = xq.scales[xso + b],
      bs = bsx[xso + b];
    sc0 += Math.imul(sm[u0 + 2 * b], lo) * xd;
    sc1 += Math.imul(sm[u1 + 2 * b], hi) * xd;
    mn0 += sm[u0 + 2 * b + 1] * bs;
    mn1 += sm[u1 + 2 * b + 1] * bs;
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
  const shift = 16 * (r & 1);
  for (let w = 0; w < blocks * 8; w++) {
    const word = wq[wo + w] >>> shift;
    const k = po + 4 * w;
    panel[k] = (word & 15) - 8;
    panel[k + 1] = ((word >>> 4) & 15) - 8;
    panel[k + 2] = ((word >>> 8) & 15) - 8;
    panel[k + 3] = ((word >>> 12) & 15) - 8;
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
