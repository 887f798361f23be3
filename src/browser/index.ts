// qwen-ts in a browser tab: `import { LLM } from 'qwen-ts/browser'`. The same LLM, engine, kernels,
// model, sampler and scheduler as in Node; only the platform seam differs (src/platform/*.browser.ts):
// LLM.load takes the URL of a model folder, fetched once into the Cache API, and the engine runs in
// a Web Worker with a kernel pool of Web Workers when the page is cross-origin isolated.
export { LLM } from '../engine/llm.js';
export type {
  ChatOptions,
  EngineOptions,
  EngineState,
  GenerateOptions,
  LLMLoadOptions,
  ModelInfo,
  PromptInput,
  RequestOutput,
  StreamOptions,
} from '../engine/llm.js';
export type { CompletionOutput, RequestMetrics } from '../engine/request.js';
export type { LoadProgress } from '../platform/progress.js';
export type { SamplingParams } from '../sampler/index.js';
export type { ChatMessage } from '../tokenizer/index.js';
export { NOT_ISOLATED_WARNING, MAX_FILE_BYTES } from '../platform/runtime.browser.js';
