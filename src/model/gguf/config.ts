// GGUF metadata -> the ModelConfig and GenerationConfig that a config.json would give. Keys are
// llama.cpp's (`{arch}.embedding_length`, ...); each missing or bad key is named in the error.
import { contextLimit, type GenerationConfig, type ModelConfig } from '../config.js';
import { FAMILIES, ggufLayerName, isFamily, LAYER_TENSORS, MODEL_TENSORS } from '../tensor-names.js';
import { GGUF_VALUE, GgufError, type GgufModel } from './file.js';

/** End-of-generation tokens llama.cpp recognises by their text (llama-vocab.cpp), beside eos/eot/eom ids. */
const END_TOKENS = ['<|endoftext|>', '<|im_end|>', '<|eot_id|>', '<|eom_id|>', '<|end|>', '<end_of_turn>', '</s>'];

const hasTensor = (g: GgufModel, field: string) =>
  g.tensor(
    ggufLayerName(
      0,
      LAYER_TENSORS.find((t) => t.field === field)!,
    ),
  ) !== undefined;

export function ggufModelConfig(g: GgufModel): ModelConfig {
  const arch = g.string('general.architecture');
  if (!isFamily(arch))
    throw new GgufError(
      `${g.file}: metadata key "general.architecture" is "${arch}"; supported: ${Object.keys(FAMILIES).join(', ')}`,
    );
  const key = (k: string) => `${arch}.${k}`;
  const hiddenSize = g.uint(key('embedding_length'));
  const numHeads = g.uint(key('attention.head_count'));
  const numKvHeads = g.has(key('attention.head_count_kv')) ? g.uint(key('attention.head_count_kv')) : numHeads;
  for (const [k, v] of [
    ['embedding_length', hiddenSize],
    ['attention.head_count', numHeads],
    ['attention.head_count_kv', numKvHeads],
  ] as const)
    if (v === 0) throw new GgufError(`${g.file}: metadata key "${key(k)}" must be positive, got 0`);
  if (numHeads % numKvHeads !== 0)
    throw new GgufError(
      `${g.file}: "${key('attention.head_count')}" ${numHeads} is not a multiple of "${key('attention.head_count_kv')}" ${numKvHeads}`,
    );
  const headDim = g.has(key('attention.key_length')) ? g.uint(key('attention.key_length')) : hiddenSize / numHeads;
  if (!Number.isInteger(headDim) || headDim === 0 || headDim % 2 !== 0)
    throw new GgufError(
      `${g.file}: head dimension ${headDim} (from "${key('attention.key_length')}" or embedding_length / head_count) must be an even integer`,
    );
  if (g.has(key('attention.value_length')) && g.uint(key('attention.value_length')) !== headDim)
    throw new GgufError(
      `${g.file}: metadata key "${key('attention.value_length')}" differs from key_length; not supported`,
    );
  const ropeDims = g.uint(key('rope.dimension_count'), headDim);
  if (ropeDims !== headDim)
    throw new GgufError(
      `${g.file}: metadata key "${key('rope.dimension_count')}" is ${ropeDims}; only full-head RoPE (${headDim}) is supported`,
    );
  if (g.has(key('expert_count')) && g.uint(key('expert_count')) > 0)
    throw new GgufError(
      `${g.file}: metadata key "${key('expert_count')}" is set: mixture-of-experts models are not supported`,
    );
  const embed = g.tensor(MODEL_TENSORS.embed.gguf);
  if (embed === undefined) throw new GgufError(`${g.file}: tensor "${MODEL_TENSORS.embed.gguf}" not found`);
  const vocabSize = g.has(key('vocab_size')) ? g.uint(key('vocab_size')) : (embed.dims[1] ?? 0);
  let ropeScaling: ModelConfig['ropeScaling'] = null;
  const scalingType = g.string(key('rope.scaling.type'), 'none');
  if (scalingType === 'linear') {
    const factor = g.float(key('rope.scaling.factor'));
    if (!(factor > 0))
      throw new GgufError(`${g.file}: metadata key "${key('rope.scaling.factor')}" must be positive, got ${factor}`);
    ropeScaling = { type: 'linear', factor };
  } else if (scalingType !== 'none') {
    throw new GgufError(
      `${g.file}: metadata key "${key('rope.scaling.type')}" is "${scalingType}"; supported: none, linear (llama3 scaling comes as the rope_freqs tensor)`,
    );
  }
  // llama3 scaling: convert_hf_to_gguf stores the per-frequency divisors as a tensor (read with the weights).
  if (g.tensor(MODEL_TENSORS.ropeFreqs.gguf) !== undefined) {
    if (ropeScaling !== null)
      throw new GgufError(`${g.file}: both "${key('rope.scaling.type')}" linear and a rope_freqs tensor; expected one`);
    ropeScaling = { type: 'factors', factors: new Array<number>(headDim / 2).fill(1) }; // read by the weights loader
  }
  const eos = g.has('tokenizer.ggml.eos_token_id') ? g.uint('tokenizer.ggml.eos_token_id') : undefined;
  const bos = g.has('tokenizer.ggml.bos_token_id') ? g.uint('tokenizer.ggml.bos_token_id') : undefined;
  const attentionBias = hasTensor(g, 'qBias');
  const config: ModelConfig = {
    modelType: arch,
    hiddenSize,
    intermediateSize: g.uint(key('feed_forward_length')),
    numLayers: g.uint(key('block_count')),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: g.float(key('attention.layer_norm_rms_epsilon')),
    ropeTheta: g.float(key('rope.freq_base'), 10000),
    ropeScaling,
    tieWordEmbeddings: g.tensor(MODEL_TENSORS.lmHead.gguf) === undefined,
    attentionBias,
    oProjBias: hasTensor(g, 'oBias'),
    mlpBias: hasTensor(g, 'gateBias'),
    qkNorm: hasTensor(g, 'qNorm'),
    maxPositionEmbeddings: g.uint(key('context_length')),
    contextLimit: 0, // below, from the scaling
    torchDtype: 'float32',
    bosTokenId: bos,
    eosTokenId: eos,
  };
  config.contextLimit = contextLimit(config.maxPositionEmbeddings, ropeScaling);
  for (const [k, v] of [
    ['feed_forward_length', config.intermediateSize],
    ['block_count', config.numLayers],
    ['context_length', config.maxPositionEmbeddings],
  ] as const)
    if (v === 0) throw new GgufError(`${g.file}: metadata key "${key(k)}" must be positive, got 0`);
  if (!(config.rmsNormEps > 0))
    throw new GgufError(
      `${g.file}: metadata key "${key('attention.layer_norm_rms_epsilon')}" must be positive, got ${config.rmsNormEps}`,
    );
  if (config.qkNorm && arch !== 'qwen3')
    throw new GgufError(`${g.file}: tensor "blk.0.attn_q_norm.weight" in a ${arch} model; only qwen3 has q/k norms`);
  if (arch === 'qwen2' && !attentionBias)
    throw new GgufError(`${g.file}: tensor "blk.0.attn_q.bias" not found; qwen2 models have q/k/v biases`);
  return config;
}

/** The stop tokens and BOS of a GGUF model (it has no generation_config.json; sampling defaults are the engine's). */
export function ggufGenerationConfig(g: GgufModel, config: ModelConfig): GenerationConfig {
  const eos = new Set<number>();
  for (const k of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id'])
    if (g.has(k)) eos.add(g.uint(k));
  if (g.has('tokenizer.ggml.tokens')) {
    const tokens = g.array<string>('tokenizer.ggml.tokens', [GGUF_VALUE.STRING], 'an array of strings');
    const types = g.has('tokenizer.ggml.token_type')
      ? g.array<number>('tokenizer.ggml.token_type', [GGUF_VALUE.INT32, GGUF_VALUE.UINT32], 'an array of integers')
      : null;
    // As llama.cpp: control tokens with a known end-of-turn text end generation too (Qwen's <|endoftext|> and <|im_end|>).
    for (const text of END_TOKENS) {
      const id = tokens.indexOf(text);
      if (id >= 0 && (types === null || types[id] === 3)) eos.add(id);
    }
  }
  const order = [...eos];
  if (config.eosTokenId !== undefined)
    order.sort((a, b) => Number(b === config.eosTokenId) - Number(a === config.eosTokenId));
  return {
    eosTokenIds: order,
    bosTokenId: config.bosTokenId,
    padTokenId: g.has('tokenizer.ggml.padding_token_id') ? g.uint('tokenizer.ggml.padding_token_id') : undefined,
  };
}
