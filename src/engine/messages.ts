// What the main thread and the engine thread say to each other (structured clone: plain data).
import type { GenerationConfig, ModelConfig } from '../model/config.js';
import type { LoadOptions } from '../model/load.js';
import type { PoolingRequest } from '../model/pooling.js';
import type { LoadProgress } from '../platform/progress.js';
import type { SamplingParams } from '../sampler/index.js';
import type { WeightFormat } from '../tensor/matrix.js';
import type { FinishReason, RequestMetrics, TokenLogprob } from './request.js';
import type { PromptLogprob } from './prompt-logprobs.js';
import type { ResolvedSpeculativeConfig, SpeculativeConfig } from './speculation/ngram.js';

export interface EngineOptions extends LoadOptions {
  /** Reuse the KV cache of identical prompt prefixes across requests and chat turns. Default true. */
  prefixCaching?: boolean;
  /**
   * Speculative decoding as vLLM configures it: { method: 'ngram', numSpeculativeTokens,
   * promptLookupMax, promptLookupMin } (snake_case names accepted). Default none.
   */
  speculativeConfig?: SpeculativeConfig | Record<string, unknown>;
  /**
   * Jump-forward for structured output: the text only the constraint can write next is proposed as
   * its tokens and verified in the same step as the next token (exact, like speculation). Default true.
   */
  jumpForward?: boolean;
}

export interface EngineInit {
  dir: string;
  /** Without onProgress (a function does not cross threads): `progress` says whether to report. */
  options: Omit<EngineOptions, 'onProgress'>;
  progress: boolean;
}

/** The model as the main thread sees it: its configuration and the engine's fixed sizes. */
export interface ModelInfo {
  config: ModelConfig;
  generationConfig: GenerationConfig;
  kvCache: { maxSequences: number; contextLength: number; capacityTokens: number; blockSize: number };
  /** headless: the checkpoint has no output head (an embedding-only model). */
  weights: { format: WeightFormat; description?: string; headless?: boolean };
  threads: number;
  maxBatchTokens: number;
  prefixCaching: boolean;
  /** The speculative config in force (all fields set), null without speculation. */
  speculativeConfig: ResolvedSpeculativeConfig | null;
  jumpForward: boolean;
}

/** The engine's state after its last step. */
export interface EngineState {
  waiting: number;
  running: number;
  /** KV cache tokens that can be allocated (free blocks and cached blocks no sequence uses). */
  freeTokens: number;
  capacityTokens: number;
  /** KV cache tokens kept for prefix reuse by no running sequence. */
  cachedIdleTokens: number;
  generatedTokens: number;
  /** Prompt tokens admitted, and how many of them were found in the prefix cache. */
  promptTokens: number;
  cachedPromptTokens: number;
  /** Speculative decoding: verification steps with at least one proposed token, tokens proposed, tokens accepted. */
  specDrafts: number;
  specDraftTokens: number;
  specAcceptedTokens: number;
}

export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
}

export interface FinishedOutput {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  stopReason?: string | number;
  logprobs?: TokenLogprob[];
  /** A pooling request's vector (pooled hidden state, or the requested logits). */
  pooled?: Float64Array;
  promptLogprobs?: (PromptLogprob | null)[];
}

export type ToEngine =
  /** The first message: the tokenizer files without what only encoding needs (QwenTokenizer.decodingFiles). */
  | { type: 'tokenizer'; files: string }
  | {
      type: 'submit';
      id: number;
      promptIds: number[];
      /** Resolved (request over generation_config.json) and validated on the main thread. */
      params: SamplingParams;
      streaming: boolean;
      /** performance.timeOrigin + performance.now() on the main thread when the request arrived. */
      arrivalEpochMs: number;
      /** Embedding / scoring: pool the prompt instead of generating. */
      pooling?: PoolingRequest;
    }
  | { type: 'abort'; id: number; error?: SerializedError }
  | { type: 'state' }
  | { type: 'close' };

export type FromEngine =
  | { type: 'ready'; info: ModelInfo; state: EngineState }
  | { type: 'load-error'; error: SerializedError }
  | { type: 'progress'; progress: LoadProgress }
  | { type: 'delta'; id: number; text: string }
  | { type: 'done'; id: number; output: FinishedOutput; metrics: RequestMetrics; state: EngineState }
  | { type: 'failed'; id: number; error: SerializedError; state: EngineState }
  | { type: 'state'; state: EngineState }
  | { type: 'closed' };

export function serializeError(e: unknown): SerializedError {
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack };
  return { name: 'Error', message: String(e) };
}

const ERROR_TYPES: Record<string, ErrorConstructor> = { RangeError, TypeError, SyntaxError, Error };

/** The error again on this side: the built-in type when it was one, else an Error with the original name. */
export function reviveError(s: SerializedError): Error {
  const err = new (ERROR_TYPES[s.name] ?? Error)(s.message);
  if (err.name !== s.name) Object.defineProperty(err, 'name', { value: s.name, configurable: true, writable: true });
  if (s.stack) err.stack = s.stack;
  return err;
}
