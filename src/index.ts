// qwen-ts public API.

// Generation: the vLLM-style offline API.
export {
  LLM,
  DEFAULT_MAX_TOKENS,
  type PromptInput,
  type RequestOutput,
  type GenerateOptions,
  type StreamOptions,
  type ChatOptions,
  type EngineOptions,
  type EngineState,
  type ModelInfo,
  type LLMLoadOptions,
} from './engine/llm.js';

// Embeddings and reranking (LLM.embed, LLM.score; /v1/embeddings and /v1/rerank).
export { EmbedInputError, type EmbedInput, type EmbedOptions, type EmbeddingOutput } from './engine/embed.js';
export {
  RERANK_SYSTEM_PROMPT,
  RERANK_DEFAULT_INSTRUCTION,
  yesProbability,
  type ScoreOptions,
  type ScoreOutput,
} from './engine/rerank.js';
export { MODEL_TASKS, TaskError, type ModelTask } from './engine/task.js';
export { loadPoolingConfig, DEFAULT_POOLING, type PoolingConfig, type PoolingMode } from './model/pooling.js';
export { ProgressLine, progressText, type LoadProgress, type ProgressLineOptions } from './platform/progress.js';
export type { CompletionOutput, FinishReason, RequestMetrics } from './engine/request.js';
export { promptLogprobOf, type PromptLogprob } from './engine/prompt-logprobs.js';
export {
  perplexity,
  PerplexityInputError,
  type PerplexityOptions,
  type PerplexityChunk,
  type PerplexityResult,
} from './engine/perplexity.js';

// Tool calls in the output (Qwen2.5's <tool_call> blocks, parsed as vLLM's hermes parser does).
export {
  parseToolCalls,
  ToolCallStreamParser,
  toolChoiceConstraint,
  type ToolCall as ParsedToolCall,
  type ToolCallDelta,
  type ToolChoice,
  type ParsedOutput,
} from './engine/tool-calls.js';

// The model: load a Hugging Face Qwen2 directory, run forward passes.
export { loadModel, WEIGHT_FORMATS, DEFAULT_WEIGHTS, type LoadOptions } from './model/load.js';
export {
  resolveModel,
  listModels,
  ModelSourceError,
  type ResolveOptions,
  type ResolvedModel,
  type ListedModel,
  type DownloadProgress,
} from './model/sources/index.js';
export { Qwen2Model, Qwen2Model as Model, type ForwardOptions, type DecodeStep } from './model/qwen2.js';
export { ConfigError, type ModelConfig, type GenerationConfig } from './model/config.js';
export { SafetensorsError, TensorStore, type TensorInfo } from './model/safetensors.js';
export { KV_CACHE_DTYPES, KvCacheFullError, type KvCacheDtype } from './model/kv-cache.js';
export type { WeightFormat } from './tensor/matrix.js';

// The OpenAI-compatible HTTP server over an LLM (what `qwen-ts serve` runs).
export { createServer, type ServerOptions, type OpenAIServer } from './server/server.js';
export { createDemoServer, ISOLATION_HEADERS, type DemoServerOptions } from './server/demo.js';

// The bundled demo model (stories260K), and synthetic models (random weights, for speed) in the
// subpath export 'qwen-ts/synthetic'.
export { DEMO_MODEL_DIR } from './package-root.js';

// Text and sampling.
export * from './tokenizer/index.js';
export * from './sampler/index.js';
