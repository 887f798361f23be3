// Activations quantized to int8 per 32-block, as llama.cpp's q8_0 activations: the quantized
// weight formats multiply them in integers (exact in int32), one float multiply per block.
import { QBLOCK } from '../matrix.js';

export interface QuantizedActivations {
  n: number;
  cols: number;
  q: Int32Array; // [n, cols] one int8 value (-127..127) per element: loaded once, reused by many rows
  scales: Float32Array; // [n, cols/32]
  sums: Int32Array; // [n, cols/32] sum of q in the block (q4_0 stores weights offset by +8)
  version: number; // bumped by every quantizeActivations, so that derived copies (lanes.ts) know when to redo
}

// Only whole 32-blocks are quantized: a matrix whose cols are not a multiple of 32 is never stored
// quantized (loadMatrix keeps it bf16), so e.g. stories260K's 172-wide down_proj input never reads them.
export function allocQuantizedActivations(maxN: number, cols: number, shared: boolean): QuantizedActivations {
  const blocks = Math.floor(cols / QBLOCK);
  const mk = (bytes: number) => (shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  return {
    n: 0,
    cols,
    q: new Int32Array(mk(maxN * cols * 4)),
    scales: new Float32Array(mk(maxN * blocks * 4)),
    sums: new Int32Array(mk(maxN * blocks * 4)),
    version: 0,
  };
}

/** Quantize rows t0 <= t < t1 of x [*, cols] (row stride xStride) into xq. */
export function quantizeActivations(
  x: Float32Array,
  xOff: number,
  xStride: number,
  t0: number,
  t1: number,
  xq: QuantizedActivations,
): void {
  const cols = xq.cols;
  const blocks = Math.floor(cols / QBLOCK);
  xq.version++;
  for (let t = t0; t < t1; t++) {
    for (let b = 0; b < blocks; b++) {
      const xo = xOff + t * xStride + b * QBLOCK;
      let amax = 0;
      for (let i = 0; i < QBLOCK; i++) amax = Math.max(amax, Math.abs(x[xo + i]));
      const d = amax / 127;
      const id = d === 0 ? 0 : 1 / d;
      const qo = t * cols + b * QBLOCK;
      let sum = 0;
      for (let i = 0; i < QBLOCK; i++) {
        const v = Math.round(x[xo + i] * id);
        xq.q[qo + i] = v;
        sum += v;
      }
      xq.scales[t * blocks + b] = d;
      xq.sums[t * blocks + b] = sum;
    }
  }
}
