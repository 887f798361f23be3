// Quality of each weight format against f32: max |logit error|, mean KL divergence and top-1
// agreement over every position of a prompt (default 256 tokens), on a model directory.
//   node dist/bench/quality.js [--model DIR] [--tokens N] [--formats bf16,q8_0,q4_0] [--json]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, type WeightFormat } from '../src/index.js';
import { writeSyntheticModel } from '../src/synthetic.js';

export interface QualityRow {
  weights: WeightFormat;
  positions: number;
  maxAbsLogitError: number;
  meanKl: number;
  top1Agreement: number;
}

function logSoftmax(x: Float32Array, off: number, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[off + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = x[off + i] - lse;
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
  const p = new Float64Array(vocab),
    q = new Float64Array(vocab);
  for (const weights of formats) {
    const model = await loadModel(dir, { weights, threads, contextLength: Math.max(512, tokens) });
    const logits = await model.forward(ids, { allLogits: true });
    await model.close();
    let maxErr = 0,
      kl = 0,
      agree = 0;
    for (let t = 0; t < tokens; t++) {
      const off = t * vocab;
      let a = 0,
        b = 0;
      for (let v = 0; v < vocab; v++) {
        maxErr = Math.max(maxErr, Math.abs(logits[off + v] - refLogits[off + v]));
        if (refLogits[off + v] > refLogits[off + a]) a = v;
        if (logits[off + v] > logits[off + b]) b = v;
      }
      if (a === b) agree++;
      logSoftmax(refLogits, off, vocab, p);
      logSoftmax(logits, off, vocab, q);
      let k = 0;
      for (let v = 0; v < vocab; v++) k += Math.exp(p[v]) * (p[v] - q[v]);
      kl += k;
    }
    rows.push({
      weights,
      positions: tokens,
      maxAbsLogitError: maxErr,
      meanKl: kl / tokens,
      top1Agreement: agree / tokens,
    });
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      tokens: { type: 'string', default: '256' },
      formats: { type: 'string', default: 'bf16,q8_0,q4_0' },
      threads: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  let dir = values.model;
  if (!dir) {
    dir = path.resolve('.cache/models/qwen2.5-0.5b-seed0');
    if (!fs.existsSync(path.join(dir, 'model.safetensors')))
      writeSyntheticModel(dir, { preset: 'qwen2.5-0.5b', seed: 0 });
  }
  const formats = values.formats!.split(',') as WeightFormat[];
  const rows = await measureQuality(
    dir,
    Number(values.tokens),
    formats,
    values.threads ? Number(values.threads) : undefined,
  );
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
