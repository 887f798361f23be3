// npm run bench: machine (memory bandwidth, thread-pool dispatch cost), kernels at the real Qwen2.5
// shapes, and end-to-end prefill/decode on synthetic (or real) models. See usage() below.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '../src/model/config.js';
import { WEIGHT_FORMATS } from '../src/model/load.js';
import { isSyntheticPreset, PRESETS, type SyntheticPresetName } from '../src/model/synthetic.js';
import type { WeightFormat } from '../src/tensor/matrix.js';
import { log, mb, num, out, repoRoot, setJsonMode, StreamTable } from './common.js';
import {
  CHILD_FLAG,
  childMain,
  ensureSyntheticModel,
  estimateWeightBytes,
  runInChild,
  type ChildResult,
  type E2ePlan,
} from './e2e.js';
import { longContextMain } from './long-context.js';
import { printConstraintBench, runConstraintBench } from './constraint.js';
import { printGoals, runGoals, runJumpForwardGoals, runRowKernels, runStepCost, type GoalRow } from './speculation.js';
import { dimsFromConfig, dimsFromPreset, runKernels, type KernelDims, type KernelResult } from './kernels.js';
import { runScalarLimit, type ScalarRow } from './scalar.js';
import { FORMAT_SHAPES, FORMAT_TYPES, runFormats, type FormatResult } from './formats.js';
import { machineBasics, measureBandwidth, measureDispatch, measureFirstTouch, type DispatchCost } from './machine.js';

function usage(): string {
  return `Usage: npm run bench -- [options]   (node dist/bench/bench.js [options])

  --quick              smoke test (< 60 s): tiny model, f32 and q8_0, 16-token prefill, 8 decode steps,
                       small kernel shapes, very short kernel timings
  --json               print one JSON object on stdout (progress goes to stderr)
  --models LIST        synthetic models: 0.5b, 1.5b, tiny (default 0.5b,1.5b; tiny with --quick)
  --model DIR          bench a model directory (Hugging Face layout) instead of synthetic models
  --weights LIST       weight formats: ${WEIGHT_FORMATS.join(', ')} (default f32,bf16,q8_0,q4_0: the
                       K-quants quantize at load with llama.cpp's slow reference search; f32,q8_0 with --quick)
  --threads LIST       thread counts (default 1,${os.availableParallelism()})
  --kernels-only       machine, scalar-limit and kernel sections only
  --scalar-only        machine and scalar-limit sections only (each kernel's % of the scalar C loop)
  --e2e-only           machine and end-to-end sections only
  --formats-only       only the per-format table: each GGUF tensor type (--types LIST, default
                       ${FORMAT_TYPES.join(',')}) as one decoder layer's matmuls of the 0.5B and 1.5B
                       (--models), prefill of 64 and decode tokens/s on the largest --threads count, with
                       its ratio to q4_0 or q8_0 in the same run and its memory against the file's
                       bytes (--format-rounds N interleaved rounds, default 5; also part of the kernels section)
  --compare-before     end to end also with the kernels of before (bench/matmul-reference.ts)
  --spec-only          speculative decoding only: the cost of a step with k = 1..8 rows of one sequence
                       per model and weight format, then the goals end to end on stories260K
                       (--spec-rounds N rounds each, default 5; --threads: the largest count;
                       --spec-tokens N: num_speculative_tokens of the goals, default 4)
  --cache DIR          where synthetic models are written and reused (default <repo>/.cache/models)
  --prompt-tokens LIST prefill prompt lengths (default 128,512)
  --decode-steps N     timed decode steps (default 128)
  --long-context       only the long-context table (prefill and decode at depths 128..16k); see
                       npm run bench -- --long-context --help
  --help               this text

Each end-to-end configuration (model x weights x threads) runs in its own child process, so load
time and peak RSS are per configuration. Numbers are noisy on a busy machine.`;
}

class UsageError extends Error {}

const MODEL_ALIASES: Record<string, string> = { '0.5b': 'qwen2.5-0.5b', '1.5b': 'qwen2.5-1.5b', tiny: 'tiny' };

function list(flag: string, value: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new UsageError(`${flag}: empty list`);
  return items;
}

interface Options {
  quick: boolean;
  /** Only the per-format table (formats.ts). */
  formatsOnly: boolean;
  /** The per-format table as part of the kernels section. */
  formats: boolean;
  types: string[];
  formatRounds: number;
  json: boolean;
  models: { name: string; preset: string | null; dir: string | null }[];
  weights: WeightFormat[];
  threads: number[];
  scalar: boolean;
  kernels: boolean;
  e2e: boolean;
  compareBefore: boolean;
  spec: boolean;
  specRounds: number;
  specTokens: number;
  cacheDir: string;
  promptTokens: number[] | null;
  decodeSteps: number | null;
}

function parseOptions(argv: string[]): Options | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: 'boolean' },
        json: { type: 'boolean' },
        model: { type: 'string' },
        models: { type: 'string' },
        weights: { type: 'string' },
        threads: { type: 'string' },
        'kernels-only': { type: 'boolean' },
        'e2e-only': { type: 'boolean' },
        'scalar-only': { type: 'boolean' },
        'compare-before': { type: 'boolean' },
        'spec-only': { type: 'boolean' },
        'formats-only': { type: 'boolean' },
        types: { type: 'string' },
        'format-rounds': { type: 'string' },
        'spec-rounds': { type: 'string' },
        'spec-tokens': { type: 'string' },
        cache: { type: 'string' },
        'prompt-tokens': { type: 'string' },
        'decode-steps': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) return null;
  const quick = v.quick ?? false;

  if (
    [v['kernels-only'], v['e2e-only'], v['scalar-only'], v['spec-only'], v['formats-only']].filter(Boolean).length > 1
  )
    throw new UsageError(
      '--kernels-only, --scalar-only, --e2e-only, --spec-only and --formats-only exclude each other',
    );
  const types = list('--types', v.types ?? FORMAT_TYPES.join(',')).map((t) => {
    const u = t.toUpperCase();
    if (!FORMAT_TYPES.includes(u))
      throw new UsageError(`--types: unknown type "${t}" (expected ${FORMAT_TYPES.join(', ')})`);
    return u;
  });
  if (v.model !== undefined && v.models !== undefined)
    throw new UsageError('use either --model DIR or --models LIST, not both');

  const weights = list('--weights', v.weights ?? (quick ? 'f32,q8_0' : 'f32,bf16,q8_0,q4_0')).map((w) => {
    if (!(WEIGHT_FORMATS as readonly string[]).includes(w))
      throw new UsageError(`--weights: unknown weight format "${w}" (expected ${WEIGHT_FORMATS.join(', ')})`);
    return w as WeightFormat;
  });

  const threads = list('--threads', v.threads ?? `1,${os.availableParallelism()}`).map((t) => {
    const n = Number(t);
    if (!/^\d+$/.test(t) || n < 1 || n > 64)
      throw new UsageError(`--threads: "${t}" is not a thread count from 1 to 64`);
    return n;
  });

  let models: Options['models'];
  if (v.model !== undefined) {
    const dir = path.resolve(v.model);
    if (!fs.existsSync(path.join(dir, 'config.json')))
      throw new UsageError(`--model: ${dir} is not a model directory (no config.json)`);
    models = [{ name: path.basename(dir), preset: null, dir }];
  } else {
    models = list('--models', v.models ?? (quick ? 'tiny' : '0.5b,1.5b')).map((m) => {
      const preset = MODEL_ALIASES[m.toLowerCase()] ?? (isSyntheticPreset(m) ? m : undefined);
      if (!preset)
        throw new UsageError(
          `--models: unknown model "${m}" (expected ${Object.keys(MODEL_ALIASES).join(', ')} or a preset: ${Object.keys(PRESETS).join(', ')})`,
        );
      return { name: preset, preset, dir: null };
    });
  }

  const count = (flag: string, t: string) => {
    const n = Number(t);
    if (!/^\d+$/.test(t) || n < 1 || n > 32768)
      throw new UsageError(`${flag}: "${t}" is not a token count from 1 to 32768`);
    return n;
  };
  const promptTokens =
    v['prompt-tokens'] === undefined
      ? null
      : list('--prompt-tokens', v['prompt-tokens']).map((t) => count('--prompt-tokens', t));
  const decodeSteps = v['decode-steps'] === undefined ? null : count('--decode-steps', v['decode-steps']);

  return {
    quick,
    promptTokens,
    decodeSteps,
    json: v.json ?? false,
    models,
    weights: [...new Set(weights)],
    threads: [...new Set(threads)],
    scalar: !v['e2e-only'],
    kernels: !v['e2e-only'] && !v['scalar-only'],
    e2e: !v['kernels-only'] && !v['scalar-only'],
    compareBefore: v['compare-before'] ?? false,
    spec: v['spec-only'] ?? false,
    specRounds: v['spec-rounds'] === undefined ? 5 : count('--spec-rounds', v['spec-rounds']),
    specTokens: v['spec-tokens'] === undefined ? 4 : count('--spec-tokens', v['spec-tokens']),
    formatsOnly: v['formats-only'] ?? false,
    formats: !quick && !v['e2e-only'] && !v['scalar-only'],
    types,
    formatRounds: v['format-rounds'] === undefined ? 5 : count('--format-rounds', v['format-rounds']),
    cacheDir: v.cache !== undefined ? path.resolve(v.cache) : path.join(repoRoot(), '.cache', 'models'),
  };
}

interface ResultRow {
  model: string;
  weights: WeightFormat;
  /** 'before': run with bench/matmul-reference.ts (--compare-before). */
  kernels: 'before' | 'now';
  threads: number;
  promptTokens: number;
  prefillTokensPerSec: number;
  decodeTokensPerSec: number;
  decodeMsP50: number;
  decodeProfileMsPerToken: Record<string, number>;
  decodeSteps: number;
  batchedDecodeTokensPerSec: number;
  batchSize: number;
  batchSpeedup: number;
  rooflineTokensPerSec: number;
  weightBytesPerToken: number;
  kvCacheBytesPerToken: number;
  loadSeconds: number;
  /** LLM.load end to end (engine thread, tokenizer, weights): what the CLI's "loaded in" reports. */
  llmLoadSeconds: number;
  /** Bytes of weights the load produced; loadSeconds / (weightBytes / 1e9) is the s/GB. */
  weightBytes: number;
  rssAfterLoadBytes: number;
  peakRssBytes: number;
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\nRun with --help for usage.\n`);
      return 2;
    }
    throw e;
  }
  if (opts === null) {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  setJsonMode(opts.json);
  const started = performance.now();
  if (opts.spec) return runSpeculationBench(opts);
  if (opts.formatsOnly) {
    const formats = await runFormatTable(opts);
    if (opts.json) process.stdout.write(JSON.stringify({ formats }, null, 2) + '\n');
    return 0;
  }
  const quick = opts.quick;

  // ---- Machine ----
  log(`machine: measuring memory bandwidth and dispatch cost${quick ? ' (quick)' : ''}...`);
  const basics = machineBasics();
  const bwThreads = [...new Set([1, ...opts.threads])].sort((a, b) => a - b);
  const bandwidth = await measureBandwidth(bwThreads, quick ? 128 << 20 : 512 << 20, quick ? 2 : 4);
  const dispatchThreads = [...new Set([2, ...opts.threads.filter((t) => t > 1)])].sort((a, b) => a - b);
  const dispatch: DispatchCost[] = [];
  for (const t of dispatchThreads)
    dispatch.push(await measureDispatch(t, quick ? 2000 : 20000, quick ? 5 : 20, quick ? 100 : 500));
  const touchBytes = quick ? 64 << 20 : 256 << 20;
  const firstTouchSecondsPerGiB = measureFirstTouch(touchBytes);
  const bandwidthFor = (threads: number) => bandwidth[threads] ?? bandwidth[Math.max(...bwThreads)];
  out('');
  out('Machine');
  out(`  cpu               ${basics.cpu}`);
  out(`  cores             ${basics.cores}`);
  out(`  memory            ${num(basics.memoryBytes / 2 ** 30)} GiB`);
  out(`  node              ${basics.node}`);
  out(
    `  load average      ${basics.loadAverage.join(' ')} (1, 5, 15 min) at start${basics.loadAverage[0] > 0.5 ? ': the machine is busy, numbers are skewed' : ''}`,
  );
  for (const t of bwThreads)
    out(
      `  bandwidth x${t}      ${num(bandwidth[t])} GB/s  (JS Float64Array sum of ${quick ? 128 : 512} MB, best of ${quick ? 2 : 4})`,
    );
  out(
    `  first touch       ${num(firstTouchSecondsPerGiB)} s/GiB  (filling a fresh ${touchBytes >> 20} MB SharedArrayBuffer: page faults; the floor of a load)`,
  );
  for (const d of dispatch) {
    out(
      `  dispatch x${d.threads}       ${num(d.hotMicros)} us per pool.run() back to back; ${num(d.wakeMicros)} us after 20 ms idle (workers asleep)`,
    );
  }

  const since = (t: number) => `${((performance.now() - t) / 1000).toFixed(1)} s`;
  log(`machine: done in ${since(started)}`);

  // ---- Scalar limit ----
  const scalar: ScalarRow[] = [];
  if (opts.scalar) {
    const ts = performance.now();
    log('scalar limit...');
    for (const m of opts.models) {
      const dims: KernelDims = m.preset
        ? dimsFromPreset(PRESETS[m.preset as SyntheticPresetName])
        : dimsFromConfig(loadModelConfig(m.dir!));
      scalar.push(
        ...runScalarLimit({
          model: m.name,
          dims,
          formats: opts.weights,
          prefillN: quick ? 16 : 64,
          rounds: quick ? 1 : 7,
          millis: quick ? 20 : 100,
          cacheDir: opts.cacheDir,
        }),
      );
    }
    log(`scalar limit: done in ${since(ts)}`);
  }

  // ---- Kernels ----
  const kernels: KernelResult[] = [];
  if (opts.kernels) {
    const tk = performance.now();
    log('kernels...');
    for (const m of opts.models) {
      const dims: KernelDims = m.preset
        ? dimsFromPreset(PRESETS[m.preset as SyntheticPresetName])
        : dimsFromConfig(loadModelConfig(m.dir!));
      kernels.push(
        ...(await runKernels({
          model: m.name,
          dims,
          formats: opts.weights,
          threads: opts.threads,
          prefillN: quick ? 16 : 64,
          attentionContext: quick ? 64 : 512,
          quick,
        })),
      );
    }
    log(`kernels: done in ${since(tk)}`);
  }
  const formats: FormatResult[] = opts.formats ? await runFormatTable(opts) : [];

  // ---- Constrained decoding (structured output): per-step cost of the token mask ----
  let constraint: Awaited<ReturnType<typeof runConstraintBench>> | null = null;
  if (opts.kernels) {
    const tc = performance.now();
    log('constrained decoding...');
    constraint = await runConstraintBench({ quick });
    printConstraintBench(constraint);
    log(`constrained decoding: done in ${since(tc)}`);
  }

  // ---- End to end ----
  const results: ResultRow[] = [];
  const errors: { model: string; weights: string; threads: number; error: string }[] = [];
  if (opts.e2e) {
    const plan: E2ePlan = quick
      ? {
          promptTokens: [16],
          warmupTokens: 4,
          decodePrompt: 16,
          decodeSteps: 8,
          batchSize: 8,
          batchWarmupSteps: 2,
          batchCalls: 4,
          seed: 1,
        }
      : {
          promptTokens: [128, 512],
          warmupTokens: 16,
          decodePrompt: 128,
          decodeSteps: 128,
          batchSize: 8,
          batchWarmupSteps: 4,
          batchCalls: 32,
          seed: 1,
        };
    if (opts.promptTokens) {
      plan.promptTokens = opts.promptTokens;
      plan.decodePrompt = opts.promptTokens[0];
    }
    if (opts.decodeSteps) {
      plan.decodeSteps = opts.decodeSteps;
      plan.batchCalls = Math.max(4, Math.round(opts.decodeSteps / 4));
    }
    const table = new StreamTable(
      `End to end (prefill: one forward of N random tokens; decode: ${plan.decodeSteps} greedy steps after a ${plan.decodePrompt}-token prompt; ` +
        `batch: decodeBatch of ${plan.batchSize} sequences x ${plan.batchCalls} steps after ${plan.batchWarmupSteps}; roofline = bandwidth / weight bytes per token)`,
      [
        { title: 'model', width: 14, align: 'left' },
        { title: 'weights', width: 15, align: 'left' },
        { title: 'thr', width: 3 },
        { title: 'load s', width: 6 },
        { title: 'prompt', width: 6 },
        { title: 'prefill t/s', width: 11 },
        { title: 'decode t/s', width: 10 },
        { title: `batch${plan.batchSize} t/s`, width: 10 },
        { title: 'speed-up', width: 8 },
        { title: 'roofline t/s', width: 12 },
        { title: '% roof', width: 6 },
        { title: 'MB/token', width: 8 },
        { title: 'peak RSS MB', width: 11 },
      ],
    );
    const script = fileURLToPath(import.meta.url);
    for (const m of opts.models) {
      const dir = m.dir ?? ensureSyntheticModel(m.preset!, opts.cacheDir);
      const config = loadModelConfig(dir);
      for (const weights of opts.weights) {
        const need = estimateWeightBytes(config, weights);
        if (need > 0.85 * os.totalmem()) {
          const error = `skipped: needs about ${mb(need)} MB of weights, more than 85% of the ${mb(os.totalmem())} MB of memory`;
          log(`  ${m.name} ${weights}: ${error}`);
          for (const threads of opts.threads) errors.push({ model: m.name, weights, threads, error });
          continue;
        }
        for (const threads of opts.threads)
          for (const before of opts.compareBefore ? [true, false] : [false]) {
            const label = before ? `${weights} (before)` : weights;
            log(`  e2e ${m.name} ${label} x${threads}...`);
            let r: ChildResult;
            try {
              r = await runInChild(script, { model: m.name, dir, weights, threads, plan, before });
            } catch (e) {
              const error = (e as Error).message;
              log(`  e2e ${m.name} ${label} x${threads} FAILED: ${error}`);
              errors.push({ model: m.name, weights: label, threads, error });
              continue;
            }
            const roofline = (bandwidthFor(threads) * 1e9) / r.weightBytesPerToken;
            for (const p of r.prefill) {
              const row: ResultRow = {
                model: m.name,
                weights,
                kernels: before ? 'before' : 'now',
                threads,
                promptTokens: p.tokens,
                prefillTokensPerSec: p.tokensPerSec,
                decodeTokensPerSec: r.decodeTokensPerSec,
                decodeMsP50: r.decodeMsP50,
                decodeProfileMsPerToken: r.decodeProfileMs,
                decodeSteps: r.decodeSteps,
                batchedDecodeTokensPerSec: r.batchedDecodeTokensPerSec,
                batchSize: r.batchSize,
                batchSpeedup: r.batchedDecodeTokensPerSec / r.decodeTokensPerSec,
                rooflineTokensPerSec: roofline,
                weightBytesPerToken: r.weightBytesPerToken,
                kvCacheBytesPerToken: r.kvCacheBytesPerToken,
                loadSeconds: r.loadSeconds,
                llmLoadSeconds: r.llmLoadSeconds,
                weightBytes: r.weightBytes,
                rssAfterLoadBytes: r.rssAfterLoadBytes,
                peakRssBytes: r.peakRssBytes,
              };
              results.push(row);
              table.row([
                row.model,
                label,
                String(threads),
                num(row.loadSeconds),
                String(row.promptTokens),
                num(row.prefillTokensPerSec),
                num(row.decodeTokensPerSec),
                num(row.batchedDecodeTokensPerSec),
                `${num(row.batchSpeedup)}x`,
                num(roofline),
                `${num((100 * row.decodeTokensPerSec) / roofline)}%`,
                mb(row.weightBytesPerToken),
                mb(row.peakRssBytes),
              ]);
            }
          }
      }
    }
  }

  if (results.length > 0) {
    // Loading: seconds per GB produced (the target is <= 2 s/GB), next to the time the
    // same bytes take just to be first-touched on this machine (one thread).
    const loading = new StreamTable(
      `Loading (load s = loadModel: weights, KV cache, worker threads; LLM.load s = end to end as a user and the CLI meet it: engine thread, tokenizer, then the same; GB = weights produced in memory; floor = GB x first touch ${num(firstTouchSecondsPerGiB)} s/GiB)`,
      [
        { title: 'model', width: 14, align: 'left' },
        { title: 'weights', width: 15, align: 'left' },
        { title: 'thr', width: 3 },
        { title: 'load s', width: 6 },
        { title: 'LLM.load s', width: 10 },
        { title: 'GB', width: 6 },
        { title: 's/GB', width: 6 },
        { title: 'floor s', width: 7 },
        { title: 'RSS after load MB', width: 17 },
        { title: 'peak RSS MB', width: 11 },
      ],
    );
    const shown = new Set<string>();
    for (const r of results) {
      const key = `${r.model} ${r.weights} ${r.kernels} ${r.threads}`;
      if (shown.has(key)) continue;
      shown.add(key);
      const gb = r.weightBytes / 1e9;
      loading.row([
        r.model,
        r.kernels === 'before' ? `${r.weights} (before)` : r.weights,
        String(r.threads),
        num(r.loadSeconds),
        num(r.llmLoadSeconds),
        num(gb),
        num(r.loadSeconds / gb),
        num((r.weightBytes / 2 ** 30) * firstTouchSecondsPerGiB),
        mb(r.rssAfterLoadBytes),
        mb(r.peakRssBytes),
      ]);
    }

    // Where decode time goes, per operation (the place to look when a target is not reached).
    const ops = Object.keys(results[0].decodeProfileMsPerToken);
    const profile = new StreamTable(
      'Decode profile: milliseconds per token in each operation (serial = norms, rope, cache writes, embedding, residuals)',
      [
        { title: 'model', width: 14, align: 'left' },
        { title: 'weights', width: 15, align: 'left' },
        { title: 'thr', width: 3 },
        ...ops.map((o) => ({ title: o, width: Math.max(7, o.length) })),
        { title: 'total', width: 7 },
      ],
    );
    const seen = new Set<string>();
    for (const r of results) {
      const key = `${r.model} ${r.weights} ${r.kernels} ${r.threads}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const ms = ops.map((o) => r.decodeProfileMsPerToken[o]);
      profile.row([
        r.model,
        r.kernels === 'before' ? `${r.weights} (before)` : r.weights,
        String(r.threads),
        ...ms.map((v) => v.toFixed(1)),
        ms.reduce((a, b) => a + b, 0).toFixed(1),
      ]);
    }
  }

  const seconds = (performance.now() - started) / 1000;
  if (opts.json) {
    const dispatch2 = dispatch.find((d) => d.threads === 2) ?? dispatch[0];
    const report = {
      machine: {
        ...basics,
        bandwidthGBs: bandwidth[1],
        bandwidthGBsByThreads: bandwidth,
        firstTouchSecondsPerGiB,
        dispatchMicros: dispatch2.hotMicros,
        dispatch,
      },
      scalar,
      kernels,
      formats,
      constraint: constraint && { ...constraint, results: constraint.results.map(({ text, ...r }) => (void text, r)) },
      results,
      errors,
      seconds,
    };
    await new Promise<void>((resolve) => process.stdout.write(JSON.stringify(report, null, 2) + '\n', () => resolve()));
  } else {
    out('');
    if (errors.length > 0) {
      out('Errors');
      for (const e of errors) out(`  ${e.model} ${e.weights} x${e.threads}: ${e.error.split('\n')[0]}`);
      out('');
    }
    out(`Done in ${seconds.toFixed(1)} s. One run each and a shared machine: expect noise of 10% or more.`);
  }
  log(`bench: done in ${seconds.toFixed(1)} s`);
  return errors.some((e) => !e.error.startsWith('skipped')) ? 1 : 0;
}

/** The per-format table on the synthetic shapes asked for (0.5B and 1.5B). */
async function runFormatTable(opts: Options): Promise<FormatResult[]> {
  const t0 = performance.now();
  const names = opts.models.map((m) => m.name);
  const shapes = FORMAT_SHAPES.filter((s) => names.includes(MODEL_ALIASES[s.model]));
  if (shapes.length === 0) {
    log('formats: no 0.5b or 1.5b model among --models; skipped');
    return [];
  }
  log('formats...');
  const results = await runFormats({
    shapes,
    types: opts.types,
    threads: Math.max(...opts.threads),
    prefillN: 64,
    rounds: opts.formatRounds,
  });
  log(`formats: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return results;
}

async function runSpeculationBench(opts: Options): Promise<number> {
  const threads = Math.max(...opts.threads);
  const script = fileURLToPath(new URL('./speculation.js', import.meta.url));
  const models = opts.models.map((m) => ({
    name: m.name,
    dir: m.dir ?? ensureSyntheticModel(m.preset!, opts.cacheDir),
  }));
  await runRowKernels(opts.weights);
  const steps = await runStepCost(script, models, opts.weights, threads, opts.specRounds);
  log('speculation goals on stories260K...');
  const goals = await runGoals(
    path.join(repoRoot(), 'assets', 'stories260K'),
    path.join(repoRoot(), 'test', 'fixtures', 'stories260K'),
    threads,
    opts.specRounds,
    opts.specTokens,
  );
  printGoals(
    goals,
    threads,
    opts.specRounds,
    `Speculation goals on stories260K (ngram, num_speculative_tokens ${opts.specTokens})`,
  );
  const jumpForward: GoalRow[] = [];
  for (const m of models) {
    log(`jump-forward goal on ${m.name}...`);
    for (const weights of opts.weights) {
      try {
        jumpForward.push(...(await runJumpForwardGoals(m.dir, m.name, weights, threads, opts.specRounds)));
      } catch (e) {
        log(`  jump-forward goal on ${m.name} ${weights} FAILED: ${(e as Error).message}`);
      }
    }
  }
  if (jumpForward.length > 0)
    printGoals(
      jumpForward,
      threads,
      opts.specRounds,
      'Jump-forward for structured output (5-property json_schema)',
      'jump',
    );
  if (opts.json) process.stdout.write(JSON.stringify({ speculation: { steps, goals, jumpForward } }, null, 2) + '\n');
  return 0;
}

if (process.argv[2] === CHILD_FLAG) {
  await childMain(process.argv[3]);
} else if (process.argv[2] === '--long-context') {
  await longContextMain(process.argv.slice(3));
  process.exit(0);
} else {
  main().then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
