// config.json and generation_config.json of a Hugging Face Qwen2 model directory, validated.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SamplingParamsError, validateSamplingParams, type SamplingParams } from '../sampler/params.js';

export class ConfigError extends Error {}

export interface ModelConfig {
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases: always for qwen2, `attention_bias` for llama. */
  attentionBias: boolean;
  maxPositionEmbeddings: number;
  torchDtype: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
}

export interface GenerationConfig {
  eosTokenIds: number[];
  bosTokenId?: number;
  padTokenId?: number;
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
}

export function readJsonFile(file: string): Record<string, unknown> {
  if (fs.existsSync(file) && fs.statSync(file).isDirectory())
    throw new ConfigError(`${file}: is a directory, expected a JSON file`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new ConfigError(`${file}: expected a JSON object`);
  return json as Record<string, unknown>;
}

function positiveInt(json: Record<string, unknown>, key: string, file: string): number {
  const v = json[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(`${file}: field "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(json: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${file}: field "${key}" must be a positive number, got ${JSON.stringify(json[key])}`);
  }
  return v;
}

function optionalTokenIds(json: Record<string, unknown>, key: string, file: string): number[] | undefined {
  const v = json[key];
  if (v === undefined || v === null) return undefined;
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new ConfigError(
        `${file}: field "${key}" must be a token id or a list of token ids, got ${JSON.stringify(v)}`,
      );
    }
  }
  return ids as number[];
}

export function parseModelConfig(json: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const modelType = String(json.model_type ?? 'qwen2');
  if (modelType !== 'qwen2' && modelType !== 'llama')
    throw new ConfigError(
      `${file}: field "model_type" is "${modelType}", supported: "qwen2" (Qwen2 / Qwen2.5), "llama"`,
    );
  const act = json.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(`${file}: field "hidden_act" is ${JSON.stringify(act)}, expected "silu"`);
  const hiddenSize = positiveInt(json, 'hidden_size', file);
  const numHeads = positiveInt(json, 'num_attention_heads', file);
  const numKvHeads = json.num_key_value_heads === undefined ? numHeads : positiveInt(json, 'num_key_value_heads', file);
  if (json.head_dim == null && hiddenSize % numHeads !== 0)
    throw new ConfigError(`${file}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  if (numHeads % numKvHeads !== 0)
    throw new ConfigError(
      `${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  const headDim =
    json.head_dim === undefined || json.head_dim === null ? hiddenSize / numHeads : positiveInt(json, 'head_dim', file);
  if (headDim % 2 !== 0) throw new ConfigError(`${file}: head dimension ${headDim} must be even for rotary embeddings`);
  if (json.rope_scaling !== undefined && json.rope_scaling !== null) {
    throw new ConfigError(`${file}: field "rope_scaling" is set; rope scaling (YaRN) is not supported yet`);
  }
  const tie = json.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw new ConfigError(`${file}: field "tie_word_embeddings" must be true or false`);
  const attentionBias = modelType === 'qwen2' ? true : (json.attention_bias ?? false);
  if (typeof attentionBias !== 'boolean')
    throw new ConfigError(`${file}: field "attention_bias" must be true or false`);
  if (json.mlp_bias === true)
    throw new ConfigError(`${file}: field "mlp_bias" is true; MLP biases are not supported yet`);
  const eos = optionalTokenIds(json, 'eos_token_id', file);
  const bos = optionalTokenIds(json, 'bos_token_id', file);
  return {
    modelType,
    hiddenSize,
    intermediateSize: positiveInt(json, 'intermediate_size', file),
    numLayers: positiveInt(json, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(json, 'vocab_size', file),
    rmsNormEps: positiveNumber(json, 'rms_norm_eps', file, 1e-6),
    ropeTheta: positiveNumber(json, 'rope_theta', file, 10000),
    tieWordEmbeddings: tie,
    attentionBias,
    maxPositionEmbeddings: positiveInt(json, 'max_position_embeddings', file),
    torchDtype: String(json.torch_dtype ?? 'bfloat16'),
    bosTokenId: bos?.[0],
    eosTokenId: eos === undefined ? undefined : eos.length === 1 ? eos[0] : eos,
  };
}

export function loadModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  return parseModelConfig(readJsonFile(file), file);
}

/** generation_config.json fields that are sampling defaults -> the SamplingParams they become. */
const GENERATION_SAMPLING_FIELDS: Record<string, keyof SamplingParams> = {
  temperature: 'temperature',
  top_p: 'topP',
  top_k: 'topK',
  min_p: 'minP',
  repetition_penalty: 'repetitionPenalty',
  max_new_tokens: 'maxTokens',
};

/** generation_config.json is optional; without it the eos ids come from config.json. */
export function loadGenerationConfig(dir: string, config: ModelConfig): GenerationConfig {
  const file = path.join(dir, 'generation_config.json');
  const json = fs.existsSync(file) ? readJsonFile(file) : {};
  const num = (key: string): number | undefined => {
    const v = json[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new ConfigError(`${file}: field "${key}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const eos =
    optionalTokenIds(json, 'eos_token_id', file) ?? (config.eosTokenId === undefined ? [] : [config.eosTokenId].flat());
  if (json.do_sample !== undefined && json.do_sample !== null && typeof json.do_sample !== 'boolean')
    throw new ConfigError(`${file}: field "do_sample" must be true or false, got ${JSON.stringify(json.do_sample)}`);
  // The sampling defaults get the same checks as a request's parameters, at load rather than in every request.
  for (const [key, param] of Object.entries(GENERATION_SAMPLING_FIELDS)) {
    let v = num(key);
    if (v === undefined) continue;
    if (key === 'top_k' && v === 0) v = -1; // transformers' "off"
    try {
      validateSamplingParams({ [param]: v });
    } catch (e) {
      if (!(e instanceof SamplingParamsError)) throw e;
      throw new ConfigError(`${file}: field "${key}" ${e.message.replace(/^\S+ /, '').replace(/\.$/, '')}`);
    }
  }
  return {
    eosTokenIds: eos,
    bosTokenId: optionalTokenIds(json, 'bos_token_id', file)?.[0],
    padTokenId: optionalTokenIds(json, 'pad_token_id', file)?.[0],
    doSample: typeof json.do_sample === 'boolean' ? json.do_sample : undefined,
    temperature: num('temperature'),
    topP: num('top_p'),
    topK: num('top_k'),
    minP: num('min_p'),
    repetitionPenalty: num('repetition_penalty'),
    maxNewTokens: num('max_new_tokens'),
  };
}
