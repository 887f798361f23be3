// End-to-end benchmark: load a model, prefill, decode, batched decode. Each configuration (model x
// weight format x threads) runs in its own child process (a fork of bench.js with an internal
// flag), so its load time and peak RSS are its own and its memory is freed before the next one.
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LLM } from '../src/engine/llm.js';
import { loadModel } from '../src/model/load.js';
import { loadModelConfig, matmulWeightsPerToken, type ModelConfig } from '../src/model/config.js';
import { writeSyntheticModel, type SyntheticPresetName } from '../src/model/synthetic.js';
import type { ModelWeights } from '../src/model/weights.js';
import { matrixBytes, QBLOCK, type WeightFormat } from '../src/tensor/matrix.js';
import { argmax, log, rng } from './common.js';

export const CHILD_FLAG = '--internal-e2e-child';

export interface E2ePlan {
  /** Prompt lengths of the prefill measurements (one result row each). */
  promptTokens: number[];
  /** Tokens of the untimed warm-up forward pass. */
  warmupTokens: number;
  /** Prompt before the single-sequence decode. */
  decodePrompt: number;
  /** Timed single-sequence decode steps. */
  decodeSteps: number;
  /** Sequences decoded together by decodeBatch. */
  batchSize: number;
  /** Untimed decodeBatch calls before the timed ones (each sequence's context when timing starts). */
  batchWarmupSteps: number;
  /** Timed decodeBatch calls (each decodes one token of every sequence). */
  batchCalls: number;
  seed: number;
}

export interface ChildConfig {
  model: string;
  dir: string;
  weights: WeightFormat;
  threads: number;
  plan: E2ePlan;
  /** Run with the kernels of before (bench/matmul-reference.ts, through bench/before.ts). */
  before?: boolean;
}

export interface PrefillResult {
  tokens: number;
  seconds: number;
  tokensPerSec: number;
}

export interface ChildResult {
  /** loadModel, start to end: weights, KV cache, worker threads. */
  loadSeconds: number;
  /**
   * LLM.load, start to end, as a user (and the CLI's "loaded in N s") meets it: the engine thread,
   * the tokenizer, the weights, KV cache and worker threads; measured after loadModel's run.
   */
  llmLoadSeconds: number;
  /** Bytes of every weight the load produced in memory (matrices in their format, f32 vectors). */
  weightBytes: number;
  prefill: PrefillResult[];
  decodeTokensPerSec: number;
  /** Median time of one decode step. */
  decodeMsP50: number;
  /** Where a decode step's time goes: milliseconds per token in each operation (model.profile()). */
  decodeProfileMs: Record<string, number>;
  decodeSteps: number;
  batchedDecodeTokensPerSec: number;
  batchSize: number;
  batchCalls: number;
  /** Bytes of weight matrices one decode token reads: every layer's 7 projections and the lm head. */
  weightBytesPerToken: number;
  kvCacheBytesPerToken: number;
  rssAfterLoadBytes: number;
  /** Peak resident set of the child process (the whole configuration: load and all runs). */
  peakRssBytes: number;
}

type ChildMessage = { ok: true; result: ChildResult } | { ok: false; error: string };

const BLOCK = 16; // KV cache block size (positions)

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** The child's side: run one configuration and send its result to the parent. */
export async function childMain(configJson: string): Promise<void> {
  let msg: ChildMessage;
  try {
    msg = { ok: true, result: await runConfiguration(JSON.parse(configJson) as ChildConfig) };
  } catch (e) {
    msg = { ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  await new Promise<void>((resolve) => process.send!(msg, () => resolve()));
  process.exit(0);
}

async function runConfiguration(cfg: ChildConfig): Promise<ChildResult> {
  const result = await runModel(cfg);
  const t0 = performance.now();
  const llm = await LLM.load(cfg.dir, {
    weights: cfg.weights,
    threads: cfg.threads,
    maxSequences: cfg.plan.batchSize,
    progressBar: false,
  });
  result.llmLoadSeconds = (performance.now() - t0) / 1000;
  await llm.close();
  log(`    [${cfg.model} ${cfg.weights} x${cfg.threads}] LLM.load end to end: ${result.llmLoadSeconds.toFixed(2)} s`);
  return result;
}

async function runModel(cfg: ChildConfig): Promise<ChildResult> {
  const { plan } = cfg;
  const c = loadModelConfig(cfg.dir);
  const kvBytesPerToken = c.numLayers * 2 * c.numKvHeads * c.headDim * 4;
  const contextLength = roundUp(
    Math.max(
      ...plan.promptTokens,
      plan.warmupTokens,
      plan.decodePrompt + plan.decodeSteps + 3,
      plan.batchWarmupSteps + plan.batchCalls + 2,
    ),
    BLOCK,
  );
  // Room for sequence 0 at full context, or for every batched sequence: never both at once.
  const kvTokens =
    Math.max(contextLength, plan.batchSize * roundUp(plan.batchWarmupSteps + plan.batchCalls + 2, BLOCK)) + BLOCK;
  const say = (s: string) => log(`    [${cfg.model} ${cfg.weights} x${cfg.threads}] ${s}`);

  const t0 = performance.now();
  const model = await loadModel(cfg.dir, {
    weights: cfg.weights,
    threads: cfg.threads,
    maxSequences: plan.batchSize,
    contextLength,
    kvCacheBytes: kvBytesPerToken * kvTokens,
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssAfterLoadBytes = process.memoryUsage().rss;
  const weightBytes = producedBytes(model.weights);
  say(
    `loaded in ${loadSeconds.toFixed(2)} s: ${(weightBytes / 1e9).toFixed(3)} GB of weights, ${(loadSeconds / (weightBytes / 1e9)).toFixed(2)} s/GB`,
  );
  try {
    const w = model.weights;
    let weightBytesPerToken = matrixBytes(w.lmHead);
    for (const l of w.layers) {
      for (const m of [l.qProj, l.kProj, l.vProj, l.oProj, l.gateProj, l.upProj, l.downProj])
        weightBytesPerToken += matrixBytes(m);
    }
    const vocab = model.config.vocabSize;
    const next = rng(plan.seed);
    const randomIds = (n: number) => Array.from({ length: n }, () => Math.floor(next() * vocab));

    // Warm-up: JIT-compile the prefill and decode paths before anything is timed.
    await model.forward(randomIds(plan.warmupTokens), { startPos: 0 });
    await model.forward(randomIds(1), { startPos: plan.warmupTokens });
    model.resetCache();

    // Prefill: one forward of n random tokens from position 0, once per prompt length. The prompt
    // whose length is the decode prompt's goes last and the decode continues from it.
    const prefill: PrefillResult[] = [];
    const order = [...plan.promptTokens].sort(
      (a, b) => Number(a === plan.decodePrompt) - Number(b === plan.decodePrompt),
    );
    let logits: Float32Array | null = null;
    for (const n of order) {
      model.resetCache(0);
      const ids = randomIds(n);
      const t = performance.now();
      logits = await model.forward(ids, { startPos: 0 });
      const seconds = (performance.now() - t) / 1000;
      prefill.push({ tokens: n, seconds, tokensPerSec: n / seconds });
      say(`prefill ${n} tokens: ${(n / seconds).toFixed(2)} tokens/s`);
    }
    prefill.sort((a, b) => plan.promptTokens.indexOf(a.tokens) - plan.promptTokens.indexOf(b.tokens));

    // Single-sequence greedy decode after the decode prompt; two untimed steps first.
    if (order[order.length - 1] !== plan.decodePrompt || logits === null) {
      model.resetCache(0);
      logits = await model.forward(randomIds(plan.decodePrompt), { startPos: 0 });
    }
    let token = argmax(logits, 0, vocab);
    let pos = plan.decodePrompt;
    for (let i = 0; i < 2; i++) {
      logits = await model.forward([token], { startPos: pos++ });
      token = argmax(logits, 0, vocab);
    }
    const stepMs: number[] = [];
    model.startProfile();
    const td = performance.now();
    for (let i = 0; i < plan.decodeSteps; i++) {
      const ts = performance.now();
      logits = await model.forward([token], { startPos: pos++ });
      token = argmax(logits, 0, vocab);
      stepMs.push(performance.now() - ts);
    }
    const decodeTokensPerSec = plan.decodeSteps / ((performance.now() - td) / 1000);
    const decodeProfileMs = Object.fromEntries(
      Object.entries(model.profile()!).map(([k, v]) => [k, v / plan.decodeSteps]),
    );
    stepMs.sort((a, b) => a - b);
    say(`decode: ${decodeTokensPerSec.toFixed(2)} tokens/s`);

    // Batched decode: batchSize sequences, one decodeBatch call per step. The sequences start from
    // one random token each and their first batchWarmupSteps steps are untimed (JIT warm-up too) (a cheap stand-in for a
    // prompt: 8 separate prefills would cost more than the measurement).
    model.resetCache();
    const tokens = randomIds(plan.batchSize);
    const positions = new Array<number>(plan.batchSize).fill(0);
    const batchStep = async () => {
      const l = await model.decodeBatch(tokens.map((tok, s) => ({ seq: s, token: tok, pos: positions[s] })));
      for (let s = 0; s < plan.batchSize; s++) {
        tokens[s] = argmax(l, s * vocab, vocab);
        positions[s]++;
      }
    };
    for (let i = 0; i < plan.batchWarmupSteps; i++) await batchStep();
    const tb = performance.now();
    for (let i = 0; i < plan.batchCalls; i++) await batchStep();
    const batchedDecodeTokensPerSec = (plan.batchSize * plan.batchCalls) / ((performance.now() - tb) / 1000);
    say(`batched decode x${plan.batchSize}: ${batchedDecodeTokensPerSec.toFixed(2)} tokens/s`);

    return {
      loadSeconds,
      llmLoadSeconds: 0, // below, once this model is closed
      weightBytes,
      prefill,
      decodeTokensPerSec,
      decodeMsP50: stepMs[stepMs.length >> 1],
      decodeProfileMs,
      decodeSteps: plan.decodeSteps,
      batchedDecodeTokensPerSec,
      batchSize: plan.batchSize,
      batchCalls: plan.batchCalls,
      weightBytesPerToken,
      kvCacheBytesPerToken: model.kvCache.bytesPerToken,
      rssAfterLoadBytes,
      peakRssBytes: peakRss(),
    };
  } finally {
    await model.close();
  }
}

/** Bytes of all the weight storage a load made (a tied lm head is the embedding: counted once). */
function producedBytes(w: ModelWeights): number {
  const arrays = new Set<ArrayBufferView>();
  const matrices = [
    w.embed,
    w.lmHead,
    ...w.layers.flatMap((l) => [l.qProj, l.kProj, l.vProj, l.oProj, l.gateProj, l.upProj, l.downProj]),
  ];
  for (const m of matrices) for (const a of [m.f32, m.u16, m.q, m.scales]) arrays.add(a);
  arrays.add(w.finalNorm);
  for (const l of w.layers) {
    for (const v of [
      l.inputNorm,
      l.postAttentionNorm,
      l.qBias,
      l.kBias,
      l.vBias,
      l.qNorm,
      l.kNorm,
      l.oBias,
      l.gateBias,
      l.upBias,
      l.downBias,
    ])
      if (v !== null) arrays.add(v);
  }
  let bytes = 0;
  for (const a of arrays) bytes += a.byteLength;
  return bytes;
}

/** The parent's side: fork `script` (bench.js) for one configuration and wait for its result. */
export function runInChild(script: string, cfg: ChildConfig): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    // The child's stdout goes to our stderr: under --json, stdout carries only the JSON object.
    // The kernels of before: module hooks swap src/tensor/matmul.js for bench/matmul-before.js.
    const execArgv = cfg.before
      ? [...process.execArgv, '--import', new URL('./before.js', import.meta.url).href]
      : process.execArgv;
    const child = fork(script, [CHILD_FLAG, JSON.stringify(cfg)], { stdio: ['ignore', 2, 2, 'ipc'], execArgv });
    let msg: ChildMessage | null = null;
    child.on('message', (m) => {
      msg = m as ChildMessage;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      const m = msg as ChildMessage | null;
      if (m?.ok) resolve(m.result);
      else if (m) reject(new Error(m.error));
      else
        reject(
          new Error(
            `benchmark process exited with ${signal ? `signal ${signal}` : `code ${code}`} before reporting (out of memory?)`,
          ),
        );
    });
  });
}

/** Bytes per weight of each in-memory format (quantized: the values plus one f32 scale per 32). */
const BYTES_PER_WEIGHT: Record<WeightFormat, number> = {
  f32: 4,
  bf16: 2,
  q8_0: 1 + 4 / QBLOCK,
  q4_0: 0.5 + 4 / QBLOCK,
  // K-quants: bytes per weight of their main type as stored (formats/q4_k.ts, ggml blocks).
  q4_k: 152 / 256,
  q5_k: 176 / 256,
  q6_k: 210 / 256,
  q4_k_m: 152 / 256,
};

/** Rough size in memory of the model's weights in `format` (to skip what cannot fit). */
export function estimateWeightBytes(c: ModelConfig, format: WeightFormat): number {
  // The matmul weights include the head once; an untied embedding is a second vocab x hidden.
  const untiedEmbed = c.tieWordEmbeddings ? 0 : c.vocabSize * c.hiddenSize;
  return (matmulWeightsPerToken(c) + untiedEmbed) * BYTES_PER_WEIGHT[format];
}

/**
 * The synthetic model `preset` in `cacheDir/<preset>`, written first unless config.json and
 * model.safetensors are already there. Written to a temporary folder and renamed, so an interrupted
 * run never leaves a half-written model that a later run would reuse.
 */
export function ensureSyntheticModel(preset: string, cacheDir: string): string {
  const dir = path.join(cacheDir, preset);
  if (fs.existsSync(path.join(dir, 'config.json')) && fs.existsSync(path.join(dir, 'model.safetensors'))) return dir;
  fs.mkdirSync(cacheDir, { recursive: true });
  log(`  writing synthetic model ${preset} to ${dir} (once; reused by later runs)...`);
  const t0 = performance.now();
  const tmp = fs.mkdtempSync(path.join(cacheDir, `.tmp-${preset}-`));
  try {
    writeSyntheticModel(tmp, { preset: preset as SyntheticPresetName, seed: 0 });
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      if (!fs.existsSync(path.join(dir, 'model.safetensors'))) throw e; // else another run finished it first
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  log(`  wrote ${preset} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

/**
 * This process's peak RSS in bytes. Linux keeps getrusage's maxRSS across exec, so a child would
 * report its parent's peak (the bench's 512 MB bandwidth buffers) whenever that was higher; VmHWM in
 * /proc/self/status belongs to this process's own address space.
 */
function peakRss(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return process.resourceUsage().maxRSS * 1024;
}
