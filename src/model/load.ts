// loadModel: a Hugging Face Qwen2 / Qwen3 / Llama model directory -> a ready Qwen2Model with its worker threads.
import { pathKind } from '../platform/files.js';
import { ProgressLine, type LoadProgress } from '../platform/progress.js';
import { defaultThreads, isGgufPath, openGgufModel, resolveModel, stderrIsTerminal } from '../platform/runtime.js';
import { closestName } from '../sampler/params.js';
import type { WeightFormat } from '../tensor/matrix.js';
import {
  loadGenerationConfig,
  loadModelConfig,
  matmulWeightsPerToken,
  type GenerationConfig,
  type ModelConfig,
} from './config.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from './kv-cache.js';
import { Qwen2Model } from './qwen2.js';
import { TensorStore } from './safetensors.js';
import { loadWeights, type ModelWeights } from './weights.js';
import type { ResolveOptions } from './sources/index.js';

export interface LoadOptions {
  /**
   * Weight format in memory, converted or quantized while loading. Default DEFAULT_WEIGHTS: the
   * fastest format whose top-1 agreement with f32 is at least 99% (bench/quality.ts).
   */
  weights?: WeightFormat;
  /**
   * Threads for the kernels, the calling thread included. Default os.availableParallelism(), or 1
   * for a model under 4M multiply-adds per token (the bundled stories260K).
   */
  threads?: number;
  /** Sequences that can hold a KV cache at once (batched decode, concurrent requests). Default 8. */
  maxSequences?: number;
  /**
   * Longest sequence in tokens, at most the model's context limit (max_position_embeddings, times
   * the rope_scaling factor for yarn / dynamic / linear). Default that limit, at most 32768.
   */
  contextLength?: number;
  /** KV cache budget in bytes, shared by all sequences (like VLLM_CPU_KVCACHE_SPACE). Default 1 GiB. */
  kvCacheBytes?: number;
  /**
   * How the KV cache stores keys and values (vLLM's kv_cache_dtype): 'f32' (exact), 'bf16' (half
   * the memory) or 'q8_0' (int8 with an f16 scale per 32 values, about a quarter). Default f32.
   */
  kvCacheDtype?: KvCacheDtype;
  /** Tokens per forward chunk: prefill runs in chunks of this many rows. Default 64. */
  maxBatchTokens?: number;
  /** Scan every weight for NaN/Inf while loading (llama.cpp's --check-tensors); an error names the tensor. Default false. */
  checkTensors?: boolean;
  /**
   * Called as the weights load (stage "weights", bytes of the files), at most every 100 ms. Default:
   * a progress line on stderr when it is a terminal and the load takes over a second.
   */
  onProgress?: (progress: LoadProgress) => void;
  /** How a model name is found or fetched: revision, caches, hub token, offline, download progress (src/model/sources). */
  source?: ResolveOptions;
}

export const WEIGHT_FORMATS: readonly WeightFormat[] = [
  'f32',
  'bf16',
  'q8_0',
  'q4_0',
  'q4_k',
  'q5_k',
  'q6_k',
  'q4_k_m',
];

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
  kvCacheDtype: true,
  maxBatchTokens: true,
  checkTensors: true,
  onProgress: true,
  source: true,
};

/**
 * Load a model: `model` is a folder, or a name resolveModel finds (a hub name Org/Name in the
 * Hugging Face cache or downloaded, an Ollama name:tag, a hub cache root).
 */
export async function loadModel(model: string, options: LoadOptions = {}): Promise<Qwen2Model> {
  for (const key of Object.keys(options)) {
    if (!(key in LOAD_OPTIONS))
      throw new TypeError(
        `loadModel: unknown option ${JSON.stringify(key)}; did you mean ${JSON.stringify(closestName(key, Object.keys(LOAD_OPTIONS)))}?`,
      );
  }
  const dir = await resolveModel(model, options.source);
  if (pathKind(dir) === 'missing')
    throw new Error(`loadModel: ${dir} does not exist (expected a model folder or a .gguf file)`);
  if (isGgufPath(dir)) return loadGgufModel(dir, options);
  if (pathKind(dir) !== 'directory')
    throw new Error(`loadModel: ${dir} is a file; expected the model directory (config.json, *.safetensors, ...)`);
  const format = options.weights ?? DEFAULT_WEIGHTS;
  checkOptions(options);
  const config = loadModelConfig(dir);
  checkInt('contextLength', options.contextLength, 1, config.contextLimit);
  const generationConfig = loadGenerationConfig(dir, config);
  const threads = options.threads ?? defaultThreads();
  const store = TensorStore.open(dir);
  let weights;
  try {
    // The vectors (norms, biases) are always scanned: a few KB per layer, and a NaN there spoils every token.
    store.checkValues(options.checkTensors ? undefined : (info) => info.shape.length <= 1);
    const t0 = performance.now();
    const line = options.onProgress || !stderrIsTerminal() ? null : new ProgressLine('loading weights');
    const onProgress =
      options.onProgress ??
      ((p: LoadProgress) => (p.doneBytes < p.totalBytes ? line?.update(p.doneBytes, p.totalBytes) : line?.end()));
    try {
      weights = await loadWeights(store, config, format, {
        threads,
        onProgress: (doneBytes, totalBytes) =>
          onProgress({ stage: 'weights', doneBytes, totalBytes, seconds: (performance.now() - t0) / 1000 }),
      });
    } finally {
      line?.end();
    }
    // As vLLM: a tied checkpoint may still carry lm_head.weight, and old ones carry RoPE's inv_freq buffers.
    store.checkAllUsed(
      (name) => name.endsWith('.rotary_emb.inv_freq') || (config.tieWordEmbeddings && name === 'lm_head.weight'),
    );
  } finally {
    store.close();
  }
  return createModel(config, generationConfig, weights, options, dir);
}

/**
 * A GGUF file (a split model by its first file): config, tokens and weights from the file. Its
 * quantized tensors keep their types; `weights` converts only its float tensors.
 */
async function loadGgufModel(file: string, options: LoadOptions): Promise<Qwen2Model> {
  checkOptions(options);
  const { config, generationConfig, loadWeights: loadFileWeights } = openGgufModel(file);
  checkInt('contextLength', options.contextLength, 1, config.contextLimit);
  const t0 = performance.now();
  const onProgress = options.onProgress;
  const weights = loadFileWeights({
    weights: options.weights,
    checkTensors: options.checkTensors,
    onProgress:
      onProgress &&
      ((doneBytes, totalBytes) =>
        onProgress({ stage: 'weights', doneBytes, totalBytes, seconds: (performance.now() - t0) / 1000 })),
  });
  return createModel(config, generationConfig, weights, options, file);
}

// A model this small (llama2.c's stories260K does 0.26M multiply-adds per token; Qwen2.5-0.5B about
// 490M) runs on one thread unless told otherwise: each of its operations is a few microseconds of
// work, less than handing part of it to another thread and waiting for that thread (README,
// Performance). The tiny test preset (10M, most of it the head) is already faster on two.
const ONE_THREAD_BELOW_MACS = 4_000_000;

/** The kernel threads of a model loaded without `threads`: all cores, or one for a tiny model. */
export function defaultKernelThreads(c: ModelConfig): number {
  return matmulWeightsPerToken(c) < ONE_THREAD_BELOW_MACS ? 1 : defaultThreads();
}

async function createModel(
  config: ModelConfig,
  generationConfig: GenerationConfig,
  weights: ModelWeights,
  options: LoadOptions,
  source: string,
): Promise<Qwen2Model> {
  const model = await Qwen2Model.create(config, generationConfig, weights, {
    maxBatchTokens: options.maxBatchTokens ?? 64,
    maxSequences: options.maxSequences ?? 8,
    contextLength: options.contextLength ?? Math.min(config.contextLimit, 32768),
    kvCacheBytes: options.kvCacheBytes ?? 1 << 30,
    kvCacheDtype: options.kvCacheDtype ?? 'f32',
    threads: options.threads ?? defaultKernelThreads(config),
  });
  try {
    await checkArithmetic(model, source);
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
async function checkArithmetic(model: Qwen2Model, source: string): Promise<void> {
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
      `${source}: the output of layer ${found.layer} (model.layers.${found.layer}.*) holds ${found.value} (element ${found.index % hidden}) for token 0: ` +
        'a weight of that layer is NaN or Inf, or so large that the arithmetic overflows float32. ' +
        'Load with checkTensors (--check-tensors) to name a NaN or Inf weight; otherwise the checkpoint holds values far out of range',
    );
  const at = logits.findIndex((v) => !Number.isFinite(v));
  if (at >= 0)
    throw new Error(
      `${source}: the logits hold ${logits[at]} (token ${at}) for token 0 though every layer's output is finite: ` +
        'model.norm.weight or the output head (lm_head.weight, or the tied embeddings) holds NaN, Inf or values far out of range',
    );
}

function checkOptions(options: LoadOptions): void {
  const format = options.weights ?? DEFAULT_WEIGHTS;
  if (!WEIGHT_FORMATS.includes(format))
    throw new RangeError(
      `loadModel: option weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`,
    );
  checkInt('threads', options.threads, 1, 64);
  checkInt('maxSequences', options.maxSequences, 1, 4096);
  checkInt('maxBatchTokens', options.maxBatchTokens, 1, 4096);
  checkInt('kvCacheBytes', options.kvCacheBytes, 1);
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function')
    throw new TypeError(`loadModel: option onProgress must be a function, got ${typeof options.onProgress}`);
  if (options.kvCacheDtype !== undefined && !KV_CACHE_DTYPES.includes(options.kvCacheDtype))
    throw new RangeError(
      `loadModel: option kvCacheDtype must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${JSON.stringify(options.kvCacheDtype)}`,
    );
  if (options.checkTensors !== undefined && typeof options.checkTensors !== 'boolean')
    throw new TypeError(
      `loadModel: option checkTensors must be true or false, got ${JSON.stringify(options.checkTensors)}`,
    );
}
