// A ThreadPool runner for the multi-threaded kernel benchmarks: operation `op` multiplies matrix
// mats[op] by the first args[0] rows of x (or its quantized copy xq), each thread taking a slice
// of the output rows, exactly as the model's runner splits them.
import { matmul } from '../src/tensor/matmul.js';
import type { Matrix } from '../src/tensor/matrix.js';
import { splitRange, type OpRunner } from '../src/tensor/pool.js';
import type { QuantizedActivations } from '../src/tensor/formats/activations.js';

export interface MatmulBenchState {
  mats: Matrix[];
  x: Float32Array; // [n, cols] (SharedArrayBuffer)
  xq: QuantizedActivations; // x quantized (shared)
  y: Float32Array; // [n, rows] (SharedArrayBuffer)
}

/** Output rows are split on multiples of 4, as the model does (4-row f32 kernel, q4_0 row pairs). */
const ALIGN = 4;

export function createRunner(state: MatmulBenchState): OpRunner {
  return (op, args, part, parts) => {
    const m = state.mats[op];
    const n = args[0];
    const [r0, r1] = splitRange(m.rows, part, parts, ALIGN);
    if (r0 >= r1) return;
    matmul(m, state.x, 0, m.cols, n, state.y, 0, m.rows, r0, r1, m.format >= 2 ? state.xq : null);
  };
}
