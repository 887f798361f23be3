// The OpenAI-compatible server on the tiny synthetic model: the official `openai` client unchanged,
// error responses, streaming, concurrency (admission queue, 429, disconnects), API keys, metrics.
import * as http from 'node:http';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { runServe } from '../src/cli/serve.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const MODEL = 'tiny-test';
const CONTEXT = 1024;
let dir: string;
let llm: LLM;
let app: OpenAIServer;
let base: string;
let client: OpenAI;
const extra: OpenAIServer[] = [];

const messages = [
  { role: 'system' as const, content: 'You are a helpful assistant.' },
  { role: 'user' as const, content: 'Tell me about the stock market.' },
];

async function start(
  opts: Partial<Parameters<typeof createServer>[1]> = {},
): Promise<{ app: OpenAIServer; base: string }> {
  const a = createServer(llm, { modelName: MODEL, log: false, ...opts });
  const addr = await a.listen(0, '127.0.0.1');
  return { app: a, base: `http://127.0.0.1:${addr.port}` };
}

beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  llm = await LLM.load(dir, { threads: 1, contextLength: CONTEXT });
  ({ app, base } = await start());
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  for (const a of [app, ...extra]) await a?.close();
  await llm?.close();
  removeDir(dir);
});

function post(path: string, body: unknown, headers: Record<string, string> = {}, url = base): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const promptTokens = () => llm.tokenizer.encode(llm.applyChatTemplate(messages)).length;

describe('the official openai client', () => {
  it('lists the served model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
    expect((list.data[0] as unknown as { max_model_len: number }).max_model_len).toBe(CONTEXT);
    expect(list.data[0].object).toBe('model');
    const one = await client.models.retrieve(MODEL);
    expect(one.id).toBe(MODEL);
  });

  it('chat: max_tokens gives finish_reason length, usage counts, OpenAI shape', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 12,
      temperature: 0.8,
      top_p: 0.9,
      seed: 7,
      presence_penalty: 0.5,
      frequency_penalty: 0.3,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.object).toBe('chat.completion');
    expect(r.model).toBe(MODEL);
    expect(typeof r.created).toBe('number');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0].index).toBe(0);
    expect(r.choices[0].message.role).toBe('assistant');
    expect(typeof r.choices[0].message.content).toBe('string');
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.choices[0].logprobs).toBeNull();
    expect(r.usage).toEqual({
      prompt_tokens: promptTokens(),
      completion_tokens: 12,
      total_tokens: promptTokens() + 12,
      prompt_tokens_details: { cached_tokens: expect.any(Number) },
    });
  });

  it('chat: the streamed text equals the non-streamed text for the same seed; role chunk, finish chunk, usage chunk', async () => {
    const params = {
      model: MODEL,
      messages,
      max_tokens: 20,
      temperature: 1,
      top_p: 0.95,
      seed: 1234,
      ignore_eos: true,
    };
    const full = await client.chat.completions.create(params as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.length).toBeGreaterThan(3);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0].id).toMatch(/^chatcmpl-/);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const usageChunk = chunks[chunks.length - 1];
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toEqual(full.usage);
    const finish = chunks[chunks.length - 2];
    expect(finish.choices[0].finish_reason).toBe('length');
    expect(chunks.slice(0, -2).every((c) => c.choices[0].finish_reason === null && c.usage === null)).toBe(true);
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(full.choices[0].message.content);
    expect(text.length).toBeGreaterThan(0);
  });

  it('completions: streamed and not, with a stop string that ends generation and is left out', async () => {
    const params = { model: MODEL, prompt: 'Hello, world', max_tokens: 24, temperature: 0, ignore_eos: true };
    const ref = await client.completions.create(params);
    expect(ref.id).toMatch(/^cmpl-/);
    expect(ref.object).toBe('text_completion');
    expect(ref.choices[0].finish_reason).toBe('length');
    expect(ref.usage).toEqual({
      prompt_tokens: llm.tokenizer.encode('Hello, world').length,
      completion_tokens: 24,
      total_tokens: llm.tokenizer.encode('Hello, world').length + 24,
      prompt_tokens_details: { cached_tokens: 0 }, // shorter than one cache block
    });
    const text = ref.choices[0].text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    const cut = text.slice(0, text.indexOf(stop));

    const stopped = await client.completions.create({ ...params, stop: [stop, 'never-appears'] });
    expect(stopped.choices[0].finish_reason).toBe('stop');
    expect(stopped.choices[0].text).toBe(cut);
    expect((stopped.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe(stop);

    const stream = await client.completions.create({ ...params, stop, stream: true });
    let streamed = '';
    let finish: string | null = null;
    for await (const c of stream) {
      expect(c.object).toBe('text_completion');
      streamed += c.choices[0].text;
      finish = c.choices[0].finish_reason ?? finish;
    }
    expect(streamed).toBe(cut);
    expect(finish).toBe('stop');
  });

  it('completions: a list of prompts gives choices per prompt; token ids as the prompt; n with seeds seed + i', async () => {
    const prompts = ['Hello, world', '1 2 3'];
    const r = await client.completions.create({
      model: MODEL,
      prompt: prompts,
      max_tokens: 6,
      temperature: 0.7,
      seed: 5,
      n: 2,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    const one = async (prompt: string | number[], seed: number) =>
      (
        await client.completions.create({
          model: MODEL,
          prompt,
          max_tokens: 6,
          temperature: 0.7,
          seed,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsNonStreaming)
      ).choices[0].text;
    expect(r.choices[0].text).toBe(await one(prompts[0], 5));
    expect(r.choices[1].text).toBe(await one(prompts[0], 6));
    expect(r.choices[3].text).toBe(await one(prompts[1], 6));
    expect(await one(llm.tokenizer.encode(prompts[1]), 6)).toBe(r.choices[3].text);
    const p = prompts.map((s) => llm.tokenizer.encode(s).length);
    expect(r.usage).toEqual({
      prompt_tokens: p[0] + p[1],
      completion_tokens: 24,
      total_tokens: p[0] + p[1] + 24,
      prompt_tokens_details: { cached_tokens: expect.any(Number) },
    });

    const chat = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 5,
      n: 3,
      seed: 9,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(chat.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(chat.usage!.completion_tokens).toBe(15);
  });

  it('logprobs in the OpenAI formats (chat content list, completions token lists)', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 8,
      temperature: 0,
      repetition_penalty: 1,
      logprobs: true,
      top_logprobs: 3,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = r.choices[0].logprobs!.content!;
    expect(content).toHaveLength(8);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.top_logprobs).toHaveLength(3);
      // greedy without penalties: the chosen token is the most likely one
      expect(t.top_logprobs[0].logprob).toBeCloseTo(t.logprob, 5);
      expect(Array.isArray(t.bytes)).toBe(true);
    }
    const bytes = content.flatMap((t) => t.bytes!);
    expect(Buffer.from(bytes).toString('utf8')).toBe(r.choices[0].message.content);

    const c = await client.completions.create({
      model: MODEL,
      prompt: 'Hello, world',
      max_tokens: 5,
      temperature: 0,
      logprobs: 2,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const lp = c.choices[0].logprobs!;
    expect(lp.tokens).toHaveLength(5);
    expect(lp.token_logprobs).toHaveLength(5);
    expect(lp.text_offset![0]).toBe(0);
    expect(lp.top_logprobs!.every((d) => Object.keys(d).length >= 1 && Object.keys(d).length <= 3)).toBe(true);

    const streamed = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 8,
      temperature: 0,
      repetition_penalty: 1,
      logprobs: true,
      top_logprobs: 3,
      ignore_eos: true,
      stream: true,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    const got: unknown[] = [];
    for await (const ch of streamed) got.push(...(ch.choices[0]?.logprobs?.content ?? []));
    expect(got).toEqual(content);
  });

  it('vLLM extras in the body: top_k, min_p, repetition_penalty, stop_token_ids', async () => {
    const ref = await client.completions.create({
      model: MODEL,
      prompt: 'Hello, world',
      max_tokens: 10,
      temperature: 0,
      ignore_eos: true,
      logprobs: 0,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(ref.choices[0].logprobs!.tokens).toHaveLength(10);
    expect(ref.choices[0].logprobs!.top_logprobs!.every((d) => Object.keys(d).length === 1)).toBe(true); // logprobs 0: the chosen token only
    const tokenIds = llm.tokenizer.encode('Hello, world');
    const { output } = await llm.submit(tokenIds, { temperature: 0, maxTokens: 10, ignoreEos: true });
    const stopId = output.tokenIds[3];
    const r = await client.completions.create({
      model: MODEL,
      prompt: 'Hello, world',
      max_tokens: 10,
      temperature: 0,
      stop_token_ids: [stopId],
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices[0].finish_reason).toBe('stop');
    expect((r.choices[0] as unknown as { stop_reason: number }).stop_reason).toBe(stopId);
    expect(r.usage!.completion_tokens).toBe(output.tokenIds.indexOf(stopId) + 1);
    const s = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0.9,
      top_k: 5,
      min_p: 0.05,
      repetition_penalty: 1.1,
      seed: 3,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(s.usage!.completion_tokens).toBe(6);
  });

  it('max_tokens unset: up to the context length minus the prompt (as vLLM)', async () => {
    const prompt = new Array(CONTEXT - 20).fill(9707); // leaves room for 20 tokens
    const r = await client.completions.create({
      model: MODEL,
      prompt,
      temperature: 0,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage).toEqual({
      prompt_tokens: CONTEXT - 20,
      completion_tokens: 20,
      total_tokens: CONTEXT,
      prompt_tokens_details: { cached_tokens: expect.any(Number) },
    });
  });
});

describe('bad requests', () => {
  const chat = '/v1/chat/completions';
  const good = { model: MODEL, messages, max_tokens: 3 };
  const cases: [string, () => Promise<Response>, number, string | null, string][] = [
    ['malformed JSON', () => post(chat, '{"messages": ['), 400, null, 'invalid_request_error'],
    ['a JSON array body', () => post(chat, '[1,2]'), 400, null, 'invalid_request_error'],
    ['missing messages', () => post(chat, { model: MODEL }), 400, 'messages', 'invalid_request_error'],
    ['messages not an array', () => post(chat, { messages: 'hi' }), 400, 'messages', 'invalid_request_error'],
    [
      'a message without content',
      () => post(chat, { messages: [{ role: 'user' }] }),
      400,
      'messages[0].content',
      'invalid_request_error',
    ],
    [
      'temperature of the wrong type',
      () => post(chat, { ...good, temperature: 'hot' }),
      400,
      'temperature',
      'invalid_request_error',
    ],
    [
      'negative temperature',
      () => post(chat, { ...good, temperature: -1 }),
      400,
      'temperature',
      'invalid_request_error',
    ],
    ['top_p out of range', () => post(chat, { ...good, top_p: 1.5 }), 400, 'top_p', 'invalid_request_error'],
    ['top_k 0', () => post(chat, { ...good, top_k: 0 }), 400, 'top_k', 'invalid_request_error'],
    ['max_tokens 0', () => post(chat, { ...good, max_tokens: 0 }), 400, 'max_tokens', 'invalid_request_error'],
    [
      'max_tokens past the context',
      () => post(chat, { ...good, max_tokens: CONTEXT }),
      400,
      'max_tokens',
      'invalid_request_error',
    ],
    ['stream not a boolean', () => post(chat, { ...good, stream: 'yes' }), 400, 'stream', 'invalid_request_error'],
    ['n too large', () => post(chat, { ...good, n: 1000 }), 400, 'n', 'invalid_request_error'],
    ['stop not strings', () => post(chat, { ...good, stop: [1] }), 400, 'stop', 'invalid_request_error'],
    [
      'presence_penalty out of range',
      () => post('/v1/completions', { prompt: 'x', presence_penalty: 3 }),
      400,
      'presence_penalty',
      'invalid_request_error',
    ],
    ['missing prompt', () => post('/v1/completions', { max_tokens: 3 }), 400, 'prompt', 'invalid_request_error'],
    [
      'prompt of the wrong type',
      () => post('/v1/completions', { prompt: { text: 'x' } }),
      400,
      'prompt',
      'invalid_request_error',
    ],
    [
      'a token id out of the vocabulary',
      () => post('/v1/completions', { prompt: [1, -5] }),
      400,
      'prompt',
      'invalid_request_error',
    ],
    [
      'a prompt longer than the context',
      () => post('/v1/completions', { prompt: new Array(CONTEXT + 10).fill(9707) }),
      400,
      'prompt',
      'invalid_request_error',
    ],
    ['an unknown model', () => post(chat, { ...good, model: 'gpt-4' }), 404, 'model', 'not_found_error'],
    [
      'a body over the limit',
      () => post(chat, JSON.stringify({ ...good, pad: 'x'.repeat(1.5 * 2 ** 20) })),
      413,
      null,
      'invalid_request_error',
    ],
    ['an unknown route', () => fetch(`${base}/v1/nothing`), 404, null, 'not_found_error'],
    ['the wrong method', () => fetch(`${base}${chat}`), 405, null, 'invalid_request_error'],
  ];
  it.each(cases)('%s', async (_name, send, status, param, type) => {
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/application\/json/);
    const body = (await r.json()) as { error: { message: string; type: string; param: string | null; code: unknown } };
    expect(body.error.type).toBe(type);
    expect(body.error.param).toBe(param);
    expect(typeof body.error.message).toBe('string');
    expect(body.error.message.length).toBeGreaterThan(0);
    expect('code' in body.error).toBe(true);
  });

  it('413 is sent without reading a huge body (chunked upload, no Content-Length)', async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent > 64 * 2 ** 20) return c.close();
        sent += 2 ** 16;
        c.enqueue(new Uint8Array(2 ** 16).fill(32));
      },
    });
    const r = await fetch(`${base}/v1/completions`, { method: 'POST', body, duplex: 'half' } as RequestInit);
    expect(r.status).toBe(413);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('request_too_large');
    expect(sent).toBeLessThan(16 * 2 ** 20);
  });

  it('an exception in one generation is a 500 for that request only', async () => {
    const spy = vi.spyOn(llm, 'submit').mockRejectedValueOnce(new Error('boom'));
    try {
      const r = await post('/v1/chat/completions', { messages, max_tokens: 3 });
      expect(r.status).toBe(500);
      const body = (await r.json()) as { error: { type: string; message: string } };
      expect(body.error.type).toBe('server_error');
      expect(body.error.message).toMatch(/boom/);
    } finally {
      spy.mockRestore();
    }
  });

  it('the server still answers a good request', async () => {
    const r = await post('/v1/chat/completions', { model: MODEL, messages, max_tokens: 3 });
    expect(r.status).toBe(200);
    const body = (await r.json()) as OpenAI.ChatCompletion;
    expect(body.usage!.completion_tokens).toBeLessThanOrEqual(3);
    expect((await fetch(`${base}/health`)).status).toBe(200);
  });
});

describe('concurrency', () => {
  async function streamText(params: object): Promise<{ text: string; finish: string | null }> {
    const s = await client.chat.completions.create({
      model: MODEL,
      messages,
      stream: true,
      ...params,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = '';
    let finish: string | null = null;
    for await (const c of s) {
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish };
  }

  it('two concurrent streamed requests both finish with their own text', async () => {
    const a = { max_tokens: 30, seed: 11, temperature: 1, ignore_eos: true };
    const b = { max_tokens: 20, seed: 12, temperature: 1, ignore_eos: true };
    const [ra, rb] = await Promise.all([streamText(a), streamText(b)]);
    const alone = async (p: object) =>
      (
        await client.chat.completions.create({
          model: MODEL,
          messages,
          ...p,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming)
      ).choices[0].message.content;
    expect(ra).toEqual({ text: await alone(a), finish: 'length' });
    expect(rb).toEqual({ text: await alone(b), finish: 'length' });
  });

  it('a client that aborts mid-stream frees its slot; the next request works', async () => {
    const ac = new AbortController();
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages, stream: true, max_tokens: 900, ignore_eos: true }),
      signal: ac.signal,
    });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = r.body!.getReader();
    let seen = '';
    while (!seen.includes('"content":"') || seen.split('data: ').length < 4)
      seen += new TextDecoder().decode((await reader.read()).value);
    expect(llm.load.running).toBe(1);
    ac.abort();
    await waitFor(() => llm.load.running === 0 && llm.load.waiting === 0);
    const next = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 4 });
    expect(next.choices[0].message.content).toBeTypeOf('string');
    expect(llm.load.running).toBe(0);
  });

  it('a non-streamed request whose client goes away is aborted too (logged as 499)', async () => {
    const ac = new AbortController();
    const r = fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 900, ignore_eos: true }),
      signal: ac.signal,
    }).catch((e: Error) => e);
    await waitFor(() => llm.load.running === 1);
    ac.abort();
    expect(await r).toBeInstanceOf(Error);
    await waitFor(() => llm.load.running === 0 && llm.load.waiting === 0);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/qwen_ts_requests_total\{endpoint="\/v1\/completions",status="499"\} [1-9]/);
  });

  it('429 when the queue is full (max concurrency 1, queue 1, three long requests)', async () => {
    const s = await start({ maxConcurrency: 1, maxQueue: 1 });
    extra.push(s.app);
    const acs = [0, 1, 2].map(() => new AbortController());
    const statuses: number[] = [];
    const reqs = acs.map((ac) =>
      fetch(`${s.base}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'Hello', max_tokens: 800, ignore_eos: true }),
        signal: ac.signal,
      }).then(
        async (r) => {
          statuses.push(r.status);
          if (r.status === 429) {
            const body = (await r.json()) as { error: { type: string } };
            expect(body.error.type).toBe('rate_limit_error');
            expect(r.headers.get('retry-after')).toBe('1');
            acs.forEach((a) => a.abort()); // stop the two long ones
          }
        },
        (e: Error) => expect(e.name).toBe('AbortError'),
      ),
    );
    await Promise.all(reqs);
    expect(statuses).toContain(429);
    await waitFor(() => llm.load.running === 0 && llm.load.waiting === 0);
    // The queue is empty again: a request gets through.
    const r = await post('/v1/completions', { prompt: 'Hello', max_tokens: 2 }, {}, s.base);
    expect(r.status).toBe(200);
  });
});

describe('API key, health, metrics', () => {
  it('401 without or with a wrong key, accepted with the right one; /health needs none', async () => {
    const s = await start({ apiKey: 'sk-secret' });
    extra.push(s.app);
    const wrong = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401 });
    const none = await post('/v1/chat/completions', { messages, max_tokens: 2 }, {}, s.base);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { type: string } }).error.type).toBe('authentication_error');
    const right = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: 'sk-secret', maxRetries: 0 });
    const r = await right.chat.completions.create({ model: MODEL, messages, max_tokens: 2 });
    expect(r.choices).toHaveLength(1);
    expect((await fetch(`${s.base}/health`)).status).toBe(200);
  });

  it('/metrics: request counts, token counters, latency histograms, gauges', async () => {
    const r = await fetch(`${base}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await r.text();
    expect(text).toMatch(/qwen_ts_requests_total\{endpoint="\/v1\/chat\/completions",status="200"\} \d+/);
    expect(text).toMatch(/qwen_ts_requests_total\{endpoint="\/v1\/chat\/completions",status="400"\} \d+/);
    expect(text).toMatch(/qwen_ts_requests_total\{endpoint="other",status="404"\} 1/);
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('qwen_ts_prompt_tokens_total')).toBeGreaterThan(0);
    expect(value('qwen_ts_generation_tokens_total')).toBeGreaterThan(0);
    expect(value('qwen_ts_time_to_first_token_seconds_count')).toBeGreaterThan(0);
    expect(value('qwen_ts_e2e_request_latency_seconds_count')).toBeGreaterThan(0);
    expect(value('qwen_ts_decode_tokens_per_second')).toBeGreaterThan(0);
    expect(value('qwen_ts_num_requests_running')).toBe(0);
    expect(value('qwen_ts_num_requests_waiting')).toBe(0);
  });

  it('closes gracefully: queued and new requests get 503 or a closed connection', async () => {
    const s = await start();
    const inflight = post('/v1/completions', { prompt: 'Hello', max_tokens: 5 }, {}, s.base);
    // Close only once the server holds the request: a connection still idle at close() is dropped.
    let settled = false;
    void inflight.finally(() => (settled = true));
    for (let i = 0; i < 500 && !settled; i++) {
      const text = await (await fetch(`${s.base}/metrics`)).text();
      if (/^qwen_ts_server_requests_in_flight [1-9]/m.test(text)) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    await s.app.close({ graceMs: 5000 });
    expect((await inflight).status).toBe(200);
    await expect(fetch(`${s.base}/health`)).rejects.toThrow();
  });
});

describe('qwen-ts serve (runServe)', () => {
  it('loads the model, prints the address, serves, and shuts down on SIGINT', async () => {
    const out: string[] = [];
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const before = new Set(process.listeners('SIGINT'));
    try {
      const done = runServe([
        '--model',
        dir,
        '--port',
        '0',
        '--threads',
        '1',
        '--served-model-name',
        'served',
        '--quiet',
        '--max-sequences',
        '2',
      ]);
      await waitFor(() => out.some((l) => l.startsWith('listening on ')), 30_000);
      const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out.join(''))![1];
      const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
      expect((await c.models.list()).data[0]).toMatchObject({ id: 'served', max_model_len: 32768 });
      const r = await c.chat.completions.create({ model: 'served', messages, max_tokens: 3 });
      expect(r.model).toBe('served');
      const onSigint = process.listeners('SIGINT').find((l) => !before.has(l))!;
      (onSigint as (s: NodeJS.Signals) => void)('SIGINT');
      expect(await done).toBe(0);
      expect(process.listeners('SIGINT').filter((l) => !before.has(l))).toHaveLength(0);
      await expect(fetch(`${url}/health`)).rejects.toThrow();
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
    }
  });

  it('rejects bad flags with a usage error', async () => {
    await expect(runServe(['--port', 'abc'])).rejects.toMatchObject({ name: 'CliError', exitCode: 2 });
    await expect(runServe(['--max-queue', '-1'])).rejects.toMatchObject({ name: 'CliError' });
    await expect(runServe(['--nope'])).rejects.toMatchObject({ name: 'CliError' });
  });

  it('a port in use is an error before the model loads (exit 2, naming the port)', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as { port: number }).port;
    try {
      // The model folder does not exist: the port is checked first.
      await expect(runServe(['--model', '/nonexistent-model', '--port', String(port)])).rejects.toMatchObject({
        name: 'CliError',
        exitCode: 2,
        message: `cannot listen on 127.0.0.1:${port}: port ${port} is in use; give another --port (or --port 0 for a free one)`,
      });
    } finally {
      taken.close();
    }
  });
});
