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
import type { ModelConfig } from './config.js';

export const BLOCK_SIZE = 16;

export class KvCacheFullError extends Error {
  override name = 'KvCacheFullError';
}

export interface KvCacheArrays {
  // Per layer: [numBlocks, kvHeads, BLOCK_SIZE, headDim]: one head's keys within a block are
  // contiguous, so a query reads them with unit stride.
  k: Float32Array[];
  v: Float32Array[];
  blockTables: Int32Array; // [maxSequences, maxBlocksPerSeq]
  maxBlocksPerSeq: number;
}

/** Position `pos` of a sequence holds token `tokenAt(pos)`. */
export type TokenAt = (pos: number) => number;

export class KvCache {
  readonly arrays: KvCacheArrays;
  readonly numBlocks: number;
  readonly bytesPerToken: number;
  /** Tokens cached per sequence (positions 0..length-1 are valid). */
  readonly lengths: number[];
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
  ) {
    this.bytesPerToken = c.numLayers * 2 * c.numKvHeads * c.headDim * 4;
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
    const k: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let l = 0; l < c.numLayers; l++) {
      k.push(new Float32Array(new SharedArrayBuffer(perLayer * 4)));
      v.push(new Float32Array(new SharedArrayBuffer(perLayer * 4)));
    }
    this.arrays = {
      k,
      v,
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

  /** Make positions [0, length) of `seq` writable; positions past `length` are dropped. */
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
    this.lengths[seq] = 0;
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

/** The key of the block holding tokens[from..from+BLOCK_SIZE) after the prefix `parent`: exact, no hash collisions. */
function blockKey(parent: number, tokens: ArrayLike<number>, from: number): string {
  let key = `${parent}:`;
  for (let i = from; i < from + BLOCK_SIZE; i++) key += `${tokens[i]},`;
  return key;
}
