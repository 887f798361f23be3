// A piscina task: tokenize a large text off the caller's thread (see LLM.tokenize). Each worker
// keeps the tokenizer of the model directory it was last asked about.
import { QwenTokenizer } from '../tokenizer/index.js';
import { loadTokenizer } from './load-tokenizer.js';

export interface TokenizeTask {
  dir: string;
  text: string;
  addSpecialTokens: boolean;
}

let cached: { dir: string; tokenizer: Promise<QwenTokenizer> } | null = null;

export default async function tokenize(task: TokenizeTask): Promise<Int32Array> {
  if (cached === null || cached.dir !== task.dir) cached = { dir: task.dir, tokenizer: loadTokenizer(task.dir) };
  const tokenizer = await cached.tokenizer;
  return Int32Array.from(tokenizer.encode(task.text, { addSpecialTokens: task.addSpecialTokens }));
}
