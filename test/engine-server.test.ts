// The server over the engine thread: /health answers while a long prompt is prefilled, one
// request's failure (NaN logits) is one 500 and the next request is served, chat turns report
// their cached prompt tokens, /metrics counts prefix cache hits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { makeTempModel, removeDir } from './helpers/models.js';
import { poisonEmbeddingRow } from './helpers/poison.js';

const POISON = 4000;
let dir: string;
let llm: LLM;
let app: OpenAIServer;
let base: string;

beforeAll(async () => {
  // Untied, so the +Inf embedding of token POISON reaches only the sequences holding it.
  dir = makeTempModel({ preset: 'tiny', seed: 0, overrides: { tie_word_embeddings: false } });
  poisonEmbeddingRow(dir, POISON);
  // Test hook: every engine step blocks the engine thread 30 ms, as a big model's steps would.
  process.env.QWEN_TS_DEBUG_STEP_DELAY_MS = '30';
  try {
    llm = await LLM.load(dir, { threads: 2, maxBatchTokens: 16, contextLength: 4096 });
  } finally {
    delete process.env.QWEN_TS_DEBUG_STEP_DELAY_MS;
  }
  app = createServer(llm, { modelName: 'tiny', log: false });
  const addr = await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;
});
afterAll(async () => {
  await app?.close();
  await llm?.close();
  removeDir(dir);
});

const post = (path: string, body: unknown) =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('the server over the engine thread', () => {
  it('/health answers while a 2,000-token prompt is being prefilled', async () => {
    const prompt = Array.from({ length: 2000 }, (_, i) => 1000 + ((i * 7919) % 3000));
    let finished = false;
    const generation = post('/v1/completions', { prompt, max_tokens: 1, temperature: 0 }).then(async (r) => {
      finished = true;
      return r;
    });
    while (llm.load.running === 0) await new Promise((r) => setTimeout(r, 5));
    // 125 steps of 30 ms at least: /health must come back many times before the first token.
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      const h = await fetch(`${base}/health`);
      expect(await h.text()).toBe('ok\n');
      latencies.push(performance.now() - t0);
      expect(finished).toBe(false);
    }
    expect(Math.max(...latencies)).toBeLessThan(2000); // generous: the event loop is free
    const r = await generation;
    expect(r.status).toBe(200);
    expect(((await r.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens).toBe(2000);
  });

  it('NaN logits: that request gets a 500 naming the cause, the next request is served', async () => {
    const [bad, good] = await Promise.all([
      post('/v1/completions', { prompt: [9, POISON, 11], max_tokens: 4, temperature: 0 }),
      post('/v1/completions', { prompt: [9, 10, 11], max_tokens: 4, temperature: 0 }),
    ]);
    expect(bad.status).toBe(500);
    const err = (await bad.json()) as { error: { message: string } };
    expect(err.error.message).toMatch(/^Generation failed: the model produced NaN logits/);
    expect(good.status).toBe(200);
    const next = await post('/v1/completions', { prompt: [9, 10, 11], max_tokens: 4, temperature: 0 });
    expect(next.status).toBe(200);
    expect(((await next.json()) as { choices: { text: string }[] }).choices[0].text).toBe(
      ((await good.json()) as { choices: { text: string }[] }).choices[0].text,
    );
  });

  it('chat turn 2 reports its cached prompt tokens; /metrics counts the hits', async () => {
    const messages = [
      { role: 'system', content: 'You are a helpful assistant. Answer briefly and precisely, in English.' },
      { role: 'user', content: 'What is a stock market, and why do prices move every day?' },
    ];
    type Chat = {
      choices: { message: { content: string } }[];
      usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
    };
    const body = { messages, max_tokens: 4, temperature: 0 };
    const t1 = (await (await post('/v1/chat/completions', body)).json()) as Chat;
    const before = await (await fetch(`${base}/metrics`)).text();
    const turn2 = [
      ...messages,
      { role: 'assistant', content: t1.choices[0].message.content },
      { role: 'user', content: 'Why?' },
    ];
    const t2 = (await (await post('/v1/chat/completions', { ...body, messages: turn2 })).json()) as Chat;
    const firstPrompt = t1.usage.prompt_tokens;
    expect(t2.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(Math.floor(firstPrompt / 16) * 16);
    expect(t2.usage.prompt_tokens_details.cached_tokens % 16).toBe(0);
    expect(t2.usage.prompt_tokens_details.cached_tokens).toBeLessThan(t2.usage.prompt_tokens);
    const after = await (await fetch(`${base}/metrics`)).text();
    const hits = (m: string) => Number(/^qwen_ts_prefix_cache_hits_total (\d+)$/m.exec(m)![1]);
    expect(hits(after) - hits(before)).toBe(t2.usage.prompt_tokens_details.cached_tokens);
  });
});
