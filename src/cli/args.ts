// Command-line flags shared by `qwen-ts generate` and `qwen-ts chat`: sampling flags mapped to
// SamplingParams (checked by validateSamplingParams, whose errors are mapped back to the flag),
// model flags mapped to LoadOptions, and the user-error type that the entry point turns into a
// one-line message and exit code 2.
import { parseArgs } from 'node:util';
import type { LLMLoadOptions } from '../engine/llm.js';
import { MODEL_TASKS, type ModelTask } from '../engine/task.js';
import { resolveSpeculativeConfig } from '../engine/speculation/ngram.js';
import { DEFAULT_WEIGHTS, WEIGHT_FORMATS } from '../model/load.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../model/kv-cache.js';
import { isSyntheticPreset, PRESETS, type SyntheticPresetName } from '../model/synthetic.js';
import {
  closestName,
  editDistance,
  SamplingParamsError,
  validateSamplingParams,
  type SamplingParams,
} from '../sampler/params.js';
import type { WeightFormat } from '../tensor/matrix.js';

/** A mistake on the command line: printed as one line (no stack), exit code 2 by default. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
    /** Usage text printed after the message. */
    readonly usage?: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** "; did you mean --temperature?" when a name is close to one of `names` (a typo), else "". */
export function didYouMean(given: string, names: readonly string[], prefix = ''): string {
  if (names.length === 0) return '';
  const best = closestName(given, names);
  const distance = editDistance(given.toLowerCase(), best.toLowerCase());
  return distance <= Math.max(2, Math.floor(given.length / 3)) ? `; did you mean ${prefix}${best}?` : '';
}

type NumericKey =
  | 'temperature'
  | 'topP'
  | 'topK'
  | 'minP'
  | 'repetitionPenalty'
  | 'presencePenalty'
  | 'frequencyPenalty'
  | 'maxTokens'
  | 'seed'
  | 'promptLogprobs';

/** Sampling flag -> SamplingParams field. */
export const SAMPLING_FLAGS: Record<string, NumericKey> = {
  temperature: 'temperature',
  'top-p': 'topP',
  'top-k': 'topK',
  'min-p': 'minP',
  'repetition-penalty': 'repetitionPenalty',
  'presence-penalty': 'presencePenalty',
  'frequency-penalty': 'frequencyPenalty',
  'max-tokens': 'maxTokens',
  seed: 'seed',
  'prompt-logprobs': 'promptLogprobs',
};

type OptionSpec = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };

export const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm' },
  revision: { type: 'string' },
  preset: { type: 'string' },
  threads: { type: 'string', short: 't' },
  weights: { type: 'string' },
  'context-length': { type: 'string' },
  'kv-cache-dtype': { type: 'string' },
  'check-tensors': { type: 'boolean' },
  'speculative-config': { type: 'string' },
  'no-jump-forward': { type: 'boolean' },
  task: { type: 'string' },
};

export const SAMPLING_OPTIONS: Record<string, OptionSpec> = {
  ...Object.fromEntries(Object.keys(SAMPLING_FLAGS).map((f) => [f, { type: 'string' } as OptionSpec])),
  stop: { type: 'string', multiple: true },
};

export const HELP_OPTION: Record<string, OptionSpec> = { help: { type: 'boolean', short: 'h' } };

export const MODEL_HELP = `Model:
  -m, --model NAME           a model folder (config.json, *.safetensors, tokenizer.json), a .gguf file
                             (a split one by its first part), or a name: Org/Name from the Hugging
                             Face cache, else downloaded from the hub (Org/Name-GGUF:Q4_K_M for one
                             GGUF), or an Ollama name:tag. Qwen2 / Qwen2.5, Qwen3, Llama. Without
                             it: the bundled stories260K demo model
                             (a tiny trained story model, MIT, llama2.c; it has no chat template)
      --revision REV         branch, tag or commit of a hub model (default main)
      --preset NAME          instead of --model, a synthetic Qwen2.5-shaped model with random weights, for
                             speed: ${Object.keys(PRESETS).join(', ')}; made once in the cache
                             ($QWEN_TS_CACHE, or $XDG_CACHE_HOME/qwen-ts, or ~/.cache/qwen-ts)
  -t, --threads N            kernel threads (default: all cores; 1 for a model under 4M
                             multiply-adds per token, like the bundled one)
      --weights FORMAT       weights in memory: ${WEIGHT_FORMATS.join(', ')} (default ${DEFAULT_WEIGHTS})
      --context-length N     longest conversation in tokens (default: the model's, at most 32768)
      --kv-cache-dtype TYPE  KV cache storage: ${KV_CACHE_DTYPES.join(', ')} (default f32; q8_0 is a quarter)
      --check-tensors        scan the weights for NaN/Inf while loading (slower load)
      --speculative-config JSON
                             speculative decoding as vLLM's, e.g. '{"method":"ngram","num_speculative_tokens":4}'
                             (prompt lookup: proposes tokens that followed the last few tokens earlier in
                             the prompt or output; the output is the same as without it)
      --no-jump-forward      with structured output, do not propose the text the constraint forces
                             (keys, punctuation) as extra rows of a step
      --task TASK            generate, embed (/v1/embeddings) or score (a yes/no reranker, /v1/rerank);
                             default: read from the folder (no lm_head, architectures ["Qwen3Model"] or
                             modules.json: embed; a name with Reranker: score; else generate)`;

export const SAMPLING_HELP = `Sampling (unset: the model's generation_config.json, then vLLM's defaults):
      --temperature T        0 = greedy
      --top-p P              in (0, 1]
      --top-k K              -1 (off) or >= 1
      --min-p P              in [0, 1]
      --repetition-penalty R > 0 (1 = off)
      --presence-penalty X   in [-2, 2]
      --frequency-penalty X  in [-2, 2]
      --max-tokens N         most tokens to generate (default: generation_config's, else 256)
      --seed N               reproducible sampling
      --stop TEXT            stop string, not included in the output (repeatable)
      --prompt-logprobs K    each prompt token's log-probability and the top K (0..20) at it, in the
                             JSON result (as --json); with --max-tokens 0 the prompt is only scored`;

/**
 * node:util parseArgs, with its errors turned into CliErrors. Option values that look like negative
 * numbers (`--presence-penalty -0.5`) are accepted as values.
 */
export function parseCommandArgs(
  argv: string[],
  options: Record<string, OptionSpec>,
  usage: string,
  allowPositionals: boolean,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.startsWith('--')
      ? a.slice(2)
      : a.length === 2 && a[0] === '-'
        ? Object.keys(options).find((k) => options[k].short === a[1])
        : undefined;
    const next = argv[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      args.push(`--${name}=${next}`);
      i++;
    } else {
      args.push(a);
    }
  }
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals, strict: true });
    return { values: values as Record<string, string | boolean | string[] | undefined>, positionals };
  } catch (e) {
    const err = e as Error & { code?: string };
    const flag = /'(-[^' ,]+)/.exec(err.message)?.[1];
    let msg = err.message.split('\n')[0];
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) {
      const name = flag.replace(/^-+/, '').split('=')[0];
      msg = `unknown option ${flag}${flag.startsWith('--') ? didYouMean(name, Object.keys(options), '--') : ''}`;
    } else if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) {
      const spec = options[flag.replace(/^-+/, '')];
      msg = spec?.type === 'boolean' ? `option ${flag} takes no value` : `option ${flag} needs a value`;
    } else if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      msg = `unexpected argument ${/'([^']*)'/.exec(err.message)?.[1] ?? ''}`.trim();
    }
    throw new CliError(msg, 2, usage);
  }
}

/** A decimal number as typed; anything else (empty, hex, "1x", "abc") is NaN. */
export function parseNumber(raw: string): number {
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(raw.trim()) ? Number(raw) : NaN;
}

/** "top_p must be in (0, 1], got 2." -> "a number in (0, 1]" */
function requirementPhrase(param: string, message: string): string {
  const req = / must be (.*), got /s.exec(message)?.[1];
  if (req === undefined) return message;
  if (/^an? /.test(req)) return req;
  if (param === 'topK') return `an integer, ${req}`;
  if (req === 'non-negative') return 'a non-negative number';
  return `a number ${req}`;
}

/** SamplingParams from the sampling flags; unset flags are left out. */
export function samplingParamsFrom(values: Record<string, unknown>): SamplingParams {
  const params: SamplingParams = {};
  const raw = new Map<string, string>();
  for (const [flag, key] of Object.entries(SAMPLING_FLAGS)) {
    const v = values[flag];
    if (typeof v !== 'string') continue;
    raw.set(key, v);
    params[key] = parseNumber(v);
  }
  const stop = values.stop;
  if (Array.isArray(stop) && stop.length > 0) params.stop = stop as string[];
  try {
    validateSamplingParams(params);
  } catch (e) {
    if (!(e instanceof SamplingParamsError)) throw e;
    const flag = `--${e.apiParam.replace(/_/g, '-')}`;
    if (e.param === 'stop') throw new CliError(`${flag} cannot be an empty string`);
    throw new CliError(
      `${flag} must be ${requirementPhrase(e.param, e.message)}, got ${JSON.stringify(raw.get(e.param) ?? '')}`,
    );
  }
  return params;
}

function intFlag(values: Record<string, unknown>, flag: string, min: number, max: number): number | undefined {
  const v = values[flag];
  if (typeof v !== 'string') return undefined;
  const n = parseNumber(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new CliError(`--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

export interface ModelArgs {
  model?: string;
  revision?: string;
  preset?: SyntheticPresetName;
  load: LLMLoadOptions;
}

/** The model flags: --model / --preset and the LoadOptions. */
export function modelArgsFrom(values: Record<string, unknown>): ModelArgs {
  const load: LLMLoadOptions = { maxSequences: 1 };
  const task = values.task;
  if (typeof task === 'string') {
    if (!(MODEL_TASKS as readonly string[]).includes(task))
      throw new CliError(`--task must be one of ${MODEL_TASKS.join(', ')}, got ${JSON.stringify(task)}`);
    load.task = task as ModelTask;
  }
  const threads = intFlag(values, 'threads', 1, 64);
  if (threads !== undefined) load.threads = threads;
  const ctx = intFlag(values, 'context-length', 1, 1 << 20);
  if (ctx !== undefined) load.contextLength = ctx;
  const weights = values.weights;
  if (typeof weights === 'string') {
    if (!(WEIGHT_FORMATS as readonly string[]).includes(weights)) {
      throw new CliError(`--weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(weights)}`);
    }
    load.weights = weights as WeightFormat;
  }
  const kvCacheDtype = values['kv-cache-dtype'];
  if (typeof kvCacheDtype === 'string') {
    if (!(KV_CACHE_DTYPES as readonly string[]).includes(kvCacheDtype))
      throw new CliError(
        `--kv-cache-dtype must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${JSON.stringify(kvCacheDtype)}`,
      );
    load.kvCacheDtype = kvCacheDtype as KvCacheDtype;
  }
  if (values['check-tensors'] === true) load.checkTensors = true;
  if (values['no-jump-forward'] === true) load.jumpForward = false;
  const spec = values['speculative-config'];
  if (typeof spec === 'string') {
    let raw: unknown;
    try {
      raw = JSON.parse(spec);
    } catch {
      throw new CliError(
        `--speculative-config must be JSON like '{"method":"ngram","num_speculative_tokens":4}', got ${spec}`,
      );
    }
    try {
      load.speculativeConfig = resolveSpeculativeConfig(raw);
    } catch (e) {
      throw new CliError(`--speculative-config: ${(e as Error).message.replace(/^speculativeConfig[.:]? ?/, '')}`);
    }
  }
  const model = typeof values.model === 'string' ? values.model : undefined;
  const preset = typeof values.preset === 'string' ? values.preset : undefined;
  const revision = typeof values.revision === 'string' ? values.revision : undefined;
  if (model === '') throw new CliError('--model needs a folder or a model name');
  if (revision !== undefined && model === undefined) throw new CliError('--revision needs --model NAME');
  if (preset !== undefined) {
    if (!isSyntheticPreset(preset))
      throw new CliError(
        `--preset must be one of ${Object.keys(PRESETS).join(', ')}, got ${JSON.stringify(preset)}${didYouMean(preset, Object.keys(PRESETS))}`,
      );
    if (model !== undefined)
      throw new CliError('--preset chooses a synthetic model instead of --model; give one or the other');
  }
  return { model, revision, preset, load };
}
