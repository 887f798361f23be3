// Paged KV cache, as in vLLM: keys and values live in fixed-size blocks of BLOCK_SIZE positions
// drawn from one pool sized by a memory budget; each sequence has a block table mapping its
// positions to blocks. Sequences of different lengths then share the budget with no fragmentation,
// and a finished sequence gives its blocks back at once.
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

export class KvCache {
  readonly arrays: KvCacheArrays;
  readonly numBlocks: number;
  readonly bytesPerToken: number;
  /** Tokens cached per sequence (positions 0..length-1 are valid). */
  readonly lengths: number[];
  private blocksOf: number[][];
  private free: number[];

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
  }

  get capacityTokens(): number {
    return this.numBlocks * BLOCK_SIZE;
  }

  get freeTokens(): number {
    return this.free.length * BLOCK_SIZE;
  }

  /** Make positions [0, length) of `seq` writable; positions past `length` are dropped. */
  reserve(seq: number, length: number): void {
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.maxSequences) {
      throw new RangeError(`sequence slot ${seq} is out of range (0..${this.maxSequences - 1})`);
    }
    if (length > this.contextLength) {
      throw new KvCacheFullError(`sequence of ${length} tokens exceeds the context length of ${this.contextLength}`);
    }
    const blocks = this.blocksOf[seq];
    const need = Math.ceil(length / BLOCK_SIZE);
    if (need - blocks.length > this.free.length) {
      throw new KvCacheFullError(
        `KV cache full: sequence ${seq} needs ${length} tokens but only ${this.free.length * BLOCK_SIZE + blocks.length * BLOCK_SIZE} fit ` +
          `(budget ${this.capacityTokens} tokens; raise kvCacheBytes or run fewer sequences at once)`,
      );
    }
    while (blocks.length < need) {
      const b = this.free.pop()!;
      this.arrays.blockTables[seq * this.arrays.maxBlocksPerSeq + blocks.length] = b;
      blocks.push(b);
    }
    while (blocks.length > need) this.free.push(blocks.pop()!);
  }

  /** Forget a sequence and return its blocks to the pool. */
  release(seq: number): void {
    this.reserve(seq, 0);
    this.lengths[seq] = 0;
  }
}
