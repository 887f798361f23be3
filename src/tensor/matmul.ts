// Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n and output rows r0 <= r < r1.
// One call computes a slice of output rows so that threads can split a matrix between them.
// Matrix-vector (n < 4, decode) and matrix-matrix (n >= 4, prefill) share the entry point.
// matmul-reference.ts keeps the kernels as they were before, measured beside these by the bench.
//
// JavaScript has no SIMD, so what counts is instructions per multiply-add. Every typed-array load
// costs an index add, a bounds check and (for Float32Array) a conversion to double, so:
// - decode (f32): 4 weight rows x 1 token, two columns per step; 4 accumulators leave enough of
//   x64's 16 FP registers free that nothing spills (8 accumulators did spill);
// - prefill (every format but q4_0): 4 weight rows are widened once into a float64 panel with the
//   rows interleaved, and the tokens once into float64 panels of 4 interleaved tokens, so the
//   4 rows x 4 tokens register block reads 8 consecutive doubles from two arrays per 16
//   multiply-adds, with no conversions left in the inner loop.
import { BF16, F32, Q4_0, Q8_0, QBLOCK, type Matrix } from './matrix.js';
import { matmulReference } from './matmul-reference.js';
import { dequantizeRowInto, matmulQ4_0, matmulQ8_0, type QuantizedActivations } from './quantize.js';

// bf16 rows are widened here before the f32 micro-kernel runs on them: 4 rows at a time.
let rowScratch = new Float32Array(0);
let rowScratchBits = new Uint32Array(0);

function ensureRowScratch(n: number): void {
  if (rowScratch.length < n) {
    rowScratch = new Float32Array(n);
    rowScratchBits = new Uint32Array(rowScratch.buffer);
  }
}

// QWEN_TS_MATMUL=reference runs the kernels of before instead (the bench's --compare-before).
const USE_REFERENCE = typeof process !== 'undefined' && process.env.QWEN_TS_MATMUL === 'reference';

export function matmul(
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
  xq: QuantizedActivations | null,
): void {
  if (USE_REFERENCE) {
    matmulReference(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq);
    return;
  }
  switch (m.format) {
    case F32:
      if (n >= PANEL_MIN_TOKENS) matmulPanels(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matvecF32(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case BF16:
      matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case Q8_0:
    case Q4_0:
      // q4_0's SWAR integer kernel (two multiply-adds per Math.imul) beats widening at every n.
      // q8_0 decode (n < 4) stays in integers; its prefill widens 4-row panels once and reuses
      // each across all n tokens.
      if (m.format === Q4_0) matmulQ4_0(m, xq!, n, y, yOff, yStride, r0, r1);
      else if (n >= PANEL_MIN_TOKENS) matmulPanels(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matmulQ8_0(m, xq!, n, y, yOff, yStride, r0, r1);
      return;
  }
  throw new Error(`matmul: unknown weight format ${m.format}`);
}

/** f32 weights w [rows, cols] starting at row 0 of `w`, one token at a time (decode). */
export function matvecF32(
  w: Float32Array,
  cols: number,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const even = cols & ~1;
  for (let t = 0; t < n; t++) {
    const xo = xOff + t * xStride;
    const yt = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) {
      const o0 = r * cols,
        o1 = o0 + cols,
        o2 = o1 + cols,
        o3 = o2 + cols;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      for (let k = 0; k < even; k += 2) {
        const v0 = x[xo + k],
          v1 = x[xo + k + 1];
        a0 += w[o0 + k] * v0 + w[o0 + k + 1] * v1;
        a1 += w[o1 + k] * v0 + w[o1 + k + 1] * v1;
        a2 += w[o2 + k] * v0 + w[o2 + k + 1] * v1;
        a3 += w[o3 + k] * v0 + w[o3 + k + 1] * v1;
      }
      if (even < cols) {
        const v0 = x[xo + even];
        a0 += w[o0 + even] * v0;
        a1 += w[o1 + even] * v0;
        a2 += w[o2 + even] * v0;
        a3 += w[o3 + even] * v0;
      }
      y[yt + r] = a0;
      y[yt + r + 1] = a1;
      y[yt + r + 2] = a2;
      y[yt + r + 3] = a3;
    }
    for (; r < r1; r++) {
      const wo = r * cols;
      let a = 0;
      for (let k = 0; k < cols; k++) a += w[wo + k] * x[xo + k];
      y[yt + r] = a;
    }
  }
}

const PANEL_MIN_TOKENS = 4;

function matmulBf16(
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (n >= PANEL_MIN_TOKENS || (r1 - r0) % 4 !== 0 || m.cols % 2 !== 0) {
    matmulPanels(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  // Decode: widen on the fly. One 32-bit load yields two bf16 values; bf16 -> f32 is a 16-bit
  // shift, and the bits become a float through a tiny Int32Array/Float32Array alias (JS has no
  // cheaper bit cast). 4 rows x 2 columns per step, 8 accumulators.
  const w32 = new Uint32Array(m.u16.buffer, m.u16.byteOffset, m.u16.length >> 1);
  const half = m.cols >> 1;
  const bits = castBits,
    f = castFloats;
  for (let t = 0; t < n; t++) {
    const xo = xOff + t * xStride;
    for (let r = r0; r < r1; r += 4) {
      const o0 = r * half,
        o1 = o0 + half,
        o2 = o1 + half,
        o3 = o2 + half;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0,
        b0 = 0,
        b1 = 0,
        b2 = 0,
        b3 = 0;
      for (let k = 0; k < half; k++) {
        const v0 = x[xo + 2 * k],
          v1 = x[xo + 2 * k + 1];
        const p0 = w32[o0 + k],
          p1 = w32[o1 + k],
          p2 = w32[o2 + k],
          p3 = w32[o3 + k];
        bits[0] = p0 << 16;
        bits[1] = p0 & 0xffff0000;
        bits[2] = p1 << 16;
        bits[3] = p1 & 0xffff0000;
        bits[4] = p2 << 16;
        bits[5] = p2 & 0xffff0000;
        bits[6] = p3 << 16;
        bits[7] = p3 & 0xffff0000;
        a0 += f[0] * v0;
        b0 += f[1] * v1;
        a1 += f[2] * v0;
        b1 += f[3] * v1;
        a2 += f[4] * v0;
        b2 += f[5] * v1;
        a3 += f[6] * v0;
        b3 += f[7] * v1;
      }
      const yt = yOff + t * yStride + r;
      y[yt] = a0 + b0;
      y[yt + 1] = a1 + b1;
      y[yt + 2] = a2 + b2;
      y[yt + 3] = a3 + b3;
    }
  }
}

const castBits = new Int32Array(8);
const castFloats = new Float32Array(castBits.buffer);

// Per-thread scratch (every worker thread has its own copy of this module), grown on demand.
let tokenPanels = new Float64Array(0); // [ceil(n/4), cols, 4]: tokens 4t..4t+3 interleaved
let rowPanel = new Float64Array(0); // [cols, 4]: 4 weight rows interleaved
const blockOut = new Float64Array(16); // [4 tokens, 4 rows] of a block at the matrix's edge

/** Widen 4 rows at a time (any format) to float64 panels, then 4 rows x 4 tokens register blocks. */
function matmulPanels(
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols;
  const tokenBlocks = (n + 3) >> 2;
  if (tokenPanels.length < tokenBlocks * 4 * cols) tokenPanels = new Float64Array(tokenBlocks * 4 * cols);
  if (rowPanel.length < 4 * cols) rowPanel = new Float64Array(4 * cols);
  if (m.format !== F32) ensureRowScratch(4 * cols);
  const xp = tokenPanels,
    wp = rowPanel;
  // Tokens past n are zeros: the last block computes them and nobody stores them.
  for (let b = 0; b < tokenBlocks; b++) {
    for (let j = 0; j < 4; j++) {
      const t = 4 * b + j;
      const po = b * 4 * cols + j;
      if (t < n) {
        const xo = xOff + t * xStride;
        for (let k = 0; k < cols; k++) xp[po + 4 * k] = x[xo + k];
      } else {
        for (let k = 0; k < cols; k++) xp[po + 4 * k] = 0;
      }
    }
  }
  for (let r = r0; r < r1; r += 4) {
    const nr = Math.min(4, r1 - r);
    widenRowPanel(m, r, nr, wp);
    for (let b = 0; b < tokenBlocks; b++) {
      let a00 = 0,
        a01 = 0,
        a02 = 0,
        a03 = 0,
        a10 = 0,
        a11 = 0,
        a12 = 0,
        a13 = 0;
      let a20 = 0,
        a21 = 0,
        a22 = 0,
        a23 = 0,
        a30 = 0,
        a31 = 0,
        a32 = 0,
        a33 = 0;
      const end = 4 * cols;
      for (let q = 0, p = b * end; q < end; q += 4, p += 4) {
        const w0 = wp[q],
          w1 = wp[q + 1],
          w2 = wp[q + 2],
          w3 = wp[q + 3];
        const v0 = xp[p],
          v1 = xp[p + 1],
          v2 = xp[p + 2],
          v3 = xp[p + 3];
        a00 += w0 * v0;
        a01 += w0 * v1;
        a02 += w0 * v2;
        a03 += w0 * v3;
        a10 += w1 * v0;
        a11 += w1 * v1;
        a12 += w1 * v2;
        a13 += w1 * v3;
        a20 += w2 * v0;
        a21 += w2 * v1;
        a22 += w2 * v2;
        a23 += w2 * v3;
        a30 += w3 * v0;
        a31 += w3 * v1;
        a32 += w3 * v2;
        a33 += w3 * v3;
      }
      const t = 4 * b;
      if (nr === 4 && t + 4 <= n) {
        const y0 = yOff + t * yStride + r,
          y1 = y0 + yStride,
          y2 = y1 + yStride,
          y3 = y2 + yStride;
        y[y0] = a00;
        y[y0 + 1] = a10;
        y[y0 + 2] = a20;
        y[y0 + 3] = a30;
        y[y1] = a01;
        y[y1 + 1] = a11;
        y[y1 + 2] = a21;
        y[y1 + 3] = a31;
        y[y2] = a02;
        y[y2 + 1] = a12;
        y[y2 + 2] = a22;
        y[y2 + 3] = a32;
        y[y3] = a03;
        y[y3 + 1] = a13;
        y[y3 + 2] = a23;
        y[y3 + 3] = a33;
      } else {
        // The matrix's last rows or the last tokens: store only what exists.
        const o = blockOut;
        o[0] = a00;
        o[1] = a10;
        o[2] = a20;
        o[3] = a30;
        o[4] = a01;
        o[5] = a11;
        o[6] = a21;
        o[7] = a31;
        o[8] = a02;
        o[9] = a12;
        o[10] = a22;
        o[11] = a32;
        o[12] = a03;
        o[13] = a13;
        o[14] = a23;
        o[15] = a33;
        for (let j = 0; j < 4 && t + j < n; j++)
          for (let i = 0; i < nr; i++) y[yOff + (t + j) * yStride + r + i] = o[4 * j + i];
      }
    }
  }
}

/** Rows [r, r+nr) of m (nr <= 4) into wp[4k + i] = W[r + i, k] as float64; missing rows are zeros. */
function widenRowPanel(m: Matrix, r: number, nr: number, wp: Float64Array): void {
  const cols = m.cols;
  let src: Float32Array, so: number;
  if (m.format === F32) {
    src = m.f32;
    so = r * cols;
  } else {
    widenRows(m, r, nr, rowScratch, rowScratchBits);
    src = rowScratch;
    so = 0;
  }
  for (let i = 0; i < 4; i++) {
    const o = so + i * cols;
    if (i < nr) for (let k = 0; k < cols; k++) wp[4 * k + i] = src[o + k];
    else for (let k = 0; k < cols; k++) wp[4 * k + i] = 0;
  }
}

/** Rows [r, r+nr) of m (bf16, q8_0 or q4_0) as f32 into out[0..nr*cols). */
function widenRows(m: Matrix, r: number, nr: number, out: Float32Array, outBits: Uint32Array): void {
  const cols = m.cols;
  if (m.format === BF16) {
    const start = r * cols,
      len = nr * cols;
    if ((start & 1) === 0 && (len & 1) === 0 && (m.u16.byteOffset & 3) === 0) {
      const u32 = new Uint32Array(m.u16.buffer, m.u16.byteOffset + start * 2, len >> 1);
      for (let i = 0, j = 0; j < len; i++, j += 2) {
        const v = u32[i];
        outBits[j] = v << 16;
        outBits[j + 1] = v & 0xffff0000;
      }
    } else {
      for (let j = 0; j < len; j++) outBits[j] = m.u16[start + j] << 16;
    }
    return;
  }
  for (let i = 0; i < nr; i++) dequantizeRowInto(m, r + i, out, i * cols);
}

/** Dequantize row r of any format into out[outOff..outOff+cols) (embedding lookup). */
export function readRow(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const cols = m.cols;
  if (m.format === F32) {
    out.set(m.f32.subarray(r * cols, (r + 1) * cols), outOff);
  } else if (m.format === BF16) {
    const o32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let k = 0; k < cols; k++) o32[outOff + k] = m.u16[r * cols + k] << 16;
  } else {
    dequantizeRowInto(m, r, out, outOff);
  }
}

export { QBLOCK };
