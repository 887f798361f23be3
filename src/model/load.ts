// loadModel: a Hugging Face Qwen2 / Qwen3 / Llama model directory -> a ready Qwen2Model with its worker threads.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { WeightFormat } from '../tensor/matrix.js';
import { loadGenerationConfig, loadModelConfig } from './config.js';
import { Qwen2Model } from './qwen2.js';
import { TensorStore } from './safetensors.js';
import { loadWeights } from './weights.js';

export interface LoadOptions {
  /**
   * Weight format in memory, converted or quantized while loading. Default DEFAULT_WEIGHTS: the
   * fastest format whose top-1 agreement with f32 is at least 99% (bench/quality.ts).
   */
  weights?: WeightFormat;
  /** Threads for the kernels, the calling thread included. Default os.availableParallelism(). */
  threads?: number;
  /** Sequences that can hold a KV cache at once (batched decode, concurrent requests). Default 8. */
  maxSequences?: number;
  /** Longest sequence in tokens. Default max_position_embeddings, at most 32768. */
  contextLength?: number;
  /** KV cache budget in bytes, shared by all sequences (like VLLM_CPU_KVCACHE_SPACE). Default 1 GiB. */
  kvCacheBytes?: number;
  /** Tokens per forward chunk: prefill runs in chunks of this many rows. Default 64. */
  maxBatchTokens?: number;
}

export const WEIGHT_FORMATS: readonly WeightFormat[] = ['f32', 'bf16', 'q8_0', 'q4_0'];

// f32 and bf16 are exact for bf16 checkpoints and f32 decodes faster (no widening in the inner
// loop); q8_0 and q4_0 agree on only 94% and 26% of top-1 tokens on the synthetic 0.5B (README).
export const DEFAULT_WEIGHTS: WeightFormat = 'f32';

function checkInt(name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw new RangeError(`loadModel: option ${name} must be an integer from ${min} to ${max}, got ${v}`);
  }
}

export async function loadModel(dir: string, options: LoadOptions = {}): Promise<Qwen2Model> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new Error(`loadModel: model directory ${dir} does not exist`);
  const format = options.weights ?? DEFAULT_WEIGHTS;
  if (!WEIGHT_FORMATS.includes(format))
    throw new RangeError(
      `loadModel: option weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`,
    );
  checkInt('threads', options.threads, 1, 64);
  checkInt('maxSequences', options.maxSequences, 1, 4096);
  checkInt('maxBatchTokens', options.maxBatchTokens, 1, 4096);
  checkInt('kvCacheBytes', options.kvCacheBytes, 1);
  const config = loadModelConfig(dir);
  checkInt('contextLength', options.contextLength, 1, config.maxPositionEmbeddings);
  const generationConfig = loadGenerationConfig(dir, config);
  const store = TensorStore.open(dir);
  let weights;
  try {
    weights = loadWeights(store, config, format);
  } finally {
    store.close();
  }
  return Qwen2Model.create(config, generationConfig, weights, {
    maxBatchTokens: options.maxBatchTokens ?? 64,
    maxSequences: options.maxSequences ?? 8,
    contextLength: options.contextLength ?? Math.min(config.maxPositionEmbeddings, 32768),
    kvCacheBytes: options.kvCacheBytes ?? 1 << 30,
    threads: options.threads ?? os.availableParallelism(),
  });
}
