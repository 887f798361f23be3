// Continuous batching with chunked prefill, in the manner of vLLM's scheduler. Requests wait in a
// FIFO queue until a KV cache slot and enough cache blocks are free. Every step is one pass over
// the weights carrying the next token of each decoding sequence plus chunks of prompts being read,
// at most maxBatchTokens rows in all, so running streams keep flowing while a long prompt is
// prefilled, and an abort takes effect at the next step. A new sequence first takes the longest
// cached prefix of its prompt from the KV cache (prefix caching) and only computes the rest.
// Finished, aborted or failed sequences leave at once and free their slot; an exception while
// serving one sequence (sampler, callback, NaN logits) fails that sequence only.
//
// Speculative decoding (vLLM's ngram method): a decoding sequence with a proposer adds the tokens
// it proposes as rows after its next-token row, all with logits, in the same step as everyone
// else's rows. Its tokens are then sampled position by position exactly as one-token steps would
// sample them (same logits, history, penalties, processors and random draws), and the proposal is
// accepted while the sampled token equals the proposed one: for a deterministic proposal that is
// speculative rejection sampling (accept x with probability p(x); when not, the token drawn is
// distributed as p without x, renormalised), so the output is what decoding without speculation
// gives. The cache is cut back after the last accepted token (KvCache.truncate): a rejected
// token's slot is rewritten by the next step before any row reads it, and only blocks within the
// accepted length are ever registered for prefix caching.
import { BLOCK_SIZE, KvCacheFullError } from '../model/kv-cache.js';
import { finishPooling, poolRow } from '../model/pooling.js';
import type { Qwen2Model } from '../model/qwen2.js';
import { appendText, takeStreamable, type Sequence } from './request.js';
import { promptLogprobOf } from './prompt-logprobs.js';
import type { StepPlan } from './speculation/gate.js';
import { StepCost, stepClock } from './speculation/step-cost.js';

export interface SchedulerOptions {
  /** Reuse the KV cache of earlier sequences' identical prefixes. Default true. */
  prefixCaching?: boolean;
  /** Testing: block the engine thread this long in every step (simulates a slow model). */
  stepDelayMs?: number;
  /** Testing: speculation proposes as if extra rows cost nothing (every verification path runs). */
  proposeAlways?: boolean;
}

/** Counters since the scheduler started. */
export interface SchedulerCounters {
  generatedTokens: number;
  /** Prompt tokens of admitted sequences, and how many of them came from the prefix cache. */
  promptTokens: number;
  cachedPromptTokens: number;
  /** Speculative decoding (vLLM's spec_decode counters): verification steps with a proposal, tokens proposed, tokens accepted. */
  specDrafts: number;
  specDraftTokens: number;
  specAcceptedTokens: number;
}

/** One row of a step: a token of a sequence at a position; `logits` when the next token is sampled from it. */
interface Row {
  seq: Sequence;
  token: number;
  pos: number;
  logits: boolean;
  /** A prompt row whose logits score the next prompt token (promptLogprobs), not sampled from. */
  scoresPrompt?: boolean;
}

export class NonFiniteLogitsError extends Error {
  override name = 'NonFiniteLogitsError';
}

export class Scheduler {
  private waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private freeSlots: number[];
  private looping = false;
  private prefixCaching: boolean;
  private stepDelayMs: number;
  readonly counters: SchedulerCounters = {
    generatedTokens: 0,
    promptTokens: 0,
    cachedPromptTokens: 0,
    specDrafts: 0,
    specDraftTokens: 0,
    specAcceptedTokens: 0,
  };
  /** Called after every step (the engine thread reports its state to the main thread). */
  onStep: (() => void) | null = null;
  /** Measured time of a step by row count: what a proposal's rows cost (speculation/gate.ts). */
  private readonly stepCost: StepCost;

  constructor(
    private model: Qwen2Model,
    opts: SchedulerOptions = {},
  ) {
    this.freeSlots = Array.from({ length: model.kvCache.maxSequences }, (_, i) => model.kvCache.maxSequences - 1 - i);
    this.prefixCaching = opts.prefixCaching ?? true;
    this.stepDelayMs = opts.stepDelayMs ?? 0;
    this.stepCost = new StepCost(opts.proposeAlways ?? false);
  }

  get queueLength(): number {
    return this.waiting.length;
  }

  get runningCount(): number {
    return this.running.length;
  }

  get generatedTokens(): number {
    return this.counters.generatedTokens;
  }

  submit(seq: Sequence): void {
    const cache = this.model.kvCache;
    const need = seq.promptIds.length + (seq.maxTokens > 0 ? 1 : 0);
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

  /** Stop a sequence; it finishes with reason 'abort' (or fails with `error`) at the next step and frees its cache. */
  abort(seq: Sequence, error?: unknown): void {
    if (seq.finishReason) return;
    seq.finishReason = 'abort';
    if (error !== undefined) seq.error = error;
    const w = this.waiting.indexOf(seq);
    if (w >= 0) {
      this.waiting.splice(w, 1);
      this.finish(seq);
    }
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      // A step is timed from its start to the next one's (that includes the state message and the
      // pause for messages after it): one clock read per step, as a read costs ~2 us (process.cpuUsage),
      // 1% of a stories260K step. Steps are timed only where proposals are weighed.
      let previousStart = NaN,
        previousRows = 0;
      while (this.waiting.length > 0 || this.running.length > 0) {
        const timed = this.stepDelayMs === 0 && this.running.some((s) => s.proposers.length > 0);
        const start = timed ? stepClock() : NaN;
        if (timed && !Number.isNaN(previousStart)) this.stepCost.record(previousRows, start - previousStart);
        previousStart = start;
        let rows = 0;
        try {
          rows = await this.step();
        } catch (e) {
          // A bug outside any one sequence's work: fail those running, keep the engine alive.
          for (const s of this.running) this.fail(s, e);
        }
        this.dropFinished();
        if (this.stepDelayMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, this.stepDelayMs);
        this.onStep?.();
        // Let messages (new requests, aborts) in between steps.
        await new Promise((r) => setImmediate(r));
        previousRows = rows;
      }
    } finally {
      this.looping = false;
      this.onStep?.();
    }
  }

  /**
   * One pass over the weights (more only when the decoding sequences alone exceed maxBatchTokens).
   * Returns its number of rows when they were all decoding or verification rows (the steps whose
   * cost the proposals weigh), else 0.
   */
  private async step(): Promise<number> {
    this.dropFinished();
    this.admit();
    const maxRows = this.model.dims.maxRows;
    const rows: Row[] = [];
    const decoding = this.running.filter((s) => !s.finishReason && s.computed >= s.promptIds.length);
    // Proposed tokens ride in the first pass, beside one row per decoding sequence.
    let draftRoom = maxRows - decoding.length;
    const plan: StepPlan = { cost: this.stepCost, decoding: decoding.length, rows: decoding.length };
    for (const s of decoding) {
      if (!this.reserveNextPosition(s)) continue;
      s.draft = this.propose(s, draftRoom, plan);
      draftRoom -= s.draft.length;
      plan.rows += s.draft.length;
      // A certain draft needs logits only after its last token: the tokens before are known.
      const certain = s.draft.length > 0 && s.draftBy?.certain === true;
      const last = s.draft.length;
      rows.push({
        seq: s,
        token: s.outputIds[s.outputIds.length - 1],
        pos: s.computed,
        logits: !certain || last === 0,
      });
      for (let i = 0; i < s.draft.length; i++)
        rows.push({ seq: s, token: s.draft[i], pos: s.computed + 1 + i, logits: !certain || i === last - 1 });
    }
    // Prompt chunks fill the rest of the last pass, shared among the prompts being read (as vLLM's
    // partial prefills): a request arriving during a long prefill gets its first token within a
    // step or two instead of after the whole long prompt.
    const room = maxRows - (rows.length % maxRows);
    const reading = this.running.filter((s) => !s.finishReason && s.computed < s.promptIds.length);
    const takes = fairShares(
      reading.map((s) => s.promptIds.length - s.computed),
      room,
    );
    for (const [k, s] of reading.entries()) {
      const take = takes[k]; // blocks reserved at admission
      if (take === 0) continue;
      if (s.prefillStart === 0) s.prefillStart = performance.now();
      for (let i = 0; i < take; i++) {
        const pos = s.computed + i;
        const last = pos === s.promptIds.length - 1;
        const scoresPrompt = !last && s.promptLogprobs >= 0;
        rows.push({
          seq: s,
          token: s.promptIds[pos],
          pos,
          logits: (last && s.pooling?.kind !== 'hidden') || scoresPrompt,
          scoresPrompt,
        });
      }
    }
    for (let i = 0; i < rows.length; i += maxRows) await this.runPass(rows.slice(i, i + maxRows));
    return rows.length <= maxRows && reading.length === 0 ? rows.length : 0;
  }

  private async runPass(rows: Row[]): Promise<void> {
    // Rows whose logits are needed go last: the model computes the head for the last rows only.
    // Row order does not change the result: every row's key and value enter the cache before any
    // row attends, and each row attends to its own sequence's positions up to its own.
    const withLogits = rows.filter((r) => r.logits);
    const ordered = [...rows.filter((r) => !r.logits), ...withLogits];
    const seqs = new Set(rows.map((r) => r.seq));
    const hidden = rows.some((r) => r.seq.pooling?.kind === 'hidden') ? this.hiddenScratch() : undefined;
    let logits: Float32Array;
    try {
      logits = await this.model.forwardBatch(
        ordered.map((r) => ({ seq: r.seq.slot, token: r.token, pos: r.pos })),
        withLogits.length,
        hidden,
      );
    } catch (e) {
      for (const s of seqs) this.fail(s, e);
      return;
    }
    for (const r of ordered) r.seq.computed = r.pos + 1;
    if (hidden) this.poolHidden(ordered, hidden);
    // A sequence's rows with logits are consecutive: its next-token row, then its proposals.
    const vocab = this.model.config.vocabSize;
    for (let j = 0; j < withLogits.length;) {
      const seq = withLogits[j].seq;
      if (withLogits[j].scoresPrompt) {
        // Before the sequence's own last prompt row, which samples its first token.
        try {
          this.scorePrompt(seq, logits, j, withLogits[j].pos);
        } catch (e) {
          this.fail(seq, e);
        }
        j++;
        continue;
      }
      let end = j + 1;
      while (end < withLogits.length && withLogits[end].seq === seq && !withLogits[end].scoresPrompt) end++;
      try {
        if (seq.pooling?.kind === 'logits') this.takeLogits(seq, logits, j);
        else this.verify(seq, logits, j, end - j);
      } catch (e) {
        this.fail(seq, e);
      }
      j = end;
    }
    if (this.prefixCaching) {
      for (const s of seqs) {
        if (s.pooling) continue; // its cache is freed as it ends
        const p = s.promptIds,
          o = s.outputIds;
        this.model.kvCache.registerFullBlocks(s.slot, (pos) => (pos < p.length ? p[pos] : o[pos - p.length]));
      }
    }
  }

  private hidden: Float32Array | null = null;

  /** [maxRows, hiddenSize] for the final-norm hidden states of a step with pooling rows. */
  private hiddenScratch(): Float32Array {
    return (this.hidden ??= new Float32Array(this.model.dims.maxRows * this.model.dims.hidden));
  }

  /** Fold each pooling row's hidden state into its sequence; a sequence whose prompt is all read is done. */
  private poolHidden(ordered: Row[], hidden: Float32Array): void {
    const size = this.model.dims.hidden;
    ordered.forEach((r, i) => {
      const s = r.seq;
      if (s.pooling?.kind !== 'hidden' || s.finishReason) return;
      s.pooled ??= new Float64Array(size);
      poolRow(s.pooled, s.pooling.mode, hidden, i * size, r.pos, s.promptIds.length);
      if (r.pos === s.promptIds.length - 1) {
        finishPooling(s.pooled, s.pooling.mode, s.promptIds.length);
        s.finishReason = 'stop';
      }
    });
  }

  /** A scoring request's logits of its tokens at the prompt's last position: it is done. */
  private takeLogits(seq: Sequence, logits: Float32Array, row: number): void {
    if (seq.finishReason || seq.pooling?.kind !== 'logits') return;
    const vocab = this.model.config.vocabSize;
    seq.pooled = Float64Array.from(seq.pooling.tokenIds, (id) => logits[row * vocab + id]);
    seq.finishReason = 'stop';
  }

  /** The prompt token after `pos` scored by logit row `row` (promptLogprobs). */
  private scorePrompt(seq: Sequence, logits: Float32Array, row: number, pos: number): void {
    if (seq.finishReason) return;
    const vocab = this.model.config.vocabSize;
    const lp = promptLogprobOf(
      logits.subarray(row * vocab, (row + 1) * vocab),
      seq.promptIds[pos + 1],
      seq.promptLogprobs,
    );
    seq.promptLogprobsOut[pos + 1] = lp;
  }

  /**
   * Tokens to verify after the sequence's next token, at most `room`: none without a proposer,
   * beyond maxTokens or the context, or when the KV cache is nearly full (a proposal must never
   * take the blocks another sequence's next token needs).
   */
  private propose(seq: Sequence, room: number, plan: StepPlan): number[] {
    if (seq.proposers.length === 0 || room <= 0) return [];
    const cache = this.model.kvCache;
    const max = Math.min(
      room,
      seq.maxTokens - seq.outputIds.length - 1,
      cache.contextLength - 1 - seq.computed,
      BLOCK_SIZE,
    );
    if (max <= 0) return [];
    let draft: number[] = [];
    for (const proposer of seq.proposers) {
      draft = proposer.next(seq.promptIds, seq.outputIds, max, plan);
      seq.draftBy = proposer;
      if (draft.length > 0) break;
    }
    if (draft.length === 0) return draft;
    if (cache.freeTokens < BLOCK_SIZE * (this.running.length + 1)) {
      // Room for the proposal only if it needs no new block.
      if (Math.ceil((seq.computed + 1 + draft.length) / BLOCK_SIZE) > Math.ceil((seq.computed + 1) / BLOCK_SIZE))
        return [];
    }
    try {
      cache.ensure(seq.slot, seq.computed + 1 + draft.length);
    } catch (e) {
      if (e instanceof KvCacheFullError) return [];
      throw e;
    }
    return draft;
  }

  /**
   * Sample the sequence's tokens from its `n` logit rows (its next token, then one row per proposed
   * token): a proposed token is kept while it equals the token sampled at its position. Then cut
   * the cache back to the tokens kept.
   */
  private verify(seq: Sequence, logits: Float32Array, row0: number, n: number): void {
    const vocab = this.model.config.vocabSize;
    const draft = seq.draft;
    seq.draft = [];
    // A certain draft has one logits row, its last; the tokens before it are taken as they are (takeCertain).
    const certain = draft.length > 0 && seq.draftBy?.certain === true;
    let accepted = 0;
    try {
      for (let i = 0; i <= draft.length; i++) {
        const known = certain && i < draft.length;
        const token = known
          ? this.accept(seq, logits, -1, draft[i])
          : this.accept(seq, logits, (row0 + (certain ? 0 : i)) * vocab);
        if (known && token !== draft[i] && !seq.finishReason)
          throw new Error(
            `jump-forward: token ${draft[i]} was certain at output position ${seq.outputIds.length - 1} but ${token} was sampled`,
          );
        if (i < draft.length && token === draft[i]) accepted++;
        else break;
        if (seq.finishReason) break;
        if (!certain && i + 1 >= n) break;
      }
    } finally {
      if (draft.length > 0) {
        seq.draftBy?.record(draft.length, accepted);
        seq.specDraftTokens += draft.length;
        seq.specAcceptedTokens += accepted;
        this.counters.specDrafts++;
        this.counters.specDraftTokens += draft.length;
        this.counters.specAcceptedTokens += accepted;
        // Positions past the last kept token hold rejected tokens: forget them.
        seq.computed -= draft.length - accepted;
        if (seq.slot >= 0) this.model.kvCache.truncate(seq.slot, seq.computed);
      }
    }
  }

  /**
   * Give waiting sequences a slot, their cached prefix and blocks for their whole prompt (so two
   * half-read prompts can never wait on each other for blocks).
   */
  private admit(): void {
    const cache = this.model.kvCache;
    while (this.waiting.length > 0 && this.freeSlots.length > 0) {
      const seq = this.waiting[0];
      const slot = this.freeSlots[this.freeSlots.length - 1];
      // The last prompt token is always computed: its logits give the first generated token.
      // A request scoring its prompt computes every position (as vLLM, which skips the prefix cache for it).
      const cached =
        this.prefixCaching && !seq.pooling && seq.promptLogprobs < 0
          ? cache.matchPrefix(slot, seq.promptIds, seq.promptIds.length - 1)
          : 0;
      try {
        cache.ensure(slot, seq.promptIds.length + (seq.maxTokens > 0 ? 1 : 0));
      } catch (e) {
        this.model.resetCache(slot);
        if (e instanceof KvCacheFullError && this.running.length > 0) return; // wait for blocks
        this.waiting.shift();
        seq.finishReason = 'abort';
        seq.error = e;
        this.finish(seq);
        continue;
      }
      this.waiting.shift();
      this.freeSlots.pop();
      seq.slot = slot;
      seq.cachedTokens = cached;
      seq.computed = cached;
      this.counters.promptTokens += seq.promptIds.length;
      this.counters.cachedPromptTokens += cached;
      this.running.push(seq);
    }
  }

  /**
   * Make room in the KV cache for the sequence's next position. When the shared budget is used up
   * the sequence ends with reason 'length' (vLLM would preempt it; this keeps the others going).
   */
  private reserveNextPosition(seq: Sequence): boolean {
    try {
      this.model.kvCache.ensure(seq.slot, seq.computed + 1);
      return true;
    } catch (e) {
      if (!(e instanceof KvCacheFullError)) throw e;
      seq.finishReason = 'length';
      appendText(seq, seq.decoder.flush());
      this.release(seq); // at once, so the sequences after it in this step can use its blocks
      return false;
    }
  }

  /**
   * Sample the next token from logits[off..off+vocab) (or take `certain`, a jump-forward token that
   * has no logits row) and apply the stopping rules; -1 if the sequence had finished.
   */
  private accept(seq: Sequence, logits: Float32Array, off: number, certain = -1): number {
    if (seq.finishReason) return -1;
    if (seq.maxTokens === 0) {
      // Only the prompt was asked for (its log-probabilities): nothing is generated.
      if (seq.firstToken === 0) seq.firstToken = performance.now();
      seq.finishReason = 'length';
      return -1;
    }
    const vocab = this.model.config.vocabSize;
    const row = logits.subarray(Math.max(off, 0), Math.max(off, 0) + vocab);
    for (let i = 0; certain < 0 && i < vocab; i++) {
      const x = row[i];
      if (x !== x || x === Infinity) {
        throw new NonFiniteLogitsError(
          `the model produced ${x} logits (token ${i}) at position ${seq.promptIds.length + seq.outputIds.length - 1} of this sequence: the weights or activations hold NaN or Inf values`,
        );
      }
    }
    const r = certain >= 0 ? seq.sampler.takeCertain(certain) : seq.sampler.sample(row, seq.promptIds, seq.outputIds);
    const token = r.token;
    if (seq.outputIds.length === 0) seq.firstToken = performance.now();
    seq.outputIds.push(token);
    this.counters.generatedTokens++;
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
    return token;
  }

  private fail(seq: Sequence, e: unknown): void {
    if (seq.error !== undefined) return;
    seq.finishReason = 'abort';
    seq.error = e;
  }

  private dropFinished(): void {
    const done = this.running.filter((s) => s.finishReason);
    if (done.length === 0) return;
    this.running = this.running.filter((s) => !s.finishReason);
    for (const s of done) this.finish(s);
  }

  private release(seq: Sequence): void {
    if (seq.slot < 0) return;
    this.model.resetCache(seq.slot);
    this.freeSlots.push(seq.slot);
    seq.slot = -1;
  }

  private finish(seq: Sequence): void {
    this.release(seq);
    seq.finished = performance.now();
    if (seq.firstToken === 0) seq.firstToken = seq.finished;
    if (seq.prefillStart === 0) seq.prefillStart = seq.finished;
    if (seq.error !== undefined) {
      seq.reject(seq.error);
      return;
    }
    try {
      const rest = takeStreamable(seq);
      if (rest !== '' && seq.onDelta) seq.onDelta(rest, seq);
    } catch (e) {
      seq.reject(e);
      return;
    }
    seq.resolve(seq);
  }
}

/**
 * Split `room` rows among prompts still needing `need[i]` rows: each gets an equal share, and what
 * a short prompt leaves of its share goes to the others (the shortest are served first, so the
 * rows are all used whenever the prompts need them).
 */
export function fairShares(need: readonly number[], room: number): number[] {
  const takes = need.map(() => 0);
  const order = need.map((_, i) => i).sort((a, b) => need[a] - need[b] || a - b);
  for (let k = 0; k < order.length && room > 0; k++) {
    const i = order[k];
    takes[i] = Math.min(need[i], Math.ceil(room / (order.length - k)));
    room -= takes[i];
  }
  return takes;
}
