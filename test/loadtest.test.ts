// The load test: percentiles on known data (pure functions), the loopback-only and bounds checks,
// and one bounded run against the tiny model checking the report's shape and counts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import {
  checkLoadTestOptions,
  formatReport,
  LOADTEST_DEFAULTS,
  longPromptText,
  percentile,
  runLoadTest,
  summarize,
  type LoadTestOptions,
} from '../bench/loadtest.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { makeTempModel, removeDir } from './helpers/models.js';

describe('percentiles', () => {
  it('linear interpolation between closest ranks, as numpy.percentile', () => {
    const xs = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]; // unsorted on purpose
    // numpy.percentile(range(1, 11), [50, 95, 0, 100, 25]) = [5.5, 9.55, 1, 10, 3.25]
    expect(percentile(xs, 50)).toBe(5.5);
    expect(percentile(xs, 95)).toBeCloseTo(9.55, 12);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile(xs, 100)).toBe(10);
    expect(percentile(xs, 25)).toBe(3.25);
    expect(xs[0]).toBe(10); // the input is not sorted in place
    // numpy.percentile([0.2, 0.4, 3.0], [50, 95]) = [0.4, 2.74]
    expect(summarize([0.4, 3.0, 0.2])).toEqual({ n: 3, p50: 0.4, p95: expect.closeTo(2.74, 12), max: 3 });
    expect(summarize([7])).toEqual({ n: 1, p50: 7, p95: 7, max: 7 });
    const none = summarize([]);
    expect([none.n, none.p50, none.p95, none.max]).toEqual([0, NaN, NaN, NaN]);
  });
});

describe('options', () => {
  const opts = (o: Partial<LoadTestOptions>): LoadTestOptions => ({
    ...LOADTEST_DEFAULTS,
    url: 'http://127.0.0.1:8000',
    ...o,
  });

  it('only http loopback targets', () => {
    expect(checkLoadTestOptions(opts({}))).toBe('http://127.0.0.1:8000');
    expect(checkLoadTestOptions(opts({ url: 'http://[::1]:9000/v1' }))).toBe('http://[::1]:9000');
    expect(checkLoadTestOptions(opts({ url: 'http://localhost:1' }))).toBe('http://localhost:1');
    expect(() => checkLoadTestOptions(opts({ url: 'http://example.com:8000' }))).toThrow(
      'loadtest: only http:// loopback targets are allowed (127.0.0.1, [::1], localhost), got http://example.com:8000',
    );
    expect(() => checkLoadTestOptions(opts({ url: 'http://10.0.0.1:8000' }))).toThrow('only http:// loopback');
    expect(() => checkLoadTestOptions(opts({ url: 'https://127.0.0.1:8000' }))).toThrow('only http:// loopback');
  });

  it('bounded requests and time, each out-of-range option named', () => {
    expect(() => checkLoadTestOptions(opts({ concurrency: [1, 65], requests: 21, levelSeconds: 601 }))).toThrow(
      'loadtest: out of range: --concurrency: integers from 1 to 64; --requests: 1 to 20; --level-seconds: up to 600',
    );
    expect(() => checkLoadTestOptions(opts({ longPromptTokens: 9000 }))).toThrow('--long-prompt-tokens: 0 to 8192');
  });

  it('the long prompt is about as many words as tokens asked for', () => {
    const text = longPromptText(100);
    expect(text.split(' ')).toHaveLength(100 + 6);
  });
});

describe('a bounded run on the tiny model', () => {
  let dir: string;
  let llm: LLM;
  let app: OpenAIServer;
  let port: number;
  beforeAll(async () => {
    dir = makeTempModel({ preset: 'tiny', seed: 0 });
    llm = await LLM.load(dir, { threads: 1, contextLength: 1024 });
    app = createServer(llm, { modelName: 'tiny', log: false });
    port = (await app.listen(0, '127.0.0.1')).port;
  });
  afterAll(async () => {
    await app?.close();
    await llm?.close();
    removeDir(dir);
  });

  it('levels, chat turns and the long prompt: every request counted, usage and percentiles filled in', async () => {
    const report = await runLoadTest({
      ...LOADTEST_DEFAULTS,
      url: `http://127.0.0.1:${port}`,
      concurrency: [1, 2],
      requests: 2,
      maxTokens: 5,
      chatTurns: 3,
      chatMaxTokens: 4,
      longPromptTokens: 200,
      healthIntervalMs: 20,
    });
    expect(report.url).toBe(`http://127.0.0.1:${port}`);
    expect(report.levels.map((l) => [l.concurrency, l.requests, l.failed, l.errors])).toEqual([
      [1, 2, 0, []],
      [2, 4, 0, []],
    ]);
    for (const l of report.levels) {
      expect(l.ttft.n).toBe(l.requests);
      expect(l.latency.n).toBe(l.requests);
      // Every answer has 5 tokens; chunks with text are at most 5, so at most 4 gaps each.
      expect(l.itl.n).toBeGreaterThan(0);
      expect(l.itl.n).toBeLessThanOrEqual(4 * l.requests);
      expect(l.tokensPerSec).toBeCloseTo((5 * l.requests) / l.seconds, 9);
      expect(l.ttft.p50).toBeGreaterThan(0);
      for (const p of [l.ttft, l.itl, l.latency]) {
        expect(p.p50).toBeGreaterThanOrEqual(0); // two chunks read at once can be 0 apart
        expect(p.p50).toBeLessThanOrEqual(p.p95);
        expect(p.p95).toBeLessThanOrEqual(p.max);
      }
      expect([l.health.n > 0, l.health.failed, l.health.errors]).toEqual([true, 0, []]);
    }
    const chat = report.chat!;
    expect(chat.turns.map((t) => [t.turn, t.ok])).toEqual([
      [1, true],
      [2, true],
      [3, true],
    ]);
    // Each turn resends the history plus the previous answer: the prompt grows every turn.
    const lengths = chat.turns.map((t) => t.promptTokens);
    expect(lengths[1]).toBeGreaterThan(lengths[0]);
    expect(lengths[2]).toBeGreaterThan(lengths[1]);
    expect(chat.turn2Ttft).toBe(chat.turns[1].ttft);
    expect(chat.lastTurnTtft).toBe(chat.turns[2].ttft);
    const long = report.longPrompt!;
    expect(long.ok).toBe(true);
    expect(long.promptTokens).toBeGreaterThan(200);
    expect(long.ttft).toBeGreaterThan(0);
    expect(long.health.n).toBeGreaterThan(0);

    const text = formatReport(report);
    expect(text).toContain('| clients | requests (failed) | tok/s | TTFT p50 / p95 (s) |');
    expect(text).toMatch(/^\| 2 \| 4 \(0\) \| /m);
    expect(text).toContain('Multi-turn chat (3 turns): turn-2 TTFT ');
    expect(text).toContain(`Long prompt: ${long.promptTokens} tokens, TTFT `);
  });
});
