// Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n and output rows r0 <= r < r1.
// One call computes a slice of output rows so that threads can split a matrix between them.
// Matrix-vector (n < 4, decode) and matrix-matrix (n >= 4, prefill) share the entry point.
//
// matmul-reference.ts keeps the kernels as they were before; `npm run bench` measures both beside
// the scalar C loop (tools/scalar-limit.c). Decode: f32 takes 4 weight rows x
// 1 token, two columns per step, 4 accumulators, so that nothing spills out of x64's 16 FP
// registers (the 8 accumulators of before did), and masks its offsets so that V8 drops the int32
// overflow check from each index (see OFFSET_MASK; 1.09x -> 1.18x of before on a quiet machine);
// q8_0 takes 4 rows per pass instead of 2, 4 words per step, masked offsets (quantize.ts); bf16
// has its own decode kernel (matvecBf16: 4 accumulators, masked offsets, 1.12-1.24x of before).
// What bounds them (read from V8's code, --print-opt-code): Node 20's Turbofan does not hoist
// checks out of loops, so every step of a decode loop re-checks each typed array's map and
// reloads its length and data pointer, and every load costs an index add, a sign extension, a
// bounds check and an address add, plus a float32-to-double conversion for f32: ~100 instructions
// per 16 flops, where C needs ~20. Unrolling further spills (bf16 with 2 words per step 2.2-2.8
// against 3.6, q8_0 with a whole block 4.1 against 4.2), and for bf16 a 65536-entry bf16 -> float
// table measured 2.3-2.5 (Float32Array) and 1.9-2.2 (Float64Array) against 3.6 for the bit cast.
//
// f32 prefill takes 3 rows x 2 tokens per register block (matmulF32Rows3) instead of 4 x 4: V8
// gives doubles 15 registers and computes a block's products before its adds, so 16 accumulators
// spilled about 20 values per column step; 6 accumulators and 5 loads fit (1.15-1.18x at n = 64,
// quiet machine). 2x3 measured the same; 2x2, 3x3, 4x2, 2x4, 4x3, 3x4, x widened once to float64
// and interleaved by token, Math.fround and, for decode, widened x, 4 columns per step or 8 rows x
// 1 column measured slower (quiet 2-core Zen VM, GFLOP/s against scalar C's 9-10 decode, 11 prefill:
// decode masked 4x2 4.7-5.0, unmasked 4.3-4.4, widened x 4.2-4.4, 8x1 4.0-4.5, Math.fround 2.1;
// prefill 3x2 5.9-6.0, 2x3 5.8-6.1, 3x3 5.2-5.4, 4x3/3x4 5.1-5.4, 4x4 4.8-5.1, 4x2/2x4/2x2 4.6-4.7).
import { BF16, F32, Q4_0, Q8_0, QBLOCK, type Matrix } from './matrix.js';
import { matmulBf16, matmulF32, matmulPanels, matmulReference } from './matmul-reference.js';
import { lanesApply, matmulLanes } from './lanes.js';
import { dequantizeRowInto, matmulQ4_0, matmulQ8_0Rows4, type QuantizedActivations } from './quantize.js';

// QWEN_TS_MATMUL=reference runs the kernels of before instead (the bench's --compare-before).
const USE_REFERENCE = typeof process !== 'undefined' && process.env.QWEN_TS_MATMUL === 'reference';

const PANEL_MIN_TOKENS = 4;
// Measured on the 0.5B gate/up shape (GFLOP/s, same run): q4_0 lanes pass its SWAR kernel between
// n = 7 and 8 (n = 8: 6.4-6.6 against 5.4; n = 6: 4.7 against 5.4), q8_0 lanes pass its integer
// kernel at n = 4 (5.1 against 3.7).
const LANES_MIN_TOKENS_Q4_0 = 8;
const LANES_MIN_TOKENS_Q8_0 = 4;

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
      // Two tokens (two sequences decoding together) fill the 3x2 block: 1.2x matvecF32 at n = 2.
      if (n >= PANEL_MIN_TOKENS || n === 2)
        matmulF32Rows3(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matvecF32(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case BF16:
      if (n < PANEL_MIN_TOKENS) matvecBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case Q8_0:
    case Q4_0:
      // From a few tokens on (prefill, batched decode), several tokens' products per float64
      // multiply (lanes.ts): q4_0 packs 3 tokens, q8_0 2, so the break-even differs. Below it, the
      // integer kernels: q4_0 SWAR (two multiply-adds per Math.imul), q8_0 4 rows per pass.
      // Without quantized activations (xq null: a caller that has only f32 x), q8_0 prefill widens
      // 4-row f32 panels.
      if (xq !== null && n >= (m.format === Q4_0 ? LANES_MIN_TOKENS_Q4_0 : LANES_MIN_TOKENS_Q8_0) && lanesApply(m, n))
        matmulLanes(m, xq, n, y, yOff, yStride, r0, r1);
      else if (m.format === Q4_0) matmulQ4_0(m, xq!, n, y, yOff, yStride, r0, r1);
      else if (n >= PANEL_MIN_TOKENS) matmulPanels(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      else matmulQ8_0Rows4(m, xq!, n, y, yOff, yStride, r0, r1);
      return;
  }
  throw new Error(`matmul: unknown weight format ${m.format}`);
}

// Index ranges for V8's typer. Turbofan adds int32 indices with an overflow check (add + jo) unless
// it can prove the sum fits; masking an offset into [0, 2^30) and a column count into [0, 2^29)
// proves `offset + k + 1` < 2^31, so each load loses its add-and-branch. The masks change nothing
// while every index is below 2^30 (matvecF32 checks that and otherwise runs the plain kernel).
const OFFSET_MASK = 0x3fffffff;
const COLS_MASK = 0x1fffffff;

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

// bf16 -> f32 is a 16-bit shift; the bits become a float through this tiny Int32Array/Float32Array
// alias (JS has no cheaper bit cast), one per thread.
const castBits = new Int32Array(8);
const castFloats = new Float32Array(castBits.buffer);
// The Uint32Array view of the last bf16 matrix (decode calls one matrix many times in a row).
let wordsOf: Uint16Array | null = null;
let words: Uint32Array = new Uint32Array(0);

/**
 * bf16 weights, one token at a time (decode): one 32-bit load yields two weights of a row, 4 rows
 * x 2 columns per step into 4 accumulators (the 8 of matmulBf16 spill), offsets masked as in
 * matvecF32. Any rows r0..r1 (a last row or three go one at a time); odd cols or a misaligned
 * array take matmulBf16.
 */
export function matvecBf16(
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
  const u16 = m.u16;
  if ((m.cols & 1) !== 0 || (u16.byteOffset & 3) !== 0 || u16.length > OFFSET_MASK || x.length > OFFSET_MASK) {
    matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  if (wordsOf !== u16) {
    words = new Uint32Array(u16.buffer, u16.byteOffset, u16.length >> 1);
    wordsOf = u16;
  }
  const w32 = words;
  const half = (m.cols >> 1) & COLS_MASK; // words per row
  const bits = castBits,
    f = castFloats;
  for (let t = 0; t < n; t++) {
    const xo = (xOff + t * xStride) & OFFSET_MASK;
    const yt = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) {
      const o0 = (r * half) & OFFSET_MASK,
        o1 = (o0 + half) & OFFSET_MASK,
        o2 = (o1 + half) & OFFSET_MASK,
        o3 = (o2 + half) & OFFSET_MASK;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      for (let k = 0; k < half; k++) {
        const xk = (xo + 2 * k) & OFFSET_MASK;
        const v0 = x[xk],
          v1 = x[xk + 1];
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
        a0 += f[0] * v0 + f[1] * v1;
        a1 += f[2] * v0 + f[3] * v1;
        a2 += f[4] * v0 + f[5] * v1;
        a3 += f[6] * v0 + f[7] * v1;
      }
      y[yt + r] = a0;
      y[yt + r + 1] = a1;
      y[yt + r + 2] = a2;
      y[yt + r + 3] = a3;
    }
    for (; r < r1; r++) {
      const o = (r * half) & OFFSET_MASK;
      let a = 0;
      for (let k = 0; k < half; k++) {
        const xk = (xo + 2 * k) & OFFSET_MASK;
        const p = w32[o + k];
        bits[0] = p << 16;
        bits[1] = p & 0xffff0000;
        a += f[0] * x[xk] + f[1] * x[xk + 1];
      }
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
