// The tokenizer of a model path: a folder's tokenizer.json, or the metadata of a GGUF file.
import { isGgufPath, readGgufTokenizerFiles } from '../platform/runtime.js';
import { QwenTokenizer, type TokenizerFiles } from '../tokenizer/index.js';

/** The tokenizer's files, parsed: from the folder, or built from a GGUF file's metadata. */
export function readTokenizerFiles(modelPath: string): TokenizerFiles {
  if (!isGgufPath(modelPath)) return QwenTokenizer.readFiles(modelPath);
  return readGgufTokenizerFiles(modelPath);
}

export async function loadTokenizer(modelPath: string): Promise<QwenTokenizer> {
  const files = readTokenizerFiles(modelPath);
  return new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source);
}
