// Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n and output rows r0 <= r < r1, whatever W's
// weight format: one call computes a slice of output rows so that threads can split a matrix
// between them, and matrix-vector (decode) and matrix-matrix (prefill) share the entry point. Each
// format (src/tensor/formats/) brings its kernels; this file only looks them up by format code.
import { matmulBf16Matrix, readRowBf16 } from './formats/bf16.js';
import type { MatmulKernel } from './formats/common.js';
import { matmulF16Matrix, readRowF16 } from './formats/f16.js';
import { matmulF32Matrix, readRowF32 } from './formats/f32.js';
import { matmulGgmlBlocks, readRowGgmlBlocks } from './formats/ggml-blocks.js';
import { allocQ4_0, matmulQ4_0Matrix, readRowQ4_0 } from './formats/q4_0.js';
import { matmulQ4_1Matrix, readRowQ4_1 } from './formats/q4_1.js';
import { matmulQ5_1Matrix, readRowQ5_1 } from './formats/q5_1.js';
import { matmulQ2_KMatrix, readRowQ2_K } from './formats/q2_k.js';
import { matmulQ3_KMatrix, readRowQ3_K } from './formats/q3_k.js';
import { matmulIQ4_NLMatrix, readRowIQ4_NL } from './formats/iq4_nl.js';
import { matmulIQ4_XSMatrix, readRowIQ4_XS } from './formats/iq4_xs.js';
import { matmulQ4_KMatrix, readRowQ4_K } from './formats/q4_k.js';
import { matmulQ5_0Matrix, readRowQ5_0 } from './formats/q5_0.js';
import { matmulQ5_KMatrix, readRowQ5_K } from './formats/q5_k.js';
import { matmulQ6_KMatrix, readRowQ6_K } from './formats/q6_k.js';
import { allocQ8_0, matmulQ8_0Matrix, readRowQ8_0 } from './formats/q8_0.js';
import { BF16, F16, F32, GGML_BLOCKS, Q4_0, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0, QBLOCK, type Matrix } from './matrix.js';
import { IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_1, Q5_1 } from './matrix.js';

/** What a weight format brings: its matmul, its row reader and (stored formats) an allocator. */
interface FormatKernels {
  name: string;
  matmul: MatmulKernel;
  readRow(m: Matrix, r: number, out: Float32Array, outOff: number): void;
  alloc: ((rows: number, cols: number) => Matrix) | null;
}

/** By format code (matrix.ts). Adding a format: one file in formats/ and one row here. */
const FORMATS: FormatKernels[] = [];
FORMATS[F32] = { name: 'f32', matmul: matmulF32Matrix, readRow: readRowF32, alloc: null };
FORMATS[BF16] = { name: 'bf16', matmul: matmulBf16Matrix, readRow: readRowBf16, alloc: null };
FORMATS[Q8_0] = { name: 'q8_0', matmul: matmulQ8_0Matrix, readRow: readRowQ8_0, alloc: allocQ8_0 };
FORMATS[Q4_0] = { name: 'q4_0', matmul: matmulQ4_0Matrix, readRow: readRowQ4_0, alloc: allocQ4_0 };
FORMATS[Q4_K] = { name: 'q4_k', matmul: matmulQ4_KMatrix, readRow: readRowQ4_K, alloc: null };
FORMATS[Q6_K] = { name: 'q6_k', matmul: matmulQ6_KMatrix, readRow: readRowQ6_K, alloc: null };
FORMATS[Q5_0] = { name: 'q5_0', matmul: matmulQ5_0Matrix, readRow: readRowQ5_0, alloc: null };
FORMATS[F16] = { name: 'f16', matmul: matmulF16Matrix, readRow: readRowF16, alloc: null };
FORMATS[Q5_K] = { name: 'q5_k', matmul: matmulQ5_KMatrix, readRow: readRowQ5_K, alloc: null };
FORMATS[Q4_1] = { name: 'q4_1', matmul: matmulQ4_1Matrix, readRow: readRowQ4_1, alloc: null };
FORMATS[Q5_1] = { name: 'q5_1', matmul: matmulQ5_1Matrix, readRow: readRowQ5_1, alloc: null };
FORMATS[Q2_K] = { name: 'q2_k', matmul: matmulQ2_KMatrix, readRow: readRowQ2_K, alloc: null };
FORMATS[Q3_K] = { name: 'q3_k', matmul: matmulQ3_KMatrix, readRow: readRowQ3_K, alloc: null };
FORMATS[IQ4_NL] = { name: 'iq4_nl', matmul: matmulIQ4_NLMatrix, readRow: readRowIQ4_NL, alloc: null };
FORMATS[IQ4_XS] = { name: 'iq4_xs', matmul: matmulIQ4_XSMatrix, readRow: readRowIQ4_XS, alloc: null };
FORMATS[GGML_BLOCKS] = { name: 'ggml', matmul: matmulGgmlBlocks, readRow: readRowGgmlBlocks, alloc: null };

function formatOf(m: Matrix): FormatKernels {
  const f = FORMATS[m.format];
  if (f === undefined) throw new Error(`matmul: unknown weight format ${m.format}`);
  return f;
}

/** Y[t, r] = sum_k W[r, k] * X[t, k]: see MatmulKernel (formats/common.ts). */
export const matmul: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq) => {
  formatOf(m).matmul(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq);
};

/** Dequantize row r of any format into out[outOff..outOff+cols) (embedding lookup). */
export function readRow(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  formatOf(m).readRow(m, r, out, outOff);
}

/** An empty quantized matrix with shared storage, to be filled by its format's quantizeRows*. */
export function allocQuantizedMatrix(format: number, rows: number, cols: number): Matrix {
  if (cols % QBLOCK !== 0) throw new Error(`quantized matrix: cols ${cols} is not a multiple of ${QBLOCK}`);
  const alloc = FORMATS[format]?.alloc;
  if (!alloc) throw new Error(`allocQuantizedMatrix: format ${format} is not a quantized format`);
  return alloc(rows, cols);
}
