// qwen-ts public API.
export { loadModel, WEIGHT_FORMATS, type LoadOptions } from './model/load.js';
export { Qwen2Model, Qwen2Model as Model, type ForwardOptions, type DecodeStep } from './model/qwen2.js';
export { ConfigError, type ModelConfig, type GenerationConfig } from './model/config.js';
export { SafetensorsError, TensorStore, type TensorInfo } from './model/safetensors.js';
export { KvCacheFullError } from './model/kv-cache.js';
export { writeSyntheticModel, PRESETS, type SyntheticOptions } from './model/synthetic.js';
export type { WeightFormat } from './tensor/matrix.js';
