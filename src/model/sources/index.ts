// Where a model comes from: a path, the Hugging Face cache, Ollama's store, or a hub download.
export { resolveModel, parseHubName, type ResolveOptions, type ResolvedModel } from './resolve.js';
export { ModelSourceError, formatBytes } from './errors.js';
export { hubCacheDir } from './hf-cache.js';
export { ollamaModelDirs } from './ollama.js';
export { listModels, type ListedModel } from './list.js';
export type { DownloadProgress } from './progress.js';
