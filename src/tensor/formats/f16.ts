// f16 weights [rows, cols] (GGUF F16 tensors) kept in half storage: widening an f16 is a table
// lookup (65536 f32, built once per thread), so decode widens 16 rows at a time into an f32
// scratch that stays in the L2 cache and runs the f32 kernel on it, and prefill widens 4-row
// panels as bf16 does. The values are exactly the f16 ones, as if widened at load, in half the memory.
import { f16ArrayToF32 } from '../dtype.js';
import { F16, makeMatrix, type Matrix } from '../matrix.js';
import { PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';
import { matmulPanels, matvecF32 } from './f32.js';

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

const DECODE_ROWS = 16;
// DECODE_ROWS widened rows (decode), per thread.
let rowsScratch = new Float32Array(0);

export const matmulF16Matrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1) => {
  if (n >= PANEL_MIN_TOKENS) {
    matmulPanels(m, widenRows, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  if (rowsScratch.length < DECODE_ROWS * m.cols) rowsScratch = new Float32Array(DECODE_ROWS * m.cols);
  for (let r = r0; r < r1; r += DECODE_ROWS) {
    const nr = Math.min(DECODE_ROWS, r1 - r);
    widenRows(m, r, nr, rowsScratch);
    // The scratch as an nr-row f32 matrix: output rows r..r+nr of every token.
    matvecF32(rowsScratch, m.cols, x, xOff, xStride, n, y, yOff + r, yStride, 0, nr);
  }
};
