// The tokenizer of a model path: a folder's tokenizer.json, or the metadata of a GGUF file.
import { GgufModel, isGgufPath } from '../model/gguf/file.js';
import { ggufTokenizerFiles } from '../model/gguf/tokenizer.js';
import { QwenTokenizer } from '../tokenizer/index.js';

export async function loadTokenizer(modelPath: string): Promise<QwenTokenizer> {
  if (!isGgufPath(modelPath)) return QwenTokenizer.fromDir(modelPath);
  const { tokenizerJson, tokenizerConfig } = ggufTokenizerFiles(GgufModel.open(modelPath));
  return new QwenTokenizer(tokenizerJson, tokenizerConfig, modelPath);
}
