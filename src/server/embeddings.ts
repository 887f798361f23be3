// The pooling endpoints over LLM.embed and LLM.score:
//   POST /v1/embeddings          OpenAI's: input (string, strings, token ids, lists of token ids),
//                                encoding_format float | base64 (little-endian float32), dimensions
//   POST /v1/rerank, /rerank     Jina / Cohere as vLLM and llama-server: query, documents, top_n,
//                                return_documents -> results sorted by relevance_score
//   POST /v1/score               vLLM's: text_1 (the query), text_2 (a document or a list)
// Requests are checked here (400 naming the parameter) before they take an admission slot; the
// library's own input errors (empty text, token id outside the vocabulary, a text longer than the
// context) and a request to a model of the other task are 400s too.
import { EmbedInputError, type EmbedInput } from '../engine/embed.js';
import type { LLM } from '../engine/llm.js';
import { TaskError } from '../engine/task.js';
import { badRequest, modelNotFound } from './errors.js';

/**
 * Most inputs of one /v1/embeddings request (OpenAI's own limit). LLM.embed takes any number,
 * maxSequences at a time; a server caps one request so that it cannot hold the engine for minutes.
 */
export const MAX_EMBEDDING_INPUTS = 2048;
/** Most documents of one /v1/rerank or /v1/score request. */
export const MAX_RERANK_DOCUMENTS = 1024;

export type PoolingRoute = 'embeddings' | 'rerank' | 'score';

export interface PoolingResult {
  body: unknown;
  promptTokens: number;
}

type Body = Record<string, unknown>;

function checkModel(body: Body, served: string): void {
  const model = body.model;
  if (model === undefined || model === null) return;
  if (typeof model !== 'string') throw badRequest(`model must be a string, got ${typeName(model)}.`, 'model');
  if (model !== served) throw modelNotFound(model, served);
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

const isTokenList = (v: unknown): v is number[] =>
  Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === 'number');

/** OpenAI's input: a string, a list of strings, a list of token ids, or a list of lists of token ids. */
function embeddingInputs(input: unknown): EmbedInput[] {
  const expected = 'a string, a list of strings, a list of token ids or a list of lists of token ids';
  if (typeof input === 'string') return [input];
  if (!Array.isArray(input)) throw badRequest(`input must be ${expected}, got ${typeName(input)}.`, 'input');
  if (input.length === 0) throw badRequest('input is empty: give at least one text.', 'input');
  if (isTokenList(input)) return [{ promptTokenIds: input }];
  if (input.length > MAX_EMBEDDING_INPUTS)
    throw badRequest(
      `input has ${input.length} items; at most ${MAX_EMBEDDING_INPUTS} per request: split it into several requests.`,
      'input',
    );
  return input.map((item, i): EmbedInput => {
    if (typeof item === 'string') return item;
    if (isTokenList(item)) return { promptTokenIds: item };
    if (Array.isArray(item) && item.length === 0)
      throw badRequest(`input[${i}] is an empty list of token ids.`, 'input');
    throw badRequest(`input[${i}] must be a string or a list of token ids, got ${typeName(item)}.`, 'input');
  });
}

function optionalInt(body: Body, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v))
    throw badRequest(`${name} must be an integer, got ${typeName(v)}${typeof v === 'number' ? ` ${v}` : ''}.`, name);
  return v;
}

/** The library's errors for a request's inputs as 400s naming `param`; others pass through. */
function asRequestError(e: unknown, param: string): unknown {
  if (e instanceof TaskError) return badRequest(e.message, 'model', 'wrong_model_task');
  if (e instanceof EmbedInputError) return badRequest(e.message.replace(/^texts/, param), param);
  // The scheduler's refusal of a prompt longer than the context or the KV cache.
  if (e instanceof RangeError && /does not fit/.test(e.message)) return badRequest(e.message, param);
  return e;
}

function float32Base64(values: number[]): string {
  const f32 = Float32Array.from(values);
  // Little-endian, as OpenAI's base64 (the typed array's bytes on every host Node runs on).
  return Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength).toString('base64');
}

/** Check a request and return the function that runs it (after admission). */
export function parsePoolingRequest(
  llm: LLM,
  served: string,
  route: PoolingRoute,
  body: Body,
): (signal: AbortSignal) => Promise<PoolingResult> {
  checkModel(body, served);
  if (route === 'embeddings') {
    if (llm.task.task === 'score')
      throw badRequest(
        `The model \`${served}\` is a reranker (${llm.task.reason}): use /v1/rerank, or serve it with --task embed.`,
        'model',
        'wrong_model_task',
      );
    const inputs = embeddingInputs(body.input);
    const format = body.encoding_format ?? 'float';
    if (format !== 'float' && format !== 'base64')
      throw badRequest(
        `encoding_format must be "float" or "base64", got ${JSON.stringify(format)}.`,
        'encoding_format',
      );
    const dimensions = optionalInt(body, 'dimensions');
    const hidden = llm.config.hiddenSize;
    if (dimensions !== undefined && (dimensions < 1 || dimensions > hidden))
      throw badRequest(
        `dimensions must be from 1 to ${hidden} (the model's hidden size), got ${dimensions}.`,
        'dimensions',
      );
    return async (signal) => {
      let out;
      try {
        out = await llm.embed(inputs, { dimensions, signal });
      } catch (e) {
        throw asRequestError(e, 'input');
      }
      const promptTokens = out.reduce((s, o) => s + o.promptTokenIds.length, 0);
      return {
        promptTokens,
        body: {
          object: 'list',
          data: out.map((o, index) => ({
            object: 'embedding',
            index,
            embedding: format === 'base64' ? float32Base64(o.outputs.embedding) : o.outputs.embedding,
          })),
          model: served,
          usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
        },
      };
    };
  }

  if (llm.task.task !== 'score')
    throw badRequest(
      `The model \`${served}\` is not a reranker (task "${llm.task.task}": ${llm.task.reason}): serve a Qwen3-Reranker, or this model with --task score.`,
      'model',
      'wrong_model_task',
    );
  const [queryName, docsName] = route === 'score' ? ['text_1', 'text_2'] : ['query', 'documents'];
  const query = body[queryName];
  if (typeof query !== 'string' || query === '')
    throw badRequest(`${queryName} must be a non-empty string, got ${typeName(query)}.`, queryName);
  const rawDocs = body[docsName];
  const docs = typeof rawDocs === 'string' && route === 'score' ? [rawDocs] : rawDocs;
  if (!Array.isArray(docs) || docs.length === 0)
    throw badRequest(`${docsName} must be a non-empty list of strings, got ${typeName(docs)}.`, docsName);
  if (docs.length > MAX_RERANK_DOCUMENTS)
    throw badRequest(`${docsName} has ${docs.length} items; at most ${MAX_RERANK_DOCUMENTS} per request.`, docsName);
  // Cohere's documents may be {text}; Jina's and vLLM's are strings.
  const texts = docs.map((d, i) => {
    const text = typeof d === 'object' && d !== null && !Array.isArray(d) ? (d as Body).text : d;
    if (typeof text !== 'string' || text === '')
      throw badRequest(`${docsName}[${i}] must be a non-empty string (or {"text": ...}).`, docsName);
    return text;
  });
  const topN = optionalInt(body, 'top_n');
  if (topN !== undefined && topN < 1) throw badRequest(`top_n must be at least 1, got ${topN}.`, 'top_n');
  const returnDocuments = body.return_documents ?? true;
  if (typeof returnDocuments !== 'boolean')
    throw badRequest(`return_documents must be a boolean, got ${typeName(returnDocuments)}.`, 'return_documents');
  const instruction = body.instruction;
  if (instruction !== undefined && typeof instruction !== 'string')
    throw badRequest(`instruction must be a string, got ${typeName(instruction)}.`, 'instruction');

  return async (signal) => {
    let out;
    try {
      out = await llm.score(query, texts, { signal, instruction });
    } catch (e) {
      throw asRequestError(e, docsName);
    }
    const promptTokens = out.reduce((s, o) => s + o.promptTokenIds.length, 0);
    const usage = { prompt_tokens: promptTokens, total_tokens: promptTokens };
    const id = `${route}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    if (route === 'score')
      return {
        promptTokens,
        body: {
          id,
          object: 'list',
          created: Math.floor(Date.now() / 1000),
          model: served,
          data: out.map((o, index) => ({ index, object: 'score', score: o.outputs.score })),
          usage,
        },
      };
    const results = out
      .map((o, index) => ({
        index,
        relevance_score: o.outputs.score,
        ...(returnDocuments ? { document: { text: texts[index] } } : {}),
      }))
      .sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index)
      .slice(0, topN ?? out.length);
    return { promptTokens, body: { id, model: served, usage, results } };
  };
}
