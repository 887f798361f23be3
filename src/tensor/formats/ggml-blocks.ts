// ggml tensor types kept in their own blocks, exactly the GGUF file's bytes (Matrix.u8), for the
// types without a kernel of their own: each row is decoded by ggml's dequantizer (exact) into an
// f32 scratch row that stays in L1, then multiplied as f32. Slower than a dedicated kernel (every
// weight is decoded once per pass, not read as integers), but any type ggml-dequantize.ts decodes
// runs in its file's memory.
import type { Matrix } from '../matrix.js';
import { PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';
import { matmulPanels, matvecF32 } from './f32.js';
import {
  dequantizeBlockIQ4_NL,
  dequantizeBlockIQ4_XS,
  dequantizeBlockQ2_K,
  dequantizeBlockQ3_K,
  dequantizeBlockQ4_0,
  dequantizeBlockQ4_1,
  dequantizeBlockQ4_K,
  dequantizeBlockQ5_0,
  dequantizeBlockQ5_1,
  dequantizeBlockQ5_K,
  dequantizeBlockQ6_K,
} from './ggml-dequantize.js';

type BlockFn = (src: Uint8Array, o: number, out: Float32Array, y: number) => void;

/** ggml_type code -> [values per block, bytes per block, dequantizer] of the types run from their blocks. */
export const GGML_BLOCK_KERNELS = new Map<number, [number, number, BlockFn]>([
  [2, [32, 18, dequantizeBlockQ4_0]],
  [3, [32, 20, dequantizeBlockQ4_1]],
  [6, [32, 22, dequantizeBlockQ5_0]],
  [7, [32, 24, dequantizeBlockQ5_1]],
  [10, [256, 84, dequantizeBlockQ2_K]],
  [11, [256, 110, dequantizeBlockQ3_K]],
  [12, [256, 144, dequantizeBlockQ4_K]],
  [13, [256, 176, dequantizeBlockQ5_K]],
  [14, [256, 210, dequantizeBlockQ6_K]],
  [20, [32, 18, dequantizeBlockIQ4_NL]],
  [23, [256, 136, dequantizeBlockIQ4_XS]],
]);

/** Row r of a ggml-blocks matrix, dequantized by ggml's rules, into out[outOff..outOff+cols). */
export function readRowGgmlBlocks(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const [blockSize, typeSize, block] = GGML_BLOCK_KERNELS.get(m.ggmlType)!;
  const blocks = m.cols / blockSize;
  const src = m.u8;
  for (let b = 0, o = r * blocks * typeSize; b < blocks; b++, o += typeSize) block(src, o, out, outOff + b * blockSize);
}

function widenRows(m: Matrix, r: number, nr: number, out: Float32Array): void {
  for (let i = 0; i < nr; i++) readRowGgmlBlocks(m, r + i, out, i * m.cols);
}

// One decoded row (decode), per thread.
let rowScratch = new Float32Array(0);

export const matmulGgmlBlocks: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1) => {
  if (n >= PANEL_MIN_TOKENS) {
    matmulPanels(m, widenRows, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  if (rowScratch.length < m.cols) rowScratch = new Float32Array(m.cols);
  for (let r = r0; r < r1; r++) {
    readRowGgmlBlocks(m, r, rowScratch, 0);
    // rowScratch as a 1-row f32 matrix: output row r of every token.
    matvecF32(rowScratch, m.cols, x, xOff, xStride, n, y, yOff + r, yStride, 0, 1);
  }
};
