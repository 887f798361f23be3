// Sampling parameters: vLLM's SamplingParams in camelCase, with vLLM's defaults and checks.
//
// Validation happens once per request, before anything runs, so a bad value fails fast with
// the parameter's name (the OpenAI-compatible server reports it as `param`).

import { compileStructuredOutput, StructuredOutputError, type StructuredOutput } from './structured/index.js';

export interface SamplingParams {
  /** Softmax temperature; 0 (or < 1e-5) means greedy. Default 1. */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of tokens with cumulative probability >= topP. Default 1 (off). */
  topP?: number;
  /** Keep the topK most likely tokens; -1 disables. Default -1. */
  topK?: number;
  /** Drop tokens whose probability is below minP * (probability of the most likely token). Default 0 (off). */
  minP?: number;
  /** > 1 discourages tokens already in the prompt or output (divides positive logits, multiplies negative). Default 1. */
  repetitionPenalty?: number;
  /** Subtracted from the logit of every token that appears in the output. Default 0. */
  presencePenalty?: number;
  /** Subtracted once per occurrence in the output. Default 0. */
  frequencyPenalty?: number;
  /** Makes sampling reproducible. Default: random. */
  seed?: number;
  /** Maximum number of generated tokens (enforced by the engine). */
  maxTokens?: number;
  /** Stop strings (enforced by the engine, not included in the output). */
  stop?: string | string[];
  /** Extra token ids that end generation (enforced by the engine). */
  stopTokenIds?: number[];
  /** Number of top log-probabilities to return per token; 0 returns only the chosen token's. */
  logprobs?: number;
  /** Keep generating after EOS (enforced by the engine). */
  ignoreEos?: boolean;

  // --- Structured output, logits processors, n (issue 11) ---
  /** Constrain the output to a JSON schema, a regex, a choice or tool-call blocks (constrained decoding). */
  structuredOutput?: StructuredOutput;
  /** Token id -> value added to its logit before sampling, in [-100, 100] (OpenAI's logit_bias). */
  logitBias?: Record<number, number>;
  /** EOS and stopTokenIds cannot be sampled before this many tokens are generated. Default 0. */
  minTokens?: number;
  /** Words that are never generated (vLLM's bad_words: their tokens, with and without a leading space). */
  badWords?: string[];
  /** Completions per prompt, for LLM.generate/chat (seeds seed, seed + 1, ...). Default 1. */
  n?: number;
}

/** Below this temperature, sampling is greedy (vLLM's _SAMPLING_EPS). */
export const SAMPLING_EPS = 1e-5;

export const DEFAULT_SAMPLING_PARAMS = {
  temperature: 1,
  topP: 1,
  topK: -1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
} as const;

// camelCase field -> vLLM / OpenAI API name, for messages and for the server's `param` field.
const API_NAMES: Record<keyof SamplingParams, string> = {
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  seed: 'seed',
  maxTokens: 'max_tokens',
  stop: 'stop',
  stopTokenIds: 'stop_token_ids',
  logprobs: 'logprobs',
  ignoreEos: 'ignore_eos',
  // issue 11
  structuredOutput: 'structured_output',
  logitBias: 'logit_bias',
  minTokens: 'min_tokens',
  badWords: 'bad_words',
  n: 'n',
};

export class SamplingParamsError extends Error {
  /** The SamplingParams field name (camelCase), e.g. "topP". */
  readonly param: keyof SamplingParams;
  /** The same parameter as spelled in the vLLM / OpenAI API, e.g. "top_p". */
  readonly apiParam: string;
  constructor(param: keyof SamplingParams, message: string) {
    super(message);
    this.name = 'SamplingParamsError';
    this.param = param;
    this.apiParam = API_NAMES[param];
  }
}

function fail(param: keyof SamplingParams, requirement: string, value: unknown): never {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  throw new SamplingParamsError(param, `${API_NAMES[param]} must be ${requirement}, got ${shown}.`);
}

function checkNumber(
  p: SamplingParams,
  key: keyof SamplingParams,
  requirement: string,
  ok: (v: number) => boolean,
): void {
  const v = p[key];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(key, requirement, v);
}

/** Throws SamplingParamsError naming the first invalid parameter. Unset parameters are fine. */
export function validateSamplingParams(p: SamplingParams): void {
  if (p === null || typeof p !== 'object') throw new TypeError('sampling params must be an object');
  checkNumber(p, 'temperature', 'non-negative', (v) => v >= 0);
  checkNumber(p, 'topP', 'in (0, 1]', (v) => v > 0 && v <= 1);
  // vLLM now also accepts 0 as "disabled"; we keep the older, stricter rule: -1 or >= 1.
  checkNumber(p, 'topK', '-1 (disable), or at least 1', (v) => Number.isInteger(v) && (v === -1 || v >= 1));
  checkNumber(p, 'minP', 'in [0, 1]', (v) => v >= 0 && v <= 1);
  checkNumber(p, 'repetitionPenalty', 'greater than zero', (v) => v > 0);
  checkNumber(p, 'presencePenalty', 'in [-2, 2]', (v) => v >= -2 && v <= 2);
  checkNumber(p, 'frequencyPenalty', 'in [-2, 2]', (v) => v >= -2 && v <= 2);
  checkNumber(p, 'seed', 'an integer', (v) => Number.isSafeInteger(v));
  checkNumber(p, 'maxTokens', 'an integer of at least 1', (v) => Number.isSafeInteger(v) && v >= 1);
  checkNumber(p, 'logprobs', 'a non-negative integer', (v) => Number.isSafeInteger(v) && v >= 0);

  if (p.stop !== undefined) {
    const stops = typeof p.stop === 'string' ? [p.stop] : p.stop;
    if (!Array.isArray(stops)) fail('stop', 'a string or an array of strings', p.stop);
    for (const s of stops) {
      if (typeof s !== 'string') fail('stop', 'a string or an array of strings', s);
      if (s === '') throw new SamplingParamsError('stop', 'stop cannot contain an empty string.');
    }
  }
  if (p.stopTokenIds !== undefined) {
    if (!Array.isArray(p.stopTokenIds)) fail('stopTokenIds', 'an array of token ids', p.stopTokenIds);
    for (const id of p.stopTokenIds) {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0)
        fail('stopTokenIds', 'non-negative integers', id);
    }
  }
  if (p.ignoreEos !== undefined && typeof p.ignoreEos !== 'boolean') fail('ignoreEos', 'a boolean', p.ignoreEos);
  validateIssue11Params(p);
}

/** Maximum n for LLM.generate/chat (as the server's MAX_N). */
export const MAX_N = 16;

// --- Structured output, logits processors, n (issue 11) ---
function validateIssue11Params(p: SamplingParams): void {
  checkNumber(p, 'minTokens', 'a non-negative integer', (v) => Number.isSafeInteger(v) && v >= 0);
  checkNumber(p, 'n', `an integer from 1 to ${MAX_N}`, (v) => Number.isSafeInteger(v) && v >= 1 && v <= MAX_N);
  if (p.minTokens !== undefined && p.maxTokens !== undefined && p.minTokens > p.maxTokens)
    fail('minTokens', `at most max_tokens (${p.maxTokens})`, p.minTokens);
  if (p.logitBias !== undefined) {
    if (p.logitBias === null || typeof p.logitBias !== 'object' || Array.isArray(p.logitBias))
      fail('logitBias', 'an object mapping token ids to numbers', p.logitBias);
    for (const [id, bias] of Object.entries(p.logitBias)) {
      if (!/^(0|[1-9][0-9]*)$/.test(id) || !Number.isSafeInteger(Number(id)))
        fail('logitBias', 'keyed by token ids (non-negative integers)', id);
      if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100)
        fail('logitBias', `a number in [-100, 100] for token ${id}`, bias);
    }
  }
  if (p.badWords !== undefined) {
    if (!Array.isArray(p.badWords)) fail('badWords', 'an array of strings', p.badWords);
    for (const w of p.badWords) {
      if (typeof w !== 'string') fail('badWords', 'an array of strings', w);
      if (w.trim() === '') throw new SamplingParamsError('badWords', 'bad_words cannot contain an empty word.');
    }
  }
  if (p.structuredOutput !== undefined) {
    try {
      compileStructuredOutput(p.structuredOutput); // cached: the sampler reuses this
    } catch (e) {
      if (!(e instanceof StructuredOutputError)) throw e;
      const at = e.path ? ` (at ${e.path})` : '';
      throw new SamplingParamsError('structuredOutput', `structured_output: ${e.message}${at}.`);
    }
  }
}
