// The Qwen2 / Qwen2.5 decoder, as in HF transformers' modeling_qwen2:
//
//   x = embed[token]
//   for each layer:
//     h = rmsnorm(x) ; q,k,v = h·Wq+bq, h·Wk+bk, h·Wv+bv ; rope(q, k) ; x += attention(q, cache)·Wo
//     h = rmsnorm(x) ; x += (silu(h·Wgate) * (h·Wup))·Wdown
//   logits = rmsnorm(x)·Wlm
//
// A forward call processes a batch of rows; each row is one token of one sequence at one position.
// A prefill is many rows of one sequence, a batched decode one row of each of many sequences.
import { readRow } from '../tensor/matmul.js';
import { sharedFloat32 } from '../tensor/matrix.js';
import { addInPlace, rmsnorm, rope, ropeTables } from '../tensor/ops.js';
import type { ThreadPool } from '../tensor/pool.js';
import { allocQuantizedActivations, quantizeActivations } from '../tensor/quantize.js';
import type { GenerationConfig, ModelConfig } from './config.js';
import { BLOCK_SIZE, KvCache } from './kv-cache.js';
import {
  OP_ATTENTION,
  OP_DOWN,
  OP_GATE_UP,
  OP_LM_HEAD,
  OP_O_PROJ,
  OP_QKV,
  type Dims,
  type ForwardState,
  type Scratch,
} from './runner.js';
import type { ModelWeights } from './weights.js';

export interface ForwardOptions {
  /** Position of the first token; the sequence's cache must hold positions 0..startPos-1. Default 0. */
  startPos?: number;
  /** Return the logits of every position, row-major [n, vocab], instead of only the last one. */
  allLogits?: boolean;
  /** KV cache slot of the sequence (0..maxSequences-1). Default 0. */
  seq?: number;
}

/** Names of the parallel operations, indexed by op code, for profiles. */
export const OP_NAMES = ['', 'qkv', 'attention', 'o_proj', 'gate_up', 'down', 'lm_head'];

export interface DecodeStep {
  seq: number;
  token: number;
  pos: number;
}

export class Qwen2Model {
  readonly dims: Dims;
  readonly kvCache: KvCache;
  private scratch: Scratch;
  private rope: { cos: Float32Array; sin: Float32Array };
  private quantized: boolean;
  private pool!: ThreadPool;
  /** Milliseconds per operation since profiling was enabled (null: off). */
  private profileMs: Record<string, number> | null = null;

  constructor(
    readonly config: ModelConfig,
    readonly generationConfig: GenerationConfig,
    readonly weights: ModelWeights,
    opts: { maxBatchTokens: number; maxSequences: number; contextLength: number; kvCacheBytes: number },
  ) {
    const c = config;
    const rows = opts.maxBatchTokens;
    this.dims = {
      hidden: c.hiddenSize,
      qDim: c.numHeads * c.headDim,
      kvDim: c.numKvHeads * c.headDim,
      heads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      intermediate: c.intermediateSize,
      vocab: c.vocabSize,
      maxRows: rows,
      maxLogitRows: Math.min(rows, opts.maxSequences),
      blockSize: BLOCK_SIZE,
      contextLength: opts.contextLength,
    };
    const d = this.dims;
    this.kvCache = new KvCache(c, opts.maxSequences, opts.contextLength, opts.kvCacheBytes);
    this.quantized = weights.layers[0].qProj.format >= 2;
    const q = this.quantized;
    this.scratch = {
      x: sharedFloat32(rows * d.hidden),
      xb: sharedFloat32(rows * d.hidden),
      q: sharedFloat32(rows * d.qDim),
      k: sharedFloat32(rows * d.kvDim),
      v: sharedFloat32(rows * d.kvDim),
      att: sharedFloat32(rows * d.qDim),
      xb2: sharedFloat32(rows * d.hidden),
      hb: sharedFloat32(rows * d.intermediate),
      hb2: sharedFloat32(rows * d.intermediate),
      logits: sharedFloat32(d.maxLogitRows * d.vocab),
      xqHidden: allocQuantizedActivations(q ? rows : 0, d.hidden, true),
      xqInter: allocQuantizedActivations(q ? rows : 0, d.intermediate, true),
      rows: new Int32Array(new SharedArrayBuffer(rows * 2 * 4)),
    };
    this.rope = ropeTables(opts.contextLength, c.headDim, c.ropeTheta);
  }

  /** What the runner in each thread needs: all of it lives in SharedArrayBuffers. */
  get forwardState(): ForwardState {
    return { dims: this.dims, weights: this.weights, kv: this.kvCache.arrays, scratch: this.scratch };
  }

  attachPool(pool: ThreadPool): void {
    this.pool = pool;
  }

  get threads(): number {
    return this.pool.threads;
  }

  async forward(tokenIds: ArrayLike<number>, opts: ForwardOptions = {}): Promise<Float32Array> {
    const startPos = opts.startPos ?? 0;
    const seq = opts.seq ?? 0;
    const n = tokenIds.length;
    const cache = this.kvCache;
    if (n === 0) throw new RangeError('forward: tokenIds is empty');
    if (!Number.isInteger(seq) || seq < 0 || seq >= cache.maxSequences) {
      throw new RangeError(`forward: seq ${seq} is out of range (0..${cache.maxSequences - 1})`);
    }
    if (!Number.isInteger(startPos) || startPos < 0 || startPos > cache.lengths[seq]) {
      throw new RangeError(
        `forward: startPos ${startPos} must be an integer from 0 to ${cache.lengths[seq]} (the tokens cached for sequence ${seq})`,
      );
    }
    if (startPos + n > this.dims.contextLength) {
      throw new RangeError(
        `forward: ${startPos + n} positions exceed the context length of ${this.dims.contextLength}`,
      );
    }
    this.checkTokens(tokenIds);
    cache.reserve(seq, startPos + n);
    cache.lengths[seq] = startPos;
    const vocab = this.dims.vocab;
    const out = new Float32Array(opts.allLogits ? n * vocab : vocab);
    for (let c0 = 0; c0 < n; c0 += this.dims.maxRows) {
      const m = Math.min(this.dims.maxRows, n - c0);
      for (let i = 0; i < m; i++) {
        this.scratch.rows[2 * i] = seq;
        this.scratch.rows[2 * i + 1] = startPos + c0 + i;
      }
      const last = c0 + m === n;
      const logitRows = opts.allLogits ? m : last ? 1 : 0;
      this.forwardRows(tokenIds, c0, m, logitRows, out, opts.allLogits ? c0 * vocab : 0);
      cache.lengths[seq] = startPos + c0 + m;
    }
    return out;
  }

  /** One decode step for several sequences at once: logits [steps.length, vocab]. */
  async decodeBatch(steps: DecodeStep[]): Promise<Float32Array> {
    const n = steps.length;
    if (n === 0 || n > this.dims.maxRows)
      throw new RangeError(`decodeBatch: 1 to ${this.dims.maxRows} steps, got ${n}`);
    const cache = this.kvCache;
    const seen = new Set<number>();
    for (const s of steps) {
      if (!Number.isInteger(s.seq) || s.seq < 0 || s.seq >= cache.maxSequences || seen.has(s.seq)) {
        throw new RangeError(`decodeBatch: seq ${s.seq} is out of range or repeated`);
      }
      seen.add(s.seq);
      if (!Number.isInteger(s.pos) || s.pos < 0 || s.pos > cache.lengths[s.seq] || s.pos >= this.dims.contextLength) {
        throw new RangeError(
          `decodeBatch: pos ${s.pos} of seq ${s.seq} is invalid (${cache.lengths[s.seq]} tokens cached, context ${this.dims.contextLength})`,
        );
      }
    }
    const tokens = steps.map((s) => s.token);
    this.checkTokens(tokens);
    steps.forEach((s, i) => {
      cache.reserve(s.seq, s.pos + 1);
      this.scratch.rows[2 * i] = s.seq;
      this.scratch.rows[2 * i + 1] = s.pos;
    });
    const out = new Float32Array(n * this.dims.vocab);
    this.forwardRows(tokens, 0, n, n, out, 0);
    for (const s of steps) cache.lengths[s.seq] = s.pos + 1;
    return out;
  }

  /**
   * One pass over the weights for rows of any sequences (the engine's mixed step: prompt chunks
   * and decode tokens together). Each sequence's rows have consecutive positions starting at most
   * at its cached length. Returns the logits of the last `logitRows` rows, [logitRows, vocab].
   */
  async forwardBatch(rows: DecodeStep[], logitRows: number): Promise<Float32Array> {
    const n = rows.length;
    if (n === 0 || n > this.dims.maxRows)
      throw new RangeError(`forwardBatch: 1 to ${this.dims.maxRows} rows, got ${n}`);
    if (!Number.isInteger(logitRows) || logitRows < 0 || logitRows > n)
      throw new RangeError(`forwardBatch: logitRows must be from 0 to ${n}, got ${logitRows}`);
    const cache = this.kvCache;
    const next = new Map<number, number>();
    for (const r of rows) {
      if (!Number.isInteger(r.seq) || r.seq < 0 || r.seq >= cache.maxSequences)
        throw new RangeError(`forwardBatch: seq ${r.seq} is out of range (0..${cache.maxSequences - 1})`);
      const expected = next.get(r.seq);
      const ok = expected === undefined ? r.pos <= cache.lengths[r.seq] : r.pos === expected;
      if (!Number.isInteger(r.pos) || r.pos < 0 || !ok || r.pos >= this.dims.contextLength)
        throw new RangeError(
          `forwardBatch: pos ${r.pos} of seq ${r.seq} is invalid (${cache.lengths[r.seq]} tokens cached, context ${this.dims.contextLength})`,
        );
      next.set(r.seq, r.pos + 1);
    }
    const tokens = rows.map((r) => r.token);
    this.checkTokens(tokens);
    for (const [seq, end] of next) cache.ensure(seq, end);
    rows.forEach((r, i) => {
      this.scratch.rows[2 * i] = r.seq;
      this.scratch.rows[2 * i + 1] = r.pos;
    });
    const out = new Float32Array(logitRows * this.dims.vocab);
    this.forwardRows(tokens, 0, n, logitRows, out, 0);
    for (const [seq, end] of next) cache.lengths[seq] = end;
    return out;
  }

  /**
   * Start (or restart) a per-operation profile of forward passes; profile() returns the
   * milliseconds spent in each parallel operation and in the rest ('serial': norms, rope, cache
   * writes, activation quantization, embedding lookups, residual adds).
   */
  startProfile(): void {
    this.profileMs = Object.fromEntries([...OP_NAMES.slice(1), 'serial'].map((k) => [k, 0]));
  }

  profile(): Record<string, number> | null {
    return this.profileMs && { ...this.profileMs };
  }

  /** Free a sequence's KV cache (all sequences when seq is omitted). */
  resetCache(seq?: number): void {
    if (seq === undefined) for (let s = 0; s < this.kvCache.maxSequences; s++) this.kvCache.release(s);
    else this.kvCache.release(seq);
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }

  private checkTokens(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i];
      if (!Number.isInteger(t) || t < 0 || t >= this.dims.vocab) {
        throw new RangeError(`token id ${t} at index ${i} is outside the vocabulary (0..${this.dims.vocab - 1})`);
      }
    }
  }

  /**
   * Rows 0..n-1 of the batch (tokens[t0..t0+n), positions and sequences already in scratch.rows).
   * Writes the logits of the last `logitRows` rows to out[outOff..], row-major.
   */
  private forwardRows(
    tokens: ArrayLike<number>,
    t0: number,
    n: number,
    logitRows: number,
    out: Float32Array,
    outOff: number,
  ): void {
    const start = this.profileMs ? performance.now() : 0;
    const opsBefore = this.profileMs ? this.opsTotal() : 0;
    this.forwardLayers(tokens, t0, n, logitRows, out, outOff);
    if (this.profileMs) this.profileMs.serial += performance.now() - start - (this.opsTotal() - opsBefore);
  }

  private opsTotal(): number {
    let t = 0;
    for (const k of OP_NAMES.slice(1)) t += this.profileMs![k];
    return t;
  }

  /** One parallel operation over all threads (timed when profiling). */
  private run(op: number, layer: number, n: number): void {
    if (!this.profileMs) return this.pool.run(op, layer, n);
    const t = performance.now();
    this.pool.run(op, layer, n);
    this.profileMs[OP_NAMES[op]] += performance.now() - t;
  }

  private forwardLayers(
    tokens: ArrayLike<number>,
    t0: number,
    n: number,
    logitRows: number,
    out: Float32Array,
    outOff: number,
  ): void {
    const d = this.dims,
      s = this.scratch,
      w = this.weights,
      eps = this.config.rmsNormEps;
    for (let i = 0; i < n; i++) readRow(w.embed, tokens[t0 + i], s.x, i * d.hidden);

    for (let l = 0; l < w.layers.length; l++) {
      const layer = w.layers[l];
      for (let i = 0; i < n; i++) rmsnorm(s.xb, i * d.hidden, s.x, i * d.hidden, layer.inputNorm, d.hidden, eps);
      this.quantize(s.xb, n, 'hidden');
      this.run(OP_QKV, l, n);
      this.applyRopeAndCache(l, n);
      this.run(OP_ATTENTION, l, n);
      this.quantize(s.att, n, 'hidden');
      this.run(OP_O_PROJ, l, n);
      addInPlace(s.x, 0, s.xb2, 0, n * d.hidden);

      for (let i = 0; i < n; i++)
        rmsnorm(s.xb, i * d.hidden, s.x, i * d.hidden, layer.postAttentionNorm, d.hidden, eps);
      this.quantize(s.xb, n, 'hidden');
      this.run(OP_GATE_UP, l, n);
      this.quantize(s.hb, n, 'inter');
      this.run(OP_DOWN, l, n);
      addInPlace(s.x, 0, s.xb2, 0, n * d.hidden);
    }

    // The head, for the last logitRows rows, a few rows at a time: the logits scratch holds only
    // maxLogitRows rows ([rows, vocab] for a whole prefill chunk would be 39 MB for nothing).
    for (let r0 = n - logitRows; r0 < n; r0 += d.maxLogitRows) {
      const m = Math.min(d.maxLogitRows, n - r0);
      for (let i = 0; i < m; i++) rmsnorm(s.xb, i * d.hidden, s.x, (r0 + i) * d.hidden, w.finalNorm, d.hidden, eps);
      this.quantize(s.xb, m, 'hidden');
      this.run(OP_LM_HEAD, 0, m);
      out.set(s.logits.subarray(0, m * d.vocab), outOff + (r0 - (n - logitRows)) * d.vocab);
    }
  }

  private quantize(x: Float32Array, n: number, which: 'hidden' | 'inter'): void {
    if (!this.quantized) return;
    const xq = which === 'hidden' ? this.scratch.xqHidden : this.scratch.xqInter;
    quantizeActivations(x, 0, xq.cols, 0, n, xq);
  }

  /** RoPE on q and k of each row at its position, then k and v into the sequence's cache blocks. */
  private applyRopeAndCache(layer: number, n: number): void {
    const d = this.dims,
      s = this.scratch,
      kv = this.kvCache.arrays;
    const half = d.headDim >> 1;
    const kc = kv.k[layer],
      vc = kv.v[layer];
    for (let i = 0; i < n; i++) {
      const seq = s.rows[2 * i],
        pos = s.rows[2 * i + 1];
      rope(s.q, i * d.qDim, d.heads, d.headDim, this.rope.cos, this.rope.sin, pos * half);
      rope(s.k, i * d.kvDim, d.kvHeads, d.headDim, this.rope.cos, this.rope.sin, pos * half);
      const block = kv.blockTables[seq * kv.maxBlocksPerSeq + Math.floor(pos / BLOCK_SIZE)];
      const slot = pos % BLOCK_SIZE;
      for (let h = 0; h < d.kvHeads; h++) {
        const dst = ((block * d.kvHeads + h) * BLOCK_SIZE + slot) * d.headDim;
        const src = i * d.kvDim + h * d.headDim;
        kc.set(s.k.subarray(src, src + d.headDim), dst);
        vc.set(s.v.subarray(src, src + d.headDim), dst);
      }
    }
  }
}
