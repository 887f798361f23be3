// f32 weights [rows, cols], row-major: the exact format, and the register-blocked f32 kernels that
// formats without their own prefill kernel run on widened rows (matmulPanels).
//
// Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n and output rows r0 <= r < r1.
// Decode (matvecF32) takes 4 rows x 1 token, two columns per step, 4 accumulators: more spill out
// of x64's 16 FP registers. Prefill (matmulF32Rows3) takes 3 rows x 2 tokens: V8 computes a
// block's products before its adds, so 6 accumulators and 5 loads fit where 4x4 spills. The plain
// 4-row kernel (matmulF32) serves arrays too large for masked offsets and the widened panels.
import type { Matrix } from '../matrix.js';
import { COLS_MASK, OFFSET_MASK, PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';

/** matmul for an f32 matrix: two tokens (two sequences decoding together) already fill the 3x2 block. */
export const matmulF32Matrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1) => {
  if (n >= PANEL_MIN_TOKENS || n === 2) matmulF32Rows3(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else matvecF32(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
};

/** Row r of an f32 matrix into out[outOff..outOff+cols). */
export function readRowF32(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  out.set(m.f32.subarray(r * m.cols, (r + 1) * m.cols), outOff);
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
  if (w.length > OFFSET_MASK || x.length > OFFSET_MASK || cols > COLS_MASK) {
    matmulF32(w, cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  const colsM = cols & COLS_MASK;
  const even = colsM & 0x1ffffffe; // colsM & ~1, written so that V8 types it below 2^29 (k + 1 stays int32)
  for (let t = 0; t < n; t++) {
    const xo = (xOff + t * xStride) & OFFSET_MASK;
    const yt = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) {
      const o0 = (r * colsM) & OFFSET_MASK,
        o1 = (o0 + colsM) & OFFSET_MASK,
        o2 = (o1 + colsM) & OFFSET_MASK,
        o3 = (o2 + colsM) & OFFSET_MASK;
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
      if (even < colsM) {
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
      const wo = r * colsM;
      let a = 0;
      for (let k = 0; k < colsM; k++) a += w[wo + k] * x[xo + k];
      y[yt + r] = a;
    }
  }
}

/**
 * f32 weights w [rows, cols], 3 rows x 2 tokens per register block (prefill). 6 accumulators and 5
 * loaded values leave room in V8's 15 double registers for the products, which V8 computes before
 * the adds: the 4x4 block of before (16 accumulators) spills about 20 values per column step.
 */
export function matmulF32Rows3(
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
  if (w.length > OFFSET_MASK || x.length > OFFSET_MASK || cols > COLS_MASK) {
    matmulF32(w, cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  const colsM = cols & COLS_MASK;
  let r = r0;
  for (; r + 3 <= r1; r += 3) {
    const o0 = (r * colsM) & OFFSET_MASK,
      o1 = (o0 + colsM) & OFFSET_MASK,
      o2 = (o1 + colsM) & OFFSET_MASK;
    let t = 0;
    for (; t + 2 <= n; t += 2) {
      const x0 = (xOff + t * xStride) & OFFSET_MASK,
        x1 = (x0 + xStride) & OFFSET_MASK;
      let a00 = 0,
        a01 = 0,
        a10 = 0,
        a11 = 0,
        a20 = 0,
        a21 = 0;
      for (let k = 0; k < colsM; k++) {
        const w0 = w[o0 + k],
          w1 = w[o1 + k],
          w2 = w[o2 + k];
        const v0 = x[x0 + k],
          v1 = x[x1 + k];
        a00 += w0 * v0;
        a01 += w0 * v1;
        a10 += w1 * v0;
        a11 += w1 * v1;
        a20 += w2 * v0;
        a21 += w2 * v1;
      }
      const y0 = yOff + t * yStride + r,
        y1 = y0 + yStride;
      y[y0] = a00;
      y[y0 + 1] = a10;
      y[y0 + 2] = a20;
      y[y1] = a01;
      y[y1 + 1] = a11;
      y[y1 + 2] = a21;
    }
    if (t < n) {
      // The odd last token: same 3 rows, 1 token (matvecF32's 4-row block would not apply).
      const x0 = (xOff + t * xStride) & OFFSET_MASK;
      let a0 = 0,
        a1 = 0,
        a2 = 0;
      for (let k = 0; k < colsM; k++) {
        const v0 = x[x0 + k];
        a0 += w[o0 + k] * v0;
        a1 += w[o1 + k] * v0;
        a2 += w[o2 + k] * v0;
      }
      const y0 = yOff + t * yStride + r;
      y[y0] = a0;
      y[y0 + 1] = a1;
      y[y0 + 2] = a2;
    }
  }
  if (r < r1) matvecF32(w, cols, x, xOff, xStride, n, y, yOff, yStride, r, r1);
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

// Rows widened to f32 for matmulPanels, 4 at a time (and the same memory as bits); grown to the
// largest call, per thread.
let rowScratch = new Float32Array(0);
let rowScratchBits = new Uint32Array(0);

/**
 * Widen 4 rows at a time of any format to f32 (`widenRows(m, r, nr, out, outBits)` writes rows
 * [r, r + nr) into out[0, nr * cols), as floats or as their bits), then the 4-row f32 kernel over all n tokens: each widened row serves
 * every token.
 */
export function matmulPanels(
  m: Matrix,
  widenRows: (m: Matrix, r: number, nr: number, out: Float32Array, outBits: Uint32Array) => void,
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
  if (rowScratch.length < 4 * cols) {
    rowScratch = new Float32Array(4 * cols);
    rowScratchBits = new Uint32Array(rowScratch.buffer);
  }
  for (let r = r0; r < r1; r += 4) {
    const nr = Math.min(4, r1 - r);
    widenRows(m, r, nr, rowScratch, rowScratchBits);
    if (nr === 4) rows4F32(rowScratch, 0, cols, x, xOff, xStride, n, y, yOff + r, yStride);
    else matmulF32(rowScratch, cols, x, xOff, xStride, n, y, yOff + r, yStride, 0, nr);
  }
}
