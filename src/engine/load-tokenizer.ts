// The tokenizer of a model path: a folder's tokenizer.json, or the metadata of a GGUF file.
import { GgufModel, isGgufPath } from '../model/gguf/file.js';
import { ggufTokenizerFiles } from '../model/gguf/tokenizer.js';
import { QwenTokenizer, type TokenizerFiles } from '../tokenizer/index.js';

/** The tokenizer's files, parsed: from the folder, or built from a GGUF file's metadata. */
export function readTokenizerFiles(modelPath: string): TokenizerFiles {
  if (!isGgufPath(modelPath)) return QwenTokenizer.readFiles(modelPath);
  const { tokenizerJson, tokenizerConfig } = ggufTokenizerFiles(GgufModel.open(modelPath));
  return { tokenizerJson, tokenizerConfig, source: modelPath };
}

export async function loadTokenizer(modelPath: string): Promise<QwenTokenizer> {
  const files = readTokenizerFiles(modelPath);
  return new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source);
}
