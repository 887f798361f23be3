// LLM.score for a yes/no reranker (Qwen3-Reranker): each (query, document) pair is put in the
// model's judging template, read as a prompt, and the score is P("yes") of the softmax over the
// "yes" and "no" logits at the last position (the model card's computation). Pairs run as pooling
// requests: batched like any prompts, no token sampled, KV cache freed at once.
import type { PoolingRequest } from '../model/pooling.js';
import { abortError, EmbedInputError, runAll } from './embed.js';
import type { FinishedOutput } from './messages.js';

export const RERANK_SYSTEM_PROMPT =
  'Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".';
export const RERANK_DEFAULT_INSTRUCTION = 'Given a web search query, retrieve relevant passages that answer the query';

const PREFIX = `<|im_start|>system\n${RERANK_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n`;
const SUFFIX = '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';

export interface ScoreOptions {
  /** The <Instruct> line. Default RERANK_DEFAULT_INSTRUCTION (the model card's). */
  instruction?: string;
  signal?: AbortSignal;
}

export interface ScoreOutput {
  /** The whole prompt the model read (template, query and document). */
  prompt: string;
  promptTokenIds: number[];
  /** P(yes) in [0, 1]. */
  outputs: { score: number };
}

/** What score() needs of the LLM. */
export interface ScoreContext {
  encode(text: string): number[];
  tokenToId(token: string): number | undefined;
  pool(promptIds: number[], pooling: PoolingRequest, signal?: AbortSignal): Promise<FinishedOutput>;
}

/** The user turn of Qwen3-Reranker's template. */
export function rerankPair(instruction: string, query: string, document: string): string {
  return `<Instruct>: ${instruction}\n<Query>: ${query}\n<Document>: ${document}`;
}

/** P(yes) from the two logits, as log_softmax([no, yes]).exp()[1]. */
export function yesProbability(yes: number, no: number): number {
  const m = Math.max(yes, no);
  const ey = Math.exp(yes - m),
    en = Math.exp(no - m);
  return ey / (ey + en);
}

export async function score(
  ctx: ScoreContext,
  query: string,
  documents: string | string[],
  opts: ScoreOptions = {},
): Promise<ScoreOutput[]> {
  const docs = typeof documents === 'string' ? [documents] : documents;
  if (typeof query !== 'string' || query === '') throw new EmbedInputError('query must be a non-empty string');
  if (!Array.isArray(docs) || docs.length === 0)
    throw new EmbedInputError('documents is empty: give at least one document');
  docs.forEach((d, i) => {
    if (typeof d !== 'string' || d === '') throw new EmbedInputError(`documents[${i}] must be a non-empty string`);
  });
  const instruction = opts.instruction ?? RERANK_DEFAULT_INSTRUCTION;
  if (typeof instruction !== 'string') throw new EmbedInputError('instruction must be a string');
  const yes = ctx.tokenToId('yes'),
    no = ctx.tokenToId('no');
  if (yes === undefined || no === undefined)
    throw new EmbedInputError('the tokenizer has no "yes" or "no" token: this model is not a yes/no reranker');
  const prefixIds = ctx.encode(PREFIX),
    suffixIds = ctx.encode(SUFFIX);
  const request: PoolingRequest = { kind: 'logits', tokenIds: [yes, no] };
  return runAll(docs, opts.signal, async (doc, signal) => {
    const pair = rerankPair(instruction, query, doc);
    // Tokenized in three parts, as the model card does (prefix + pair + suffix ids).
    const promptTokenIds = [...prefixIds, ...ctx.encode(pair), ...suffixIds];
    const out = await ctx.pool(promptTokenIds, request, signal);
    if (!out.pooled) throw abortError(opts.signal);
    return {
      prompt: PREFIX + pair + SUFFIX,
      promptTokenIds,
      outputs: { score: yesProbability(out.pooled[0], out.pooled[1]) },
    };
  });
}
