// Perplexity of a text as llama.cpp's llama-perplexity computes it (tools/perplexity/perplexity.cpp):
// the text's tokens (BOS first when the tokenizer adds it) cut into windows of `ctx` tokens, the
// first token of each window replaced by BOS when the model adds BOS, every window read from an
// empty cache, and only the second half of each window scored (the model always has at least
// ctx/2 tokens of context). PPL = exp(mean negative log-likelihood); its error is the standard
// error of the mean, times PPL. The windows run as prompts with promptLogprobs: 0 and maxTokens: 0.
import type { LLM } from './llm.js';

export interface PerplexityOptions {
  /** Tokens per window; default 512 (llama-perplexity's -c). */
  ctx?: number;
  /** Called after each window with the running estimate. */
  onChunk?: (p: PerplexityChunk) => void;
  signal?: AbortSignal;
}

export interface PerplexityChunk {
  /** Windows done and in all. */
  chunk: number;
  chunks: number;
  /** Running estimate over the windows done so far, and its standard error. */
  ppl: number;
  error: number;
}

export interface PerplexityResult {
  ppl: number;
  /** Standard error of the estimate (llama-perplexity's "+/-"). */
  error: number;
  /** Tokens scored: chunks * (ctx - ctx/2 - 1). */
  scoredTokens: number;
  chunks: number;
  ctx: number;
  /** Tokens in the text (with BOS when the tokenizer adds it). */
  textTokens: number;
}

export class PerplexityInputError extends Error {
  override name = 'PerplexityInputError';
}

/** Running sums of the negative log-likelihoods: the estimate and its error as llama.cpp reports them. */
function estimate(nll: number, nll2: number, count: number): { ppl: number; error: number } {
  const mean = nll / count;
  const ppl = Math.exp(mean);
  const variance = nll2 / count - mean * mean;
  return { ppl, error: variance > 0 && count > 1 ? Math.sqrt(variance / (count - 1)) * ppl : 0 };
}

/**
 * Perplexity of `text` (or of its token ids) under the model. `source` names the text in errors
 * (a file name). Throws PerplexityInputError when the text has fewer than 2 * ctx tokens.
 */
export async function perplexity(
  llm: LLM,
  text: string | number[],
  opts: PerplexityOptions = {},
  source = 'the text',
): Promise<PerplexityResult> {
  const ctx = opts.ctx ?? 512;
  const limit = llm.model.kvCache.contextLength;
  if (!Number.isSafeInteger(ctx) || ctx < 4 || ctx > limit)
    throw new PerplexityInputError(`ctx must be an integer from 4 to the context length ${limit}, got ${ctx}`);
  const tokens = typeof text === 'string' ? await llm.tokenize(text) : text;
  if (tokens.length < 2 * ctx)
    throw new PerplexityInputError(
      `${source} has ${tokens.length} tokens: perplexity with a context of ${ctx} needs at least ${2 * ctx} (2 * ctx); give a longer text or a smaller --ctx`,
    );
  const tok = llm.tokenizer;
  const addBos = tok.bosTokenId !== null && tok.prefixIds.includes(tok.bosTokenId);
  const chunks = Math.floor(tokens.length / ctx);
  const first = ctx >> 1;
  const windows = Array.from({ length: chunks }, (_, i) => {
    const ids = tokens.slice(i * ctx, (i + 1) * ctx);
    if (addBos) ids[0] = tok.bosTokenId!;
    return ids;
  });
  // All windows are submitted at once: the engine reads several together (its sequence slots).
  const runs = windows.map((ids) =>
    llm.submit(ids, { promptLogprobs: 0, maxTokens: 0, temperature: 0 }, { signal: opts.signal }),
  );
  runs.forEach((r) => r.catch(() => {})); // awaited in order below; a later failure must not go unhandled meanwhile
  let nll = 0,
    nll2 = 0,
    count = 0;
  for (let i = 0; i < chunks; i++) {
    const { output } = await runs[i];
    if (output.finishReason === 'abort') throw opts.signal?.reason ?? new Error('perplexity: aborted');
    const lp = output.promptLogprobs!;
    // logits at position j score token j + 1: positions first .. ctx - 2.
    for (let j = first; j < ctx - 1; j++) {
      const v = -lp[j + 1]!.logprob;
      nll += v;
      nll2 += v * v;
    }
    count += ctx - first - 1;
    opts.onChunk?.({ chunk: i + 1, chunks, ...estimate(nll, nll2, count) });
  }
  return { ...estimate(nll, nll2, count), scoredTokens: count, chunks, ctx, textTokens: tokens.length };
}
