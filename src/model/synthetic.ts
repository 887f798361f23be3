// Synthetic Qwen2.5 / Qwen3 / Llama models: random weights with the real shapes, written in the Hugging Face layout
// (config.json, generation_config.json, model.safetensors or shards + index, tokenizer files), so that
// every code path that reads a real model directory reads these unchanged.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assetPath } from '../package-root.js';
import { f32BitsToBf16, f32ToF16 } from '../tensor/dtype.js';
import { parseModelConfig } from './config.js';
import { writeSafetensors, type TensorSpec, type WritableDType } from './safetensors-writer.js';
import type { PoolingMode } from './pooling.js';
import { hfLayerName, LAYER_TENSORS, MODEL_TENSORS } from './tensor-names.js';

export interface SyntheticPreset {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  /** Default "qwen2". */
  model_type?: 'qwen2' | 'qwen3' | 'llama';
  /** Default hidden_size / num_attention_heads. */
  head_dim?: number;
  /** Default 1e6 (Qwen). */
  rope_theta?: number;
  rope_scaling?: Record<string, number | string>;
  /** llama / qwen3: biases on q, k, v and o. Default false. */
  attention_bias?: boolean;
  /** llama: biases on gate, up, down. Default false. */
  mlp_bias?: boolean;
}

// The real Qwen2.5 shapes; `tiny` keeps the real vocabulary so the real tokenizer applies.
export type SyntheticPresetName = 'tiny' | 'tiny-qwen3' | 'tiny-llama3' | 'qwen2.5-0.5b' | 'qwen2.5-1.5b';

export const PRESETS: Record<SyntheticPresetName, SyntheticPreset> = {
  tiny: {
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
  },
  // Qwen3 dense: head_dim 32 != 64/4, so q_proj is [128, 64]; q_norm / k_norm; no biases.
  'tiny-qwen3': {
    model_type: 'qwen3',
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 32,
    vocab_size: 151936,
    max_position_embeddings: 40960,
    tie_word_embeddings: true,
    rope_theta: 1000000,
  },
  // Llama 3.x with llama3 rope scaling. original_max_position_embeddings 64 (8192 in Llama 3) puts
  // the wavelength cut-offs (16 and 64) inside this head_dim 16's range: of the 8 frequencies, one
  // stays, one is blended and six are divided by 8, so the scaling changes the logits.
  'tiny-llama3': {
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 64,
    },
  },
  'qwen2.5-0.5b': {
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
  },
  'qwen2.5-1.5b': {
    hidden_size: 1536,
    intermediate_size: 8960,
    num_hidden_layers: 28,
    num_attention_heads: 12,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
  },
};

/** Whether `name` is one of PRESETS' names. */
export function isSyntheticPreset(name: string): name is SyntheticPresetName {
  return Object.hasOwn(PRESETS, name);
}

export interface SyntheticOptions {
  preset: SyntheticPresetName;
  seed?: number;
  dtype?: 'bf16' | 'f16' | 'f32';
  /** Number of safetensors shards; 1 writes a single model.safetensors. */
  shards?: number;
  /** Override preset fields, e.g. { tie_word_embeddings: false }. */
  overrides?: Partial<SyntheticPreset>;
  /** Called after each tensor written: bytes of weights written so far and in all. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /**
   * An embedding model laid out as Qwen3-Embedding ships: architectures ["Qwen3Model"] (the family's
   * bare decoder), no lm_head, tensor names without `model.`, sentence-transformers files
   * (modules.json, 1_Pooling/config.json, 2_Normalize when `normalize`, config_sentence_transformers.json
   * with `prompts`), and a tokenizer.json whose TemplateProcessing appends <|endoftext|>.
   */
  embedding?: { pooling: PoolingMode; normalize: boolean; prompts?: Record<string, string> };
}

// mulberry32: tiny, fast, and identical on every platform (pure 32-bit integer math).
export function mulberry32(seed: number): () => number {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) | 0;
    let r = Math.imul(t ^ (t >>> 15), t | 1);
    r ^= r + Math.imul(r ^ (r >>> 7), r | 61);
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** How each tensor is drawn: uniform in center ± halfWidth. */
function distribution(name: string, shape: number[], p: SyntheticPreset): { center: number; halfWidth: number } {
  const sqrt3 = Math.sqrt(3);
  if (name.endsWith('norm.weight')) return { center: 1, halfWidth: 0.2 };
  if (name.endsWith('.bias')) return { center: 0, halfWidth: 0.1 * sqrt3 };
  // Embedding/lm_head std 2.5/sqrt(hidden): after the final RMSNorm the logits then have std ~2.5,
  // peaked enough that sampling is not uniform over 152k tokens.
  if (name.includes('embed_tokens') || name.startsWith('lm_head'))
    return { center: 0, halfWidth: (2.5 / Math.sqrt(p.hidden_size)) * sqrt3 };
  // Projections keep activations at unit scale: std 1/sqrt(fan_in).
  return { center: 0, halfWidth: sqrt3 / Math.sqrt(shape[1]) };
}

export function tensorSpecs(p: SyntheticPreset, dtype: WritableDType): TensorSpec[] {
  // The tensors a loader of this config expects: one table (tensor-names.ts) for both.
  const c = parseModelConfig({ ...familyConfig(p), ...sharedConfig(p, dtype) });
  const specs: TensorSpec[] = [{ name: MODEL_TENSORS.embed.hf, dtype, shape: [c.vocabSize, c.hiddenSize] }];
  for (let l = 0; l < c.numLayers; l++)
    for (const t of LAYER_TENSORS) if (t.present(c)) specs.push({ name: hfLayerName(l, t), dtype, shape: t.shape(c) });
  specs.push({ name: MODEL_TENSORS.finalNorm.hf, dtype, shape: [c.hiddenSize] });
  if (!c.tieWordEmbeddings) specs.push({ name: MODEL_TENSORS.lmHead.hf, dtype, shape: [c.vocabSize, c.hiddenSize] });
  return specs;
}

/**
 * Fill `bytes` with the tensor's values. Values are always drawn, then rounded to bf16, so the same
 * seed gives the same weights whatever the storage dtype (bf16 values are exact in f32 and, at these
 * magnitudes, in f16).
 */
function fillTensor(spec: TensorSpec, bytes: Uint8Array, p: SyntheticPreset, seed: number): void {
  const { center, halfWidth } = distribution(spec.name, spec.shape, p);
  const next = mulberry32(hashName(spec.name) ^ Math.imul(seed + 1, 0x9e3779b1));
  const n = bytes.byteLength / (spec.dtype === 'F32' ? 4 : 2);
  const chunk = new Float32Array(Math.min(n, 1 << 16));
  const bits = new Uint32Array(chunk.buffer);
  const out16 = new Uint16Array(bytes.buffer, bytes.byteOffset, spec.dtype === 'F32' ? 0 : n);
  const out32 = new Uint32Array(bytes.buffer, bytes.byteOffset, spec.dtype === 'F32' ? n : 0);
  for (let start = 0; start < n; start += chunk.length) {
    const len = Math.min(chunk.length, n - start);
    for (let i = 0; i < len; i++) chunk[i] = center + (2 * next() - 1) * halfWidth;
    for (let i = 0; i < len; i++) {
      const u = bits[i];
      const b = f32BitsToBf16(u);
      if (spec.dtype === 'BF16') out16[start + i] = b;
      else if (spec.dtype === 'F32') out32[start + i] = b << 16;
      else out16[start + i] = f32BitsToF16(b << 16);
    }
  }
}

const cvtF = new Float32Array(1);
const cvtU = new Uint32Array(cvtF.buffer);
function f32BitsToF16(u: number): number {
  cvtU[0] = u;
  return f32ToF16(cvtF[0]);
}

/** config.json fields common to the three families. */
function sharedConfig(p: SyntheticPreset, dtype: WritableDType): Record<string, unknown> {
  return {
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    hidden_act: 'silu',
    hidden_size: p.hidden_size,
    initializer_range: 0.02,
    intermediate_size: p.intermediate_size,
    max_position_embeddings: p.max_position_embeddings,
    num_attention_heads: p.num_attention_heads,
    num_hidden_layers: p.num_hidden_layers,
    num_key_value_heads: p.num_key_value_heads,
    rms_norm_eps: 1e-6,
    rope_theta: p.rope_theta ?? 1000000.0,
    tie_word_embeddings: p.tie_word_embeddings,
    torch_dtype: { BF16: 'bfloat16', F16: 'float16', F32: 'float32' }[dtype],
    use_cache: true,
    vocab_size: p.vocab_size,
  };
}

/** The fields of config.json that tell the families apart, as their HF checkpoints write them. */
function familyConfig(p: SyntheticPreset): Record<string, unknown> {
  const family = p.model_type ?? 'qwen2';
  if (family === 'llama')
    return {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      attention_bias: p.attention_bias ?? false,
      mlp_bias: p.mlp_bias ?? false,
      head_dim: p.head_dim ?? p.hidden_size / p.num_attention_heads,
      pretraining_tp: 1,
      rope_scaling: p.rope_scaling ?? null,
      transformers_version: '4.45.0',
    };
  if (family === 'qwen3')
    return {
      architectures: ['Qwen3ForCausalLM'],
      model_type: 'qwen3',
      attention_bias: p.attention_bias ?? false,
      head_dim: p.head_dim ?? p.hidden_size / p.num_attention_heads,
      max_window_layers: p.num_hidden_layers,
      rope_scaling: p.rope_scaling ?? null,
      sliding_window: null,
      use_sliding_window: false,
      transformers_version: '4.51.0',
    };
  return {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    // Qwen2.5 enables yarn for long contexts by adding rope_scaling to config.json.
    ...(p.rope_scaling ? { rope_scaling: p.rope_scaling } : {}),
    max_window_layers: p.num_hidden_layers,
    sliding_window: p.max_position_embeddings,
    use_sliding_window: false,
    transformers_version: '4.43.1',
  };
}

export function writeSyntheticModel(outDir: string, opts: SyntheticOptions): void {
  const base = PRESETS[opts.preset];
  if (!base)
    throw new Error(`make-model: unknown preset "${opts.preset}" (expected one of ${Object.keys(PRESETS).join(', ')})`);
  const p = { ...base, ...opts.overrides };
  const seed = opts.seed ?? 0;
  const dtype: WritableDType = opts.dtype === 'f32' ? 'F32' : opts.dtype === 'f16' ? 'F16' : 'BF16';
  const shards = opts.shards ?? 1;
  fs.mkdirSync(outDir, { recursive: true });

  const embedding = opts.embedding;
  const family = familyConfig(p);
  if (embedding) {
    family.architectures = [(family.architectures as string[])[0].replace(/ForCausalLM$/, 'Model')];
    p.tie_word_embeddings = false;
  }
  const config = {
    ...family,
    ...sharedConfig(p, dtype),
    qwen_ts_synthetic: {
      preset: opts.preset,
      seed,
      ...(opts.overrides ? { overrides: opts.overrides } : {}),
      ...(opts.embedding ? { embedding: opts.embedding } : {}),
      note: 'random weights: the text this model writes is meaningless',
    },
  };
  fs.writeFileSync(path.join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const generationConfig = {
    bos_token_id: 151643,
    pad_token_id: 151643,
    do_sample: true,
    eos_token_id: [151645, 151643],
    repetition_penalty: 1.1,
    temperature: 0.7,
    top_p: 0.8,
    top_k: 20,
    transformers_version: '4.37.0',
  };
  fs.writeFileSync(path.join(outDir, 'generation_config.json'), JSON.stringify(generationConfig, null, 2) + '\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    fs.copyFileSync(assetPath('qwen2.5-tokenizer', f), path.join(outDir, f));
  }

  if (embedding) writeEmbeddingFiles(outDir, embedding);
  let specs = tensorSpecs(p, dtype);
  if (embedding)
    specs = specs
      .filter((t) => t.name !== MODEL_TENSORS.lmHead.hf)
      .map((t) => ({ ...t, name: t.name.replace(/^model\./, '') }));
  const totalBytes = specs.reduce((sum, t) => sum + t.shape.reduce((x, y) => x * y, 1) * (dtype === 'F32' ? 4 : 2), 0);
  let doneBytes = 0;
  const fill = (s: TensorSpec, bytes: Uint8Array) => {
    fillTensor(s, bytes, p, seed);
    doneBytes += bytes.length;
    opts.onProgress?.(doneBytes, totalBytes);
  };
  for (const f of fs.readdirSync(outDir))
    if (f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json')) fs.rmSync(path.join(outDir, f));
  if (shards <= 1) {
    writeSafetensors(path.join(outDir, 'model.safetensors'), specs, fill);
    return;
  }
  // Shards split the tensor list into contiguous groups, as HF's save_pretrained does by size.
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(specs.length / shards);
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const group = specs.slice(s * per, (s + 1) * per);
    for (const t of group) weightMap[t.name] = file;
    writeSafetensors(path.join(outDir, file), group, fill);
  }
  fs.writeFileSync(
    path.join(outDir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2) + '\n',
  );
}

const POOLING_FLAG: Record<PoolingMode, string> = {
  last: 'pooling_mode_lasttoken',
  mean: 'pooling_mode_mean_tokens',
  cls: 'pooling_mode_cls_token',
};

/** The sentence-transformers files of an embedding model, and its tokenizer appending <|endoftext|>. */
function writeEmbeddingFiles(outDir: string, e: NonNullable<SyntheticOptions['embedding']>): void {
  const write = (file: string, json: unknown) => {
    fs.mkdirSync(path.dirname(path.join(outDir, file)), { recursive: true });
    fs.writeFileSync(path.join(outDir, file), JSON.stringify(json, null, 2) + '\n');
  };
  const modules = [
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
  ];
  if (e.normalize)
    modules.push({ idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.models.Normalize' });
  write('modules.json', modules);
  const pooling: Record<string, unknown> = { word_embedding_dimension: 0 };
  for (const flag of Object.values(POOLING_FLAG)) pooling[flag] = false;
  pooling[POOLING_FLAG[e.pooling]] = true;
  pooling.include_prompt = true;
  write('1_Pooling/config.json', pooling);
  if (e.normalize) fs.mkdirSync(path.join(outDir, '2_Normalize'), { recursive: true });
  write('config_sentence_transformers.json', {
    prompts: e.prompts ?? {},
    default_prompt_name: null,
    similarity_fn_name: 'cosine',
  });
  const tokenizer = JSON.parse(fs.readFileSync(path.join(outDir, 'tokenizer.json'), 'utf8'));
  // Qwen3-Embedding's post-processor: ByteLevel, then <|endoftext|> after every text.
  tokenizer.post_processor = {
    type: 'Sequence',
    processors: [
      tokenizer.post_processor,
      {
        type: 'TemplateProcessing',
        single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|endoftext|>', type_id: 0 } }],
        pair: [
          { Sequence: { id: 'A', type_id: 0 } },
          { SpecialToken: { id: '<|endoftext|>', type_id: 0 } },
          { Sequence: { id: 'B', type_id: 1 } },
          { SpecialToken: { id: '<|endoftext|>', type_id: 1 } },
        ],
        special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [151643], tokens: ['<|endoftext|>'] } },
      },
    ],
  };
  fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(tokenizer));
}
