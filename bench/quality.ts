// Quality of each weight format against f32: max |logit error|, mean KL divergence and top-1
// agreement over every position of a prompt (default 256 tokens), on a model directory.
//   node dist/bench/quality.js [--model DIR] [--tokens N] [--formats bf16,q8_0,q4_0] [--json]
//   node dist/bench/quality.js --perplexity FILE [--ctx N] [--model DIR] [--formats ...]: each format's
//   perplexity on a text, as llama-perplexity computes it (src/engine/perplexity.ts), next to f32's.
//   --model assets/stories260K without --perplexity uses test/fixtures/stories260K/perplexity-stories.txt.
//   node dist/bench/quality.js --weight-rmse [--formats ...]: each format's relative RMSE and bytes
//   per weight on a Gaussian matrix of the 0.5B down_proj's width (4864, a multiple of 256, so the
//   K-quants run as themselves, not their fallbacks).
// A model directory with expected/*.txt (a trained model's greedy texts, e.g. stories260K's from
// llama2.c's run.c) is measured on those texts instead, teacher-forced, with one more figure: the
// greedy-agreement length, how many tokens each format's greedy continuation of the text's prompt
// (its file name: once-upon-a-time.txt -> "Once upon a time") follows the expected text.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { LLM, loadModel, QwenTokenizer, type WeightFormat } from '../src/index.js';
import { writeSyntheticModel } from '../src/synthetic.js';
import { readRow } from '../src/tensor/matmul.js';
import { matrixBytes } from '../src/tensor/matrix.js';
import { buildMatrix } from './kernels.js';

export interface QualityRow {
  weights: WeightFormat;
  positions: number;
  maxAbsLogitError: number;
  meanKl: number;
  top1Agreement: number;
  /** Texts only: tokens of the greedy continuation equal to the expected text's, per text. */
  greedyAgreement?: number[];
  /** Texts only: tokens in each expected continuation. */
  greedyOf?: number[];
}

function logSoftmax(x: Float32Array, off: number, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[off + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = x[off + i] - lse;
}

/** Accumulates max |error|, KL(ref || q) and top-1 agreement of logits [positions, vocab] against ref. */
function compareLogits(ref: Float32Array, logits: Float32Array, positions: number, vocab: number) {
  const p = new Float64Array(vocab),
    q = new Float64Array(vocab);
  let maxErr = 0,
    kl = 0,
    agree = 0;
  for (let t = 0; t < positions; t++) {
    const off = t * vocab;
    for (let v = 0; v < vocab; v++) maxErr = Math.max(maxErr, Math.abs(logits[off + v] - ref[off + v]));
    if (argmax(ref, off, vocab) === argmax(logits, off, vocab)) agree++;
    logSoftmax(ref, off, vocab, p);
    logSoftmax(logits, off, vocab, q);
    let k = 0;
    for (let v = 0; v < vocab; v++) k += Math.exp(p[v]) * (p[v] - q[v]);
    kl += k;
  }
  return { maxErr, kl, agree };
}

function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i] > x[off + best]) best = i;
  return best;
}

/** Texts of `dir`/expected/*.txt with the prompt each continues (from its file name). */
export function expectedTexts(dir: string): { name: string; prompt: string; text: string }[] {
  const ex = path.join(dir, 'expected');
  if (!fs.existsSync(ex)) return [];
  return fs
    .readdirSync(ex)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => {
      const words = f.slice(0, -4).replace(/-/g, ' ');
      const prompt = words[0].toUpperCase() + words.slice(1);
      const text = fs.readFileSync(path.join(ex, f), 'utf8').replace(/\n$/, '');
      if (!text.startsWith(prompt)) throw new Error(`${path.join(ex, f)}: does not start with its prompt "${prompt}"`);
      return { name: f, prompt, text };
    });
}

/**
 * Each format against f32 on a trained model's expected greedy texts, teacher-forced. The f32 row
 * compares f32 with the texts themselves (its greedy agreement says how far f32 reproduces them).
 */
export async function measureTextQuality(
  dir: string,
  formats: WeightFormat[],
  threads?: number,
): Promise<{ texts: string[]; rows: QualityRow[] }> {
  const tok = await QwenTokenizer.fromDir(dir);
  const texts = expectedTexts(dir);
  if (texts.length === 0) throw new Error(`${dir}: no expected/*.txt texts`);
  const seqs = texts.map((t) => ({ ids: tok.encode(t.text), promptLen: tok.encode(t.prompt).length }));
  const logitsOf = async (weights: WeightFormat) => {
    const model = await loadModel(dir, { weights, threads });
    try {
      const out: Float32Array[] = [];
      for (const s of seqs) out.push(await model.forward(s.ids, { allLogits: true }));
      return { logits: out, vocab: model.config.vocabSize };
    } finally {
      await model.close();
    }
  };
  // Tokens the greedy continuation of the prompt shares with `next` (the text, or f32's argmax).
  const greedyRun = (logits: Float32Array, vocab: number, ids: number[], promptLen: number) => {
    let n = 0;
    for (let t = promptLen - 1; t + 1 < ids.length; t++, n++)
      if (argmax(logits, t * vocab, vocab) !== ids[t + 1]) break;
    return n;
  };
  const ref = await logitsOf('f32');
  const rows: QualityRow[] = [];
  for (const weights of ['f32' as WeightFormat, ...formats]) {
    const got = weights === 'f32' ? ref : await logitsOf(weights);
    let maxErr = 0,
      kl = 0,
      agree = 0,
      positions = 0;
    const greedy: number[] = [],
      of: number[] = [];
    seqs.forEach((s, i) => {
      const c = compareLogits(ref.logits[i], got.logits[i], s.ids.length, ref.vocab);
      maxErr = Math.max(maxErr, c.maxErr);
      kl += c.kl;
      agree += c.agree;
      positions += s.ids.length;
      greedy.push(greedyRun(got.logits[i], ref.vocab, s.ids, s.promptLen));
      of.push(s.ids.length - s.promptLen);
    });
    rows.push({
      weights,
      positions,
      maxAbsLogitError: maxErr,
      meanKl: kl / positions,
      top1Agreement: agree / positions,
      greedyAgreement: greedy,
      greedyOf: of,
    });
  }
  return { texts: texts.map((t) => t.name), rows };
}

export async function measureQuality(
  dir: string,
  tokens: number,
  formats: WeightFormat[],
  threads?: number,
): Promise<QualityRow[]> {
  // A deterministic prompt of ordinary token ids (the synthetic models have no meaning anyway).
  const ids = Array.from({ length: tokens }, (_, i) => (i * 7919 + 13) % 150000);
  const ref = await loadModel(dir, { weights: 'f32', threads, contextLength: Math.max(512, tokens) });
  const vocab = ref.config.vocabSize;
  const refLogits = await ref.forward(ids, { allLogits: true });
  await ref.close();
  const rows: QualityRow[] = [];
  for (const weights of formats) {
    const model = await loadModel(dir, { weights, threads, contextLength: Math.max(512, tokens) });
    const logits = await model.forward(ids, { allLogits: true });
    await model.close();
    const c = compareLogits(refLogits, logits, tokens, vocab);
    rows.push({
      weights,
      positions: tokens,
      maxAbsLogitError: c.maxErr,
      meanKl: c.kl / tokens,
      top1Agreement: c.agree / tokens,
    });
  }
  return rows;
}

export interface PerplexityRow {
  weights: WeightFormat;
  ppl: number;
  error: number;
  scoredTokens: number;
}

/** Perplexity of `text` under f32 and each format (windows of ctx tokens, as llama-perplexity). */
export async function measurePerplexity(
  dir: string,
  formats: WeightFormat[],
  text: string,
  ctx: number,
  threads?: number,
): Promise<PerplexityRow[]> {
  const rows: PerplexityRow[] = [];
  for (const weights of ['f32' as WeightFormat, ...formats.filter((f) => f !== 'f32')]) {
    const llm = await LLM.load(dir, { weights, threads, progressBar: false });
    try {
      const r = await llm.perplexity(text, { ctx });
      rows.push({ weights, ppl: r.ppl, error: r.error, scoredTokens: r.scoredTokens });
    } finally {
      await llm.close();
    }
  }
  return rows;
}

/** Relative RMSE of each format's dequantized weights against f32, and its bytes per weight. */
export function weightRmse(
  formats: WeightFormat[],
  rows = 128,
  cols = 4864,
): { weights: WeightFormat; rmse: number; bytesPerWeight: number }[] {
  const src = new Float32Array(new SharedArrayBuffer(rows * cols * 4));
  let seed = 1;
  const uniform = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed + 1) / 2 ** 32;
  };
  // Gaussian, std 0.02 (trained weights are closer to normal than to the synthetic uniform).
  for (let i = 0; i < src.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())) * 0.02,
      a = 2 * Math.PI * uniform();
    src[i] = r * Math.cos(a);
    src[i + 1] = r * Math.sin(a);
  }
  let ss = 0;
  for (const v of src) ss += v * v;
  const rms = Math.sqrt(ss / src.length);
  const row = new Float32Array(cols);
  return formats.map((weights) => {
    const m = buildMatrix(weights, src, rows, cols);
    let e = 0;
    for (let r = 0; r < rows; r++) {
      readRow(m, r, row, 0);
      for (let k = 0; k < cols; k++) e += (row[k] - src[r * cols + k]) ** 2;
    }
    return { weights, rmse: Math.sqrt(e / src.length) / rms, bytesPerWeight: matrixBytes(m) / src.length };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      tokens: { type: 'string', default: '256' },
      formats: { type: 'string', default: 'bf16,q8_0,q4_0' },
      threads: { type: 'string' },
      json: { type: 'boolean', default: false },
      'weight-rmse': { type: 'boolean', default: false },
      perplexity: { type: 'string' },
      ctx: { type: 'string', default: '128' },
    },
  });
  const stories = path.resolve('assets/stories260K');
  const pplText =
    values.perplexity ??
    (values.model && path.resolve(values.model) === stories
      ? path.resolve('test/fixtures/stories260K/perplexity-stories.txt')
      : undefined);
  if (pplText) {
    const dir = values.model ?? stories;
    const ctx = Number(values.ctx);
    const rows = await measurePerplexity(
      dir,
      values.formats!.split(',') as WeightFormat[],
      fs.readFileSync(pplText, 'utf8'),
      ctx,
      values.threads ? Number(values.threads) : undefined,
    );
    if (values.json) {
      console.log(JSON.stringify({ model: dir, text: pplText, ctx, rows }));
      return;
    }
    console.log(`perplexity of ${pplText} under ${dir}, windows of ${ctx} tokens (${rows[0].scoredTokens} scored)`);
    console.log('weights  PPL                  vs f32');
    for (const r of rows)
      console.log(
        `${r.weights.padEnd(8)} ${`${r.ppl.toFixed(4)} +/- ${r.error.toFixed(4)}`.padEnd(20)} ${r.weights === 'f32' ? '' : `${((100 * (r.ppl - rows[0].ppl)) / rows[0].ppl).toFixed(2)}%`}`,
      );
    return;
  }
  if (values['weight-rmse']) {
    const rows = weightRmse(values.formats!.split(',') as WeightFormat[]);
    if (values.json) console.log(JSON.stringify({ rows }));
    else {
      console.log('weights  relative RMSE  bytes/weight  (Gaussian [128, 4864])');
      for (const r of rows)
        console.log(
          `${r.weights.padEnd(8)} ${r.rmse.toExponential(3).padStart(13)}  ${r.bytesPerWeight.toFixed(3).padStart(12)}`,
        );
    }
    return;
  }
  let dir = values.model;
  if (!dir) {
    dir = path.resolve('.cache/models/qwen2.5-0.5b-seed0');
    if (!fs.existsSync(path.join(dir, 'model.safetensors')))
      writeSyntheticModel(dir, { preset: 'qwen2.5-0.5b', seed: 0 });
  }
  const formats = values.formats!.split(',') as WeightFormat[];
  const threads = values.threads ? Number(values.threads) : undefined;
  if (expectedTexts(dir).length > 0) {
    const { texts, rows } = await measureTextQuality(dir, formats, threads);
    if (values.json) {
      console.log(JSON.stringify({ model: dir, reference: 'f32', texts, rows }));
      return;
    }
    console.log(`quality against f32 weights on ${dir}'s expected texts (${texts.join(', ')}), teacher-forced`);
    console.log(
      '(f32 row: f32 against the texts themselves; greedy = tokens of the greedy continuation equal to the text)',
    );
    console.log('weights  positions  max|logit err|  mean KL     top-1 agreement  greedy agreement');
    for (const r of rows) {
      const greedy = r.greedyAgreement!.map((g, i) => `${g}/${r.greedyOf![i]}`).join(', ');
      console.log(
        `${r.weights.padEnd(8)} ${String(r.positions).padStart(9)}  ${r.maxAbsLogitError.toFixed(4).padStart(13)}  ${r.meanKl.toExponential(3).padStart(10)}  ${(100 * r.top1Agreement).toFixed(1).padStart(14)}%  ${greedy}`,
      );
    }
    return;
  }
  const rows = await measureQuality(dir, Number(values.tokens), formats, threads);
  if (values.json) {
    console.log(JSON.stringify({ model: dir, reference: 'f32', rows }));
    return;
  }
  console.log(`quality against f32 weights, ${values.tokens} positions of ${dir}`);
  console.log('weights  max|logit err|  mean KL     top-1 agreement');
  for (const r of rows) {
    console.log(
      `${r.weights.padEnd(8)} ${r.maxAbsLogitError.toFixed(4).padStart(13)}  ${r.meanKl.toExponential(3).padStart(10)}  ${(100 * r.top1Agreement).toFixed(1)}%`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
