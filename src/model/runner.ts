// The parallel operations of the Qwen2 forward pass. The main thread and every worker thread each
// build a runner over the same shared state and run their part of each operation: matrix rows
// (and attention heads) are split between threads; nothing but the part index differs.
import { attendHead } from '../tensor/attention.js';
import { matmul } from '../tensor/matmul.js';
import type { Matrix } from '../tensor/matrix.js';
import { swiglu } from '../tensor/ops.js';
import { splitRange, type OpRunner } from '../tensor/pool.js';
import type { QuantizedActivations } from '../tensor/quantize.js';
import type { KvCacheArrays } from './kv-cache.js';
import type { ModelWeights } from './weights.js';

export const OP_QKV = 1; // (layer, n): q, k, v = xb·Wq + bq, xb·Wk + bk, xb·Wv + bv
export const OP_ATTENTION = 2; // (layer, n): att = softmax(q·kᵀ/√d)·v over each row's cached positions
export const OP_O_PROJ = 3; // (layer, n): xb2 = att·Wo
export const OP_GATE_UP = 4; // (layer, n): hb = silu(xb·Wgate) * (xb·Wup)
export const OP_DOWN = 5; // (layer, n): xb2 = hb·Wdown
export const OP_LM_HEAD = 6; // (n): logits = xb·Wlm

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
  att: Float32Array; // attention output [maxRows, qDim]
  xb2: Float32Array; // block output before the residual add [maxRows, hidden]
  hb: Float32Array; // gate / SwiGLU [maxRows, intermediate]
  hb2: Float32Array; // up [maxRows, intermediate]
  logits: Float32Array; // [maxLogitRows, vocab]
  xqHidden: QuantizedActivations; // xb or att quantized, for q8_0/q4_0 weights
  xqInter: QuantizedActivations; // hb quantized
  rows: Int32Array; // [maxRows, 2]: sequence slot and position of each row
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
  const { dims: d, weights: w, kv, scratch: s } = state;
  const scores = new Float32Array(d.contextLength); // this thread's attention scores
  const quantized = w.layers[0].qProj.format >= 2;

  function mm(
    m: Matrix,
    x: Float32Array,
    xq: QuantizedActivations,
    n: number,
    y: Float32Array,
    part: number,
    parts: number,
    bias: Float32Array | null,
  ): void {
    const [r0, r1] = splitRange(m.rows, part, parts, ALIGN);
    if (r0 >= r1) return;
    matmul(m, x, 0, m.cols, n, y, 0, m.rows, r0, r1, quantized ? xq : null);
    if (bias) for (let t = 0; t < n; t++) for (let r = r0; r < r1; r++) y[t * m.rows + r] += bias[r];
  }

  return (op, args, part, parts) => {
    const layer = w.layers[args[0]];
    const n = args[1];
    switch (op) {
      case OP_QKV:
        mm(layer.qProj, s.xb, s.xqHidden, n, s.q, part, parts, layer.qBias);
        mm(layer.kProj, s.xb, s.xqHidden, n, s.k, part, parts, layer.kBias);
        mm(layer.vProj, s.xb, s.xqHidden, n, s.v, part, parts, layer.vBias);
        return;
      case OP_ATTENTION: {
        const items = n * d.heads;
        const [i0, i1] = splitRange(items, part, parts, 1);
        const group = d.heads / d.kvHeads;
        for (let it = i0; it < i1; it++) {
          const row = (it / d.heads) | 0;
          const h = it - row * d.heads;
          const seq = s.rows[2 * row],
            pos = s.rows[2 * row + 1];
          attendHead(
            s.q,
            row * d.qDim + h * d.headDim,
            kv.k[args[0]],
            kv.v[args[0]],
            kv.blockTables,
            seq * kv.maxBlocksPerSeq,
            (h / group) | 0,
            d.kvHeads,
            d.headDim,
            d.blockSize,
            pos + 1,
            scores,
            s.att,
            row * d.qDim + h * d.headDim,
          );
        }
        return;
      }
      case OP_O_PROJ:
        mm(layer.oProj, s.att, s.xqHidden, n, s.xb2, part, parts, null);
        return;
      case OP_GATE_UP: {
        mm(layer.gateProj, s.xb, s.xqHidden, n, s.hb, part, parts, null);
        mm(layer.upProj, s.xb, s.xqHidden, n, s.hb2, part, parts, null);
        const [r0, r1] = splitRange(d.intermediate, part, parts, ALIGN);
        for (let t = 0; t < n; t++) swiglu(s.hb, t * d.intermediate + r0, s.hb2, t * d.intermediate + r0, r1 - r0);
        return;
      }
      case OP_DOWN:
        mm(layer.downProj, s.hb, s.xqInter, n, s.xb2, part, parts, null);
        return;
      case OP_LM_HEAD:
        mm(w.lmHead, s.xb, s.xqHidden, n, s.logits, part, parts, null);
        return;
    }
    throw new Error(`unknown operation ${op}`);
  };
}
