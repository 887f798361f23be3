#!/usr/bin/env node
// A small, bounded load test for `qwen-ts serve`, on loopback only:
//   node dist/src/server/loadtest.js --url http://127.0.0.1:8000 [--concurrency 1,4,8] [--requests 2]
//        [--max-tokens 32] [--level-seconds 100] [--grace-seconds 60] [--api-key KEY]
// For each concurrency level, that many clients each send `--requests` streamed chat requests one
// after the other (ignore_eos, so every answer has max_tokens tokens). A level stops starting
// requests after --level-seconds and aborts what still runs --grace-seconds later. Reports requests/s,
// aggregate generated tokens/s, time to first token and latency per level.
import { parseArgs } from 'node:util';

interface Result {
  ok: boolean;
  status: number;
  tokens: number;
  ttft: number;
  latency: number;
  error?: string;
}

const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);

async function one(
  url: string,
  model: string | undefined,
  apiKey: string | undefined,
  maxTokens: number,
  client: number,
  i: number,
  signal: AbortSignal,
): Promise<Result> {
  const t0 = performance.now();
  let ttft = NaN;
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) },
      body: JSON.stringify({
        ...(model ? { model } : {}),
        messages: [
          { role: 'system', content: 'You are a helpful assistant.' },
          { role: 'user', content: `Client ${client}, question ${i}: tell me how the stock market works.` },
        ],
        max_tokens: maxTokens,
        ignore_eos: true,
        seed: client * 1000 + i,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal,
    });
    if (res.status !== 200) {
      const text = await res.text();
      return {
        ok: false,
        status: res.status,
        tokens: 0,
        ttft,
        latency: (performance.now() - t0) / 1000,
        error: text.slice(0, 200),
      };
    }
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let tokens = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const chunk = JSON.parse(event.slice(6)) as {
          choices: { delta?: { content?: string } }[];
          usage?: { completion_tokens: number } | null;
          error?: unknown;
        };
        if (chunk.error) throw new Error(JSON.stringify(chunk.error));
        if (Number.isNaN(ttft) && chunk.choices[0]?.delta?.content) ttft = (performance.now() - t0) / 1000;
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    }
    return { ok: true, status: 200, tokens, ttft, latency: (performance.now() - t0) / 1000 };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const cause = err.cause ? ` (${err.cause.code ?? err.cause.message})` : '';
    return {
      ok: false,
      status: 0,
      tokens: 0,
      ttft,
      latency: (performance.now() - t0) / 1000,
      error: `${err.message}${cause} after ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    };
  }
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8000' },
      concurrency: { type: 'string', default: '1,4,8' },
      requests: { type: 'string', default: '2' },
      'max-tokens': { type: 'string', default: '32' },
      'level-seconds': { type: 'string', default: '100' },
      'grace-seconds': { type: 'string', default: '60' },
      'api-key': { type: 'string' },
      model: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const url = new URL(values.url!);
  if (!LOOPBACK.has(url.hostname))
    throw new Error(`loadtest: only loopback targets are allowed (127.0.0.1, [::1], localhost), got ${url.hostname}`);
  const base = url.origin;
  const levels = values.concurrency!.split(',').map(Number);
  const requests = Number(values.requests);
  const maxTokens = Number(values['max-tokens']);
  const levelSeconds = Number(values['level-seconds']);
  const graceSeconds = Number(values['grace-seconds']);
  if (
    levels.some((c) => !Number.isInteger(c) || c < 1 || c > 64) ||
    !(requests >= 1 && requests <= 20) ||
    !(maxTokens >= 1 && maxTokens <= 1024) ||
    !(levelSeconds > 0 && levelSeconds <= 600) ||
    !(graceSeconds >= 0 && graceSeconds <= 300)
  ) {
    throw new Error(
      'loadtest: --concurrency 1..64 each, --requests 1..20, --max-tokens 1..1024, --level-seconds up to 600, --grace-seconds up to 300',
    );
  }
  const health = await fetch(`${base}/health`);
  if (health.status !== 200) throw new Error(`loadtest: ${base}/health answered ${health.status}`);

  const rows = [];
  for (const c of levels) {
    const stopAt = performance.now() + levelSeconds * 1000;
    const hard = new AbortController();
    const timer = setTimeout(() => hard.abort(), (levelSeconds + graceSeconds) * 1000);
    const t0 = performance.now();
    const results: Result[] = [];
    await Promise.all(
      Array.from({ length: c }, async (_, client) => {
        for (let i = 0; i < requests && performance.now() < stopAt; i++)
          results.push(await one(base, values.model, values['api-key'], maxTokens, client, i, hard.signal));
      }),
    );
    clearTimeout(timer);
    const wall = (performance.now() - t0) / 1000;
    const ok = results.filter((r) => r.ok);
    const tokens = ok.reduce((s, r) => s + r.tokens, 0);
    const row = {
      concurrency: c,
      requests: results.length,
      failed: results.length - ok.length,
      seconds: +wall.toFixed(1),
      requestsPerSec: +(ok.length / wall).toFixed(3),
      tokensPerSec: +(tokens / wall).toFixed(2),
      meanTtft: +mean(ok.map((r) => r.ttft)).toFixed(2),
      p50Latency: +pct(
        ok.map((r) => r.latency),
        50,
      ).toFixed(2),
      maxLatency: +Math.max(...ok.map((r) => r.latency)).toFixed(2),
    };
    rows.push(row);
    const errors = results.filter((r) => !r.ok).map((r) => `${r.status} ${r.error}`);
    console.error(
      `concurrency ${c}: ${row.requests} requests (${row.failed} failed) in ${row.seconds} s: ${row.requestsPerSec} req/s, ${row.tokensPerSec} generated tok/s, ` +
        `TTFT mean ${row.meanTtft} s, latency p50 ${row.p50Latency} s, max ${row.maxLatency} s${errors.length ? `; errors: ${[...new Set(errors)].join(' | ')}` : ''}`,
    );
  }
  if (values.json) console.log(JSON.stringify(rows, null, 2));
  else console.table(rows);
}

main().catch((e) => {
  console.error((e as Error).message);
  process.exitCode = 1;
});
