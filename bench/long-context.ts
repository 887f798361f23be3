// npm run bench -- --long-context: how prefill and decode slow down as the context grows (issue 23).
//
// At each depth d (tokens already in the KV cache) it measures, as llama.cpp's `llama-bench -d`:
//   pp  prefill tok/s of a prompt of --prompt-tokens tokens after d cached tokens;
//   tg  decode ms/token at positions d, d+1, ...;
// and splits a decode step into matmuls, attention and the rest (the model's profile).
// The cache is filled to the largest depth once, with random keys and values written through
// KvCache.write: attention does the same work whatever the values, and a real 16k-token prefill
// would take most of an hour on a shared machine. Depths are measured in interleaved rounds and the
// median of the rounds is kept, so the ratios to the shortest depth are same-run ratios.
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, type Model } from '../src/index.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../src/model/kv-cache.js';
import { WEIGHT_FORMATS } from '../src/model/load.js';
import type { WeightFormat } from '../src/tensor/matrix.js';
import { log, mb, num, out, repoRoot, rng, StreamTable } from './common.js';
import { ensureSyntheticModel } from './e2e.js';

export function longContextUsage(): string {
  return `Usage: npm run bench -- --long-context [options]

  --model DIR            a model directory (default: the synthetic Qwen2.5-0.5B)
  --weights FORMAT       ${WEIGHT_FORMATS.join(', ')} (default q8_0)
  --threads N            kernel threads (default ${os.availableParallelism()})
  --contexts LIST        depths (default 128,1024,4096,16384)
  --kv-cache-dtypes LIST ${KV_CACHE_DTYPES.join(', ')} (default f32,q8_0)
  --prompt-tokens N      prompt of the pp column (default 128)
  --decode-steps N       decode steps per round (default 4)
  --rounds N             interleaved rounds; the median is kept (default 3)
  --whole-prompts LIST   instead of the depth table: prefill tok/s of whole prompts of these
                         lengths from position 0 (e.g. 128,2048: the goal's 2k prompt vs 128)
  --cache DIR            where the synthetic model is written and reused (default <repo>/.cache/models)`;
}

interface Row {
  depth: number;
  ppTokS: number[];
  tgMs: number[];
  /** The same in CPU time of this process (all its threads): steadier than wall time on a busy machine. */
  ppCpuTokS: number[];
  tgCpuMs: number[];
  split: { matmul: number; attention: number; other: number };
}

const MATMUL_KEYS = ['qkv', 'o_proj', 'gate_up', 'down', 'lm_head'];

function cpuMs(u: NodeJS.CpuUsage): number {
  return (u.user + u.system) / 1000;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Positions 0..depth-1 of sequence 0 hold random keys and values in every layer. */
function fillCache(model: Model, depth: number): void {
  const c = model.config;
  const kvDim = c.numKvHeads * c.headDim;
  const random = rng(1);
  // 64 random rows, reused: |k| like a real model's after RoPE (a few units), v smaller.
  const rows = 64;
  const k = new Float32Array(rows * kvDim).map(() => 4 * (random() - 0.5));
  const v = new Float32Array(rows * kvDim).map(() => random() - 0.5);
  model.kvCache.ensure(0, depth);
  for (let pos = 0; pos < depth; pos++) {
    const r = ((pos * 37) % rows) * kvDim;
    for (let l = 0; l < c.numLayers; l++) model.kvCache.write(l, 0, pos, k, r, v, r);
  }
}

async function measureDtype(
  dir: string,
  dtype: KvCacheDtype,
  o: {
    weights: WeightFormat;
    threads: number;
    contexts: number[];
    promptTokens: number;
    steps: number;
    rounds: number;
  },
): Promise<{ rows: Row[]; bytesPerToken: number }> {
  const maxDepth = Math.max(...o.contexts);
  const contextLength = maxDepth + Math.max(o.promptTokens, o.steps);
  const model = await loadModel(dir, {
    weights: o.weights,
    threads: o.threads,
    maxSequences: 1,
    contextLength,
    kvCacheDtype: dtype,
  });
  try {
    const vocab = model.config.vocabSize;
    const random = rng(2);
    const prompt = Array.from({ length: o.promptTokens }, () => Math.floor(random() * Math.min(vocab, 150000)));
    const rows: Row[] = o.contexts.map((depth) => ({
      depth,
      ppTokS: [],
      tgMs: [],
      ppCpuTokS: [],
      tgCpuMs: [],
      split: { matmul: 0, attention: 0, other: 0 },
    }));
    for (let round = 0; round < o.rounds; round++) {
      // A measurement at depth d forgets the positions from d on (they are written again), so each
      // round fills the cache again and goes from the deepest depth down.
      log(`  ${dtype} cache: filling ${maxDepth} positions...`);
      fillCache(model, maxDepth);
      if (round === 0) model.forward(prompt.slice(0, 8), { startPos: maxDepth }); // warm-up: JIT, page faults
      for (const row of [...rows].reverse()) {
        let t = performance.now();
        let cpu = process.cpuUsage();
        model.forward(prompt, { startPos: row.depth });
        row.ppTokS.push(o.promptTokens / ((performance.now() - t) / 1000));
        row.ppCpuTokS.push(o.promptTokens / (cpuMs(process.cpuUsage(cpu)) / 1000));
        model.startProfile();
        t = performance.now();
        cpu = process.cpuUsage();
        for (let i = 0; i < o.steps; i++) model.forward([prompt[i]], { startPos: row.depth + i });
        row.tgMs.push((performance.now() - t) / o.steps);
        row.tgCpuMs.push(cpuMs(process.cpuUsage(cpu)) / o.steps);
        const p = model.profile()!;
        const matmul = MATMUL_KEYS.reduce((s, key) => s + p[key], 0);
        const total = Object.values(p).reduce((s, x) => s + x, 0);
        row.split.matmul += matmul;
        row.split.attention += p.attention;
        row.split.other += total - matmul - p.attention;
        log(
          `  ${dtype} round ${round + 1}/${o.rounds} depth ${row.depth}: pp ${num(row.ppTokS.at(-1)!)} tok/s ` +
            `(cpu ${num(row.ppCpuTokS.at(-1)!)}), tg ${num(row.tgMs.at(-1)!)} ms (cpu ${num(row.tgCpuMs.at(-1)!)}), ` +
            `attention ${num((100 * p.attention) / total)}%`,
        );
      }
    }
    return { rows, bytesPerToken: model.kvCache.bytesPerToken };
  } finally {
    await model.close();
  }
}

/** Prefill tok/s of whole prompts (from position 0) of each length, in interleaved rounds. */
async function measureWholePrompts(
  dir: string,
  dtype: KvCacheDtype,
  o: { weights: WeightFormat; threads: number; lengths: number[]; rounds: number },
): Promise<void> {
  const model = await loadModel(dir, {
    weights: o.weights,
    threads: o.threads,
    maxSequences: 1,
    contextLength: Math.max(...o.lengths),
    kvCacheDtype: dtype,
  });
  try {
    const vocab = model.config.vocabSize;
    const random = rng(3);
    const wall: number[][] = o.lengths.map(() => []);
    const cpu: number[][] = o.lengths.map(() => []);
    model.forward([1, 2, 3, 4, 5, 6, 7, 8]); // warm-up: JIT, page faults
    for (let round = 0; round < o.rounds; round++) {
      for (let i = 0; i < o.lengths.length; i++) {
        const n = o.lengths[i];
        const prompt = Array.from({ length: n }, () => Math.floor(random() * Math.min(vocab, 150000)));
        const t = performance.now();
        const c = process.cpuUsage();
        model.forward(prompt);
        wall[i].push(n / ((performance.now() - t) / 1000));
        cpu[i].push(n / (cpuMs(process.cpuUsage(c)) / 1000));
        log(
          `  ${dtype} round ${round + 1}/${o.rounds}: ${n}-token prompt ${num(wall[i].at(-1)!)} tok/s ` +
            `(cpu ${num(cpu[i].at(-1)!)}), ${num(n / wall[i].at(-1)!)} s`,
        );
      }
    }
    const table = new StreamTable(`KV cache ${dtype}: whole prompts from position 0`, [
      { title: 'prompt tokens', width: 13 },
      { title: 'prefill tok/s', width: 13 },
      { title: 'vs first', width: 8 },
      { title: 'cpu: tok/s', width: 10 },
      { title: 'cpu: vs first', width: 13 },
    ]);
    for (let i = 0; i < o.lengths.length; i++)
      table.row([
        String(o.lengths[i]),
        num(median(wall[i])),
        `${num((100 * median(wall[i])) / median(wall[0]))}%`,
        num(median(cpu[i])),
        `${num((100 * median(cpu[i])) / median(cpu[0]))}%`,
      ]);
  } finally {
    await model.close();
  }
}

export async function longContextMain(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      weights: { type: 'string' },
      threads: { type: 'string' },
      contexts: { type: 'string' },
      'kv-cache-dtypes': { type: 'string' },
      'prompt-tokens': { type: 'string' },
      'decode-steps': { type: 'string' },
      rounds: { type: 'string' },
      'whole-prompts': { type: 'string' },
      cache: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (v.help) return out(longContextUsage());
  const ints = (s: string | undefined, fallback: string) => (s ?? fallback).split(',').map((x) => Number(x));
  const contexts = ints(v.contexts, '128,1024,4096,16384');
  const weights = (v.weights ?? 'q8_0') as WeightFormat;
  const dtypes = (v['kv-cache-dtypes'] ?? 'f32,q8_0').split(',') as KvCacheDtype[];
  const threads = Number(v.threads ?? os.availableParallelism());
  const promptTokens = Number(v['prompt-tokens'] ?? 128);
  const steps = Number(v['decode-steps'] ?? 4);
  const rounds = Number(v.rounds ?? 3);
  const bad = [...contexts, threads, promptTokens, steps, rounds].find((x) => !Number.isInteger(x) || x < 1);
  if (bad !== undefined) throw new Error(`--long-context: every number must be a positive integer, got ${bad}`);
  if (!WEIGHT_FORMATS.includes(weights)) throw new Error(`--weights must be one of ${WEIGHT_FORMATS.join(', ')}`);
  for (const d of dtypes)
    if (!KV_CACHE_DTYPES.includes(d))
      throw new Error(`--kv-cache-dtypes: one of ${KV_CACHE_DTYPES.join(', ')}, got ${d}`);
  const dir = v.model ?? ensureSyntheticModel('qwen2.5-0.5b', v.cache ?? path.join(repoRoot(), '.cache', 'models'));
  if (v['whole-prompts'] !== undefined) {
    const lengths = ints(v['whole-prompts'], '');
    const badLength = lengths.find((x) => !Number.isInteger(x) || x < 1);
    if (badLength !== undefined)
      throw new Error(`--whole-prompts: every length must be a positive integer, got ${badLength}`);
    out(`Whole prompts: ${path.basename(dir)}, ${weights} weights, ${threads} threads (medians of ${rounds} rounds)`);
    for (const dtype of dtypes) await measureWholePrompts(dir, dtype, { weights, threads, lengths, rounds });
    return;
  }

  out(
    `Long contexts: ${path.basename(dir)}, ${weights} weights, ${threads} threads, pp${promptTokens} and tg at depth d`,
  );
  out(`(medians of ${rounds} interleaved rounds; ratios are to the first depth of the same run)`);
  for (const dtype of dtypes) {
    const { rows, bytesPerToken } = await measureDtype(dir, dtype, {
      weights,
      threads,
      contexts,
      promptTokens,
      steps,
      rounds,
    });
    const pp0 = median(rows[0].ppTokS),
      tg0 = median(rows[0].tgMs),
      ppCpu0 = median(rows[0].ppCpuTokS),
      tgCpu0 = median(rows[0].tgCpuMs);
    const table = new StreamTable(
      `KV cache ${dtype} (${num(bytesPerToken / 1024)} KiB per token, ${mb(bytesPerToken * Math.max(...contexts))} MB at ${Math.max(...contexts)})`,
      [
        { title: 'depth', width: 6 },
        { title: 'pp tok/s', width: 9 },
        { title: 'pp vs first', width: 11 },
        { title: 'tg ms/token', width: 11 },
        { title: 'tg speed vs first', width: 17 },
        { title: 'cpu: pp vs first', width: 16 },
        { title: 'tg vs first', width: 11 },
        { title: 'matmul %', width: 8 },
        { title: 'attention %', width: 11 },
        { title: 'other %', width: 7 },
      ],
    );
    for (const r of rows) {
      const pp = median(r.ppTokS),
        tg = median(r.tgMs);
      const total = r.split.matmul + r.split.attention + r.split.other;
      const pct = (x: number) => num((100 * x) / total);
      table.row([
        String(r.depth),
        num(pp),
        `${num((100 * pp) / pp0)}%`,
        num(tg),
        `${num((100 * tg0) / tg)}%`,
        `${num((100 * median(r.ppCpuTokS)) / ppCpu0)}%`,
        `${num((100 * tgCpu0) / median(r.tgCpuMs))}%`,
        pct(r.split.matmul),
        pct(r.split.attention),
        pct(r.split.other),
      ]);
    }
  }
}
