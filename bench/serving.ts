// Serving measurements for the engine (issue 10), against a `qwen-ts serve` started from any build:
//   node dist/bench/serving.js --model DIR [--dist DIR] [--threads 2] --scenario health|load|chat
//     health: /health latency (sequential probes) while a --prompt-tokens prompt is prefilled
//     load:   --concurrency 1,4,8 clients, --requests each, streamed chat of --max-tokens tokens:
//             time to first token and inter-token latency, p50 / p95
//     chat:   a --turns turn chat through the library (--prefix-caching on,off): TTFT per turn
// --dist picks the build whose CLI serves (e.g. an older checkout's dist/) for before/after runs.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    dist: { type: 'string' },
    threads: { type: 'string', default: '2' },
    scenario: { type: 'string', default: 'load' },
    'prompt-tokens': { type: 'string', default: '2000' },
    'probe-seconds': { type: 'string', default: '30' },
    concurrency: { type: 'string', default: '1,4,8' },
    requests: { type: 'string', default: '2' },
    'max-tokens': { type: 'string', default: '32' },
    turns: { type: 'string', default: '10' },
    'prefix-caching': { type: 'string', default: 'on,off' },
    port: { type: 'string', default: '8911' },
  },
});
if (!values.model) throw new Error('--model DIR is required');
const dist = values.dist ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const base = `http://127.0.0.1:${values.port}`;

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x: number): string => `${Math.round(x)} ms`;

async function startServer(): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      path.join(dist, 'src/cli/main.js'),
      'serve',
      '--model',
      values.model!,
      '--threads',
      values.threads!,
      '--port',
      values.port!,
      '--quiet',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code})`)));
  });
  return child;
}

async function health(): Promise<void> {
  const server = await startServer();
  try {
    const n = Number(values['prompt-tokens']);
    const prompt = Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % 30000));
    const ac = new AbortController();
    const gen = fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: 1, temperature: 0 }),
      signal: ac.signal,
    }).catch(() => null);
    await new Promise((r) => setTimeout(r, 1000)); // the prefill has started
    const until = performance.now() + Number(values['probe-seconds']) * 1000;
    const lat: number[] = [];
    while (performance.now() < until) {
      const t0 = performance.now();
      await (await fetch(`${base}/health`)).text();
      lat.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 100));
    }
    ac.abort();
    await gen;
    console.log(
      `health during a ${n}-token prefill: ${lat.length} probes, p50 ${ms(pct(lat, 50))}, p95 ${ms(pct(lat, 95))}, max ${ms(Math.max(...lat))}`,
    );
  } finally {
    server.kill('SIGKILL');
  }
}

async function oneStream(client: number, i: number, maxTokens: number): Promise<{ ttft: number; gaps: number[] }> {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      messages: [
        { role: 'system', content: 'You are a helpful assistant.' },
        { role: 'user', content: `Client ${client}, question ${i}: tell me how the stock market works.` },
      ],
      max_tokens: maxTokens,
      ignore_eos: true,
      seed: client * 1000 + i,
      stream: true,
    }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  let ttft = NaN;
  let last = 0;
  const gaps: number[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body!) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!event.includes('"content":"') || event.includes('"role"')) continue;
      const now = performance.now();
      if (Number.isNaN(ttft)) ttft = now - t0;
      else gaps.push(now - last);
      last = now;
    }
  }
  return { ttft, gaps };
}

async function load(): Promise<void> {
  const server = await startServer();
  try {
    const maxTokens = Number(values['max-tokens']);
    for (const c of values.concurrency!.split(',').map(Number)) {
      const ttfts: number[] = [];
      const gaps: number[] = [];
      const t0 = performance.now();
      let tokens = 0;
      await Promise.all(
        Array.from({ length: c }, async (_, client) => {
          for (let i = 0; i < Number(values.requests); i++) {
            const r = await oneStream(client, i, maxTokens);
            ttfts.push(r.ttft);
            gaps.push(...r.gaps);
            tokens += r.gaps.length + 1;
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      console.log(
        `${c} clients: ${ttfts.length} requests, ${(tokens / secs).toFixed(1)} streamed chunks/s; ` +
          `TTFT p50 ${ms(pct(ttfts, 50))} p95 ${ms(pct(ttfts, 95))}; ` +
          `inter-token p50 ${ms(pct(gaps, 50))} p95 ${ms(pct(gaps, 95))} max ${ms(Math.max(...gaps))}`,
      );
    }
  } finally {
    server.kill('SIGKILL');
  }
}

async function chat(): Promise<void> {
  const { LLM } = (await import(path.join(dist, 'src/engine/llm.js'))) as typeof import('../src/engine/llm.js');
  for (const prefixCaching of values['prefix-caching']!.split(',').map((v) => v === 'on')) {
    const llm = await LLM.load(values.model!, { threads: Number(values.threads), prefixCaching });
    const messages: { role: string; content: string }[] = [{ role: 'system', content: 'You are a helpful assistant.' }];
    const ttft: string[] = [];
    for (let turn = 1; turn <= Number(values.turns); turn++) {
      messages.push({ role: 'user', content: `Turn ${turn}: tell me more about how the stock market works.` });
      const [r] = await llm.chat(messages as never, { temperature: 0, maxTokens: 16, ignoreEos: true });
      messages.push({ role: 'assistant', content: r.outputs[0].text });
      const cached = (r.metrics as { cachedTokens?: number }).cachedTokens ?? 0;
      ttft.push(
        `${turn}: ${r.metrics.timeToFirstToken.toFixed(2)} s (${r.promptTokenIds.length} prompt, ${cached} cached)`,
      );
    }
    console.log(`prefix caching ${prefixCaching ? 'on' : 'off'}: TTFT per turn ${ttft.join('; ')}`);
    await llm.close();
  }
}

if (values.scenario === 'health') await health();
else if (values.scenario === 'load') await load();
else if (values.scenario === 'chat') await chat();
else throw new Error(`unknown --scenario ${values.scenario}`);
