// The parallel operations of the fast forward pass. The main thread and every worker thread each
// build a runner over the same shared state and run their part of each operation: each thread
// claims chunks of matrix rows (and attention heads) from the operation's shared counters until
// none are left (pool.ts's claimRows), so a slow or late thread simply takes fewer. Operations name their inputs and outputs by number (an index into `buffers` and
// `weights` below), so the model's forward reads like run.c: matmul(out, x, W, bias, n).
import {
  allocAttentionScratch,
  attendRowPart,
  attendRows,
  KV_F32,
  MAX_ROW_PARTS,
  mergeRowParts,
  rowPartLength,
  rowPartSize,
  type PagedKv,
} from '../tensor/attention.js';
import { matmul } from '../tensor/matmul.js';
import type { Matrix } from '../tensor/matrix.js';
import { swiglu } from '../tensor/ops.js';
import { claimedEnd, claimRows, type OpRunner } from '../tensor/pool.js';
import {
  allocQuantizedActivations,
  quantizeActivations,
  type QuantizedActivations,
} from '../tensor/formats/activations.js';
import type { KvCacheArrays } from './kv-cache.js';
import type { ModelWeights } from './weights.js';

/**
 * (x, n, count, out0, weight0, out1, weight1, ...): for each of `count` (at most MAX_MATMULS) weight
 * slots, buffers[out][n, W.rows] = buffers[x][n, W.cols]·Wᵀ + bias (W, bias = the slot's): the
 * matrices that read one input (q, k, v) go in one operation, one wait for the threads.
 */
export const OP_MATMUL = 1;
/** (out, q, layer, n): buffers[out] = softmax(q·Kᵀ/√headDim)·V per row and head, over the row's cached positions. */
export const OP_ATTENTION = 2;
/**
 * (gate, up, x, gateWeight, upWeight, n): buffers[gate][n, W.rows] = silu(x·Gateᵀ) * (x·Upᵀ) (plus
 * biases); buffers[up] holds x·Upᵀ. A thread applies SwiGLU to the rows it just computed.
 */
export const OP_GATE_UP = 3;
export const MAX_MATMULS = 6;

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
  /** Decode rows split by position (attention.ts's attendRowPart): [maxRows, kvHeads, MAX_ROW_PARTS, rowPartSize]. */
  attentionParts: Float64Array;
  /** [maxRows, kvHeads]: parts of a (row, kv head) done in the current operation; the last one merges and resets it. */
  attentionDone: Int32Array;
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

// Rows are claimed in chunks (pool.ts's claimRows) that start on multiples of 12: the f32 decode
// kernel takes 4 rows at a time, its prefill 3, q4_0 row pairs.
const ALIGN = 12;
// A chunk is at least this many multiply-adds (10-20 us): its claim (one compare-exchange on a
// shared cache line) stays well under 1% of it.
const MIN_CHUNK_MACS = 32768;
// Attention claims one (query block, kv head) at a time: a decode row, or up to QUERY_BLOCK
// consecutive rows of a prefill, with all the query heads of one kv head. A block reads each cached
// key and value once for all its queries; smaller blocks would read them more often, larger ones
// leave too few items to share among the threads in a prefill chunk.
const ATTENTION_COUNTER = 0;
const QUERY_BLOCK = 16;

/** The attention scratch of Scratch for these shapes. */
export function allocAttentionParts(d: Dims): { attentionParts: Float64Array; attentionDone: Int32Array } {
  const group = d.heads / d.kvHeads;
  const doubles = d.maxRows * d.kvHeads * MAX_ROW_PARTS * rowPartSize(group, d.headDim);
  return {
    attentionParts: new Float64Array(new SharedArrayBuffer(doubles * 8)),
    attentionDone: new Int32Array(new SharedArrayBuffer(d.maxRows * d.kvHeads * 4)),
  };
}

/** The smallest chunk of an operation: rows of a [rows, cols] matrix times n tokens. */
function minChunkRows(cols: number, n: number): number {
  return Math.ceil(MIN_CHUNK_MACS / (cols * n) / ALIGN) * ALIGN;
}

export function createRunner(state: ForwardState): OpRunner {
  const { dims: d, kv, scratch: s } = state;
  const buffers = bufferTable(s);
  const { matrices, biases } = weightTable(state.weights);
  const group = d.heads / d.kvHeads; // GQA: query head h reads kv head h / group
  const attention = allocAttentionScratch(QUERY_BLOCK * group, d.blockSize, d.headDim);
  const words = (a: Float32Array | Uint16Array | Int8Array) =>
    new Int32Array(a.buffer, a.byteOffset, a.byteLength >> 2);
  const layerKv: PagedKv[] = kv.k.map((k, l) => ({
    format: kv.format,
    k,
    v: kv.v[l],
    k32: kv.format !== KV_F32 ? words(k) : null,
    v32: kv.format !== KV_F32 ? words(kv.v[l]) : null,
    kScale: kv.kScale[l] ?? null,
    vScale: kv.vScale[l] ?? null,
    group: kv.group,
    blockTables: kv.blockTables,
    kvHeads: d.kvHeads,
    headDim: d.headDim,
    blockSize: d.blockSize,
  }));
  const blockStart = new Int32Array(d.maxRows + 1); // the query blocks of an attention operation
  const blockParts = new Int32Array(d.maxRows); // parts per kv head of each block (1 unless a split decode row)
  const blockPartLength = new Int32Array(d.maxRows);
  const blockItems = new Int32Array(d.maxRows + 1); // first item of each block
  const partSize = rowPartSize(group, d.headDim);
  // This thread's int8 copy of a matmul's input, for q8_0/q4_0 weights: one per input width.
  const quantized = new Map<number, QuantizedActivations>();
  for (const m of matrices)
    if (m.format >= 2 && !quantized.has(m.cols))
      quantized.set(m.cols, allocQuantizedActivations(d.maxRows, m.cols, false));

  /** Quantize x [n, m.cols] into this thread's int8 copy when m is q8_0/q4_0. */
  function quantizeInput(m: Matrix, x: Float32Array, n: number): void {
    // Every thread that takes part quantizes the whole input for itself: n×cols work beside
    // n×cols×rows/threads, and no wait for the others.
    if (m.format >= 2) quantizeActivations(x, 0, m.cols, 0, n, quantized.get(m.cols)!);
  }

  /** out[t, r0..r1) = x[t]·W[r0..r1)ᵀ + bias for t < n (x already quantized for q8_0/q4_0). */
  function rowsInto(
    out: Float32Array,
    x: Float32Array,
    m: Matrix,
    bias: Float32Array | null,
    n: number,
    r0: number,
    r1: number,
  ): void {
    const xq = m.format >= 2 ? quantized.get(m.cols)! : null;
    matmul(m, x, 0, m.cols, n, out, 0, m.rows, r0, r1, xq);
    if (bias) for (let t = 0; t < n; t++) for (let r = r0; r < r1; r++) out[t * m.rows + r] += bias[r];
  }

  /**
   * out[n, W.rows] = x·Wᵀ + bias for weight slot `slot`, in the chunks this thread claims on
   * work[counter]. quantizedCols: the width x is already quantized at by this thread in this
   * operation (0: not yet); returns it after this matrix.
   */
  function matmulClaimed(
    out: Float32Array,
    x: Float32Array,
    slot: number,
    n: number,
    work: Int32Array,
    counter: number,
    parts: number,
    part: number,
    quantizedCols: number,
  ): number {
    const m = matrices[slot];
    const minRows = minChunkRows(m.cols, n);
    for (let r0 = claimRows(work, counter, m.rows, minRows, ALIGN, parts, part); r0 < m.rows;) {
      const r1 = claimedEnd();
      if (m.format >= 2 && quantizedCols !== m.cols) {
        quantizeInput(m, x, n);
        quantizedCols = m.cols;
      }
      rowsInto(out, x, m, biases[slot], n, r0, r1);
      r0 = claimRows(work, counter, m.rows, minRows, ALIGN, parts, part);
    }
    return quantizedCols;
  }

  return (op, args, part, parts, work) => {
    switch (op) {
      case OP_MATMUL: {
        const x = buffers[args[0]],
          n = args[1],
          count = args[2];
        // Matrix i claims its rows on counter i: the threads finish one before the next.
        let quantizedCols = 0;
        for (let i = 0; i < count; i++) {
          const out = buffers[args[3 + 2 * i]],
            slot = args[4 + 2 * i];
          quantizedCols = matmulClaimed(out, x, slot, n, work, i, parts, part, quantizedCols);
        }
        return;
      }
      case OP_GATE_UP: {
        const gate = buffers[args[0]],
          up = buffers[args[1]],
          x = buffers[args[2]],
          gateSlot = args[3],
          upSlot = args[4],
          n = args[5];
        const g = matrices[gateSlot],
          u = matrices[upSlot];
        const width = g.rows;
        const minRows = minChunkRows(g.cols, 2 * n);
        let quantizedX = false;
        for (let r0 = claimRows(work, 0, width, minRows, ALIGN, parts, part); r0 < width;) {
          const r1 = claimedEnd();
          if (!quantizedX) {
            quantizeInput(g.format >= 2 ? g : u, x, n);
            quantizedX = true;
          }
          rowsInto(gate, x, g, biases[gateSlot], n, r0, r1);
          rowsInto(up, x, u, biases[upSlot], n, r0, r1);
          for (let t = 0; t < n; t++) swiglu(gate, t * width + r0, up, t * width + r0, r1 - r0);
          r0 = claimRows(work, 0, width, minRows, ALIGN, parts, part);
        }
        return;
      }
      case OP_ATTENTION: {
        const out = buffers[args[0]],
          q = buffers[args[1]],
          layer = args[2],
          n = args[3];
        // Query blocks: runs of rows of one sequence at consecutive positions, QUERY_BLOCK at most.
        let blocks = 0;
        for (let r = 0; r < n; r++) {
          const seq = s.rows[2 * r],
            pos = s.rows[2 * r + 1];
          const continues =
            r > 0 &&
            seq === s.rows[2 * r - 2] &&
            pos === s.rows[2 * r - 1] + 1 &&
            r - blockStart[blocks - 1] < QUERY_BLOCK;
          if (!continues) blockStart[blocks++] = r;
        }
        blockStart[blocks] = n;
        // Items: (block, kv head, part), the parts of a block's kv head consecutive.
        let items = 0;
        for (let b = 0; b < blocks; b++) {
          const r0 = blockStart[b];
          const single = blockStart[b + 1] - r0 === 1;
          const len = s.rows[2 * r0 + 1] + 1;
          blockPartLength[b] = single ? rowPartLength(len, d.blockSize) : len;
          blockParts[b] = single ? Math.ceil(len / blockPartLength[b]) : 1;
          blockItems[b] = items;
          items += blockParts[b] * d.kvHeads;
        }
        blockItems[blocks] = items;
        const scale = 1 / Math.sqrt(d.headDim);
        const lkv = layerKv[layer];
        let b = blocks - 1;
        for (let it = claimRows(work, ATTENTION_COUNTER, items, 1, 1, parts, part); it < items;) {
          const end = claimedEnd();
          for (; it < end; it++) {
            // Last blocks first: in a prefill they see the most positions, so the threads end together.
            const item = items - 1 - it;
            while (blockItems[b] > item) b--;
            while (blockItems[b + 1] <= item) b++;
            const local = item - blockItems[b];
            const count = blockParts[b];
            const kvHead = (local / count) | 0;
            const r0 = blockStart[b];
            const seq = s.rows[2 * r0],
              pos0 = s.rows[2 * r0 + 1];
            const table = seq * kv.maxBlocksPerSeq;
            if (count === 1) {
              const rows = blockStart[b + 1] - r0;
              attendRows(out, q, r0 * d.qDim, d.qDim, rows, pos0, lkv, table, kvHead, group, scale, attention);
              continue;
            }
            const c = local - kvHead * count;
            const from = c * blockPartLength[b];
            const to = Math.min(pos0 + 1, from + blockPartLength[b]);
            const slot = r0 * d.kvHeads + kvHead;
            const partsOff = slot * MAX_ROW_PARTS * partSize;
            const qOff = r0 * d.qDim;
            attendRowPart(
              s.attentionParts,
              partsOff + c * partSize,
              q,
              qOff,
              pos0,
              from,
              to,
              lkv,
              table,
              kvHead,
              group,
              scale,
              attention,
            );
            // The thread that finishes a row's last part merges them (the add orders the other
            // threads' parts before it), then leaves the counter at zero for the next operation.
            if (Atomics.add(s.attentionDone, slot, 1) === count - 1) {
              mergeRowParts(
                out,
                qOff + kvHead * group * d.headDim,
                s.attentionParts,
                partsOff,
                count,
                group,
                d.headDim,
              );
              Atomics.store(s.attentionDone, slot, 0);
            }
          }
          it = claimRows(work, ATTENTION_COUNTER, items, 1, 1, parts, part);
        }
        return;
      }
    }
    throw new Error(`unknown operation ${op}`);
  };
}
