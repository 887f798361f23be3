// A GGUF model file's parts for loadModel (in Node and, from the fetched bytes, in a browser tab).
import type { GenerationConfig, ModelConfig } from '../config.js';
import type { ModelWeights } from '../weights.js';
import type { TokenizerFiles } from '../../tokenizer/index.js';
import { GgufModel } from './file.js';
import { ggufGenerationConfig, ggufModelConfig } from './config.js';
import { ggufTokenizerFiles } from './tokenizer.js';
import { loadGgufWeights, type GgufWeightsOptions } from './weights.js';

/** The config of a GGUF file (a split model by its first file) and a way to load its weights. */
export function openGgufModel(file: string): {
  config: ModelConfig;
  generationConfig: GenerationConfig;
  loadWeights: (options: GgufWeightsOptions) => ModelWeights;
} {
  const g = GgufModel.open(file);
  const config = ggufModelConfig(g);
  const generationConfig = ggufGenerationConfig(g, config);
  return { config, generationConfig, loadWeights: (options) => loadGgufWeights(g, config, options) };
}

/** The tokenizer files built from a GGUF file's metadata. */
export function readGgufTokenizerFiles(file: string): TokenizerFiles {
  const { tokenizerJson, tokenizerConfig } = ggufTokenizerFiles(GgufModel.open(file));
  return { tokenizerJson, tokenizerConfig, source: file };
}
