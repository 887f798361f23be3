// f16 weights [rows, cols] (GGUF F16 tensors) kept in half storage: widening an f16 is a table
// lookup (65536 f32, built once per thread): decode looks each weight up where it multiplies it,
// 4 rows per pass, and prefill widens 4-row panels for the f32 kernel as bf16 does. The values are exactly the f16 ones, as if widened at load, in half the memory.
import { f16ArrayToF32 } from '../dtype.js';
import { F16, makeMatrix, type Matrix } from '../matrix.js';
import { COLS_MASK, OFFSET_MASK, PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';
import { matmulPanels } from './f32.js';

let table: Float32Array | null = null;

/** f16 bits -> f32, all 65536 of them. */
function f16Table(): Float32Array {
  if (table === null) {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    table = new Float32Array(65536);
    f16ArrayToF32(all, 0, table, 0, 65536);
  }
  return table;
}

/** A GGUF F16 tensor's bytes (rows x cols halves, little-endian) as an f16 matrix with shared storage. */
export function f16Matrix(src: Uint8Array, rows: number, cols: number): Matrix {
  const u16 = new Uint16Array(new SharedArrayBuffer(2 * rows * cols));
  new Uint8Array(u16.buffer).set(src.subarray(0, 2 * rows * cols));
  return makeMatrix(F16, rows, cols, { u16, ggmlType: 1 });
}

/** Row r of an f16 matrix into out[outOff..outOff+cols). */
export function readRowF16(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const t = f16Table();
  const cols = m.cols,
    u16 = m.u16;
  const o = r * cols;
  for (let k = 0; k < cols; k++) out[outOff + k] = t[u16[o + k]];
}

function widenRows(m: Matrix, r: number, nr: number, out: Float32Array): void {
  const t = f16Table();
  const u16 = m.u16;
  const start = r * m.cols,
    len = nr * m.cols;
  for (let j = 0; j < len; j++) out[j] = t[u16[start + j]];
}

export const matmulF16Matrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1) => {
  if (n >= PANEL_MIN_TOKENS) matmulPanels(m, widenRows, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else matvecF16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
};

/**
 * One token at a time: 4 rows per pass, each weight widened by the table right where it is
 * multiplied (a widened scratch row cost a store and a load more per weight), offsets masked.
 */
function matvecF16(
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
  const t = f16Table();
  const u16 = m.u16;
  const cols = m.cols & COLS_MASK;
  if (u16.length > OFFSET_MASK || x.length > OFFSET_MASK || m.cols > COLS_MASK)
    throw new RangeError('f16: matrix too large');
  for (let tok = 0; tok < n; tok++) {
    const xo = (xOff + tok * xStride) & OFFSET_MASK;
    const yo = yOff + tok * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) {
      const o0 = (r * cols) & OFFSET_MASK,
        o1 = (o0 + cols) & OFFSET_MASK,
        o2 = (o1 + cols) & OFFSET_MASK,
        o3 = (o2 + cols) & OFFSET_MASK;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      for (let k = 0; k < cols; k++) {
        const xk = x[xo + k];
        a0 += t[u16[o0 + k]] * xk;
        a1 += t[u16[o1 + k]] * xk;
        a2 += t[u16[o2 + k]] * xk;
        a3 += t[u16[o3 + k]] * xk;
      }
      y[yo + r] = a0;
      y[yo + r + 1] = a1;
      y[yo + r + 2] = a2;
      y[yo + r + 3] = a3;
    }
    for (; r < r1; r++) {
      const o = (r * cols) & OFFSET_MASK;
      let a = 0;
      for (let k = 0; k < cols; k++) a += t[u16[o + k]] * x[xo + k];
      y[yo + r] = a;
    }
  }
}
