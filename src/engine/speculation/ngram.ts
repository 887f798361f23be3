// N-gram proposals (prompt lookup decoding, vLLM's "ngram" method): when the last few tokens of a
// sequence occurred earlier in its prompt or output, the tokens that followed them there are a
// cheap guess at what comes next. No draft model: the guess costs a scan of the sequence's tokens,
// and the target model checks it in the same step as the next token (scheduler.ts), so a wrong
// guess costs only the extra rows of that step.
import { AcceptanceGate, type Proposer, type StepPlan } from './gate.js';

/** vLLM's speculative_config for method "ngram" (the only method here). */
export interface SpeculativeConfig {
  method: 'ngram';
  /** Tokens proposed per step at most (vLLM's num_speculative_tokens). */
  numSpeculativeTokens: number;
  /** Longest suffix looked up (prompt_lookup_max). Default 4. */
  promptLookupMax?: number;
  /** Shortest suffix looked up (prompt_lookup_min). Default 2 (or promptLookupMax when smaller). */
  promptLookupMin?: number;
}

export const DEFAULT_PROMPT_LOOKUP_MAX = 4;
export const DEFAULT_PROMPT_LOOKUP_MIN = 2;
/** More would be rows that are almost never accepted; the step-cost table ends at 8 rows. */
export const MAX_SPECULATIVE_TOKENS = 16;

const KEYS: Record<string, keyof SpeculativeConfig> = {
  method: 'method',
  numSpeculativeTokens: 'numSpeculativeTokens',
  num_speculative_tokens: 'numSpeculativeTokens',
  promptLookupMax: 'promptLookupMax',
  prompt_lookup_max: 'promptLookupMax',
  promptLookupMin: 'promptLookupMin',
  prompt_lookup_min: 'promptLookupMin',
};

/** A speculative config with every field set and checked; snake_case names (vLLM's) are accepted. */
export type ResolvedSpeculativeConfig = Required<SpeculativeConfig>;

export function resolveSpeculativeConfig(raw: unknown): ResolvedSpeculativeConfig {
  const where = 'speculativeConfig';
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new TypeError(`${where} must be an object like {"method": "ngram", "num_speculative_tokens": 4}`);
  const c: Partial<Record<keyof SpeculativeConfig, unknown>> = {};
  for (const [k, v] of Object.entries(raw)) {
    const key = KEYS[k];
    if (!key)
      throw new TypeError(
        `${where}: unknown field "${k}" (expected method, num_speculative_tokens, prompt_lookup_max, prompt_lookup_min)`,
      );
    c[key] = v;
  }
  if (c.method !== 'ngram')
    throw new TypeError(
      `${where}.method must be "ngram" (the only method: no draft models), got ${JSON.stringify(c.method)}`,
    );
  const int = (name: keyof SpeculativeConfig, v: unknown, min: number, max: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new RangeError(`${where}.${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  if (c.numSpeculativeTokens === undefined)
    throw new TypeError(`${where}.num_speculative_tokens is required (tokens proposed per step, e.g. 4)`);
  const numSpeculativeTokens = int('numSpeculativeTokens', c.numSpeculativeTokens, 1, MAX_SPECULATIVE_TOKENS);
  const promptLookupMax = int('promptLookupMax', c.promptLookupMax ?? DEFAULT_PROMPT_LOOKUP_MAX, 1, 64);
  const promptLookupMin = int(
    'promptLookupMin',
    c.promptLookupMin ?? Math.min(DEFAULT_PROMPT_LOOKUP_MIN, promptLookupMax),
    1,
    64,
  );
  if (promptLookupMin > promptLookupMax)
    throw new RangeError(
      `${where}: prompt_lookup_min (${promptLookupMin}) must not exceed prompt_lookup_max (${promptLookupMax})`,
    );
  return { method: 'ngram', numSpeculativeTokens, promptLookupMax, promptLookupMin };
}

/** The proposer of one sequence. */
export class NgramProposer implements Proposer {
  private readonly gate = new AcceptanceGate();

  constructor(readonly config: ResolvedSpeculativeConfig) {}

  /** Tokens for this step: `propose`'s, as many as the gate expects to pay off (none while paused). */
  next(prompt: readonly number[], output: readonly number[], max: number, plan: StepPlan): number[] {
    const n = this.gate.budget(Math.min(max, this.config.numSpeculativeTokens), plan);
    return n === 0 ? [] : this.propose(prompt, output, n);
  }

  record(proposed: number, accepted: number): void {
    this.gate.record(proposed, accepted);
  }

  /**
   * Up to `max` tokens to follow prompt ++ output: for n from promptLookupMax down to
   * promptLookupMin, the latest earlier occurrence of the last n tokens, and what followed it.
   * Empty when nothing matches.
   */
  propose(prompt: readonly number[], output: readonly number[], max: number): number[] {
    max = Math.min(max, this.config.numSpeculativeTokens);
    const P = prompt.length;
    const L = P + output.length;
    const at = (i: number) => (i < P ? prompt[i] : output[i - P]);
    if (max <= 0) return [];
    for (let n = Math.min(this.config.promptLookupMax, L - 1); n >= this.config.promptLookupMin; n--) {
      // An earlier occurrence ends at e (exclusive) with e < L; the latest one is the most likely
      // continuation (the text being repeated right now).
      for (let e = L - 1; e >= n; e--) {
        let k = 0;
        while (k < n && at(e - 1 - k) === at(L - 1 - k)) k++;
        if (k < n) continue;
        // Past the end of the sequence the continuation repeats itself (a period of L - e tokens).
        const draft: number[] = [];
        for (let i = e; draft.length < max; i++) draft.push(i < L ? at(i) : draft[i - L]);
        return draft;
      }
    }
    return [];
  }
}
