// LLM.embed: texts (or token ids) -> one vector each, in vLLM's output shape. Every text is a
// pooling request to the engine: its prompt is read in the same batched steps as generation (many
// short texts share each pass, at most maxSequences at a time, the rest queued), the final-norm
// hidden states are pooled, and its KV cache is freed at once.
import type { PoolingConfig, PoolingRequest } from '../model/pooling.js';
import { finishEmbedding } from '../model/pooling.js';
import type { FinishedOutput } from './messages.js';

export type EmbedInput = string | { promptTokenIds: number[] };

export interface EmbedOptions {
  /** Matryoshka: keep the first `dimensions` values (1..hiddenSize), then normalise. Default all. */
  dimensions?: number;
  /** L2-normalise the vector. Default: the model's (a 2_Normalize module; true without sentence-transformers files). */
  normalize?: boolean;
  /** Text put before each text (not before token ids). */
  prompt?: string;
  /** A prompt of config_sentence_transformers.json by name ("query", "document"). Default its default_prompt_name. */
  promptName?: string;
  signal?: AbortSignal;
}

export interface EmbeddingOutput {
  prompt: string;
  promptTokenIds: number[];
  outputs: { embedding: number[] };
}

export class EmbedInputError extends RangeError {
  override name = 'EmbedInputError';
}

/** What embed() needs of the LLM. */
export interface EmbedContext {
  pooling: PoolingConfig;
  hiddenSize: number;
  vocabSize: number;
  tokenizeAll(texts: string[]): Promise<number[][]>;
  decode(ids: number[]): string;
  pool(promptIds: number[], pooling: PoolingRequest, signal?: AbortSignal): Promise<FinishedOutput>;
}

export function checkEmbedOptions(opts: EmbedOptions, pooling: PoolingConfig, hiddenSize: number): void {
  const d = opts.dimensions;
  if (d !== undefined && (!Number.isInteger(d) || d < 1 || d > hiddenSize))
    throw new EmbedInputError(
      `dimensions must be an integer from 1 to ${hiddenSize} (the model's hidden size), got ${d}`,
    );
  if (opts.normalize !== undefined && typeof opts.normalize !== 'boolean')
    throw new EmbedInputError(`normalize must be true or false, got ${JSON.stringify(opts.normalize)}`);
  if (opts.prompt !== undefined && typeof opts.prompt !== 'string')
    throw new EmbedInputError(`prompt must be a string, got ${JSON.stringify(opts.prompt)}`);
  if (opts.promptName !== undefined && !Object.hasOwn(pooling.prompts, opts.promptName))
    throw new EmbedInputError(
      `promptName ${JSON.stringify(opts.promptName)} is not one of the model's prompts (${Object.keys(pooling.prompts).join(', ') || 'it has none: no config_sentence_transformers.json'})`,
    );
  if (opts.prompt !== undefined && opts.promptName !== undefined)
    throw new EmbedInputError('give prompt or promptName, not both');
}

/** Each input's text and token ids: the prompt put before each text, then tokenized with the post-processor (Qwen3-Embedding's <|endoftext|>). */
export async function encodeEmbedInputs(
  ctx: EmbedContext,
  inputs: EmbedInput[],
  opts: EmbedOptions,
  what = 'texts',
): Promise<{ prompt: string; promptTokenIds: number[] }[]> {
  if (inputs.length === 0) throw new EmbedInputError(`${what} is empty: give at least one text`);
  const promptName = opts.promptName ?? ctx.pooling.defaultPromptName;
  const prefix = opts.prompt ?? (promptName === null ? '' : ctx.pooling.prompts[promptName]);
  const texts: string[] = [];
  inputs.forEach((input, i) => {
    if (typeof input === 'string') {
      if (input === '') throw new EmbedInputError(`${what}[${i}] is an empty string`);
      texts.push(prefix + input);
      return;
    }
    const ids = input && typeof input === 'object' ? input.promptTokenIds : undefined;
    if (!Array.isArray(ids))
      throw new EmbedInputError(`${what}[${i}] must be a string or { promptTokenIds: number[] }`);
    if (ids.length === 0) throw new EmbedInputError(`${what}[${i}] is an empty list of token ids`);
    ids.forEach((t, j) => {
      if (!Number.isInteger(t) || t < 0 || t >= ctx.vocabSize)
        throw new EmbedInputError(
          `${what}[${i}][${j}] is ${JSON.stringify(t)}: token ids must be integers from 0 to ${ctx.vocabSize - 1} (the vocabulary)`,
        );
    });
  });
  const encoded = await ctx.tokenizeAll(texts);
  let next = 0;
  return inputs.map((input) => {
    if (typeof input === 'string') return { prompt: texts[next], promptTokenIds: encoded[next++] };
    return { prompt: ctx.decode(input.promptTokenIds), promptTokenIds: input.promptTokenIds };
  });
}

export async function embed(
  ctx: EmbedContext,
  inputs: EmbedInput[],
  opts: EmbedOptions = {},
): Promise<EmbeddingOutput[]> {
  checkEmbedOptions(opts, ctx.pooling, ctx.hiddenSize);
  const encoded = await encodeEmbedInputs(ctx, inputs, opts);
  const dimensions = opts.dimensions ?? ctx.hiddenSize;
  const normalize = opts.normalize ?? ctx.pooling.normalize;
  const request: PoolingRequest = { kind: 'hidden', mode: ctx.pooling.mode };
  return runAll(encoded, opts.signal, async (e, signal) => {
    const out = await ctx.pool(e.promptTokenIds, request, signal);
    if (!out.pooled) throw abortError(opts.signal);
    return { ...e, outputs: { embedding: finishEmbedding(out.pooled, dimensions, normalize) } };
  });
}

/**
 * run(item) for every item at once; the caller's signal, or the first failure (a text too long for
 * the context), aborts the others. Each request has its own controller: one signal shared by
 * 10,000 requests made every new listener cost a scan of the others (1.2 s of 10,000 embeddings).
 */
export async function runAll<T, R>(
  items: T[],
  signal: AbortSignal | undefined,
  run: (item: T, signal: AbortSignal) => Promise<R>,
): Promise<R[]> {
  const controllers = items.map(() => new AbortController());
  const abortAll = () => controllers.forEach((c) => c.abort());
  signal?.addEventListener('abort', abortAll, { once: true });
  if (signal?.aborted) abortAll();
  try {
    return await Promise.all(
      items.map((item, i) =>
        run(item, controllers[i].signal).catch((err: unknown) => {
          abortAll();
          throw err;
        }),
      ),
    );
  } finally {
    signal?.removeEventListener('abort', abortAll);
  }
}

export function abortError(signal?: AbortSignal): unknown {
  return signal?.reason ?? new DOMException('This operation was aborted', 'AbortError');
}
