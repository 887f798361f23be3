// config.json and generation_config.json of a Hugging Face model directory, validated. Supported
// families: Qwen2 / Qwen2.5 (model_type "qwen2"), Qwen3 dense ("qwen3") and Llama 1/2/3.x ("llama").
import { joinPath, MAX_CONFIG_BYTES, pathKind, readTextFile } from '../platform/files.js';
import { SamplingParamsError, validateSamplingParams, type SamplingParams } from '../sampler/params.js';
import type { RopeScalingSpec } from '../tensor/ops.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * How RoPE frequencies are rescaled for long contexts (HF's rope_scaling). `linear` divides every
 * frequency by `factor`; `llama3` (Llama 3.1/3.2) leaves high frequencies alone, divides low ones
 * by `factor` and interpolates in between (HF's _compute_llama3_parameters).
 */
export type RopeScaling = RopeScalingSpec;

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
  /** null: plain RoPE. */
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases: always for qwen2, `attention_bias` for llama and qwen3. */
  attentionBias: boolean;
  /** o_proj has a bias: llama and qwen3 with `attention_bias` (their attention is HF's LlamaAttention); qwen2 never. */
  oProjBias: boolean;
  /** gate/up/down projections have biases: llama's `mlp_bias`. */
  mlpBias: boolean;
  /** Per-head RMSNorm of q and k after the projection, before RoPE (qwen3's q_norm / k_norm). */
  qkNorm: boolean;
  maxPositionEmbeddings: number;
  /**
   * The longest context the model is meant for: max_position_embeddings, or with yarn / dynamic /
   * linear scaling the original length times the factor (as vLLM derives max_model_len; Qwen2.5's
   * documented yarn factor 4 over 32,768 gives 131,072). llama3 configs already state the scaled length.
   */
  contextLimit: number;
  torchDtype: string;
  /** config.json's `architectures` (Qwen3ForCausalLM; Qwen3Model for a bare decoder such as Qwen3-Embedding); [] when absent. */
  architectures?: string[];
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

/**
 * The weights one token is multiplied by: every layer's q, k, v, o, gate, up and down projections
 * and the head (vocab x hidden), i.e. the matmul multiply-adds of a token.
 */
export function matmulWeightsPerToken(c: ModelConfig): number {
  const qDim = c.numHeads * c.headDim,
    kvDim = c.numKvHeads * c.headDim;
  const perLayer = c.hiddenSize * (2 * qDim + 2 * kvDim) + 3 * c.hiddenSize * c.intermediateSize;
  return c.numLayers * perLayer + c.vocabSize * c.hiddenSize;
}

export function readJsonFile(file: string): Record<string, unknown> {
  const text = readTextFile(file, 'a JSON file', MAX_CONFIG_BYTES, (problem) => {
    throw new ConfigError(`${file}: ${problem}`);
  });
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

const MODEL_TYPES = ['qwen2', 'qwen3', 'llama'];

function optionalBool(json: Record<string, unknown>, key: string, file: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== 'boolean')
    throw new ConfigError(`${file}: field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Features of kindred architectures that this engine does not implement: refuse, naming the field. */
function rejectUnsupported(json: Record<string, unknown>, file: string): void {
  for (const key of ['num_experts', 'num_local_experts', 'n_routed_experts', 'moe_intermediate_size']) {
    const v = json[key];
    if (v !== undefined && v !== null && v !== 0)
      throw new ConfigError(
        `${file}: field "${key}" is ${JSON.stringify(v)}: mixture-of-experts models are not supported (dense models only)`,
      );
  }
  if (json.use_sliding_window === true)
    throw new ConfigError(`${file}: field "use_sliding_window" is true: sliding-window attention is not supported`);
  const layerTypes = json.layer_types;
  if (Array.isArray(layerTypes)) {
    const i = layerTypes.findIndex((t) => t !== 'full_attention');
    if (i >= 0)
      throw new ConfigError(
        `${file}: field "layer_types[${i}]" is ${JSON.stringify(layerTypes[i])}: only "full_attention" layers are supported (no sliding-window layers)`,
      );
  }
  const partial = json.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1)
    throw new ConfigError(`${file}: field "partial_rotary_factor" is ${JSON.stringify(partial)}: only 1 is supported`);
}

function parseRopeScaling(
  json: Record<string, unknown>,
  file: string,
  maxPositionEmbeddings: number,
): RopeScaling | null {
  const rs = json.rope_scaling;
  if (rs === undefined || rs === null) return null;
  if (typeof rs !== 'object' || Array.isArray(rs))
    throw new ConfigError(`${file}: field "rope_scaling" must be an object or null, got ${JSON.stringify(rs)}`);
  const o = rs as Record<string, unknown>;
  // Newer configs say rope_type, older ones type.
  const key = o.rope_type !== undefined ? 'rope_type' : 'type';
  const type = o[key];
  const field = (name: string) => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw new ConfigError(
        `${file}: field "rope_scaling.${name}" must be a positive number, got ${JSON.stringify(v)}`,
      );
    return v;
  };
  const optional = (name: string) => (o[name] === undefined || o[name] === null ? null : field(name));
  if (type === 'default') return null;
  if (type === 'yarn') {
    const truncate = o.truncate ?? true;
    if (typeof truncate !== 'boolean')
      throw new ConfigError(
        `${file}: field "rope_scaling.truncate" must be true or false, got ${JSON.stringify(truncate)}`,
      );
    const scaling: RopeScaling = {
      type,
      factor: field('factor'),
      originalMaxPositionEmbeddings: optional('original_max_position_embeddings') ?? maxPositionEmbeddings,
      betaFast: optional('beta_fast') ?? 32,
      betaSlow: optional('beta_slow') ?? 1,
      attentionFactor: optional('attention_factor'),
      mscale: optional('mscale'),
      mscaleAllDim: optional('mscale_all_dim'),
      truncate,
    };
    if (scaling.betaFast < scaling.betaSlow)
      throw new ConfigError(
        `${file}: field "rope_scaling.beta_fast" (${scaling.betaFast}) must not be smaller than beta_slow (${scaling.betaSlow})`,
      );
    return scaling;
  }
  if (type === 'dynamic')
    return {
      type,
      factor: field('factor'),
      originalMaxPositionEmbeddings: optional('original_max_position_embeddings') ?? maxPositionEmbeddings,
    };
  if (type === 'linear') return { type, factor: field('factor') };
  if (type === 'llama3') {
    const scaling: RopeScaling = {
      type,
      factor: field('factor'),
      lowFreqFactor: field('low_freq_factor'),
      highFreqFactor: field('high_freq_factor'),
      originalMaxPositionEmbeddings: field('original_max_position_embeddings'),
    };
    if (scaling.highFreqFactor <= scaling.lowFreqFactor)
      throw new ConfigError(
        `${file}: field "rope_scaling.high_freq_factor" (${scaling.highFreqFactor}) must be greater than low_freq_factor (${scaling.lowFreqFactor})`,
      );
    return scaling;
  }
  throw new ConfigError(
    `${file}: field "rope_scaling.${key}" is ${JSON.stringify(type)}: supported rope scaling types are "linear", "llama3", "yarn", "dynamic" and "default"`,
  );
}

/** max_position_embeddings: a prompt of one token and one generated token need two positions. */
function contextPositions(json: Record<string, unknown>, file: string): number {
  const v = positiveInt(json, 'max_position_embeddings', file);
  if (v < 2)
    throw new ConfigError(
      `${file}: field "max_position_embeddings" is ${v}: a model needs at least 2 positions (one prompt token and one generated); real models have thousands`,
    );
  return v;
}

/** The longest context the model's RoPE is meant for: max_position_embeddings, or what yarn / dynamic / linear scaling stretch it to. */
export function contextLimit(maxPositionEmbeddings: number, s: RopeScaling | null): number {
  if (s === null || s.type === 'llama3' || s.type === 'factors') return maxPositionEmbeddings;
  const original = s.type === 'linear' ? maxPositionEmbeddings : s.originalMaxPositionEmbeddings;
  return Math.max(maxPositionEmbeddings, Math.floor(original * s.factor));
}

export function parseModelConfig(json: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const modelType = String(json.model_type ?? 'qwen2');
  if (!MODEL_TYPES.includes(modelType))
    throw new ConfigError(
      `${file}: field "model_type" is "${modelType}", supported: "qwen2" (Qwen2 / Qwen2.5), "qwen3" (Qwen3 dense), "llama" (Llama 1/2/3.x, SmolLM2, TinyLlama)`,
    );
  rejectUnsupported(json, file);
  const act = json.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(`${file}: field "hidden_act" is ${JSON.stringify(act)}, expected "silu"`);
  const hiddenSize = positiveInt(json, 'hidden_size', file);
  const numHeads = positiveInt(json, 'num_attention_heads', file);
  const numKvHeads =
    json.num_key_value_heads === undefined || json.num_key_value_heads === null
      ? numHeads
      : positiveInt(json, 'num_key_value_heads', file);
  if (json.head_dim == null && hiddenSize % numHeads !== 0)
    throw new ConfigError(`${file}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  if (numHeads % numKvHeads !== 0)
    throw new ConfigError(
      `${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  const headDim =
    json.head_dim === undefined || json.head_dim === null ? hiddenSize / numHeads : positiveInt(json, 'head_dim', file);
  if (headDim % 2 !== 0) throw new ConfigError(`${file}: head dimension ${headDim} must be even for rotary embeddings`);
  const tie = optionalBool(json, 'tie_word_embeddings', file, false);
  // Qwen2 always has q/k/v biases (and no attention_bias field); Llama and Qwen3 say so in attention_bias,
  // which also puts a bias on o_proj.
  const attentionBias = modelType === 'qwen2' ? true : optionalBool(json, 'attention_bias', file, false);
  const mlpBias = modelType === 'llama' ? optionalBool(json, 'mlp_bias', file, false) : false;
  if (modelType !== 'llama' && json.mlp_bias === true)
    throw new ConfigError(`${file}: field "mlp_bias" is true, which ${modelType} models do not have`);
  const maxPositionEmbeddings = contextPositions(json, file);
  const ropeScaling = parseRopeScaling(json, file, maxPositionEmbeddings);
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
    ropeScaling,
    tieWordEmbeddings: tie,
    attentionBias,
    oProjBias: modelType !== 'qwen2' && attentionBias,
    mlpBias,
    qkNorm: modelType === 'qwen3',
    maxPositionEmbeddings,
    contextLimit: contextLimit(maxPositionEmbeddings, ropeScaling),
    torchDtype: String(json.torch_dtype ?? 'bfloat16'),
    architectures: Array.isArray(json.architectures) ? json.architectures.filter((a) => typeof a === 'string') : [],
    bosTokenId: bos?.[0],
    eosTokenId: eos === undefined ? undefined : eos.length === 1 ? eos[0] : eos,
  };
}

export function loadModelConfig(dir: string): ModelConfig {
  const file = joinPath(dir, 'config.json');
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
  const file = joinPath(dir, 'generation_config.json');
  const json = pathKind(file) !== 'missing' ? readJsonFile(file) : {};
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
