// Token sampler with vLLM's semantics, in vLLM's (V0) order:
//
//   raw logits ──► logprobs (log_softmax of the raw logits, vLLM's default "raw_logprobs")
//        │
//        ├─ repetition penalty   over the set of prompt + output tokens: l>0 ? l/p : l*p
//        ├─ frequency/presence   over output tokens: l -= freq*count; l -= pres*(count>0)
//        ├─ temperature          < 1e-5: greedy argmax (lowest index wins ties); else l /= T
//        ├─ top-k                keep tokens >= the k-th largest logit (ties at the edge kept)
//        ├─ top-p                keep a token iff the mass of the tokens ranked above it < p
//        ├─ min-p                drop tokens with prob < minP * max prob
//        └─ draw                 from the renormalised distribution, seeded xoshiro128**
//
// Speed: the vocabulary is 151936 and this runs for every token, so no full sort. After the
// temperature step every token goes into a histogram bin by its distance from the max logit
// (BINS_PER_NAT bins per nat). Bins are ordered by logit, so top-k and top-p decide whole
// bins from the bins' counts and probability masses and only sort the one bin that straddles
// the cut-off, which holds a handful of tokens. The result is exactly what sorting the whole
// vocabulary would give. exp() is the costly part, so with top-k it is only computed for the
// survivors. All big buffers are allocated once per Sampler and reused.

import { Xoshiro128 } from './rng.js';
import { DEFAULT_SAMPLING_PARAMS, SAMPLING_EPS, validateSamplingParams, type SamplingParams } from './params.js';
import { LogitsProcessors } from './processors.js';
import type { TokenVocabulary } from './structured/index.js';

export interface SamplerOptions {
  /** Token bytes and EOS ids: needed by structuredOutput, badWords and minTokens. */
  vocabulary?: TokenVocabulary;
}

/** A token id and its log-probability; in an output, the chosen token with its most likely alternatives. */
export interface TokenLogprob {
  token: number;
  logprob: number;
  /** The request's `logprobs` most likely tokens at this position, best first (outputs only). */
  topLogprobs?: TokenLogprob[];
}

export interface SampleResult {
  token: number;
  /** log-probability of `token` under the raw logits (only when params.logprobs is set). */
  logprob?: number;
  /** The params.logprobs most likely tokens under the raw logits, best first. */
  topLogprobs?: TokenLogprob[];
}

const BINS_PER_NAT = 32;
const NUM_BINS = 2048; // covers 64 nats below the max; everything further shares the last bin

/** Index of the largest value; the lowest index wins ties, NaN is ignored. -1 if none. */
export function argmax(values: ArrayLike<number>): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > bestV || (best < 0 && v === -Infinity)) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  readonly vocabSize: number;
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number; // -1 = off
  private stepTopK = -1; // topK for this step: off when the logits processors left no more than k tokens
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly numLogprobs: number | undefined;
  readonly greedy: boolean;
  private readonly rng: Xoshiro128;
  /** logitBias, badWords, minTokens, structuredOutput; null when none is set. */
  private readonly processors: LogitsProcessors | null;

  // Scratch, sized to the vocabulary, reused by every call.
  private readonly x: Float64Array; // processed logits
  private readonly e: Float64Array; // exp(x - max): unnormalised probabilities
  private readonly cand: Int32Array; // surviving token ids
  private seen: Uint8Array | null = null; // repetition-penalty set (cleared after use)
  private counts: Int32Array | null = null; // output token counts (cleared after use)
  private bin: Uint16Array | null = null;
  private binCount: Int32Array | null = null;
  private binMass: Float64Array | null = null;
  // Tokens of the bin that straddles the top-k/top-p cut-off, sorted best first.
  private edge: Int32Array = new Int32Array(64);
  private edgeLen = 0;
  private total = 0; // sum of e over cand after prepare()
  private zeros: Float32Array | null = null;

  constructor(params: SamplingParams, vocabSize: number, options: SamplerOptions = {}) {
    params = validateSamplingParams(params); // snake_case aliases -> camelCase
    if (!Number.isSafeInteger(vocabSize) || vocabSize < 1)
      throw new RangeError(`vocabSize must be a positive integer, got ${vocabSize}`);
    this.processors = LogitsProcessors.create(params, vocabSize, options.vocabulary);
    this.vocabSize = vocabSize;
    this.temperature = params.temperature ?? DEFAULT_SAMPLING_PARAMS.temperature;
    this.greedy = this.temperature < SAMPLING_EPS;
    // Like vLLM, greedy ignores the truncation parameters.
    this.topP = this.greedy ? 1 : (params.topP ?? DEFAULT_SAMPLING_PARAMS.topP);
    const k = params.topK ?? DEFAULT_SAMPLING_PARAMS.topK;
    this.topK = this.greedy || k >= vocabSize ? -1 : k;
    this.minP = this.greedy ? 0 : (params.minP ?? DEFAULT_SAMPLING_PARAMS.minP);
    this.repetitionPenalty = params.repetitionPenalty ?? DEFAULT_SAMPLING_PARAMS.repetitionPenalty;
    this.presencePenalty = params.presencePenalty ?? DEFAULT_SAMPLING_PARAMS.presencePenalty;
    this.frequencyPenalty = params.frequencyPenalty ?? DEFAULT_SAMPLING_PARAMS.frequencyPenalty;
    this.numLogprobs = params.logprobs === undefined ? undefined : Math.min(params.logprobs, vocabSize);
    this.rng = params.seed === undefined ? Xoshiro128.fromEntropy() : Xoshiro128.fromSeed(params.seed);
    this.x = new Float64Array(vocabSize);
    this.e = this.greedy ? new Float64Array(0) : new Float64Array(vocabSize);
    this.cand = this.greedy ? new Int32Array(0) : new Int32Array(vocabSize);
  }

  /** Picks the next token. `logits` is not modified. */
  sample(
    logits: Float32Array,
    promptTokenIds: ArrayLike<number> = [],
    outputTokenIds: ArrayLike<number> = [],
  ): SampleResult {
    this.checkLogits(logits);
    const raw = logits;
    if (this.processors) logits = this.processors.apply(logits, promptTokenIds, outputTokenIds);
    let token: number;
    if (this.greedy) {
      token = argmax(this.hasPenalties() ? this.penalized(logits, promptTokenIds, outputTokenIds) : logits);
      if (token < 0) throw new Error('Sampler: logits contain no comparable value (all NaN?)');
    } else {
      const n = this.prepare(logits, promptTokenIds, outputTokenIds);
      token = this.draw(n);
    }
    const result: SampleResult = { token };
    if (this.numLogprobs !== undefined) this.addLogprobs(raw, result);
    return result;
  }

  /** The final distribution sample() draws from (one-hot when greedy). Allocates; for tests and tools. */
  distribution(
    logits: Float32Array,
    promptTokenIds: ArrayLike<number> = [],
    outputTokenIds: ArrayLike<number> = [],
  ): Float64Array {
    this.checkLogits(logits);
    if (this.processors) logits = this.processors.apply(logits, promptTokenIds, outputTokenIds);
    const out = new Float64Array(this.vocabSize);
    if (this.greedy) {
      out[argmax(this.hasPenalties() ? this.penalized(logits, promptTokenIds, outputTokenIds) : logits)] = 1;
      return out;
    }
    const n = this.prepare(logits, promptTokenIds, outputTokenIds);
    for (let j = 0; j < n; j++) out[this.cand[j]] = this.e[this.cand[j]] / this.total;
    return out;
  }

  private checkLogits(logits: Float32Array): void {
    if (logits.length !== this.vocabSize) {
      throw new RangeError(`Sampler: expected ${this.vocabSize} logits, got ${logits.length}`);
    }
  }

  /** Whether structured output constrains this sampler (jump-forward applies). */
  get constrained(): boolean {
    return this.processors?.constrained ?? false;
  }

  /**
   * The tokens that will follow these output tokens whatever the logits (at most `max`): each is
   * the only token the logits processors leave (the constraint's forced text, less bias or bans),
   * so it is sampled from any logits, all-zero ones included, with the same random draw. None when
   * logprobs are wanted (they need the model's logits).
   */
  certainTokens(promptTokenIds: ArrayLike<number>, outputTokenIds: ArrayLike<number>, max: number): number[] {
    const processors = this.processors;
    if (!processors || !processors.constrained || this.numLogprobs !== undefined) return [];
    const run: number[] = [];
    const history = Array.from(outputTokenIds);
    const zeros = (this.zeros ??= new Float32Array(this.vocabSize));
    try {
      while (run.length < max && processors.forcesText(history)) {
        const x = processors.apply(zeros, promptTokenIds, history);
        if (processors.finiteCount !== 1) break;
        let token = 0;
        while (!(x[token] > -Infinity)) token++;
        run.push(token);
        history.push(token);
      }
    } finally {
      processors.rewind(outputTokenIds.length);
    }
    return run;
  }

  /**
   * Takes a token from certainTokens() without logits: what sample() would return from any logits,
   * with the random draw it would consume (one per sampled position), so later draws are unchanged.
   */
  takeCertain(token: number): SampleResult {
    if (!this.greedy) this.rng.nextFloat();
    return { token };
  }

  /** Tokens the structured-output constraint alone would write next, after these output tokens. */
  forcedTokens(outputTokenIds: ArrayLike<number>): number[] {
    return this.processors?.forcedTokens(outputTokenIds) ?? [];
  }

  private hasPenalties(): boolean {
    return this.repetitionPenalty !== 1 || this.presencePenalty !== 0 || this.frequencyPenalty !== 0;
  }

  private checkId(t: number): void {
    if (!(Number.isInteger(t) && t >= 0 && t < this.vocabSize))
      throw new RangeError(`Sampler: token id ${t} out of range`);
  }

  /** Copies the logits into this.x and applies the three penalties (vLLM's apply_penalties). */
  private penalized(logits: Float32Array, prompt: ArrayLike<number>, output: ArrayLike<number>): Float64Array {
    const x = this.x;
    x.set(logits);
    const rp = this.repetitionPenalty;
    if (rp !== 1) {
      // Each distinct token is penalised once, whether it occurs in the prompt, the output or both.
      const seen = (this.seen ??= new Uint8Array(this.vocabSize));
      try {
        for (const list of [prompt, output]) {
          for (let i = 0; i < list.length; i++) {
            const t = list[i];
            this.checkId(t);
            if (seen[t]) continue;
            seen[t] = 1;
            const v = x[t];
            x[t] = v > 0 ? v / rp : v * rp;
          }
        }
      } finally {
        // Leave the set empty for the next call (typed arrays ignore writes to invalid indices).
        for (const list of [prompt, output]) for (let i = 0; i < list.length; i++) seen[list[i]] = 0;
      }
    }
    const fp = this.frequencyPenalty;
    const pp = this.presencePenalty;
    if (fp !== 0 || pp !== 0) {
      const counts = (this.counts ??= new Int32Array(this.vocabSize));
      try {
        for (let i = 0; i < output.length; i++) {
          const t = output[i];
          this.checkId(t);
          counts[t]++;
        }
      } catch (err) {
        for (let i = 0; i < output.length; i++) counts[output[i]] = 0;
        throw err;
      }
      // Applying a token's penalty also resets its count, so the array is clean afterwards.
      for (let i = 0; i < output.length; i++) {
        const t = output[i];
        const c = counts[t];
        if (c === 0) continue; // already applied (repeated token)
        x[t] = x[t] - fp * c - pp; // same two subtractions as vLLM, same rounding
        counts[t] = 0;
      }
    }
    return x;
  }

  /** Runs penalties, temperature, top-k, top-p and min-p; leaves the survivors in cand[0..n)
   *  with unnormalised weights in e, their sum in this.total. Returns n. */
  private prepare(logits: Float32Array, prompt: ArrayLike<number>, output: ArrayLike<number>): number {
    const V = this.vocabSize;
    // Masked (-inf) tokens all fall in the last bin: a k beyond the tokens left would sort that bin.
    this.stepTopK = this.processors && this.processors.finiteCount <= this.topK ? -1 : this.topK;
    const x = this.penalized(logits, prompt, output);
    const e = this.e;
    const t = this.temperature;
    let m = -Infinity;
    for (let i = 0; i < V; i++) {
      let v = x[i];
      if (t !== 1) x[i] = v = v / t;
      if (v > m) m = v;
    }
    if (!Number.isFinite(m)) throw new Error('Sampler: logits have no finite maximum (all -inf/NaN, or +inf)');

    // Without top-k/top-p every token is kept; otherwise fullBins and the edge list describe
    // the kept set: all tokens in bins < fullBins, plus edge[0..edgeLen).
    let fullBins = NUM_BINS;
    this.edgeLen = 0;
    if (this.stepTopK < 0 && this.topP >= 1) {
      for (let i = 0; i < V; i++) e[i] = Math.exp(x[i] - m); // NaN logits give NaN: never drawn
    } else {
      const bin = (this.bin ??= new Uint16Array(V));
      const count = (this.binCount ??= new Int32Array(NUM_BINS));
      const mass = (this.binMass ??= new Float64Array(NUM_BINS));
      count.fill(0);
      mass.fill(0);
      // With top-k, only the k survivors need exp() (the expensive part of this loop), and
      // top-p renormalises over them, so the exponentials wait until the cut is known.
      const expNow = this.stepTopK < 0;
      for (let i = 0; i < V; i++) {
        const d = m - x[i];
        // !(d < limit) also sends -inf and NaN logits to the last bin.
        const b = d < NUM_BINS / BINS_PER_NAT ? (d * BINS_PER_NAT) | 0 : NUM_BINS - 1; // d >= 0: |0 is floor
        bin[i] = b;
        count[b]++;
        if (expNow) {
          const w = Math.exp(-d);
          e[i] = w === w ? w : 0;
          mass[b] += e[i];
        }
      }
      let keptMass = 0;
      if (this.stepTopK > 0) {
        // Find the bin holding the k-th best token; bins before it are kept whole.
        let above = 0;
        let b = 0;
        while (above + count[b] < this.stepTopK) above += count[b++];
        this.collectEdge(b);
        const kth = x[this.edge[this.stepTopK - above - 1]];
        let n = this.stepTopK - above;
        while (n < this.edgeLen && x[this.edge[n]] >= kth) n++; // ties with the k-th are kept, as in vLLM
        this.edgeLen = n;
        fullBins = b;
        if (b > 0) {
          for (let i = 0; i < V; i++) {
            if (bin[i] < b) {
              const w = Math.exp(x[i] - m);
              e[i] = w;
              mass[bin[i]] += w;
            }
          }
        }
        for (let j = 0; j < b; j++) keptMass += mass[j];
        for (let j = 0; j < n; j++) {
          const w = Math.exp(x[this.edge[j]] - m);
          e[this.edge[j]] = w === w ? w : 0;
          keptMass += e[this.edge[j]];
        }
      } else {
        for (let j = 0; j < NUM_BINS; j++) keptMass += mass[j];
      }
      if (this.topP < 1) {
        // A token survives iff the mass ranked above it is < p (so the token that crosses p
        // is kept, and the best token always is). A whole bin survives if its cumulative
        // mass stays <= p; the first bin that goes past p is the edge.
        const target = this.topP * keptMass;
        let cum = 0;
        let b = 0;
        while (b < fullBins && cum + mass[b] <= target) cum += mass[b++];
        if (b < fullBins) {
          this.collectEdge(b);
          fullBins = b;
        }
        let n = 0;
        while (n < this.edgeLen && cum < target) cum += e[this.edge[n++]];
        this.edgeLen = n;
      }
    }

    // Gather survivors, applying min-p: e is already prob / max prob (the best token has e = 1).
    const cand = this.cand;
    const minP = this.minP;
    let n = 0;
    let total = 0;
    if (fullBins === NUM_BINS) {
      for (let i = 0; i < V; i++) {
        const w = e[i];
        if (w > 0 && w >= minP) {
          cand[n++] = i;
          total += w;
        }
      }
    } else if (fullBins > 0) {
      const bin = this.bin!;
      for (let i = 0; i < V; i++) {
        const w = e[i];
        if (bin[i] < fullBins && w > 0 && w >= minP) {
          cand[n++] = i;
          total += w;
        }
      }
    }
    for (let j = 0; j < this.edgeLen; j++) {
      const i = this.edge[j];
      const w = e[i];
      if (w > 0 && w >= minP) {
        cand[n++] = i;
        total += w;
      }
    }
    this.total = total;
    return n;
  }

  /** Puts the tokens of bin b into edge[], best first (ties: lower id first). */
  private collectEdge(b: number): void {
    const bin = this.bin!;
    const cnt = this.binCount![b];
    if (this.edge.length < cnt) this.edge = new Int32Array(Math.max(cnt, this.edge.length * 2));
    let n = 0;
    for (let i = 0; i < this.vocabSize; i++) if (bin[i] === b) this.edge[n++] = i;
    const x = this.x;
    this.edge.subarray(0, n).sort((a, c) => (x[c] > x[a] ? 1 : x[c] < x[a] ? -1 : a - c));
    this.edgeLen = n;
  }

  /** Inverse-CDF draw from cand[0..n) with weights e. */
  private draw(n: number): number {
    const r = this.rng.nextFloat() * this.total;
    let acc = 0;
    for (let j = 0; j < n; j++) {
      acc += this.e[this.cand[j]];
      if (r < acc) return this.cand[j];
    }
    // Rounding can leave r == acc at the very end: take the last candidate.
    if (n === 0) throw new Error('Sampler: no token left to sample');
    return this.cand[n - 1];
  }

  /** vLLM's default logprobs: log_softmax of the raw logits, chosen token plus the top n. */
  private addLogprobs(logits: Float32Array, result: SampleResult): void {
    const V = this.vocabSize;
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i] > m) m = logits[i];
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[i] - m);
    const lse = m + Math.log(s);
    result.logprob = logits[result.token] - lse;
    const top = topN(logits, this.numLogprobs!);
    result.topLogprobs = top.map((token) => ({ token, logprob: logits[token] - lse }));
  }
}

/** Ids of the n largest values, best first (ties: lower id first). A size-n min-heap: O(V log n). */
export function topN(values: ArrayLike<number>, n: number): number[] {
  if (n <= 0) return [];
  const heap: number[] = []; // root = worst kept
  // a is "worse" than b: smaller value, or equal value and larger id.
  const worse = (a: number, b: number): boolean => values[a] < values[b] || (values[a] === values[b] && a > b);
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < heap.length && worse(heap[l], heap[w])) w = l;
      if (r < heap.length && worse(heap[r], heap[w])) w = r;
      if (w === i) return;
      [heap[i], heap[w]] = [heap[w], heap[i]];
      i = w;
    }
  };
  for (let i = 0; i < values.length; i++) {
    if (values[i] !== values[i]) continue; // NaN
    if (heap.length < n) {
      heap.push(i);
      for (let c = heap.length - 1; c > 0;) {
        const p = (c - 1) >> 1;
        if (!worse(heap[c], heap[p])) break;
        [heap[c], heap[p]] = [heap[p], heap[c]];
        c = p;
      }
    } else if (worse(heap[0], i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
}

/** The final sampling distribution for the given logits and parameters (seed irrelevant). */
export function computeDistribution(
  logits: Float32Array,
  params: SamplingParams,
  promptTokenIds: ArrayLike<number> = [],
  outputTokenIds: ArrayLike<number> = [],
  options: SamplerOptions = {},
): Float64Array {
  return new Sampler({ ...params, seed: params.seed ?? 0 }, logits.length, options).distribution(
    logits,
    promptTokenIds,
    outputTokenIds,
  );
}
