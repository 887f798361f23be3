// q8_0, in the spirit of llama.cpp's: every 32 consecutive weights of a row share one f32 scale,
// d = max|w| / 127, and keep round(w / d) as int8. Storage: q [rows, cols/4], four int8 per Int32
// (little-endian byte order: column 4j + c in bits 8c..8c+7 of word j); scales [rows, cols/32].
// Decode multiplies int8 weights by int8 activations (activations.ts) in int32 (Math.imul), 4 rows
// per pass; prefill and batched decode pack two tokens per float64 (lanes.ts).
import { makeMatrix, Q8_0, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { widenBf16Block } from './bf16.js';
import { bitsToF32, blockAbsMaxBits, OFFSET_MASK, PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';
import { matmulPanels } from './f32.js';
import { laneAccumulators, lanesApply, matmulLanes, packedLanes, ROUND, type LaneKernel } from './lanes.js';

// From FEW_MIN_TOKENS to FEW_MAX_TOKENS tokens (speculation's verification rows, small batches) the
// few-token lanes kernel reads the int8 words directly; from LANES_MIN_TOKENS on the panel lanes
// kernel amortizes widening the weights (README, Performance and Speculative decoding).
const FEW_MIN_TOKENS = 2;
const FEW_MAX_TOKENS = 8;
const LANES_MIN_TOKENS = 9;

/**
 * matmul for a q8_0 matrix. Without quantized activations (xq null: a caller that has only f32 x),
 * prefill widens 4-row f32 panels.
 */
export const matmulQ8_0Matrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (xq !== null && n >= LANES_MIN_TOKENS && lanesApply(LANES_Q8_0, m, n))
    matmulLanes(LANES_Q8_0, m, xq, n, y, yOff, yStride, r0, r1);
  else if (xq !== null && n >= FEW_MIN_TOKENS && n <= FEW_MAX_TOKENS && fewApply(m, n))
    matmulQ8_0Few(m, xq, n, y, yOff, yStride, r0, r1);
  else if (n >= PANEL_MIN_TOKENS) matmulPanels(m, widenRowsQ8_0, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else matmulQ8_0Rows4(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty q8_0 matrix with shared storage, to be filled by quantizeRowsQ8_0 / quantizeBf16RowsQ8_0. */
export function allocQ8_0(rows: number, cols: number): Matrix {
  return makeMatrix(Q8_0, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer(rows * cols)),
    scales: new Float32Array(new SharedArrayBuffer(((rows * cols) / QBLOCK) * 4)),
  });
}

/** Quantize f32 rows into a q8_0 matrix's storage; `rowsF32` holds rows [r0, r0 + nRows). */
export function quantizeRowsQ8_0(rowsF32: Float32Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const w = rowsF32;
  const q = m.q;
  const scales = m.scales;
  const end = nRows * cols;
  // The weights' bits, for the block maxima (blockAbsMaxBits).
  const bits = new Int32Array(w.buffer, w.byteOffset, end);
  let so = r0 * blocks;
  let wo = (r0 * cols) >> 2;
  for (let o = 0; o < end; o += QBLOCK, so++, wo += 8) {
    storeBlockQ8_0(w, bits, o, blockAbsMaxBits(bits, o), scales, so, q, wo);
  }
}

/**
 * The q8_0 block of the 32 weights w[o, o + 32) (bits: the same memory as int32), whose largest
 * |bits| is amax: its scale into scales[so], its int8 values into q[wo, wo + 8). Shared by the f32
 * and the bf16 quantizers, which differ only in how they find amax.
 */
export function storeBlockQ8_0(
  w: Float32Array,
  bits: Int32Array,
  o: number,
  amax: number,
  scales: Float32Array,
  so: number,
  q: Int32Array,
  wo: number,
): void {
  if (amax > 0x7f800000) {
    // A NaN: skip it, as a float compare does.
    amax = 0;
    for (let i = o; i < o + QBLOCK; i++) {
      const a = bits[i] & 0x7fffffff;
      if (a <= 0x7f800000 && a > amax) amax = a;
    }
  }
  const d = bitsToF32(amax) / 127;
  const id = d === 0 ? 0 : 1 / d;
  scales[so] = d;
  // (v + 128.5) | 0 - 128 is Math.round for v in [-127, 127], without the call.
  for (let j = 0; j < 8; j++) {
    const i = o + 4 * j;
    const q0 = (((w[i] * id + 128.5) | 0) - 128) & 0xff;
    const q1 = (((w[i + 1] * id + 128.5) | 0) - 128) & 0xff;
    const q2 = (((w[i + 2] * id + 128.5) | 0) - 128) & 0xff;
    const q3 = (((w[i + 3] * id + 128.5) | 0) - 128) & 0xff;
    q[wo + j] = q0 | (q1 << 8) | (q2 << 16) | (q3 << 24);
  }
}

/** Quantize bf16 rows into a q8_0 matrix's storage; `rowsBf16` holds rows [r0, r0 + nRows). */
export function quantizeBf16RowsQ8_0(rowsBf16: Uint16Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const q = m.q;
  const scales = m.scales;
  const pairs = new Int32Array(rowsBf16.buffer, rowsBf16.byteOffset, (nRows * cols) >> 1);
  const block = new Float32Array(QBLOCK); // one widened block
  const blockBits = new Int32Array(block.buffer);
  const end = pairs.length;
  let so = r0 * blocks;
  let wo = (r0 * cols) >> 2;
  for (let p = 0; p < end; p += QBLOCK / 2, so++, wo += 8) {
    storeBlockQ8_0(block, blockBits, 0, widenBf16Block(pairs, p, blockBits), scales, so, q, wo);
  }
}

/** Dequantize row r of a q8_0 matrix into out[outOff..outOff+cols). */
export function readRowQ8_0(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const q = m.q;
  let wo = (r * cols) >> 2;
  for (let b = 0; b < blocks; b++) {
    const d = m.scales[r * blocks + b];
    const o = outOff + b * QBLOCK;
    for (let j = 0; j < 8; j++, wo++) {
      const word = q[wo];
      out[o + 4 * j] = ((word << 24) >> 24) * d;
      out[o + 4 * j + 1] = ((word << 16) >> 24) * d;
      out[o + 4 * j + 2] = ((word << 8) >> 24) * d;
      out[o + 4 * j + 3] = (word >> 24) * d;
    }
  }
}

function widenRowsQ8_0(m: Matrix, r: number, nr: number, out: Float32Array): void {
  for (let i = 0; i < nr; i++) readRowQ8_0(m, r + i, out, i * m.cols);
}

/** The plain one-token kernel: 2 rows per pass (the rows past matmulQ8_0Rows4's multiples of 4). */
export function matmulQ8_0(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales;
  for (let t = 0; t < n; t++) {
    const xo = t * cols;
    const xso = t * blocks;
    let r = r0;
    // Two rows per pass: each activation load feeds two integer multiply-adds.
    for (; r + 2 <= r1; r += 2) {
      let acc0 = 0,
        acc1 = 0;
      const w0o = (r * cols) >> 2,
        w1o = w0o + (cols >> 2);
      for (let b = 0; b < blocks; b++) {
        let s0 = 0,
          s1 = 0;
        const wb = b * 8,
          xb = xo + b * QBLOCK;
        for (let j = 0; j < 8; j++) {
          const a = wq[w0o + wb + j],
            c = wq[w1o + wb + j];
          const x0 = xv[xb + 4 * j],
            x1 = xv[xb + 4 * j + 1],
            x2 = xv[xb + 4 * j + 2],
            x3 = xv[xb + 4 * j + 3];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
        }
        const xd = xs[xso + b];
        acc0 += s0 * ws[r * blocks + b] * xd;
        acc1 += s1 * ws[(r + 1) * blocks + b] * xd;
      }
      y[yOff + t * yStride + r] = acc0;
      y[yOff + t * yStride + r + 1] = acc1;
    }
    for (; r < r1; r++) {
      let acc = 0;
      const wo = (r * cols) >> 2;
      for (let b = 0; b < blocks; b++) {
        let s = 0;
        for (let j = 0; j < 8; j++) {
          const a = wq[wo + b * 8 + j],
            xb = xo + b * QBLOCK + 4 * j;
          s =
            (s +
              Math.imul((a << 24) >> 24, xv[xb]) +
              Math.imul((a << 16) >> 24, xv[xb + 1]) +
              Math.imul((a << 8) >> 24, xv[xb + 2]) +
              Math.imul(a >> 24, xv[xb + 3])) |
            0;
        }
        acc += s * ws[r * blocks + b] * xs[xso + b];
      }
      y[yOff + t * yStride + r] = acc;
    }
  }
}

/**
 * q8_0 decode, 4 rows per pass: each activation load feeds 4 rows' multiply-adds instead of 2.
 * Each step takes 4 words (16 columns) of each row, and the offsets are masked (common.ts) so that
 * V8 drops the overflow checks. Rows past the last multiple of 4 go through matmulQ8_0.
 */
export function matmulQ8_0Rows4(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const words = cols >> 2; // int32 words per row
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales;
  const r4 = r0 + ((r1 - r0) & ~3);
  if (wq.length > OFFSET_MASK || xv.length > OFFSET_MASK) {
    matmulQ8_0(m, xq, n, y, yOff, yStride, r0, r1);
    return;
  }
  for (let t = 0; t < n; t++) {
    const xo = (t * cols) & OFFSET_MASK;
    const xso = t * blocks;
    const yt = yOff + t * yStride;
    for (let r = r0; r < r4; r += 4) {
      let acc0 = 0,
        acc1 = 0,
        acc2 = 0,
        acc3 = 0;
      const w0 = (r * words) & OFFSET_MASK;
      for (let b = 0; b < blocks; b++) {
        let s0 = 0,
          s1 = 0,
          s2 = 0,
          s3 = 0;
        const o0 = (w0 + b * 8) & OFFSET_MASK,
          o1 = (o0 + words) & OFFSET_MASK,
          o2 = (o1 + words) & OFFSET_MASK,
          o3 = (o2 + words) & OFFSET_MASK;
        const xb = (xo + b * QBLOCK) & OFFSET_MASK;
        for (let j = 0; j < 8; j += 4) {
          const xj = (xb + 4 * j) & OFFSET_MASK;
          let x0 = xv[xj],
            x1 = xv[xj + 1],
            x2 = xv[xj + 2],
            x3 = xv[xj + 3];
          let a = wq[o0 + j],
            c = wq[o1 + j],
            d = wq[o2 + j],
            e = wq[o3 + j];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 4];
          x1 = xv[xj + 5];
          x2 = xv[xj + 6];
          x3 = xv[xj + 7];
          a = wq[o0 + j + 1];
          c = wq[o1 + j + 1];
          d = wq[o2 + j + 1];
          e = wq[o3 + j + 1];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 8];
          x1 = xv[xj + 9];
          x2 = xv[xj + 10];
          x3 = xv[xj + 11];
          a = wq[o0 + j + 2];
          c = wq[o1 + j + 2];
          d = wq[o2 + j + 2];
          e = wq[o3 + j + 2];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 12];
          x1 = xv[xj + 13];
          x2 = xv[xj + 14];
          x3 = xv[xj + 15];
          a = wq[o0 + j + 3];
          c = wq[o1 + j + 3];
          d = wq[o2 + j + 3];
          e = wq[o3 + j + 3];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
        }
        const xd = xs[xso + b];
        acc0 += s0 * ws[r * blocks + b] * xd;
        acc1 += s1 * ws[(r + 1) * blocks + b] * xd;
        acc2 += s2 * ws[(r + 2) * blocks + b] * xd;
        acc3 += s3 * ws[(r + 3) * blocks + b] * xd;
      }
      y[yt + r] = acc0;
      y[yt + r + 1] = acc1;
      y[yt + r + 2] = acc2;
      y[yt + r + 3] = acc3;
    }
  }
  if (r4 < r1) matmulQ8_0(m, xq, n, y, yOff, yStride, r4, r1);
}

// ---- lanes (prefill): int8 weights -128..127 times int8 activations, |32 products| <= 32 * 128 *
// 127 < 2^19: L = 2^20, and only two lanes fit in 53 bits (three would need 2^60), so q8_0 packs
// token pairs, in a register block of 3 rows x 2 groups (4 tokens: a batch of 8 fills two blocks).

/** Widen q8_0 row r into panel[po, po + cols) as signed integers -127..127. */
function widenRowQ8_0(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const words = m.cols >> 2;
  const wq = m.q;
  const wo = r * words;
  for (let j = 0; j < words; j++) {
    const word = wq[wo + j];
    panel[po + 4 * j] = (word << 24) >> 24;
    panel[po + 4 * j + 1] = (word << 16) >> 24;
    panel[po + 4 * j + 2] = (word << 8) >> 24;
    panel[po + 4 * j + 3] = word >> 24;
  }
}

/**
 * q8_0: acc[3t + i] += row (rA, rB, rC)[i] . token t for the 4 tokens t0..t0+3 packed two per
 * double in groups g, g+1, block by block (as rowPairQ4, with 3 rows x 2 groups).
 */
function rowTripleQ8(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  ws: Float32Array,
  rA: number,
  rB: number,
  rC: number,
  xsT: Float64Array,
  nPad: number,
  t0: number,
  acc: Float64Array,
): void {
  const c = cols & 0x1fffffff;
  const c2 = (2 * c) & OFFSET_MASK;
  const xa = xOff & OFFSET_MASK,
    xb = (xa + c) & OFFSET_MASK;
  const blocks = c / QBLOCK;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0,
      c0 = 0,
      c1 = 0;
    const k0 = (b * QBLOCK) & OFFSET_MASK;
    for (let k = k0; k < k0 + QBLOCK; k += 2) {
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
    const wA = ws[rA * blocks + b],
      wB = ws[rB * blocks + b],
      wC = ws[rC * blocks + b];
    const so = b * nPad + t0;
    const o = 3 * t0;
    splitQ8(a0, b0, c0, wA, wB, wC, xsT, so, acc, o);
    splitQ8(a1, b1, c1, wA, wB, wC, xsT, so + 2, acc, o + 6);
  }
}

const M1 = 1048576,
  INV_M1 = 1 / M1;

/** As splitQ4 for three rows' sums of a q8_0 group of two tokens (one split at M1), acc[o + 3t + row]. */
function splitQ8(
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

const LANES_Q8_0: LaneKernel = {
  lanes: 2,
  spacing: M1,
  rows: 3,
  groups: 2,
  widenRow: widenRowQ8_0,
  block: rowTripleQ8,
};

// ---- few tokens (2..8: verification rows, small batches): the lanes without a panel. Two tokens
// per double, M1 = 2^20 apart (as the panel lanes), times the int8 weights read straight from the
// words; each weight is decoded once for 2 groups (4 tokens; more take more passes) and each
// packed load feeds 4 rows. The integer block sums are exact, and the float steps after them
// (times the weight scale, times the activation scale, added block by block) are the one-token
// kernel's, so every token gets the same bits as from matmulQ8_0Rows4 alone, for any number of
// tokens in the call.

/** Names the few-token packing in lanes.ts' per-thread cache. */
const FEW_Q8_0 = {};

/** True when matmulQ8_0Few can run this matrix for n tokens (every index well below 2^30). */
export function fewApply(m: Matrix, n: number): boolean {
  return n <= FEW_MAX_TOKENS && m.cols * 4 < OFFSET_MASK && m.q.length < OFFSET_MASK;
}

/** q8_0 for 1 to 8 tokens, 4 rows per pass; bit-identical to matmulQ8_0Rows4 for every token. */
export function matmulQ8_0Few(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (n < 1 || n > FEW_MAX_TOKENS) throw new RangeError(`matmulQ8_0Few: 1 to ${FEW_MAX_TOKENS} tokens, got ${n}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const words = cols >> 2;
  const groups = Math.ceil(n / 2);
  const { packed, xsT, nPad } = packedLanes(FEW_Q8_0, xq, n, 2, M1, 1);
  const acc = laneAccumulators(4 * nPad);
  const wq = m.q,
    ws = m.scales;
  const r4 = r0 + ((r1 - r0) & ~3);
  for (let r = r0; r < r4; r += 4) {
    acc.fill(0, 0, 4 * nPad);
    // Two groups (4 tokens) per pass of two rows, an odd group with 4 rows per pass: wider blocks
    // (4 rows x 2 groups, 4 rows x 3 groups) measured slower (README).
    let g = 0;
    for (; g + 2 <= groups; g += 2) {
      pairQ8_0G2(wq, ws, words, blocks, r, packed, cols, g, xsT, nPad, acc, 0);
      pairQ8_0G2(wq, ws, words, blocks, r + 2, packed, cols, g, xsT, nPad, acc, 2);
    }
    if (g < groups) quadQ8_0G1(wq, ws, words, blocks, r, packed, cols, g, xsT, nPad, acc, 0);
    for (let t = 0; t < n; t++) {
      const yo = yOff + t * yStride + r;
      y[yo] = acc[4 * t];
      y[yo + 1] = acc[4 * t + 1];
      y[yo + 2] = acc[4 * t + 2];
      y[yo + 3] = acc[4 * t + 3];
    }
  }
  if (r4 < r1) matmulQ8_0(m, xq, n, y, yOff, yStride, r4, r1);
}

/** Split one row's group sum s (2 tokens' lanes) and add lane * weight scale * activation scale to acc[o + 4i]. */
function addLanesQ8_0(s: number, w: number, xsT: Float64Array, so: number, acc: Float64Array, o: number): void {
  const h = s * INV_M1 + ROUND - ROUND;
  acc[o] += (s - h * M1) * w * xsT[so];
  acc[o + 4] += h * w * xsT[so + 1];
}

/** Rows r..r+3 against packed groups g0..g0+0 (2 tokens from 2 * g0), adding into acc[4t + o + i]. */
function quadQ8_0G1(
  wq: Int32Array,
  ws: Float32Array,
  words: number,
  blocks: number,
  r: number,
  packed: Float64Array,
  cols: number,
  g0: number,
  xsT: Float64Array,
  nPad: number,
  acc: Float64Array,
  o: number,
): void {
  const wo0 = r * words;
  const so = r * blocks;
  const x0 = g0 * cols;
  const ao = 8 * g0 + o;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      b0 = 0,
      c0 = 0,
      d0 = 0;
    const wo = wo0 + b * 8;
    for (let j = 0; j < 8; j++) {
      const a = wq[wo + j],
        c = wq[wo + words + j],
        d = wq[wo + 2 * words + j],
        e = wq[wo + 3 * words + j];
      const k = b * QBLOCK + 4 * j;
      let wA = (a << 24) >> 24,
        wB = (c << 24) >> 24,
        wC = (d << 24) >> 24,
        wD = (e << 24) >> 24;
      let X0 = packed[x0 + k];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = (a << 16) >> 24;
      wB = (c << 16) >> 24;
      wC = (d << 16) >> 24;
      wD = (e << 16) >> 24;
      X0 = packed[x0 + k + 1];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = (a << 8) >> 24;
      wB = (c << 8) >> 24;
      wC = (d << 8) >> 24;
      wD = (e << 8) >> 24;
      X0 = packed[x0 + k + 2];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = a >> 24;
      wB = c >> 24;
      wC = d >> 24;
      wD = e >> 24;
      X0 = packed[x0 + k + 3];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
    }
    const t0 = b * nPad + 2 * g0;
    addLanesQ8_0(a0, ws[so + b], xsT, t0, acc, ao);
    addLanesQ8_0(b0, ws[so + 1 * blocks + b], xsT, t0, acc, ao + 1);
    addLanesQ8_0(c0, ws[so + 2 * blocks + b], xsT, t0, acc, ao + 2);
    addLanesQ8_0(d0, ws[so + 3 * blocks + b], xsT, t0, acc, ao + 3);
  }
}

/** Rows r..r+1 against packed groups g0..g0+1 (4 tokens from 2 * g0), adding into acc[4t + o + i]. */
function pairQ8_0G2(
  wq: Int32Array,
  ws: Float32Array,
  words: number,
  blocks: number,
  r: number,
  packed: Float64Array,
  cols: number,
  g0: number,
  xsT: Float64Array,
  nPad: number,
  acc: Float64Array,
  o: number,
): void {
  const wo0 = r * words;
  const so = r * blocks;
  const x0 = g0 * cols;
  const x1 = (g0 + 1) * cols;
  const ao = 8 * g0 + o;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      b0 = 0,
      a1 = 0,
      b1 = 0;
    const wo = wo0 + b * 8;
    for (let j = 0; j < 8; j++) {
      const a = wq[wo + j],
        c = wq[wo + words + j];
      const k = b * QBLOCK + 4 * j;
      let wA = (a << 24) >> 24,
        wB = (c << 24) >> 24;
      let X0 = packed[x0 + k];
      a0 += wA * X0;
      b0 += wB * X0;
      let X1 = packed[x1 + k];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = (a << 16) >> 24;
      wB = (c << 16) >> 24;
      X0 = packed[x0 + k + 1];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 1];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = (a << 8) >> 24;
      wB = (c << 8) >> 24;
      X0 = packed[x0 + k + 2];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 2];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = a >> 24;
      wB = c >> 24;
      X0 = packed[x0 + k + 3];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 3];
      a1 += wA * X1;
      b1 += wB * X1;
    }
    const t0 = b * nPad + 2 * g0;
    addLanesQ8_0(a0, ws[so + b], xsT, t0, acc, ao);
    addLanesQ8_0(b0, ws[so + 1 * blocks + b], xsT, t0, acc, ao + 1);
    addLanesQ8_0(a1, ws[so + b], xsT, t0 + 2, acc, ao + 8);
    addLanesQ8_0(b1, ws[so + 1 * blocks + b], xsT, t0 + 2, acc, ao + 9);
  }
}
