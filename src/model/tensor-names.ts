// One table of the model's tensors: the field that holds each one, its Hugging Face name, its
// GGUF name (llama.cpp's tensor naming), its shape and which families have it. The safetensors
// loader, the GGUF loader, the GGUF writer and the synthetic model builder all read this table, so
// a new tensor or a new family flag is one row here.
import type { ModelConfig } from './config.js';

/** The LayerWeights fields that are tensors of one layer. */
export type LayerTensorField =
  | 'inputNorm'
  | 'qProj'
  | 'qBias'
  | 'kProj'
  | 'kBias'
  | 'vProj'
  | 'vBias'
  | 'qNorm'
  | 'kNorm'
  | 'oProj'
  | 'oBias'
  | 'postAttentionNorm'
  | 'gateProj'
  | 'gateBias'
  | 'upProj'
  | 'upBias'
  | 'downProj'
  | 'downBias';

export interface LayerTensor {
  field: LayerTensorField;
  /** Name in a HF checkpoint after `model.layers.{l}.` */
  hf: string;
  /** Name in a GGUF file after `blk.{l}.` */
  gguf: string;
  /** [rows, cols] of a matrix (PyTorch Linear layout), [n] of a vector. */
  shape(c: ModelConfig): number[];
  /** Whether the family (config) has it; a tensor of a family that has it is required. */
  present(c: ModelConfig): boolean;
  /** llama's q/k rows: convert_hf_to_gguf interleaves the two RoPE halves of each head. */
  ropePermuted?: 'q' | 'k';
}

const qDim = (c: ModelConfig) => c.numHeads * c.headDim;
const kvDim = (c: ModelConfig) => c.numKvHeads * c.headDim;
const always = () => true;

export const LAYER_TENSORS: readonly LayerTensor[] = [
  {
    field: 'inputNorm',
    hf: 'input_layernorm.weight',
    gguf: 'attn_norm.weight',
    shape: (c) => [c.hiddenSize],
    present: always,
  },
  {
    field: 'qProj',
    hf: 'self_attn.q_proj.weight',
    gguf: 'attn_q.weight',
    shape: (c) => [qDim(c), c.hiddenSize],
    present: always,
    ropePermuted: 'q',
  },
  {
    field: 'qBias',
    hf: 'self_attn.q_proj.bias',
    gguf: 'attn_q.bias',
    shape: (c) => [qDim(c)],
    present: (c) => c.attentionBias,
    ropePermuted: 'q',
  },
  {
    field: 'kProj',
    hf: 'self_attn.k_proj.weight',
    gguf: 'attn_k.weight',
    shape: (c) => [kvDim(c), c.hiddenSize],
    present: always,
    ropePermuted: 'k',
  },
  {
    field: 'kBias',
    hf: 'self_attn.k_proj.bias',
    gguf: 'attn_k.bias',
    shape: (c) => [kvDim(c)],
    present: (c) => c.attentionBias,
    ropePermuted: 'k',
  },
  {
    field: 'vProj',
    hf: 'self_attn.v_proj.weight',
    gguf: 'attn_v.weight',
    shape: (c) => [kvDim(c), c.hiddenSize],
    present: always,
  },
  {
    field: 'vBias',
    hf: 'self_attn.v_proj.bias',
    gguf: 'attn_v.bias',
    shape: (c) => [kvDim(c)],
    present: (c) => c.attentionBias,
  },
  {
    field: 'qNorm',
    hf: 'self_attn.q_norm.weight',
    gguf: 'attn_q_norm.weight',
    shape: (c) => [c.headDim],
    present: (c) => c.qkNorm,
  },
  {
    field: 'kNorm',
    hf: 'self_attn.k_norm.weight',
    gguf: 'attn_k_norm.weight',
    shape: (c) => [c.headDim],
    present: (c) => c.qkNorm,
  },
  {
    field: 'oProj',
    hf: 'self_attn.o_proj.weight',
    gguf: 'attn_output.weight',
    shape: (c) => [c.hiddenSize, qDim(c)],
    present: always,
  },
  {
    field: 'oBias',
    hf: 'self_attn.o_proj.bias',
    gguf: 'attn_output.bias',
    shape: (c) => [c.hiddenSize],
    present: (c) => c.oProjBias,
  },
  {
    field: 'postAttentionNorm',
    hf: 'post_attention_layernorm.weight',
    gguf: 'ffn_norm.weight',
    shape: (c) => [c.hiddenSize],
    present: always,
  },
  {
    field: 'gateProj',
    hf: 'mlp.gate_proj.weight',
    gguf: 'ffn_gate.weight',
    shape: (c) => [c.intermediateSize, c.hiddenSize],
    present: always,
  },
  {
    field: 'gateBias',
    hf: 'mlp.gate_proj.bias',
    gguf: 'ffn_gate.bias',
    shape: (c) => [c.intermediateSize],
    present: (c) => c.mlpBias,
  },
  {
    field: 'upProj',
    hf: 'mlp.up_proj.weight',
    gguf: 'ffn_up.weight',
    shape: (c) => [c.intermediateSize, c.hiddenSize],
    present: always,
  },
  {
    field: 'upBias',
    hf: 'mlp.up_proj.bias',
    gguf: 'ffn_up.bias',
    shape: (c) => [c.intermediateSize],
    present: (c) => c.mlpBias,
  },
  {
    field: 'downProj',
    hf: 'mlp.down_proj.weight',
    gguf: 'ffn_down.weight',
    shape: (c) => [c.hiddenSize, c.intermediateSize],
    present: always,
  },
  {
    field: 'downBias',
    hf: 'mlp.down_proj.bias',
    gguf: 'ffn_down.bias',
    shape: (c) => [c.hiddenSize],
    present: (c) => c.mlpBias,
  },
];

/** The tensors outside the layers. */
export const MODEL_TENSORS = {
  embed: { hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight' },
  finalNorm: { hf: 'model.norm.weight', gguf: 'output_norm.weight' },
  lmHead: { hf: 'lm_head.weight', gguf: 'output.weight' },
  /** llama3 rope scaling in GGUF: the per-frequency divisors, [headDim/2]. */
  ropeFreqs: { hf: null, gguf: 'rope_freqs.weight' },
} as const;

export const hfLayerName = (layer: number, t: LayerTensor) => `model.layers.${layer}.${t.hf}`;

/**
 * A checkpoint saved from the bare decoder (transformers' AutoModel, sentence-transformers:
 * Qwen3-Embedding) names its tensors without the `model.` prefix (`embed_tokens.weight`,
 * `layers.0.self_attn.q_proj.weight`, `norm.weight`). Returns the names the loader looks up (with
 * the prefix) for such a checkpoint, or null when the names already have it.
 */
export function prefixedHfNames(names: Iterable<string>): Map<string, string> | null {
  const all = [...names];
  if (all.includes(MODEL_TENSORS.embed.hf) || !all.includes('embed_tokens.weight')) return null;
  return new Map(all.map((n) => [n, n === MODEL_TENSORS.lmHead.hf || n.startsWith('model.') ? n : `model.${n}`]));
}
export const ggufLayerName = (layer: number, t: LayerTensor) => `blk.${layer}.${t.gguf}`;

/**
 * The families this engine runs: HF model_type = GGUF general.architecture. `ropeInterleavedInGguf`:
 * convert_hf_to_gguf permutes llama's q/k rows so that ggml's adjacent-pair RoPE matches HF's
 * rotate-half; qwen2/qwen3 use ggml's NEOX RoPE and keep HF's order.
 */
export const FAMILIES = {
  qwen2: { ropeInterleavedInGguf: false },
  qwen3: { ropeInterleavedInGguf: false },
  llama: { ropeInterleavedInGguf: true },
} as const;

export type Family = keyof typeof FAMILIES;
export const isFamily = (s: string): s is Family => Object.prototype.hasOwnProperty.call(FAMILIES, s);
