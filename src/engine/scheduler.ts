// Continuous batching, in the manner of vLLM's scheduler: requests wait in a FIFO queue until a
// KV cache slot and enough cache blocks are free, are prefilled one by one, then decode together
// one token per step, all running sequences sharing one pass over the weights per step. Finished
// or aborted sequences leave at once and free their slot for the next waiting request.
import { KvCacheFullError } from '../model/kv-cache.js';
import type { Qwen2Model } from '../model/qwen2.js';
import { appendText, takeStreamable, type Sequence } from './request.js';

export class Scheduler {
  private waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private freeSlots: number[];
  private looping = false;
  /** Tokens generated since the scheduler started (for progress and metrics). */
  generatedTokens = 0;

  constructor(private model: Qwen2Model) {
    this.freeSlots = Array.from({ length: model.kvCache.maxSequences }, (_, i) => model.kvCache.maxSequences - 1 - i);
  }

  get queueLength(): number {
    return this.waiting.length;
  }

  get runningCount(): number {
    return this.running.length;
  }

  submit(seq: Sequence): void {
    const cache = this.model.kvCache;
    const need = seq.promptIds.length + 1;
    if (need > cache.capacityTokens || need > cache.contextLength) {
      seq.reject(
        new RangeError(
          `prompt of ${seq.promptIds.length} tokens does not fit: the context length is ${cache.contextLength} and the KV cache holds ${cache.capacityTokens} tokens`,
        ),
      );
      return;
    }
    this.waiting.push(seq);
    if (!this.looping) void this.loop();
  }

  /** Stop a sequence; it finishes with reason 'abort' at the next step and frees its cache. */
  abort(seq: Sequence): void {
    if (seq.finishReason) return;
    seq.finishReason = 'abort';
    const w = this.waiting.indexOf(seq);
    if (w >= 0) {
      this.waiting.splice(w, 1);
      this.finish(seq);
    }
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.waiting.length > 0 || this.running.length > 0) {
        this.dropFinished();
        await this.admit();
        await this.decodeStep();
        // Let I/O (new requests, disconnects, aborts, stream consumers) run between steps.
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.looping = false;
    }
  }

  private async admit(): Promise<void> {
    const cache = this.model.kvCache;
    while (this.waiting.length > 0 && this.freeSlots.length > 0) {
      const seq = this.waiting[0];
      if (seq.promptIds.length + 1 > cache.freeTokens && this.running.length > 0) return; // wait for blocks
      this.waiting.shift();
      seq.slot = this.freeSlots.pop()!;
      seq.prefillStart = performance.now();
      this.running.push(seq);
      try {
        const logits = await this.model.forward(seq.promptIds, { seq: seq.slot });
        this.accept(seq, logits, 0);
      } catch (e) {
        this.fail(seq, e);
      }
      await new Promise((r) => setImmediate(r));
      this.dropFinished();
    }
  }

  private async decodeStep(): Promise<void> {
    const vocab = this.model.config.vocabSize;
    const maxRows = this.model.dims.maxRows;
    const active = this.running.filter((s) => !s.finishReason && this.reserveNextPosition(s));
    for (let i = 0; i < active.length; i += maxRows) {
      const batch = active.slice(i, i + maxRows);
      const steps = batch.map((s) => ({
        seq: s.slot,
        token: s.outputIds[s.outputIds.length - 1],
        pos: s.promptIds.length + s.outputIds.length - 1,
      }));
      let logits: Float32Array;
      try {
        logits = await this.model.decodeBatch(steps);
      } catch (e) {
        // Most likely the KV cache ran out of blocks: end these sequences, keep the server alive.
        for (const s of batch) this.fail(s, e);
        continue;
      }
      batch.forEach((s, j) => this.accept(s, logits, j * vocab));
    }
    this.dropFinished();
  }

  /**
   * Make room in the KV cache for the sequence's next position. When the shared budget is used up
   * the sequence ends with reason 'length' (vLLM would preempt it; this keeps the others going).
   */
  private reserveNextPosition(seq: Sequence): boolean {
    try {
      this.model.kvCache.reserve(seq.slot, seq.promptIds.length + seq.outputIds.length);
      return true;
    } catch (e) {
      if (!(e instanceof KvCacheFullError)) throw e;
      seq.finishReason = 'length';
      appendText(seq, seq.decoder.flush());
      this.model.resetCache(seq.slot); // at once, so the sequences after it in this step can use its blocks
      return false;
    }
  }

  /** Sample the next token from logits[off..off+vocab) and apply the stopping rules. */
  private accept(seq: Sequence, logits: Float32Array, off: number): void {
    if (seq.finishReason) return;
    const vocab = this.model.config.vocabSize;
    const r = seq.sampler.sample(logits.subarray(off, off + vocab), seq.promptIds, seq.outputIds);
    const token = r.token;
    if (seq.outputIds.length === 0) seq.firstToken = performance.now();
    seq.outputIds.push(token);
    this.generatedTokens++;
    if (seq.wantLogprobs) seq.logprobs.push({ token, logprob: r.logprob ?? 0, topLogprobs: r.topLogprobs });

    if (seq.eosIds.has(token)) {
      seq.finishReason = 'stop';
    } else if (seq.stopTokenIds.has(token)) {
      seq.finishReason = 'stop';
      seq.stopReason = token;
    } else if (appendText(seq, seq.decoder.push(token))) {
      seq.finishReason = 'stop';
    } else if (
      seq.outputIds.length >= seq.maxTokens ||
      seq.promptIds.length + seq.outputIds.length >= this.model.kvCache.contextLength
    ) {
      seq.finishReason = 'length';
    }
    if (seq.finishReason && seq.stopReason === undefined) appendText(seq, seq.decoder.flush());
    const delta = takeStreamable(seq);
    if (delta !== '' && seq.onDelta) seq.onDelta(delta, seq);
  }

  private fail(seq: Sequence, e: unknown): void {
    seq.finishReason = 'abort';
    seq.reject(e);
    seq.resolve = () => {};
  }

  private dropFinished(): void {
    const still: Sequence[] = [];
    for (const s of this.running) {
      if (s.finishReason) this.finish(s);
      else still.push(s);
    }
    this.running = still;
  }

  private finish(seq: Sequence): void {
    if (seq.slot >= 0) {
      this.model.resetCache(seq.slot);
      this.freeSlots.push(seq.slot);
      seq.slot = -1;
    }
    seq.finished = performance.now();
    if (seq.firstToken === 0) seq.firstToken = seq.finished;
    if (seq.prefillStart === 0) seq.prefillStart = seq.finished;
    const rest = takeStreamable(seq);
    if (rest !== '' && seq.onDelta) seq.onDelta(rest, seq);
    seq.resolve(seq);
  }
}
