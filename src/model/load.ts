// loadModel: a Hugging Face Qwen2 / Qwen3 / Llama model directory -> a ready Qwen2Model with its worker threads.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { closestName } from '../sampler/params.js';
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
  /** Scan every weight for NaN/Inf while loading (llama.cpp's --check-tensors); an error names the tensor. Default false. */
  checkTensors?: boolean;
}

export const WEIGHT_FORMATS: readonly WeightFormat[] = ['f32', 'bf16', 'q8_0', 'q4_0'];

// Chosen by measurement (README, "Weight formats and quality"): f32 is exact and, of the formats
// with >= 99% top-1 agreement on the trained stories260K (bf16 99.4%, q8_0 98.4%, q4_0 85.8%), the
// fastest per token in JS (bf16 widens in the inner loop; q8_0 is no faster than f32 per token).
// q4_0 is the fastest format but departs from f32's greedy text at once on a trained model.
export const DEFAULT_WEIGHTS: WeightFormat = 'f32';

function checkInt(name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw new RangeError(`loadModel: option ${name} must be an integer from ${min} to ${max}, got ${v}`);
  }
}

// Every load option, so that a misspelt one is an error rather than silently ignored.
const LOAD_OPTIONS: Record<keyof LoadOptions, true> = {
  weights: true,
  threads: true,
  maxSequences: true,
  contextLength: true,
  kvCacheBytes: true,
  maxBatchTokens: true,
  checkTensors: true,
};

export async function loadModel(dir: string, options: LoadOptions = {}): Promise<Qwen2Model> {
  for (const key of Object.keys(options)) {
    if (!(key in LOAD_OPTIONS))
      throw new TypeError(
        `loadModel: unknown option ${JSON.stringify(key)}; did you mean ${JSON.stringify(closestName(key, Object.keys(LOAD_OPTIONS)))}?`,
      );
  }
  if (!fs.existsSync(dir)) throw new Error(`loadModel: model directory ${dir} does not exist`);
  if (!fs.statSync(dir).isDirectory())
    throw new Error(`loadModel: ${dir} is a file; expected the model directory (config.json, *.safetensors, ...)`);
  const format = options.weights ?? DEFAULT_WEIGHTS;
  if (!WEIGHT_FORMATS.includes(format))
    throw new RangeError(
      `loadModel: option weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`,
    );
  checkInt('threads', options.threads, 1, 64);
  checkInt('maxSequences', options.maxSequences, 1, 4096);
  checkInt('maxBatchTokens', options.maxBatchTokens, 1, 4096);
  checkInt('kvCacheBytes', options.kvCacheBytes, 1);
  if (options.checkTensors !== undefined && typeof options.checkTensors !== 'boolean')
    throw new TypeError(
      `loadModel: option checkTensors must be true or false, got ${JSON.stringify(options.checkTensors)}`,
    );
  const config = loadModelConfig(dir);
  checkInt('contextLength', options.contextLength, 1, config.maxPositionEmbeddings);
  const generationConfig = loadGenerationConfig(dir, config);
  const threads = options.threads ?? os.availableParallelism();
  const store = TensorStore.open(dir);
  let weights;
  try {
    // The vectors (norms, biases) are always scanned: a few KB per layer, and a NaN there spoils every token.
    store.checkValues(options.checkTensors ? undefined : (info) => info.shape.length <= 1);
    weights = await loadWeights(store, config, format, { threads });
    // As vLLM: a tied checkpoint may still carry lm_head.weight, and old ones carry RoPE's inv_freq buffers.
    store.checkAllUsed(
      (name) => name.endsWith('.rotary_emb.inv_freq') || (config.tieWordEmbeddings && name === 'lm_head.weight'),
    );
  } finally {
    store.close();
  }
  const model = await Qwen2Model.create(config, generationConfig, weights, {
    maxBatchTokens: options.maxBatchTokens ?? 64,
    maxSequences: options.maxSequences ?? 8,
    contextLength: options.contextLength ?? Math.min(config.maxPositionEmbeddings, 32768),
    kvCacheBytes: options.kvCacheBytes ?? 1 << 30,
    threads,
  });
  try {
    await checkArithmetic(model, dir);
  } catch (e) {
    await model.close();
    throw e;
  }
  return model;
}

/**
 * One token through the model, at load. Finite weights can still overflow float32 in the layer's
 * products (3e38 in a projection), which no scan of the values shows; a NaN or Inf in a matrix that
 * was not scanned (checkTensors off) shows here too. Either fails the load naming the first layer
 * whose output is not finite, instead of every request failing with NaN logits.
 */
async function checkArithmetic(model: Qwen2Model, dir: string): Promise<void> {
  const hidden = model.config.hiddenSize;
  let bad: { layer: number; index: number; value: number } | null = null;
  model.onLayerOutput = (layer, x, rows) => {
    if (bad !== null) return;
    for (let i = 0; i < rows * hidden; i++) {
      if (!Number.isFinite(x[i])) {
        bad = { layer, index: i, value: x[i] };
        return;
      }
    }
  };
  let logits: Float32Array;
  try {
    logits = await model.forward([0], { seq: 0, startPos: 0 });
  } finally {
    model.onLayerOutput = null;
    model.resetCache(0);
  }
  const found = bad as { layer: number; index: number; value: number } | null;
  if (found !== null)
    throw new Error(
      `${dir}: the output of layer ${found.layer} (model.layers.${found.layer}.*) holds ${found.value} (element ${found.index % hidden}) for token 0: ` +
        'a weight of that layer is NaN or Inf, or so large that the arithmetic overflows float32. ' +
        'Load with checkTensors (--check-tensors) to name a NaN or Inf weight; otherwise the checkpoint holds values far out of range',
    );
  const at = logits.findIndex((v) => !Number.isFinite(v));
  if (at >= 0)
    throw new Error(
      `${dir}: the logits hold ${logits[at]} (token ${at}) for token 0 though every layer's output is finite: ` +
        'model.norm.weight or the output head (lm_head.weight, or the tied embeddings) holds NaN, Inf or values far out of range',
    );
}
