// The fast forward pass: the decoder of HF transformers' Qwen2 / Qwen3 / Llama, multi-threaded,
// over a paged KV cache, for a batch of rows at once. src/model/reference.ts is the same math in
// one plain function; read it first.
//
//   x = embed[token]
//   for each layer:
//     xb = rmsnorm(x) ; q,k,v = xb·Wq+bq, xb·Wk+bk, xb·Wv+bv ; (qwen3: rmsnorm each head of q, k)
//     rope(q, k) ; cache k, v ; attnOut = attention(q, cache) ; x += attnOut·Wo
//     xb = rmsnorm(x) ; x += (silu(xb·Wgate) * (xb·Wup))·Wdown
//   logits = rmsnorm(x)·Wlm
//
// A forward call processes a batch of rows; each row is one token of one sequence at one position.
// A prefill is many rows of one sequence, a batched decode one row of each of many sequences.
import { readRow } from '../tensor/matmul.js';
import { sharedFloat32, type Matrix } from '../tensor/matrix.js';
import { addInPlace, hadamard, rmsnorm, rmsnormHeads, rope, ropeTables } from '../tensor/ops.js';
import { ThreadPool } from '../tensor/pool.js';
import type { GenerationConfig, ModelConfig } from './config.js';
import { BLOCK_SIZE, KvCache, type KvCacheDtype } from './kv-cache.js';
import {
  allocAttentionParts,
  bufferTable,
  createRunner,
  MAX_MATMULS,
  OP_ATTENTION,
  OP_GATE_UP,
  OP_MATMUL,
  weightTable,
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

/** Where profile() puts the time of the parallel operations. */
export const PROFILE_KEYS = ['qkv', 'attention', 'o_proj', 'gate_up', 'down', 'lm_head', 'wait'] as const;
// Profile key of each matmul weight slot (runner.ts's weightTable order: q k v o gate up down, per layer).
const SLOT_PROFILE_KEYS = ['qkv', 'qkv', 'qkv', 'o_proj', 'gate_up', 'gate_up', 'down'] as const;

export interface ModelOptions {
  maxBatchTokens: number;
  maxSequences: number;
  contextLength: number;
  kvCacheBytes: number;
  /** How the KV cache stores keys and values. Default f32. */
  kvCacheDtype?: KvCacheDtype;
  /** Threads for the kernels, the calling thread included. */
  threads: number;
}

/** One matrix of a matmuls() operation: [out, W, bias]. */
type MatmulTarget = [Float32Array, Matrix, Float32Array | null];

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
  // Numbers by which the parallel operations name buffers and weights (runner.ts).
  private bufferIds: Map<Float32Array, number>;
  private weightIds: Map<Matrix, number>;
  private weightSlotBiases: (Float32Array | null)[];
  /** Milliseconds per operation since profiling was enabled (null: off). */
  private profileMs: Record<string, number> | null = null;
  /**
   * Debugging hook: called after each layer with the residual stream x [rows, hidden] (tests use
   * it to name the first layer that differs from the reference).
   */
  onLayerOutput: ((layer: number, x: Float32Array, rows: number) => void) | null = null;

  /** A model with its worker threads started: the only way to make one. */
  static async create(
    config: ModelConfig,
    generationConfig: GenerationConfig,
    weights: ModelWeights,
    opts: ModelOptions,
  ): Promise<Qwen2Model> {
    const state = forwardState(config, weights, opts);
    // Workers get plain typed arrays over the same SharedArrayBuffers, not the KvCache object.
    const shared: ForwardState = { dims: state.dims, weights, kv: state.kv, scratch: state.scratch };
    const runnerModule = new URL('./runner.js', import.meta.url);
    const pool = await ThreadPool.create(opts.threads, runnerModule, shared, createRunner(shared));
    return new Qwen2Model(config, generationConfig, weights, state, opts, pool);
  }

  private constructor(
    readonly config: ModelConfig,
    readonly generationConfig: GenerationConfig,
    readonly weights: ModelWeights,
    state: ForwardState & { kvCache: KvCache },
    opts: ModelOptions,
    private pool: ThreadPool,
  ) {
    this.dims = state.dims;
    this.kvCache = state.kvCache;
    this.scratch = state.scratch;
    this.rope = ropeTables(opts.contextLength, config.headDim, config.ropeTheta, config.ropeScaling);
    this.bufferIds = new Map(bufferTable(this.scratch).map((b, i) => [b, i]));
    const { matrices, biases } = weightTable(weights);
    this.weightIds = new Map(matrices.map((m, i) => [m, i]));
    this.weightSlotBiases = biases;
  }

  get threads(): number {
    return this.pool.threads;
  }

  /**
   * Logits of `tokenIds` run through sequence `seq` from position `startPos` (the last position's,
   * or every position's with allLogits): forwardBatch over chunks of at most maxBatchTokens rows.
   */
  forward(tokenIds: ArrayLike<number>, opts: ForwardOptions = {}): Float32Array {
    const startPos = opts.startPos ?? 0;
    const seq = opts.seq ?? 0;
    const n = tokenIds.length;
    const cache = this.kvCache;
    if (n === 0) throw new RangeError('forward: tokenIds is empty');
    if (!Number.isInteger(seq) || seq < 0 || seq >= cache.maxSequences) {
      throw new RangeError(`forward: seq ${seq} is out of range (0..${cache.maxSequences - 1})`);
    }
    if (!Number.isInteger(startPos) || startPos < 0 || startPos > cache.length(seq)) {
      throw new RangeError(
        `forward: startPos ${startPos} must be an integer from 0 to ${cache.length(seq)} (the tokens cached for sequence ${seq})`,
      );
    }
    if (startPos + n > this.dims.contextLength)
      throw new RangeError(
        `forward: ${startPos + n} positions exceed the context length of ${this.dims.contextLength}`,
      );
    this.checkTokens(tokenIds);
    const vocab = this.dims.vocab;
    const out = new Float32Array(opts.allLogits ? n * vocab : vocab);
    for (let c0 = 0; c0 < n; c0 += this.dims.maxRows) {
      const m = Math.min(this.dims.maxRows, n - c0);
      const rows: DecodeStep[] = [];
      for (let i = 0; i < m; i++) rows.push({ seq, token: tokenIds[c0 + i], pos: startPos + c0 + i });
      // The whole prompt's blocks before the first chunk: a prompt that does not fit fails at once.
      if (c0 === 0) this.reserveRows(rows, startPos + n);
      const logitRows = opts.allLogits ? m : c0 + m === n ? 1 : 0;
      const logits = this.forwardBatch(rows, logitRows);
      out.set(logits, opts.allLogits ? c0 * vocab : 0);
    }
    return out;
  }

  /** One decode step for several sequences at once: logits [steps.length, vocab]. */
  decodeBatch(steps: DecodeStep[]): Float32Array {
    const seen = new Set<number>();
    for (const s of steps) {
      if (seen.has(s.seq)) throw new RangeError(`decodeBatch: seq ${s.seq} is repeated`);
      seen.add(s.seq);
    }
    return this.forwardBatch(steps, steps.length);
  }

  /**
   * One pass over the weights for rows of any sequences (the engine's mixed step: prompt chunks
   * and decode tokens together). Each sequence's rows have consecutive positions starting at most
   * at its cached length; positions from there on are written again. Returns the logits of the
   * last `logitRows` rows, [logitRows, vocab]. With `hidden` ([rows, hiddenSize] or longer), also
   * writes there every row's final-norm hidden state (what the head reads; embeddings pool it).
   */
  forwardBatch(rows: DecodeStep[], logitRows: number, hidden?: Float32Array): Float32Array {
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
      const cached = cache.length(r.seq);
      const ok = expected === undefined ? r.pos <= cached : r.pos === expected;
      if (!Number.isInteger(r.pos) || r.pos < 0 || !ok || r.pos >= this.dims.contextLength)
        throw new RangeError(
          `forwardBatch: pos ${r.pos} of seq ${r.seq} is invalid (${cached} tokens cached, context ${this.dims.contextLength})`,
        );
      next.set(r.seq, r.pos + 1);
    }
    const tokens = rows.map((r) => r.token);
    this.checkTokens(tokens);
    this.reserveRows(rows, 0);
    rows.forEach((r, i) => {
      this.scratch.rows[2 * i] = r.seq;
      this.scratch.rows[2 * i + 1] = r.pos;
    });
    if (hidden !== undefined && hidden.length < n * this.dims.hidden)
      throw new RangeError(`forwardBatch: hidden holds ${hidden.length} values, ${n * this.dims.hidden} needed`);
    const out = new Float32Array(logitRows * this.dims.vocab);
    this.forwardRows(tokens, 0, n, logitRows, out, 0, hidden ?? null);
    return out;
  }

  /**
   * Blocks for each sequence's rows (at least up to `minEnd` for a one-sequence batch), and its
   * positions from its first row on forgotten: they are written again.
   */
  private reserveRows(rows: DecodeStep[], minEnd: number): void {
    const first = new Map<number, number>();
    const end = new Map<number, number>();
    for (const r of rows) {
      if (!first.has(r.seq)) first.set(r.seq, r.pos);
      end.set(r.seq, Math.max(r.pos + 1, minEnd));
    }
    for (const [seq, e] of end) this.kvCache.ensure(seq, e);
    for (const [seq, p] of first) this.kvCache.forgetFrom(seq, p);
  }

  /**
   * Start (or restart) a per-operation profile of forward passes; profile() returns the
   * milliseconds spent in each parallel operation and in the rest ('serial': norms, rope, cache
   * writes, q/k norms, embedding lookups, residual adds; activations are quantized inside the matmuls).
   * An operation's time is the calling thread's part; 'wait' is its time waiting for the workers'
   * parts after its own (threads finishing apart, or a worker switched out or waking up).
   */
  startProfile(): void {
    this.profileMs = Object.fromEntries([...PROFILE_KEYS, 'serial'].map((k) => [k, 0]));
    this.pool.profiling = true;
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
    await this.pool.close();
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
    hidden: Float32Array | null = null,
  ): void {
    const start = this.profileMs ? performance.now() : 0;
    const opsBefore = this.profileMs ? this.opsTotal() : 0;
    this.forwardLayers(tokens, t0, n, logitRows, out, outOff, hidden);
    if (this.profileMs) this.profileMs.serial += performance.now() - start - (this.opsTotal() - opsBefore);
  }

  private opsTotal(): number {
    let t = 0;
    for (const k of PROFILE_KEYS) t += this.profileMs![k];
    return t;
  }

  private forwardLayers(
    tokens: ArrayLike<number>,
    t0: number,
    n: number,
    logitRows: number,
    out: Float32Array,
    outOff: number,
    hidden: Float32Array | null,
  ): void {
    const d = this.dims,
      s = this.scratch,
      w = this.weights;
    for (let i = 0; i < n; i++) readRow(w.embed, tokens[t0 + i], s.x, i * d.hidden);

    for (let l = 0; l < w.layers.length; l++) {
      const layer = w.layers[l];
      // Attention block.
      this.rmsnormRows(s.xb, s.x, layer.inputNorm, n);
      this.matmuls(
        s.xb,
        n,
        [s.q, layer.qProj, layer.qBias],
        [s.k, layer.kProj, layer.kBias],
        [s.v, layer.vProj, layer.vBias],
      );
      if (layer.qNorm && layer.kNorm) this.qkNorm(s.q, s.k, layer.qNorm, layer.kNorm, n);
      this.ropeAndCache(s.q, s.k, s.v, l, n);
      this.attention(s.attnOut, s.q, l, n);
      this.matmul(s.xb2, s.attnOut, layer.oProj, layer.oBias, n);
      addInPlace(s.x, 0, s.xb2, 0, n * d.hidden);

      // MLP block (SwiGLU).
      this.rmsnormRows(s.xb, s.x, layer.postAttentionNorm, n);
      this.gateUp(s.hb, s.hb2, s.xb, layer.gateProj, layer.gateBias, layer.upProj, layer.upBias, n);
      this.matmul(s.xb2, s.hb, layer.downProj, layer.downBias, n);
      addInPlace(s.x, 0, s.xb2, 0, n * d.hidden);
      if (this.onLayerOutput) this.onLayerOutput(l, s.x, n);
    }

    if (hidden !== null) this.rmsnormRows(hidden, s.x, w.finalNorm, n);
    // The head, for the last logitRows rows, a few rows at a time: the logits scratch holds only
    // maxLogitRows rows ([rows, vocab] for a whole prefill chunk would be 39 MB for nothing).
    for (let r0 = n - logitRows; r0 < n; r0 += d.maxLogitRows) {
      const m = Math.min(d.maxLogitRows, n - r0);
      this.rmsnormRows(s.xb, s.x.subarray(r0 * d.hidden), w.finalNorm, m);
      this.matmul(s.logits, s.xb, w.lmHead, null, m);
      out.set(s.logits.subarray(0, m * d.vocab), outOff + (r0 - (n - logitRows)) * d.vocab);
    }
  }

  /** out[i] = rmsnorm(x[i]) * weight for rows i < n, each [hidden]. */
  private rmsnormRows(out: Float32Array, x: Float32Array, weight: Float32Array, n: number): void {
    const h = this.dims.hidden;
    for (let i = 0; i < n; i++) rmsnorm(out, i * h, x, i * h, weight, h, this.config.rmsNormEps);
  }

  /** out[n, W.rows] = x[n, W.cols]·Wᵀ + bias, on all threads (x quantized inside for q8_0/q4_0 weights). */
  private matmul(out: Float32Array, x: Float32Array, w: Matrix, bias: Float32Array | null, n: number): void {
    this.matmuls(x, n, [out, w, bias]);
  }

  /** out = x·Wᵀ + bias for each [out, W, bias] that reads x [n, W.cols]: one parallel operation. */
  private matmuls(x: Float32Array, n: number, ...targets: MatmulTarget[]): void {
    if (targets.length > MAX_MATMULS) throw new Error(`matmuls: at most ${MAX_MATMULS} matrices per operation`);
    const args = [this.bufferIds.get(x)!, n, targets.length];
    for (const [out, w, bias] of targets) args.push(this.bufferIds.get(out)!, this.slotOf(w, bias));
    this.run(this.profileKey(args[4]), OP_MATMUL, ...args);
  }

  /** gate = silu(x·Gateᵀ + gateBias) * (x·Upᵀ + upBias), rows [n, intermediate]; up holds x·Upᵀ + upBias. */
  private gateUp(
    gate: Float32Array,
    up: Float32Array,
    x: Float32Array,
    gateProj: Matrix,
    gateBias: Float32Array | null,
    upProj: Matrix,
    upBias: Float32Array | null,
    n: number,
  ): void {
    const ids = this.bufferIds;
    const gateSlot = this.slotOf(gateProj, gateBias),
      upSlot = this.slotOf(upProj, upBias);
    this.run('gate_up', OP_GATE_UP, ids.get(gate)!, ids.get(up)!, ids.get(x)!, gateSlot, upSlot, n);
  }

  /** The weight slot of w; the runner adds the bias stored with the weight, so `bias` must be that one. */
  private slotOf(w: Matrix, bias: Float32Array | null): number {
    const slot = this.weightIds.get(w)!;
    if (this.weightSlotBiases[slot] !== bias) throw new Error('matmul: bias does not belong to the weight');
    return slot;
  }

  private profileKey(slot: number): string {
    return slot === this.weightIds.size - 1 ? 'lm_head' : SLOT_PROFILE_KEYS[slot % SLOT_PROFILE_KEYS.length];
  }

  /** out[i, head] = softmax(q[i, head]·Kᵀ/√headDim)·V over row i's cached positions, on all threads. */
  private attention(out: Float32Array, q: Float32Array, layer: number, n: number): void {
    this.run('attention', OP_ATTENTION, this.bufferIds.get(out)!, this.bufferIds.get(q)!, layer, n);
  }

  /** One parallel operation over all threads (timed when profiling). */
  private run(key: string, op: number, ...args: number[]): void {
    if (!this.profileMs) return this.pool.run(op, ...args);
    const t = performance.now();
    const waitBefore = this.pool.waitMs;
    this.pool.run(op, ...args);
    const wait = this.pool.waitMs - waitBefore;
    this.profileMs[key] += performance.now() - t - wait;
    this.profileMs.wait += wait;
  }

  /** Qwen3: RMSNorm of every head of q and k (one [headDim] weight each), before RoPE. */
  private qkNorm(q: Float32Array, k: Float32Array, qNorm: Float32Array, kNorm: Float32Array, n: number): void {
    const d = this.dims,
      eps = this.config.rmsNormEps;
    for (let i = 0; i < n; i++) {
      rmsnormHeads(q, i * d.qDim, d.heads, d.headDim, qNorm, eps);
      rmsnormHeads(k, i * d.kvDim, d.kvHeads, d.headDim, kNorm, eps);
    }
  }

  /** RoPE on q and k of each row at its position, then k and v into the sequence's cache blocks. */
  private ropeAndCache(q: Float32Array, k: Float32Array, v: Float32Array, layer: number, n: number): void {
    const d = this.dims,
      s = this.scratch;
    const half = d.headDim >> 1;
    for (let i = 0; i < n; i++) {
      const seq = s.rows[2 * i],
        pos = s.rows[2 * i + 1];
      rope(q, i * d.qDim, d.heads, d.headDim, this.rope.cos, this.rope.sin, pos * half);
      rope(k, i * d.kvDim, d.kvHeads, d.headDim, this.rope.cos, this.rope.sin, pos * half);
      this.kvCache.write(layer, seq, pos, k, i * d.kvDim, v, i * d.kvDim);
      // The cache holds the keys rotated: rotate the queries alike (q·k is unchanged).
      if (this.kvCache.rotatesKeys)
        for (let h = 0; h < d.heads; h++) hadamard(q, i * d.qDim + h * d.headDim, d.headDim);
    }
  }
}

/** Logit rows the head computes per pass, whatever maxSequences (9: the few-token kernels' range). */
const MIN_LOGIT_ROWS = 9;

/** Shapes, KV cache and activation buffers: everything the threads share, allocated once. */
function forwardState(c: ModelConfig, weights: ModelWeights, opts: ModelOptions): ForwardState & { kvCache: KvCache } {
  const rows = opts.maxBatchTokens;
  const d: Dims = {
    hidden: c.hiddenSize,
    qDim: c.numHeads * c.headDim,
    kvDim: c.numKvHeads * c.headDim,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediate: c.intermediateSize,
    vocab: c.vocabSize,
    maxRows: rows,
    // At least a sequence's verification rows (speculation: the proposals + 1), so that they share
    // one pass of the head, whose few-token kernels cost far less per row than one row at a time.
    maxLogitRows: Math.min(rows, Math.max(opts.maxSequences, MIN_LOGIT_ROWS)),
    blockSize: BLOCK_SIZE,
    contextLength: opts.contextLength,
  };
  const kvCache = new KvCache(c, opts.maxSequences, opts.contextLength, opts.kvCacheBytes, opts.kvCacheDtype);
  const scratch: Scratch = {
    x: sharedFloat32(rows * d.hidden),
    xb: sharedFloat32(rows * d.hidden),
    q: sharedFloat32(rows * d.qDim),
    k: sharedFloat32(rows * d.kvDim),
    v: sharedFloat32(rows * d.kvDim),
    attnOut: sharedFloat32(rows * d.qDim),
    xb2: sharedFloat32(rows * d.hidden),
    hb: sharedFloat32(rows * d.intermediate),
    hb2: sharedFloat32(rows * d.intermediate),
    logits: sharedFloat32(d.maxLogitRows * d.vocab),
    rows: new Int32Array(new SharedArrayBuffer(rows * 2 * 4)),
    ...allocAttentionParts(d),
  };
  return { dims: d, weights, kv: kvCache.arrays, scratch, kvCache };
}
