// Sampling parameters: vLLM's SamplingParams in camelCase, with vLLM's defaults and checks.
// vLLM's snake_case names are accepted as aliases; any other key is an error (a misspelt
// parameter must not be silently ignored).
//
// Validation happens once per request, before anything runs, so a bad value fails fast with
// the parameter's name (the OpenAI-compatible server reports it as `param`).

import { compileStructuredOutput, StructuredOutputError, type StructuredOutput } from './structured/index.js';

/** The sampling parameters by their camelCase names (SamplingParams adds the snake_case aliases). */
export interface CamelCaseSamplingParams {
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
  /**
   * Log-probability of every prompt token and the `promptLogprobs` most likely tokens at its
   * position (vLLM's prompt_logprobs; the first token has none). Such a request reads its whole
   * prompt: the prefix cache is not used for it.
   */
  promptLogprobs?: number;

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

/** "maxTokens" -> "max_tokens" */
type SnakeCase<S extends string> = S extends `${infer Head}${infer Tail}`
  ? `${Head extends Lowercase<Head> ? Head : `_${Lowercase<Head>}`}${SnakeCase<Tail>}`
  : S;

/** vLLM's snake_case spellings (`max_tokens`, `top_p`, ...), accepted as aliases; never give both. */
export type SnakeCaseSamplingParams = {
  [K in keyof CamelCaseSamplingParams as SnakeCase<K> extends K ? never : SnakeCase<K>]?: CamelCaseSamplingParams[K];
};

/** Sampling parameters: camelCase, or vLLM's snake_case aliases (validateSamplingParams maps them). */
export type SamplingParams = CamelCaseSamplingParams & SnakeCaseSamplingParams;

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

/** Maximum n for LLM.generate/chat (as the server's MAX_N). */
export const MAX_N = 16;

/** Most top log-probabilities per token a request may ask for (as the server and OpenAI's API). */
export const MAX_LOGPROBS = 20;

/** Checks one parameter's value (never undefined); throws SamplingParamsError via fail(). */
type Check = (value: unknown, param: keyof CamelCaseSamplingParams) => void;

/**
 * Every sampling parameter: its SamplingParams (camelCase) name -> vLLM's snake_case name, also
 * accepted as an alias, and the check of its value. Adding a parameter is one line here plus its
 * field in SamplingParams (the mapped type makes a missing line a compile error).
 */
const PARAMS: { [K in keyof Required<CamelCaseSamplingParams>]: { api: SnakeCase<K>; check: Check } } = {
  temperature: { api: 'temperature', check: numeric('non-negative', (v) => v >= 0) },
  topP: { api: 'top_p', check: numeric('in (0, 1]', (v) => v > 0 && v <= 1) },
  // vLLM now also accepts 0 as "disabled"; we keep the older, stricter rule: -1 or >= 1.
  topK: {
    api: 'top_k',
    check: numeric('-1 (disable), or at least 1', (v) => Number.isInteger(v) && (v === -1 || v >= 1)),
  },
  minP: { api: 'min_p', check: numeric('in [0, 1]', (v) => v >= 0 && v <= 1) },
  repetitionPenalty: { api: 'repetition_penalty', check: numeric('greater than zero', (v) => v > 0) },
  presencePenalty: { api: 'presence_penalty', check: numeric('in [-2, 2]', (v) => v >= -2 && v <= 2) },
  frequencyPenalty: { api: 'frequency_penalty', check: numeric('in [-2, 2]', (v) => v >= -2 && v <= 2) },
  seed: { api: 'seed', check: numeric('an integer', (v) => Number.isSafeInteger(v)) },
  maxTokens: {
    api: 'max_tokens',
    check: numeric('an integer of at least 1', (v) => Number.isSafeInteger(v) && v >= 1),
  },
  stop: { api: 'stop', check: checkStop },
  stopTokenIds: { api: 'stop_token_ids', check: checkTokenIds },
  logprobs: {
    api: 'logprobs',
    check: numeric(
      `an integer from 0 to ${MAX_LOGPROBS}`,
      (v) => Number.isSafeInteger(v) && v >= 0 && v <= MAX_LOGPROBS,
    ),
  },
  ignoreEos: { api: 'ignore_eos', check: boolean },
  promptLogprobs: {
    api: 'prompt_logprobs',
    check: numeric(
      `an integer from 0 to ${MAX_LOGPROBS}`,
      (v) => Number.isSafeInteger(v) && v >= 0 && v <= MAX_LOGPROBS,
    ),
  },
  // Structured output and logits processors (processors.ts, structured/).
  structuredOutput: { api: 'structured_output', check: checkStructuredOutput },
  logitBias: { api: 'logit_bias', check: checkLogitBias },
  minTokens: {
    api: 'min_tokens',
    check: numeric('a non-negative integer', (v) => Number.isSafeInteger(v) && v >= 0),
  },
  badWords: { api: 'bad_words', check: checkBadWords },
  n: {
    api: 'n',
    check: numeric(`an integer from 1 to ${MAX_N}`, (v) => Number.isSafeInteger(v) && v >= 1 && v <= MAX_N),
  },
};

type ParamName = keyof CamelCaseSamplingParams;
const NAMES = Object.keys(PARAMS) as ParamName[];
/** snake_case alias -> SamplingParams name. */
const BY_API = new Map<string, ParamName>(NAMES.map((k) => [PARAMS[k].api, k]));

export class SamplingParamsError extends Error {
  /** The SamplingParams field name (camelCase), e.g. "topP"; for an unknown key, the key itself. */
  readonly param: string;
  /** The same parameter as spelled in the vLLM / OpenAI API, e.g. "top_p"; for an unknown key, the key. */
  readonly apiParam: string;
  constructor(param: string, message: string) {
    super(message);
    this.name = 'SamplingParamsError';
    this.param = param;
    this.apiParam = (PARAMS as Record<string, { api: string } | undefined>)[param]?.api ?? param;
  }
}

function fail(param: ParamName, requirement: string, value: unknown): never {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  throw new SamplingParamsError(param, `${PARAMS[param].api} must be ${requirement}, got ${shown}.`);
}

function numeric(requirement: string, ok: (v: number) => boolean): Check {
  return (v, param) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(param, requirement, v);
  };
}

function boolean(v: unknown, param: ParamName): void {
  if (typeof v !== 'boolean') fail(param, 'a boolean', v);
}

function checkStop(v: unknown, param: ParamName): void {
  const stops = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(stops)) fail(param, 'a string or an array of strings', v);
  for (const s of stops) {
    if (typeof s !== 'string') fail(param, 'a string or an array of strings', s);
    if (s === '') throw new SamplingParamsError(param, 'stop cannot contain an empty string.');
  }
}

function checkTokenIds(v: unknown, param: ParamName): void {
  if (!Array.isArray(v)) fail(param, 'an array of token ids', v);
  for (const id of v) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) fail(param, 'non-negative integers', id);
  }
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The valid name (camelCase or snake_case) closest to `key`. */
export function closestName(key: string, names: readonly string[]): string {
  let best = names[0];
  let bestDistance = Infinity;
  for (const name of names) {
    const d = editDistance(key.toLowerCase(), name.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [name, d];
  }
  return best;
}

/**
 * Checks the parameters and returns them with camelCase names only (a new object; the input is not
 * changed). vLLM's snake_case names (`max_tokens`, `top_p`, ...) are accepted as aliases; giving
 * both spellings of one parameter, or any other key, throws SamplingParamsError naming the key and
 * the closest valid name. Unset (or undefined) parameters are fine.
 */
export function validateSamplingParams(p: SamplingParams): SamplingParams {
  if (p === null || typeof p !== 'object' || Array.isArray(p)) throw new TypeError('sampling params must be an object');
  const out: Record<string, unknown> = {};
  const spelledAs = new Map<ParamName, string>();
  for (const [key, value] of Object.entries(p)) {
    const name = key in PARAMS ? (key as ParamName) : BY_API.get(key);
    if (name === undefined) {
      const valid = NAMES.flatMap((n) => (PARAMS[n].api === n ? [n] : [n, PARAMS[n].api]));
      throw new SamplingParamsError(
        key,
        `unknown sampling parameter ${JSON.stringify(key)}; did you mean ${JSON.stringify(closestName(key, valid))}?`,
      );
    }
    if (value === undefined) continue;
    const other = spelledAs.get(name);
    if (other !== undefined)
      throw new SamplingParamsError(
        name,
        `${other} and ${key} are the same parameter (${PARAMS[name].api}); give only one of them.`,
      );
    spelledAs.set(name, key);
    // maxTokens 0 with promptLogprobs: the prompt is scored and nothing is generated.
    const scoresOnly = name === 'maxTokens' && value === 0 && (p.promptLogprobs ?? p.prompt_logprobs) !== undefined;
    if (!scoresOnly) PARAMS[name].check(value, name);
    out[name] = value;
  }
  const checked = out as SamplingParams;
  if (checked.minTokens !== undefined && checked.maxTokens !== undefined && checked.minTokens > checked.maxTokens)
    fail('minTokens', `at most max_tokens (${checked.maxTokens})`, checked.minTokens);
  return checked;
}

function checkLogitBias(v: unknown, param: ParamName): void {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(param, 'an object mapping token ids to numbers', v);
  for (const [id, bias] of Object.entries(v)) {
    if (!/^(0|[1-9][0-9]*)$/.test(id) || !Number.isSafeInteger(Number(id)))
      fail(param, 'keyed by token ids (non-negative integers)', id);
    if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100)
      fail(param, `a number in [-100, 100] for token ${id}`, bias);
  }
}

function checkBadWords(v: unknown, param: ParamName): void {
  if (!Array.isArray(v)) fail(param, 'an array of strings', v);
  for (const w of v) {
    if (typeof w !== 'string') fail(param, 'an array of strings', w);
    if (w.trim() === '') throw new SamplingParamsError(param, 'bad_words cannot contain an empty word.');
  }
}

function checkStructuredOutput(v: unknown, param: ParamName): void {
  try {
    compileStructuredOutput(v as StructuredOutput); // cached: the sampler reuses this
  } catch (e) {
    if (!(e instanceof StructuredOutputError)) throw e;
    const at = e.path ? ` (at ${e.path})` : '';
    throw new SamplingParamsError(param, `structured_output: ${e.message}${at}.`);
  }
}
