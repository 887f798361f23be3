// The parallel operations of the fast forward pass. The main thread and every worker thread each
// build a runner over the same shared state and run their part of each operation: matrix rows
// (and attention heads, and SwiGLU columns) are split between threads; nothing but the part index
// differs. Operations name their inputs and outputs by number (an index into `buffers` and
// `weights` below), so the model's forward reads like run.c: matmul(out, x, W, bias, n).
import { attendHead } from '../tensor/attention.js';
import { matmul } from '../tensor/matmul.js';
import type { Matrix } from '../tensor/matrix.js';
import { swiglu } from '../tensor/ops.js';
import { splitRange, type OpRunner } from '../tensor/pool.js';
import { allocQuantizedActivations, quantizeActivations, type QuantizedActivations } from '../tensor/quantize.js';
import type { KvCacheArrays } from './kv-cache.js';
import type { ModelWeights } from './weights.js';

/** (out, x, weight, n): buffers[out][n, W.rows] = buffers[x][n, W.cols]·Wᵀ + bias, with W, bias = weight slot `weight`. */
export const OP_MATMUL = 1;
/** (out, q, layer, n): buffers[out] = softmax(q·Kᵀ/√headDim)·V per row and head, over the row's cached positions. */
export const OP_ATTENTION = 2;
/** (gate, up, width, n): buffers[gate][n, width] = silu(gate) * up. */
export const OP_SWIGLU = 3;

export interface Dims {
  hidden: number;
  qDim: number;
  kvDim: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  maxRows: number; // rows (tokens) per forward chunk
  maxLogitRows: number; // rows of the logits scratch
  blockSize: number;
  contextLength: number;
}

/** Activations, shaped [maxRows, width]. All SharedArrayBuffer-backed. */
export interface Scratch {
  x: Float32Array; // residual stream [maxRows, hidden]
  xb: Float32Array; // normed input of a block [maxRows, hidden]
  q: Float32Array; // [maxRows, qDim]
  k: Float32Array; // [maxRows, kvDim]
  v: Float32Array; // [maxRows, kvDim]
  attnOut: Float32Array; // attention output, heads concatenated [maxRows, qDim]
  xb2: Float32Array; // block output before the residual add [maxRows, hidden]
  hb: Float32Array; // gate, then silu(gate) * up [maxRows, intermediate]
  hb2: Float32Array; // up [maxRows, intermediate]
  logits: Float32Array; // [maxLogitRows, vocab]
  rows: Int32Array; // [maxRows, 2]: sequence slot and position of each row
}

/** The activation buffers an operation can name, in the order of their numbers. */
export const BUFFER_NAMES = ['x', 'xb', 'q', 'k', 'v', 'attnOut', 'xb2', 'hb', 'hb2', 'logits'] as const;

export function bufferTable(s: Scratch): Float32Array[] {
  return BUFFER_NAMES.map((name) => s[name]);
}

/** The matrices an operation can name, each with its bias (or null): per layer q, k, v, o, gate, up, down; then the head. */
export function weightTable(w: ModelWeights): { matrices: Matrix[]; biases: (Float32Array | null)[] } {
  const matrices: Matrix[] = [];
  const biases: (Float32Array | null)[] = [];
  for (const l of w.layers) {
    matrices.push(l.qProj, l.kProj, l.vProj, l.oProj, l.gateProj, l.upProj, l.downProj);
    biases.push(l.qBias, l.kBias, l.vBias, l.oBias, l.gateBias, l.upBias, l.downBias);
  }
  matrices.push(w.lmHead);
  biases.push(null);
  return { matrices, biases };
}

export interface ForwardState {
  dims: Dims;
  weights: ModelWeights;
  kv: KvCacheArrays;
  scratch: Scratch;
}

// Row slices start on multiples of 4: the f32 kernel does 4 rows, q4_0 row pairs.
const ALIGN = 4;

export function createRunner(state: ForwardState): OpRunner {
  const { dims: d, kv, scratch: s } = state;
  const buffers = bufferTable(s);
  const { matrices, biases } = weightTable(state.weights);
  const scores = new Float32Array(d.contextLength); // this thread's attention scores
  // This thread's int8 copy of a matmul's input, for q8_0/q4_0 weights: one per input width.
  const quantized = new Map<number, QuantizedActivations>();
  for (const m of matrices)
    if (m.format >= 2 && !quantized.has(m.cols))
      quantized.set(m.cols, allocQuantizedActivations(d.maxRows, m.cols, false));

  return (op, args, part, parts) => {
    switch (op) {
      case OP_MATMUL: {
        const out = buffers[args[0]],
          x = buffers[args[1]],
          m = matrices[args[2]],
          bias = biases[args[2]],
          n = args[3];
        const [r0, r1] = splitRange(m.rows, part, parts, ALIGN);
        if (r0 >= r1) return;
        // Every thread quantizes the whole input for itself: n×cols work beside n×cols×rows/threads.
        const xq = quantized.get(m.cols) ?? null;
        if (m.format >= 2) quantizeActivations(x, 0, m.cols, 0, n, xq!);
        matmul(m, x, 0, m.cols, n, out, 0, m.rows, r0, r1, m.format >= 2 ? xq : null);
        if (bias) for (let t = 0; t < n; t++) for (let r = r0; r < r1; r++) out[t * m.rows + r] += bias[r];
        return;
      }
      case OP_ATTENTION: {
        const out = buffers[args[0]],
          q = buffers[args[1]],
          layer = args[2],
          n = args[3];
        const [i0, i1] = splitRange(n * d.heads, part, parts, 1);
        const group = d.heads / d.kvHeads; // GQA: query head h reads kv head h / group
        for (let it = i0; it < i1; it++) {
          const row = (it / d.heads) | 0;
          const h = it - row * d.heads;
          const seq = s.rows[2 * row],
            pos = s.rows[2 * row + 1];
          const off = row * d.qDim + h * d.headDim;
          const kvHead = (h / group) | 0;
          const table = seq * kv.maxBlocksPerSeq;
          attendHead(
            q,
            off,
            kv.k[layer],
            kv.v[layer],
            kv.blockTables,
            table,
            kvHead,
            d.kvHeads,
            d.headDim,
            d.blockSize,
            pos + 1,
            scores,
            out,
            off,
          );
        }
        return;
      }
      case OP_SWIGLU: {
        const gate = buffers[args[0]],
          up = buffers[args[1]],
          width = args[2],
          n = args[3];
        const [c0, c1] = splitRange(width, part, parts, ALIGN);
        for (let t = 0; t < n; t++) swiglu(gate, t * width + c0, up, t * width + c0, c1 - c0);
        return;
      }
    }
    throw new Error(`unknown operation ${op}`);
  };
}
