// A ThreadPool runner for the per-format benchmark (formats.ts): operation `op` multiplies matrix
// mats[op] by the first args[0] rows of its activations (xs[op], quantized in xqs[op]), each thread
// taking a slice of the output rows as the model's runner does.
import { matmul } from '../src/tensor/matmul.js';
import type { Matrix } from '../src/tensor/matrix.js';
import { splitRange, type OpRunner } from '../src/tensor/pool.js';
import type { QuantizedActivations } from '../src/tensor/formats/activations.js';

export interface FormatBenchState {
  mats: Matrix[];
  xs: Float32Array[]; // [n, cols] per matrix (shared between matrices of the same cols)
  xqs: QuantizedActivations[];
  ys: Float32Array[]; // [n, rows]
}

/** Output rows are split on multiples of 4 (row pairs of the SWAR formats). */
const ALIGN = 4;

export function createRunner(state: FormatBenchState): OpRunner {
  return (op, args, part, parts) => {
    const m = state.mats[op];
    const [r0, r1] = splitRange(m.rows, part, parts, ALIGN);
    if (r0 >= r1) return;
    matmul(m, state.xs[op], 0, m.cols, args[0], state.ys[op], 0, m.rows, r0, r1, m.format >= 2 ? state.xqs[op] : null);
  };
}
