// The matmul kernels as they were before issue 12, kept unchanged beside the fast ones in
// matmul.ts (as llm.c keeps its naive kernel): the baseline that `npm run bench` measures the fast
// kernels against in the same run, and a second implementation the kernel tests check. matmul.ts
// shares the pieces that measurement did not improve on (prefill, bf16, q8_0/q4_0).
//
// Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n and output rows r0 <= r < r1.
// f32: 4 weight rows at a time, 8 accumulators for a single token, 4 rows x 4 tokens = 16
// accumulators for prefill. bf16 widens on the fly (decode) or 4-row f32 panels (prefill).
import { BF16, F32, Q4_0, Q8_0, type Matrix } from './matrix.js';
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

export function matmulReference(
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
  switch (m.format) {
    case F32:
      matmulF32(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case BF16:
      matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case Q8_0:
    case Q4_0:
      // q4_0's SWAR integer kernel (two multiply-adds per Math.imul) beats widening to f32 at
      // every n. q8_0 decode (n < 4) stays in integers; its prefill widens 4-row panels to f32 once
      // and reuses each across all n tokens in the 4x4 register-blocked kernel.
      if (m.format === Q4_0) matmulQ4_0(m, xq!, n, y, yOff, yStride, r0, r1);
      else if (n >= PANEL_MIN_TOKENS) matmulPanels(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matmulQ8_0(m, xq!, n, y, yOff, yStride, r0, r1);
      return;
  }
  throw new Error(`matmulReference: unknown weight format ${m.format}`);
}

/** f32 weights w [rows, cols] starting at row 0 of `w`. */
export function matmulF32(
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
  let r = r0;
  for (; r + 4 <= r1; r += 4) rows4F32(w, r * cols, cols, x, xOff, xStride, n, y, yOff + r, yStride);
  for (; r < r1; r++) {
    const wo = r * cols;
    for (let t = 0; t < n; t++) {
      const xo = xOff + t * xStride;
      let a = 0;
      for (let k = 0; k < cols; k++) a += w[wo + k] * x[xo + k];
      y[yOff + t * yStride + r] = a;
    }
  }
}

/** 4 consecutive weight rows starting at w[wo], all n tokens; results to y[yo + t*yStride + 0..3]. */
function rows4F32(
  w: Float32Array,
  wo: number,
  cols: number,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yo: number,
  yStride: number,
): void {
  const o0 = wo,
    o1 = wo + cols,
    o2 = wo + 2 * cols,
    o3 = wo + 3 * cols;
  let t = 0;
  for (; t + 4 <= n; t += 4) {
    const x0 = xOff + t * xStride,
      x1 = x0 + xStride,
      x2 = x1 + xStride,
      x3 = x2 + xStride;
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
    for (let k = 0; k < cols; k++) {
      const w0 = w[o0 + k],
        w1 = w[o1 + k],
        w2 = w[o2 + k],
        w3 = w[o3 + k];
      const v0 = x[x0 + k],
        v1 = x[x1 + k],
        v2 = x[x2 + k],
        v3 = x[x3 + k];
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
    const y0 = yo + t * yStride,
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
  }
  for (; t < n; t++) {
    const xo = xOff + t * xStride;
    // Two columns per step with separate accumulators: 8 independent add chains.
    let a0 = 0,
      a1 = 0,
      a2 = 0,
      a3 = 0,
      b0 = 0,
      b1 = 0,
      b2 = 0,
      b3 = 0;
    let k = 0;
    for (; k + 2 <= cols; k += 2) {
      const v0 = x[xo + k],
        v1 = x[xo + k + 1];
      a0 += w[o0 + k] * v0;
      b0 += w[o0 + k + 1] * v1;
      a1 += w[o1 + k] * v0;
      b1 += w[o1 + k + 1] * v1;
      a2 += w[o2 + k] * v0;
      b2 += w[o2 + k + 1] * v1;
      a3 += w[o3 + k] * v0;
      b3 += w[o3 + k + 1] * v1;
    }
    if (k < cols) {
      const v0 = x[xo + k];
      a0 += w[o0 + k] * v0;
      a1 += w[o1 + k] * v0;
      a2 += w[o2 + k] * v0;
      a3 += w[o3 + k] * v0;
    }
    const yt = yo + t * yStride;
    y[yt] = a0 + b0;
    y[yt + 1] = a1 + b1;
    y[yt + 2] = a2 + b2;
    y[yt + 3] = a3 + b3;
  }
}

const PANEL_MIN_TOKENS = 4;

export function matmulBf16(
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

/** Widen 4 rows at a time (any non-f32 format) to f32, then the 4x4 blocked kernel over all tokens. */
export function matmulPanels(
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
  ensureRowScratch(4 * cols);
  for (let r = r0; r < r1; r += 4) {
    const nr = Math.min(4, r1 - r);
    widenRows(m, r, nr, rowScratch, rowScratchBits);
    if (nr === 4) rows4F32(rowScratch, 0, cols, x, xOff, xStride, n, y, yOff + r, yStride);
    else matmulF32(rowScratch, cols, x, xOff, xStride, n, y, yOff + r, yStride, 0, nr);
  }
}

/** Rows [r, r+nr) of m as f32 into out[0..nr*cols). */
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
