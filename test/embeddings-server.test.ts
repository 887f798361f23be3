// /v1/embeddings through the official openai client and plain fetch, /v1/rerank, /rerank and
// /v1/score on a reranker, and the 400s of bad requests and of the wrong model task.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/index.js';
import { writeSyntheticModel } from '../src/model/synthetic.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { MAX_EMBEDDING_INPUTS } from '../src/server/embeddings.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const dirs: string[] = [];

async function serve(llm: LLM, modelName: string): Promise<{ server: OpenAIServer; base: string }> {
  const server = createServer(llm, { modelName, log: false });
  const addr = await server.listen(0, '127.0.0.1');
  return { server, base: `http://127.0.0.1:${addr.port}` };
}

async function post(base: string, route: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

describe('/v1/embeddings (Qwen3-Embedding layout)', () => {
  let llm: LLM;
  let s: { server: OpenAIServer; base: string };
  let client: OpenAI;
  beforeAll(async () => {
    const dir = makeTempModel({ preset: 'tiny-qwen3', embedding: { pooling: 'last', normalize: true } });
    dirs.push(dir);
    llm = await LLM.load(dir, { threads: 2, progressBar: false });
    s = await serve(llm, 'emb');
    client = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await s?.server.close();
    await llm?.close();
    dirs.forEach(removeDir);
  });

  it('the openai client gets the library vectors, as floats and as base64', async () => {
    const expected = await llm.embed(['Hello, world!', 'second text']);
    const res = await client.embeddings.create({
      model: 'emb',
      input: ['Hello, world!', 'second text'],
      encoding_format: 'float',
    });
    expect(res.object).toBe('list');
    expect(res.model).toBe('emb');
    expect(res.data.map((d) => d.index)).toEqual([0, 1]);
    expect(res.data[0].object).toBe('embedding');
    for (const [i, d] of res.data.entries()) expect(d.embedding).toEqual(expected[i].outputs.embedding);
    const tokens = expected[0].promptTokenIds.length + expected[1].promptTokenIds.length;
    expect(res.usage).toEqual({ prompt_tokens: tokens, total_tokens: tokens });
    // The client's default asks for base64 and decodes it (little-endian float32).
    const b64 = await client.embeddings.create({ model: 'emb', input: 'Hello, world!' });
    const f32 = Float32Array.from(expected[0].outputs.embedding);
    expect(b64.data[0].embedding).toEqual(Array.from(f32));
  });

  it('token ids, lists of token ids and dimensions', async () => {
    const [ids] = await llm.embed({ promptTokenIds: [9707, 11, 151643] }, { dimensions: 8 });
    const one = await post(s.base, '/v1/embeddings', { input: [9707, 11, 151643], dimensions: 8 });
    expect(one.status).toBe(200);
    expect(one.json.data[0].embedding).toEqual(ids.outputs.embedding);
    const many = await client.embeddings.create({
      model: 'emb',
      input: [[9707, 11, 151643], [5]],
      dimensions: 8,
      encoding_format: 'float',
    });
    expect(many.data.length).toBe(2);
    expect(many.data[0].embedding).toEqual(ids.outputs.embedding);
    expect(many.data[1].embedding.length).toBe(8);
    expect(many.usage.prompt_tokens).toBe(4);
  });

  it('bad requests are 400s naming the parameter', async () => {
    const cases: [unknown, string, RegExp][] = [
      [{ input: [] }, 'input', /input is empty/],
      [{ input: '' }, 'input', /input\[0\] is an empty string/],
      [{ input: ['a', ''] }, 'input', /input\[1\] is an empty string/],
      [
        { input: [[1, 2], [151936]] },
        'input',
        /input\[1\]\[0\] is 151936: token ids must be integers from 0 to 151935/,
      ],
      [{ input: [[1], []] }, 'input', /input\[1\] is an empty list of token ids/],
      [{ input: [1.5] }, 'input', /input\[0\]\[0\] is 1.5/],
      [{ input: { text: 'a' } }, 'input', /input must be a string, a list of strings/],
      [{}, 'input', /input must be/],
      [{ input: 'a', dimensions: 0 }, 'dimensions', /dimensions must be from 1 to 64/],
      [{ input: 'a', dimensions: 65 }, 'dimensions', /dimensions must be from 1 to 64/],
      [{ input: 'a', dimensions: 'x' }, 'dimensions', /dimensions must be an integer/],
      [{ input: 'a', encoding_format: 'int8' }, 'encoding_format', /encoding_format must be "float" or "base64"/],
      [{ input: Array(MAX_EMBEDDING_INPUTS + 1).fill('a') }, 'input', /input has 2049 items; at most 2048/],
      [{ input: Array(10_000).fill('a') }, 'input', /input has 10000 items; at most 2048 per request/],
    ];
    for (const [body, param, message] of cases) {
      const r = await post(s.base, '/v1/embeddings', body);
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(r.json.error.param).toBe(param);
      expect(r.json.error.type).toBe('invalid_request_error');
      expect(r.json.error.message).toMatch(message);
    }
    const wrongModel = await post(s.base, '/v1/embeddings', { input: 'a', model: 'other' });
    expect(wrongModel.status).toBe(404);
    // The client's error names the same.
    await expect(client.embeddings.create({ model: 'emb', input: [] as string[] })).rejects.toMatchObject({
      status: 400,
      param: 'input',
    });
  });

  it('generation and reranking on an embedding model are 400s naming model', async () => {
    const chat = await post(s.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] });
    expect(chat.status).toBe(400);
    expect(chat.json.error).toMatchObject({ param: 'model', code: 'wrong_model_task' });
    expect(chat.json.error.message).toMatch(/embeds .*cannot generate text; use \/v1\/embeddings/);
    const rerank = await post(s.base, '/v1/rerank', { query: 'q', documents: ['d'] });
    expect(rerank.status).toBe(400);
    expect(rerank.json.error.message).toMatch(/is not a reranker/);
    // Still serving.
    expect((await post(s.base, '/v1/embeddings', { input: 'ok' })).status).toBe(200);
  });
});

describe('/v1/rerank on a Qwen3-Reranker-shaped model', () => {
  let llm: LLM;
  let s: { server: OpenAIServer; base: string };
  beforeAll(async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-')), 'Qwen3-Reranker-tiny');
    dirs.push(path.dirname(dir));
    writeSyntheticModel(dir, { preset: 'tiny-qwen3', seed: 7 });
    llm = await LLM.load(dir, { threads: 2, progressBar: false });
    s = await serve(llm, 'rr');
  });
  afterAll(async () => {
    await s?.server.close();
    await llm?.close();
    dirs.forEach(removeDir);
  });

  const docs = ['Beijing is the capital of China.', 'Bananas are yellow.', 'The sky is blue.', 'Paris'];

  it('results sorted by relevance_score, top_n, documents; /rerank and /v1/score agree', async () => {
    const scores = (await llm.score('capital of China?', docs)).map((o) => o.outputs.score);
    const r = await post(s.base, '/v1/rerank', { model: 'rr', query: 'capital of China?', documents: docs, top_n: 3 });
    expect(r.status).toBe(200);
    expect(r.json.model).toBe('rr');
    expect(r.json.results.length).toBe(3);
    const order = docs.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
    expect(r.json.results.map((x: any) => x.index)).toEqual(order.slice(0, 3));
    for (const x of r.json.results) {
      expect(x.relevance_score).toBe(scores[x.index]);
      expect(x.document).toEqual({ text: docs[x.index] });
    }
    expect(r.json.usage.prompt_tokens).toBeGreaterThan(0);
    const bare = await post(s.base, '/rerank', {
      query: 'capital of China?',
      documents: docs,
      return_documents: false,
    });
    expect(bare.json.results.length).toBe(4);
    expect(bare.json.results[0].document).toBeUndefined();
    const score = await post(s.base, '/v1/score', { text_1: 'capital of China?', text_2: docs });
    expect(score.status).toBe(200);
    expect(score.json.data.map((d: any) => d.score)).toEqual(scores);
    expect(score.json.data[0]).toMatchObject({ index: 0, object: 'score' });
  });

  it('bad rerank requests and embeddings on a reranker are 400s', async () => {
    const cases: [string, unknown, string, RegExp][] = [
      ['/v1/rerank', { documents: ['a'] }, 'query', /query must be a non-empty string/],
      ['/v1/rerank', { query: 'q', documents: [] }, 'documents', /documents must be a non-empty list/],
      ['/v1/rerank', { query: 'q', documents: ['a', ''] }, 'documents', /documents\[1\] must be a non-empty string/],
      ['/v1/rerank', { query: 'q', documents: ['a'], top_n: 0 }, 'top_n', /top_n must be at least 1/],
      ['/v1/score', { text_1: 'q' }, 'text_2', /text_2 must be a non-empty list/],
      ['/v1/embeddings', { input: 'a' }, 'model', /is a reranker .*use \/v1\/rerank, or serve it with --task embed/],
    ];
    for (const [route, body, param, message] of cases) {
      const r = await post(s.base, route, body);
      expect(r.status, `${route} ${JSON.stringify(body)}`).toBe(400);
      expect(r.json.error.param).toBe(param);
      expect(r.json.error.message).toMatch(message);
    }
  });
});
