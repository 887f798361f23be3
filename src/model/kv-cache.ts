// Paged KV cache, as in vLLM: keys and values live in fixed-size blocks of BLOCK_SIZE positions
// drawn from one pool sized by a memory budget; each sequence has a block table mapping its
// positions to blocks. Sequences of different lengths then share the budget with no fragmentation,
// and a finished sequence gives its blocks back at once.
//
// Automatic prefix caching (vLLM's): a full block whose positions are all computed can be
// registered under a key made of its parent block's key and its own token ids, so the key names
// the whole prefix up to the block's end. A new sequence starts from the longest chain of
// registered blocks matching its tokens and shares them read-only (reference counts). Only full
// blocks are ever registered and a sequence only writes past the blocks it matched, so a shared
// block is never written. When no sequence uses a registered block it stays cached and is evicted,
// least recently used first, only when a block is needed and none is free.
import { KV_BF16, KV_F32, roundQueryQ8 } from '../tensor/attention.js';
import { hadamard } from '../tensor/ops.js';
import { bf16ToF32, f16ToF32, f32ArrayToBf16, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import type { ModelConfig } from './config.js';

/** Positions per cache block: the unit of allocation, of prefix sharing and of the attention tiles. */
export const BLOCK_SIZE = 16;

/**
 * How keys and values are stored (vLLM's kv_cache_dtype, llama.cpp's --cache-type-k/-v): f32 is
 * exact; bf16 halves the memory; q8_0 stores int8 values with one f16 scale per 32 of a head's
 * values (per head when headDim is not a multiple of 32), llama.cpp's Q8_0: 34 bytes per 32.
 */
export type KvCacheDtype = 'f32' | 'bf16' | 'q8_0';
export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['f32', 'bf16', 'q8_0'];
const Q8_0_GROUP = 32;

export class KvCacheFullError extends Error {
  override name = 'KvCacheFullError';
}

/** Storage of one layer's keys or values: f32, bf16 bits, or q8_0 int8 values. */
export type KvStore = Float32Array | Uint16Array | Int8Array;

export interface KvCacheArrays {
  /** attention.ts's KV_F32, KV_BF16 or KV_Q8_0. */
  format: number;
  // Per layer: [numBlocks, kvHeads, BLOCK_SIZE, headDim]: one head's keys within a block are
  // contiguous, so a query reads them with unit stride.
  k: KvStore[];
  v: KvStore[];
  // q8_0 only (else empty): per layer the f16 scale of each `group` values of k and v.
  kScale: Uint16Array[];
  vScale: Uint16Array[];
  /** Values per q8_0 scale. */
  group: number;
  blockTables: Int32Array; // [maxSequences, maxBlocksPerSeq]
  maxBlocksPerSeq: number;
}

/** Bytes the cache takes per token per layer and head for one of k or v. */
function bytesPerHeadRow(dtype: KvCacheDtype, headDim: number): number {
  if (dtype === 'f32') return 4 * headDim;
  if (dtype === 'bf16') return 2 * headDim;
  return headDim + 2 * (headDim / q8Group(headDim));
}

function q8Group(headDim: number): number {
  return headDim % Q8_0_GROUP === 0 ? Q8_0_GROUP : headDim;
}

/** Position `pos` of a sequence holds token `tokenAt(pos)`. */
export type TokenAt = (pos: number) => number;

export class KvCache {
  readonly arrays: KvCacheArrays;
  readonly numBlocks: number;
  readonly bytesPerToken: number;
  readonly dtype: KvCacheDtype;
  /** Tokens cached per sequence (positions 0..length-1 hold keys and values in every layer). */
  private lengths: number[];
  /**
   * q8_0 with a power-of-two headDim: keys are stored rotated by a Hadamard matrix (ops.ts's
   * hadamard), and the forward pass rotates each query head the same way before attention.
   */
  readonly rotatesKeys: boolean;
  private numLayers: number;
  private kvHeads: number;
  private headDim: number;
  private keyRow: Float32Array;
  private blocksOf: number[][];
  /** Blocks that hold nothing worth keeping. */
  private free: number[];
  /** Sequences using each block. */
  private refs: Int32Array;
  /** Prefix key of each registered block ('' when not registered). */
  private keyOf: string[];
  /** Unique id of each registered block's prefix (0: none); child keys are built from it. */
  private prefixIdOf: Float64Array;
  private nextPrefixId = 1;
  private byKey = new Map<string, number>();
  /** Registered blocks no sequence uses, least recently used first (Map keeps insertion order). */
  private evictable = new Map<number, true>();
  /** Per sequence: leading blocks already registered, and the prefix id of the last of them. */
  private registered: number[];
  private lastPrefixId: number[];

  constructor(
    c: ModelConfig,
    readonly maxSequences: number,
    readonly contextLength: number,
    budgetBytes: number,
    dtype: KvCacheDtype = 'f32',
  ) {
    if (!KV_CACHE_DTYPES.includes(dtype))
      throw new RangeError(`KV cache dtype must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
    this.dtype = dtype;
    this.numLayers = c.numLayers;
    this.kvHeads = c.numKvHeads;
    this.headDim = c.headDim;
    this.rotatesKeys = rotatesKeys(dtype, c.headDim);
    this.keyRow = new Float32Array(c.headDim);
    this.bytesPerToken = c.numLayers * 2 * c.numKvHeads * bytesPerHeadRow(dtype, c.headDim);
    const maxBlocksPerSeq = Math.ceil(contextLength / BLOCK_SIZE);
    // Never more blocks than all sequences at full context could use.
    this.numBlocks = Math.min(
      Math.floor(budgetBytes / (this.bytesPerToken * BLOCK_SIZE)),
      maxSequences * maxBlocksPerSeq,
    );
    if (this.numBlocks < 1) {
      throw new KvCacheFullError(
        `KV cache budget of ${budgetBytes} bytes is smaller than one block (${this.bytesPerToken * BLOCK_SIZE} bytes)`,
      );
    }
    const perLayer = this.numBlocks * c.numKvHeads * BLOCK_SIZE * c.headDim;
    const group = q8Group(c.headDim);
    const store = (): KvStore =>
      dtype === 'f32'
        ? new Float32Array(new SharedArrayBuffer(perLayer * 4))
        : dtype === 'bf16'
          ? new Uint16Array(new SharedArrayBuffer(perLayer * 2))
          : new Int8Array(new SharedArrayBuffer(perLayer));
    const scales = (): Uint16Array[] =>
      dtype === 'q8_0'
        ? Array.from({ length: c.numLayers }, () => new Uint16Array(new SharedArrayBuffer((perLayer / group) * 2)))
        : [];
    this.arrays = {
      format: KV_CACHE_DTYPES.indexOf(dtype), // KV_F32, KV_BF16, KV_Q8_0 in this order
      k: Array.from({ length: c.numLayers }, store),
      v: Array.from({ length: c.numLayers }, store),
      kScale: scales(),
      vScale: scales(),
      group,
      blockTables: new Int32Array(new SharedArrayBuffer(maxSequences * maxBlocksPerSeq * 4)),
      maxBlocksPerSeq,
    };
    this.lengths = new Array(maxSequences).fill(0);
    this.blocksOf = Array.from({ length: maxSequences }, () => []);
    this.free = Array.from({ length: this.numBlocks }, (_, i) => this.numBlocks - 1 - i);
    this.refs = new Int32Array(this.numBlocks);
    this.keyOf = new Array(this.numBlocks).fill('');
    this.prefixIdOf = new Float64Array(this.numBlocks);
    this.registered = new Array(maxSequences).fill(0);
    this.lastPrefixId = new Array(maxSequences).fill(0);
  }

  /** Positions of `seq` whose keys and values are in the cache (0..length-1). */
  length(seq: number): number {
    this.checkSeq(seq);
    return this.lengths[seq];
  }

  /**
   * Store the keys and values of position `pos` of `seq` in `layer`: k[kOff..] and v[vOff..] hold
   * kvHeads x headDim values each (keys after RoPE, not rotated: write rotates them when
   * rotatesKeys). The position must be reserved. Writing the last layer makes the position part of
   * the sequence (its length grows to pos + 1).
   */
  write(layer: number, seq: number, pos: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    const blocks = this.blocksOf[seq];
    const b = pos >> LOG2_BLOCK;
    if (b >= blocks.length) throw new RangeError(`KvCache.write: position ${pos} of sequence ${seq} is not reserved`);
    const a = this.arrays;
    const hd = this.headDim;
    for (let h = 0; h < this.kvHeads; h++) {
      const dst = ((blocks[b] * this.kvHeads + h) * BLOCK_SIZE + (pos & (BLOCK_SIZE - 1))) * hd;
      if (this.rotatesKeys) {
        this.keyRow.set(k.subarray(kOff + h * hd, kOff + (h + 1) * hd));
        hadamard(this.keyRow, 0, hd);
        storeRow(a, a.k[layer], a.kScale[layer], dst, this.keyRow, 0, hd);
      } else storeRow(a, a.k[layer], a.kScale[layer], dst, k, kOff + h * hd, hd);
      storeRow(a, a.v[layer], a.vScale[layer], dst, v, vOff + h * hd, hd);
    }
    if (layer === this.numLayers - 1 && pos >= this.lengths[seq]) this.lengths[seq] = pos + 1;
  }

  /**
   * k[kOff..], v[vOff..] = the keys and values of position `pos` of `seq` in `layer` as stored,
   * widened to f32 (keys rotated back when rotatesKeys).
   */
  read(layer: number, seq: number, pos: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    const blocks = this.blocksOf[seq];
    const b = pos >> LOG2_BLOCK;
    if (b >= blocks.length) throw new RangeError(`KvCache.read: position ${pos} of sequence ${seq} is not reserved`);
    const a = this.arrays;
    const hd = this.headDim;
    for (let h = 0; h < this.kvHeads; h++) {
      const src = ((blocks[b] * this.kvHeads + h) * BLOCK_SIZE + (pos & (BLOCK_SIZE - 1))) * hd;
      loadRow(a, a.k[layer], a.kScale[layer], src, k, kOff + h * hd, hd);
      if (this.rotatesKeys) hadamard(k, kOff + h * hd, hd);
      loadRow(a, a.v[layer], a.vScale[layer], src, v, vOff + h * hd, hd);
    }
  }

  get capacityTokens(): number {
    return this.numBlocks * BLOCK_SIZE;
  }

  /** Tokens that can still be allocated: free blocks and cached blocks no sequence uses. */
  get freeTokens(): number {
    return (this.free.length + this.evictable.size) * BLOCK_SIZE;
  }

  /** Tokens held in registered blocks that no sequence uses (reusable by a later prefix). */
  get cachedIdleTokens(): number {
    return this.evictable.size * BLOCK_SIZE;
  }

  /**
   * Make positions [0, length) of `seq` writable; positions past `length` are dropped (a sequence
   * rolls back to `length` tokens with reserve(seq, length)).
   */
  reserve(seq: number, length: number): void {
    this.checkSeq(seq);
    if (length > this.contextLength) {
      throw new KvCacheFullError(`sequence of ${length} tokens exceeds the context length of ${this.contextLength}`);
    }
    const blocks = this.blocksOf[seq];
    const need = Math.ceil(length / BLOCK_SIZE);
    const available = this.free.length + this.evictable.size;
    if (need - blocks.length > available) {
      throw new KvCacheFullError(
        `KV cache full: sequence ${seq} needs ${length} tokens but only ${(available + blocks.length) * BLOCK_SIZE} fit ` +
          `(budget ${this.capacityTokens} tokens; raise kvCacheBytes or run fewer sequences at once)`,
      );
    }
    while (blocks.length < need) {
      const b = this.take();
      this.refs[b] = 1;
      this.arrays.blockTables[seq * this.arrays.maxBlocksPerSeq + blocks.length] = b;
      blocks.push(b);
    }
    while (blocks.length > need) this.drop(blocks.pop()!);
    if (this.lengths[seq] > length) this.lengths[seq] = length;
    if (this.registered[seq] > need) {
      this.registered[seq] = need;
      this.lastPrefixId[seq] = need === 0 ? 0 : this.prefixIdOf[blocks[need - 1]];
    }
  }

  /** Make positions [0, length) of `seq` writable, keeping any blocks it holds beyond them. */
  ensure(seq: number, length: number): void {
    this.checkSeq(seq);
    if (Math.ceil(length / BLOCK_SIZE) > this.blocksOf[seq].length) this.reserve(seq, length);
  }

  /**
   * Forget positions `from` onwards of `seq` (they are about to be written again); its blocks stay.
   */
  forgetFrom(seq: number, from: number): void {
    this.checkSeq(seq);
    if (this.lengths[seq] > from) this.lengths[seq] = from;
  }

  /**
   * Forget positions [length, lengths[seq]) of `seq` (speculative tokens the model rejected): the
   * next rows rewrite them before any row reads them. Its blocks stay reserved. A registered
   * (possibly shared) block is never cut into.
   */
  truncate(seq: number, length: number): void {
    this.checkSeq(seq);
    if (!Number.isInteger(length) || length < this.registered[seq] * BLOCK_SIZE || length > this.lengths[seq]) {
      throw new RangeError(
        `truncate: length ${length} of sequence ${seq} must be an integer from ${this.registered[seq] * BLOCK_SIZE} (its registered blocks) to ${this.lengths[seq]} (its length)`,
      );
    }
    this.lengths[seq] = length;
  }

  /** Forget a sequence and return its blocks to the pool (registered ones stay cached). */
  release(seq: number): void {
    this.reserve(seq, 0);
  }

  /**
   * Start the empty sequence `seq` from the longest cached prefix of its tokens, at most
   * `maxTokens` long (whole blocks). Returns the number of positions now cached for it.
   */
  matchPrefix(seq: number, tokens: ArrayLike<number>, maxTokens: number): number {
    this.checkSeq(seq);
    if (this.blocksOf[seq].length !== 0) throw new Error(`matchPrefix: sequence ${seq} is not empty`);
    let parent = 0;
    let n = 0;
    while ((n + 1) * BLOCK_SIZE <= maxTokens) {
      const b = this.byKey.get(blockKey(parent, tokens, n * BLOCK_SIZE));
      if (b === undefined) break;
      if (this.refs[b]++ === 0) this.evictable.delete(b);
      this.arrays.blockTables[seq * this.arrays.maxBlocksPerSeq + n] = b;
      this.blocksOf[seq].push(b);
      parent = this.prefixIdOf[b];
      n++;
    }
    this.registered[seq] = n;
    this.lastPrefixId[seq] = parent;
    this.lengths[seq] = n * BLOCK_SIZE;
    return n * BLOCK_SIZE;
  }

  /** Register the sequence's full blocks within its computed positions so later sequences can reuse them. */
  registerFullBlocks(seq: number, tokenAt: TokenAt): void {
    const blocks = this.blocksOf[seq];
    const full = Math.min(blocks.length, Math.floor(this.lengths[seq] / BLOCK_SIZE));
    const ids = new Array<number>(BLOCK_SIZE);
    for (let j = this.registered[seq]; j < full; j++) {
      for (let i = 0; i < BLOCK_SIZE; i++) ids[i] = tokenAt(j * BLOCK_SIZE + i);
      const key = blockKey(this.lastPrefixId[seq], ids, 0);
      const b = blocks[j];
      const known = this.byKey.get(key);
      if (known !== undefined) {
        // Another sequence computed the same prefix first: chain on its entry, keep ours private.
        this.lastPrefixId[seq] = this.prefixIdOf[known];
      } else if (this.keyOf[b] === '') {
        this.keyOf[b] = key;
        this.prefixIdOf[b] = this.nextPrefixId++;
        this.byKey.set(key, b);
        this.lastPrefixId[seq] = this.prefixIdOf[b];
      }
      this.registered[seq] = j + 1;
    }
  }

  /** A block for writing: a free one, else the least recently used cached one. */
  private take(): number {
    const b = this.free.pop();
    if (b !== undefined) return b;
    const [oldest] = this.evictable.keys();
    this.evictable.delete(oldest);
    this.byKey.delete(this.keyOf[oldest]);
    this.keyOf[oldest] = '';
    this.prefixIdOf[oldest] = 0;
    return oldest;
  }

  private drop(b: number): void {
    if (--this.refs[b] > 0) return;
    if (this.keyOf[b] !== '') this.evictable.set(b, true);
    else this.free.push(b);
  }

  private checkSeq(seq: number): void {
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.maxSequences) {
      throw new RangeError(`sequence slot ${seq} is out of range (0..${this.maxSequences - 1})`);
    }
  }
}

const LOG2_BLOCK = Math.log2(BLOCK_SIZE);

/** dst[dstOff..+n) of a layer's k or v storage = src[srcOff..+n), in the cache's dtype. */
function storeRow(
  a: KvCacheArrays,
  dst: KvStore,
  scale: Uint16Array | undefined,
  dstOff: number,
  src: Float32Array,
  srcOff: number,
  n: number,
): void {
  if (a.format === KV_F32) (dst as Float32Array).set(src.subarray(srcOff, srcOff + n), dstOff);
  else if (a.format === KV_BF16) f32ArrayToBf16(src, srcOff, dst as Uint16Array, dstOff, n);
  else {
    const q = dst as Int8Array;
    for (let g0 = 0; g0 < n; g0 += a.group) {
      let amax = 0;
      for (let i = 0; i < a.group; i++) amax = Math.max(amax, Math.abs(src[srcOff + g0 + i]));
      // The scale is rounded to f16 first and the values divided by the rounded scale, so the
      // stored int8 values are the nearest for the scale that is read back.
      const h = f32ToF16(amax / 127);
      scale![(dstOff + g0) / a.group] = h;
      const d = f16ToF32(h);
      const inv = d === 0 ? 0 : 1 / d;
      for (let i = 0; i < a.group; i++) q[dstOff + g0 + i] = Math.round(src[srcOff + g0 + i] * inv);
    }
  }
}

function loadRow(
  a: KvCacheArrays,
  src: KvStore,
  scale: Uint16Array | undefined,
  srcOff: number,
  dst: Float32Array,
  dstOff: number,
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    const x = src[srcOff + i];
    dst[dstOff + i] =
      a.format === KV_F32
        ? x
        : a.format === KV_BF16
          ? bf16ToF32(x)
          : x * f16ToF32(scale![((srcOff + i) / a.group) | 0]);
  }
}

function rotatesKeys(dtype: KvCacheDtype, headDim: number): boolean {
  return dtype === 'q8_0' && (headDim & (headDim - 1)) === 0;
}

/**
 * x[off..off+n) rounded as a cache of `dtype` stores it (n a multiple of headDim; `isKey`: keys,
 * rotated before and back after quantizing when the cache rotates them): the reference forward's
 * keys and values go through this to be the oracle of a bf16 or q8_0 cache.
 */
export function kvRoundTrip(
  dtype: KvCacheDtype,
  x: Float32Array,
  off: number,
  n: number,
  headDim: number,
  isKey: boolean,
): void {
  if (dtype === 'f32') return;
  const rotate = isKey && rotatesKeys(dtype, headDim);
  if (rotate) for (let h = off; h < off + n; h += headDim) hadamard(x, h, headDim);
  roundTrip(dtype, x, off, n, headDim);
  if (rotate) for (let h = off; h < off + n; h += headDim) hadamard(x, h, headDim);
}

/**
 * The query heads x[off..off+n) rounded as the attention over a cache of `dtype` rounds them
 * (q8_0: to integers per group of the cache's scales, in the rotated basis when the keys are
 * rotated; f32 and bf16 keep queries as they are): the reference forward's queries go through this
 * to be the oracle of a q8_0 cache.
 */
export function queryRoundTrip(dtype: KvCacheDtype, x: Float32Array, off: number, n: number, headDim: number): void {
  if (dtype !== 'q8_0') return;
  const rotate = rotatesKeys(dtype, headDim);
  if (rotate) for (let h = off; h < off + n; h += headDim) hadamard(x, h, headDim);
  roundQueryQ8(x, off, n, q8Group(headDim));
  if (rotate) for (let h = off; h < off + n; h += headDim) hadamard(x, h, headDim);
}

function roundTrip(dtype: KvCacheDtype, x: Float32Array, off: number, n: number, headDim: number): void {
  if (dtype === 'bf16') {
    for (let i = off; i < off + n; i++) x[i] = bf16ToF32(f32ToBf16(x[i]));
    return;
  }
  const group = q8Group(headDim);
  const q = new Int8Array(group);
  const scale = new Uint16Array(1);
  const a = { format: KV_CACHE_DTYPES.indexOf('q8_0'), group } as KvCacheArrays;
  const row = new Float32Array(group);
  for (let g0 = off; g0 < off + n; g0 += group) {
    storeRow(a, q, scale, 0, x, g0, group);
    loadRow(a, q, scale, 0, row, 0, group);
    x.set(row, g0);
  }
}

/** The key of the block holding tokens[from..from+BLOCK_SIZE) after the prefix `parent`: exact, no hash collisions. */
function blockKey(parent: number, tokens: ArrayLike<number>, from: number): string {
  let key = `${parent}:`;
  for (let i = from; i < from + BLOCK_SIZE; i++) key += `${tokens[i]},`;
  return key;
}
