#!/usr/bin/env node
// A small, bounded load test for `qwen-ts serve`, on loopback only:
//   node dist/bench/loadtest.js --url http://127.0.0.1:8000 [--concurrency 1,4,8] [--requests 2]
//        [--max-tokens 32] [--level-seconds 100] [--grace-seconds 60] [--chat-turns 10]
//        [--chat-max-tokens 16] [--long-prompt-tokens 2000] [--health-interval-ms 100] [--api-key KEY] [--json]
// Three scenarios, each with /health probed every --health-interval-ms while it runs (latency
// p50/p95/max: how free the server's event loop stays):
//   levels       for each concurrency level, that many clients each send --requests streamed chat
//                requests one after the other (ignore_eos: every answer has max_tokens tokens); time
//                to first token (TTFT) and inter-token latency (ITL, the gap between streamed chunks)
//                p50/p95. A level stops starting requests after --level-seconds and aborts what still
//                runs --grace-seconds later.
//   chat         one conversation of --chat-turns turns; each turn resends the whole history with the
//                previous answer, so each turn's TTFT shows what a prefix cache saves.
//   long prompt  one prompt of about --long-prompt-tokens tokens.
import * as http from 'node:http';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { isLoopbackAddress } from '../src/server/access.js';

export interface LoadTestOptions {
  /** Server base URL; only loopback hosts are accepted. */
  url: string;
  model?: string;
  apiKey?: string;
  /** Concurrency levels (clients at once); [] skips the levels scenario. */
  concurrency: number[];
  /** Requests each client sends per level. */
  requests: number;
  maxTokens: number;
  levelSeconds: number;
  graceSeconds: number;
  /** Turns of the multi-turn chat; 0 skips it. */
  chatTurns: number;
  chatMaxTokens: number;
  /** Approximate prompt length of the long-prompt scenario; 0 skips it. */
  longPromptTokens: number;
  /** Hard limit of the chat and the long-prompt scenarios, each. */
  scenarioSeconds: number;
  healthIntervalMs: number;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
}

export const LOADTEST_DEFAULTS: Omit<LoadTestOptions, 'url'> = {
  concurrency: [1, 4, 8],
  requests: 2,
  maxTokens: 32,
  levelSeconds: 100,
  graceSeconds: 60,
  chatTurns: 10,
  chatMaxTokens: 16,
  longPromptTokens: 2000,
  scenarioSeconds: 900,
  healthIntervalMs: 100,
};

/** Seconds; NaN when there was nothing to measure. */
export interface Percentiles {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

/** GET /health latencies (seconds) while a scenario ran, and the probes that failed. */
export interface HealthReport extends Percentiles {
  failed: number;
  errors: string[];
}

export interface LevelReport {
  concurrency: number;
  requests: number;
  failed: number;
  seconds: number;
  requestsPerSec: number;
  /** Generated tokens per second, all clients together. */
  tokensPerSec: number;
  ttft: Percentiles;
  /** Gaps between consecutive streamed chunks of one answer, all answers pooled. */
  itl: Percentiles;
  latency: Percentiles;
  health: HealthReport;
  errors: string[];
}

export interface ChatTurn {
  turn: number;
  promptTokens: number;
  /** usage.prompt_tokens_details.cached_tokens when the server reports it. */
  cachedTokens: number | null;
  ttft: number;
  ok: boolean;
  error?: string;
}

export interface ChatReport {
  turns: ChatTurn[];
  turn2Ttft: number;
  lastTurnTtft: number;
  health: HealthReport;
}

export interface LongPromptReport {
  promptTokens: number;
  ttft: number;
  latency: number;
  ok: boolean;
  error?: string;
  health: HealthReport;
}

export interface LoadReport {
  url: string;
  levels: LevelReport[];
  chat: ChatReport | null;
  longPrompt: LongPromptReport | null;
}

/**
 * The p-th percentile (0..100) with linear interpolation between the closest ranks (numpy's default,
 * as vLLM's benchmarks report). NaN for no data.
 */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function summarize(xs: readonly number[]): Percentiles {
  return {
    n: xs.length,
    p50: percentile(xs, 50),
    p95: percentile(xs, 95),
    max: xs.length ? Math.max(...xs) : NaN,
  };
}

// node:http rather than fetch: fetch (undici) gives up on a response whose headers or next body
// bytes take over 300 s, which a long prefill on a slow machine does.
const agent = new http.Agent({ keepAlive: true });

interface Response {
  status: number;
  body: AsyncIterable<Buffer>;
  text(): Promise<string>;
}

function send(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
  signal?: AbortSignal,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent, signal }, (res) => {
      resolve({
        status: res.statusCode ?? 0,
        body: res,
        async text() {
          const chunks: Buffer[] = [];
          for await (const c of res) chunks.push(c as Buffer);
          return Buffer.concat(chunks).toString('utf8');
        },
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** An error's message with its system code (ECONNRESET, ...). */
function describeError(e: unknown): string {
  const err = e as Error & { code?: string; cause?: { code?: string; message?: string } };
  const code = err.code ?? err.cause?.code ?? err.cause?.message;
  return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

/** One streamed chat request, timed. */
interface StreamResult {
  ok: boolean;
  status: number;
  /** Seconds from sending to the first chunk with text. */
  ttft: number;
  /** Seconds between consecutive chunks with text. */
  gaps: number[];
  latency: number;
  text: string;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number | null;
  error?: string;
}

interface StreamChunk {
  choices: { delta?: { content?: string } }[];
  usage?: {
    prompt_tokens: number;
    completion_tokens: number;
    prompt_tokens_details?: { cached_tokens?: number };
  } | null;
  error?: unknown;
}

async function streamChat(
  base: string,
  opts: Pick<LoadTestOptions, 'model' | 'apiKey'>,
  messages: { role: string; content: string }[],
  maxTokens: number,
  seed: number,
  signal: AbortSignal,
): Promise<StreamResult> {
  const t0 = performance.now();
  const since = () => (performance.now() - t0) / 1000;
  const result: StreamResult = {
    ok: false,
    status: 0,
    ttft: NaN,
    gaps: [],
    latency: NaN,
    text: '',
    promptTokens: 0,
    completionTokens: 0,
    cachedTokens: null,
  };
  try {
    const res = await send(
      `${base}/v1/chat/completions`,
      'POST',
      {
        'Content-Type': 'application/json',
        ...(opts.apiKey ? { Authorization: `Bearer ${opts.apiKey}` } : {}),
      },
      JSON.stringify({
        ...(opts.model ? { model: opts.model } : {}),
        messages,
        max_tokens: maxTokens,
        ignore_eos: true,
        seed,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal,
    );
    result.status = res.status;
    if (res.status !== 200) {
      result.error = `${res.status} ${(await res.text()).slice(0, 200)}`;
      result.latency = since();
      return result;
    }
    const decoder = new TextDecoder();
    let buf = '';
    let last = NaN;
    for await (const value of res.body) {
      buf += decoder.decode(value, { stream: true });
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const chunk = JSON.parse(event.slice(6)) as StreamChunk;
        if (chunk.error) throw new Error(JSON.stringify(chunk.error));
        const content = chunk.choices[0]?.delta?.content;
        if (content) {
          const now = since();
          if (Number.isNaN(last)) result.ttft = now;
          else result.gaps.push(now - last);
          last = now;
          result.text += content;
        }
        if (chunk.usage) {
          result.promptTokens = chunk.usage.prompt_tokens;
          result.completionTokens = chunk.usage.completion_tokens;
          result.cachedTokens = chunk.usage.prompt_tokens_details?.cached_tokens ?? null;
        }
      }
    }
    result.ok = true;
  } catch (e) {
    result.error = `${describeError(e)} after ${since().toFixed(1)} s`;
  }
  result.latency = since();
  return result;
}

/** GET /health every intervalMs (one at a time) until stopped: latencies of the 200s, and failures. */
function probeHealth(base: string, intervalMs: number): { stop: () => Promise<HealthReport> } {
  const latencies: number[] = [];
  const failures: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await send(`${base}/health`, 'GET', {});
        await res.text();
        if (res.status === 200) latencies.push((performance.now() - t0) / 1000);
        else failures.push(`status ${res.status}`);
      } catch (e) {
        failures.push(describeError(e));
      }
      const wait = intervalMs - (performance.now() - t0);
      if (running && wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { ...summarize(latencies), failed: failures.length, errors: [...new Set(failures)] };
    },
  };
}

const SYSTEM = { role: 'system', content: 'You are a helpful assistant.' };

const QUESTIONS = [
  'Tell me how the stock market works.',
  'What moves the price of a share from one day to the next?',
  'How do interest rates change that?',
  'And what do central banks watch before they decide?',
  'Why do some investors prefer bonds?',
  'What is an index fund, and why is it cheap?',
  'How should a beginner think about risk?',
  'What does diversification protect against, and what not?',
  'How do dividends fit into the returns?',
  'Sum up the main points in a few lines.',
];

const WORDS = (
  'the market opened higher on monday as traders weighed fresh data on prices wages and jobs while ' +
  'banks and energy firms led the gains and investors looked ahead to the central bank meeting where ' +
  'officials are expected to hold rates steady after a long run of increases meant to cool demand'
).split(' ');

/** English text of about `tokens` tokens (Qwen's tokenizer: about one token per common word). */
export function longPromptText(tokens: number): string {
  const words: string[] = [];
  for (let i = 0; i < tokens; i++) words.push(WORDS[i % WORDS.length]);
  return `Summarize this report in one sentence: ${words.join(' ')}.`;
}

async function runLevel(base: string, o: LoadTestOptions, c: number): Promise<LevelReport> {
  const stopAt = performance.now() + o.levelSeconds * 1000;
  const hard = new AbortController();
  const timer = setTimeout(() => hard.abort(), (o.levelSeconds + o.graceSeconds) * 1000);
  const health = probeHealth(base, o.healthIntervalMs);
  const t0 = performance.now();
  const results: StreamResult[] = [];
  await Promise.all(
    Array.from({ length: c }, async (_, client) => {
      for (let i = 0; i < o.requests && performance.now() < stopAt; i++) {
        const messages = [SYSTEM, { role: 'user', content: `Client ${client}, question ${i}: ${QUESTIONS[0]}` }];
        results.push(await streamChat(base, o, messages, o.maxTokens, client * 1000 + i, hard.signal));
      }
    }),
  );
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  const healthReport = await health.stop();
  const ok = results.filter((r) => r.ok);
  const tokens = ok.reduce((s, r) => s + r.completionTokens, 0);
  return {
    concurrency: c,
    requests: results.length,
    failed: results.length - ok.length,
    seconds,
    requestsPerSec: ok.length / seconds,
    tokensPerSec: tokens / seconds,
    ttft: summarize(ok.map((r) => r.ttft).filter((t) => !Number.isNaN(t))),
    itl: summarize(ok.flatMap((r) => r.gaps)),
    latency: summarize(ok.map((r) => r.latency)),
    health: healthReport,
    errors: [...new Set(results.filter((r) => !r.ok).map((r) => r.error ?? `status ${r.status}`))],
  };
}

async function runChat(base: string, o: LoadTestOptions): Promise<ChatReport> {
  const hard = new AbortController();
  const timer = setTimeout(() => hard.abort(), o.scenarioSeconds * 1000);
  const health = probeHealth(base, o.healthIntervalMs);
  const messages = [SYSTEM];
  const turns: ChatTurn[] = [];
  for (let t = 0; t < o.chatTurns; t++) {
    messages.push({ role: 'user', content: QUESTIONS[t % QUESTIONS.length] });
    const r = await streamChat(base, o, messages, o.chatMaxTokens, 42 + t, hard.signal);
    turns.push({
      turn: t + 1,
      promptTokens: r.promptTokens,
      cachedTokens: r.cachedTokens,
      ttft: r.ttft,
      ok: r.ok,
      ...(r.error ? { error: r.error } : {}),
    });
    o.log?.(
      `chat turn ${t + 1}: ${r.promptTokens} prompt tokens${r.cachedTokens !== null ? ` (${r.cachedTokens} cached)` : ''}, TTFT ${r.ttft.toFixed(3)} s${r.error ? `; ${r.error}` : ''}`,
    );
    if (!r.ok) break;
    messages.push({ role: 'assistant', content: r.text });
  }
  clearTimeout(timer);
  return {
    turns,
    turn2Ttft: turns[1]?.ttft ?? NaN,
    lastTurnTtft: turns.length === o.chatTurns ? turns[turns.length - 1].ttft : NaN,
    health: await health.stop(),
  };
}

async function runLongPrompt(base: string, o: LoadTestOptions): Promise<LongPromptReport> {
  const hard = new AbortController();
  const timer = setTimeout(() => hard.abort(), o.scenarioSeconds * 1000);
  const health = probeHealth(base, o.healthIntervalMs);
  const messages = [SYSTEM, { role: 'user', content: longPromptText(o.longPromptTokens) }];
  const r = await streamChat(base, o, messages, 4, 7, hard.signal);
  clearTimeout(timer);
  return {
    promptTokens: r.promptTokens,
    ttft: r.ttft,
    latency: r.latency,
    ok: r.ok,
    ...(r.error ? { error: r.error } : {}),
    health: await health.stop(),
  };
}

/** Checks the options (bounds, loopback target); throws an Error naming the option. */
export function checkLoadTestOptions(o: LoadTestOptions): string {
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new Error(`loadtest: --url must be a URL such as http://127.0.0.1:8000, got ${JSON.stringify(o.url)}`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (url.protocol !== 'http:' || !isLoopbackAddress(host))
    throw new Error(
      `loadtest: only http:// loopback targets are allowed (127.0.0.1, [::1], localhost), got ${url.protocol}//${url.host}`,
    );
  const bad: [boolean, string][] = [
    [o.concurrency.every((c) => Number.isInteger(c) && c >= 1 && c <= 64), '--concurrency: integers from 1 to 64'],
    [Number.isInteger(o.requests) && o.requests >= 1 && o.requests <= 20, '--requests: 1 to 20'],
    [Number.isInteger(o.maxTokens) && o.maxTokens >= 1 && o.maxTokens <= 1024, '--max-tokens: 1 to 1024'],
    [o.levelSeconds > 0 && o.levelSeconds <= 600, '--level-seconds: up to 600'],
    [o.graceSeconds >= 0 && o.graceSeconds <= 300, '--grace-seconds: up to 300'],
    [Number.isInteger(o.chatTurns) && o.chatTurns >= 0 && o.chatTurns <= 20, '--chat-turns: 0 to 20'],
    [
      Number.isInteger(o.chatMaxTokens) && o.chatMaxTokens >= 1 && o.chatMaxTokens <= 256,
      '--chat-max-tokens: 1 to 256',
    ],
    [
      Number.isInteger(o.longPromptTokens) && o.longPromptTokens >= 0 && o.longPromptTokens <= 8192,
      '--long-prompt-tokens: 0 to 8192',
    ],
    [o.scenarioSeconds > 0 && o.scenarioSeconds <= 1800, '--scenario-seconds: up to 1800'],
    [o.healthIntervalMs >= 10 && o.healthIntervalMs <= 10_000, '--health-interval-ms: 10 to 10000'],
  ];
  const failed = bad.filter(([ok]) => !ok).map(([, what]) => what);
  if (failed.length) throw new Error(`loadtest: out of range: ${failed.join('; ')}`);
  return url.origin;
}

/** Runs the scenarios one after the other against a running server. */
export async function runLoadTest(opts: LoadTestOptions): Promise<LoadReport> {
  const base = checkLoadTestOptions(opts);
  try {
    return await runScenarios(base, opts);
  } finally {
    agent.destroy(); // idle keep-alive sockets would keep the process alive
  }
}

async function runScenarios(base: string, opts: LoadTestOptions): Promise<LoadReport> {
  const health = await send(`${base}/health`, 'GET', {});
  await health.text();
  if (health.status !== 200) throw new Error(`loadtest: ${base}/health answered ${health.status}`);
  const levels: LevelReport[] = [];
  for (const c of opts.concurrency) {
    const level = await runLevel(base, opts, c);
    levels.push(level);
    opts.log?.(
      `concurrency ${c}: ${level.requests} requests (${level.failed} failed) in ${level.seconds.toFixed(1)} s, ` +
        `${level.tokensPerSec.toFixed(2)} tok/s, TTFT p50/p95 ${fmt(level.ttft.p50)}/${fmt(level.ttft.p95)} s, ` +
        `ITL p50/p95 ${ms(level.itl.p50)}/${ms(level.itl.p95)} ms, ${healthLine(level.health)}` +
        `${level.errors.length ? `; errors: ${level.errors.join(' | ')}` : ''}`,
    );
  }
  const chat = opts.chatTurns > 0 ? await runChat(base, opts) : null;
  if (chat) opts.log?.(`chat: ${healthLine(chat.health)}`);
  const longPrompt = opts.longPromptTokens > 0 ? await runLongPrompt(base, opts) : null;
  if (longPrompt)
    opts.log?.(
      `long prompt: ${longPrompt.promptTokens} tokens, TTFT ${fmt(longPrompt.ttft)} s${longPrompt.error ? ` (${longPrompt.error})` : ''}, ${healthLine(longPrompt.health)}`,
    );
  return { url: base, levels, chat, longPrompt };
}

const fmt = (x: number, digits = 3) => (Number.isNaN(x) ? '-' : x.toFixed(digits));
const ms = (x: number) => (Number.isNaN(x) ? '-' : (x * 1000).toFixed(0));
const failedProbes = (h: HealthReport) => (h.failed ? `, ${h.failed} probes failed: ${h.errors.join(' | ')}` : '');
const healthLine = (h: HealthReport) =>
  `/health p50/p95/max ${ms(h.p50)}/${ms(h.p95)}/${ms(h.max)} ms (${h.n} probes` +
  `${h.failed ? `, ${h.failed} failed: ${h.errors.join(' | ')}` : ''})`;

/** The report as Markdown tables (seconds for TTFT, milliseconds for ITL and /health). */
export function formatReport(r: LoadReport): string {
  const lines: string[] = [];
  if (r.levels.length) {
    lines.push(
      '| clients | requests (failed) | tok/s | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) | /health p50 / p95 / max (ms) |',
      '|---|---|---|---|---|---|',
    );
    for (const l of r.levels)
      lines.push(
        `| ${l.concurrency} | ${l.requests} (${l.failed}) | ${fmt(l.tokensPerSec, 2)} | ${fmt(l.ttft.p50)} / ${fmt(l.ttft.p95)} | ` +
          `${ms(l.itl.p50)} / ${ms(l.itl.p95)} | ${ms(l.health.p50)} / ${ms(l.health.p95)} / ${ms(l.health.max)}` +
          `${l.health.failed ? ` (${l.health.failed} failed)` : ''} |`,
      );
  }
  if (r.chat) {
    const c = r.chat;
    lines.push(
      '',
      `Multi-turn chat (${c.turns.length} turns): turn-2 TTFT ${fmt(c.turn2Ttft)} s, last-turn TTFT ${fmt(c.lastTurnTtft)} s; ` +
        `/health p50 / p95 / max ${ms(c.health.p50)} / ${ms(c.health.p95)} / ${ms(c.health.max)} ms${failedProbes(c.health)}`,
      '',
      '| turn | prompt tokens | cached | TTFT (s) |',
      '|---|---|---|---|',
      ...c.turns.map(
        (t) =>
          `| ${t.turn} | ${t.promptTokens} | ${t.cachedTokens ?? '-'} | ${fmt(t.ttft)}${t.ok ? '' : ' (failed)'} |`,
      ),
    );
  }
  if (r.longPrompt) {
    const l = r.longPrompt;
    lines.push(
      '',
      `Long prompt: ${l.promptTokens} tokens, TTFT ${fmt(l.ttft)} s${l.ok ? '' : ` (failed: ${l.error})`}; ` +
        `/health during it p50 / p95 / max ${ms(l.health.p50)} / ${ms(l.health.p95)} / ${ms(l.health.max)} ms (${l.health.n} probes)${failedProbes(l.health)}`,
    );
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8000' },
      concurrency: { type: 'string' },
      requests: { type: 'string' },
      'max-tokens': { type: 'string' },
      'level-seconds': { type: 'string' },
      'grace-seconds': { type: 'string' },
      'chat-turns': { type: 'string' },
      'chat-max-tokens': { type: 'string' },
      'long-prompt-tokens': { type: 'string' },
      'scenario-seconds': { type: 'string' },
      'health-interval-ms': { type: 'string' },
      'api-key': { type: 'string' },
      model: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const d = LOADTEST_DEFAULTS;
  const raw = values as Record<string, string | boolean | undefined>;
  const num = (flag: string, fallback: number) => (typeof raw[flag] === 'string' ? Number(raw[flag]) : fallback);
  const opts: LoadTestOptions = {
    url: values.url!,
    model: values.model,
    apiKey: values['api-key'],
    concurrency:
      values.concurrency === undefined
        ? d.concurrency
        : values.concurrency.trim() === '' // '' skips the levels
          ? []
          : values.concurrency.split(',').map(Number),
    requests: num('requests', d.requests),
    maxTokens: num('max-tokens', d.maxTokens),
    levelSeconds: num('level-seconds', d.levelSeconds),
    graceSeconds: num('grace-seconds', d.graceSeconds),
    chatTurns: num('chat-turns', d.chatTurns),
    chatMaxTokens: num('chat-max-tokens', d.chatMaxTokens),
    longPromptTokens: num('long-prompt-tokens', d.longPromptTokens),
    scenarioSeconds: num('scenario-seconds', d.scenarioSeconds),
    healthIntervalMs: num('health-interval-ms', d.healthIntervalMs),
    log: (line) => console.error(line),
  };
  const report = await runLoadTest(opts);
  if (values.json)
    console.log(JSON.stringify(report, null, 2)); // NaN (nothing measured) becomes null
  else console.log(formatReport(report));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e) => {
    console.error((e as Error).message);
    process.exitCode = 1;
  });
}
