// Quality of each KV cache dtype against an f32 cache on the trained stories260K (weights f32):
// mean KL(f32 cache || dtype) and top-1 agreement over every position of llama2.c's run.c texts,
// teacher-forced, and the greedy agreement: how many tokens of each prompt's 200-token greedy
// continuation equal the f32 cache's.
//   node dist/bench/kv-quality.js [--model DIR] [--json]
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, QwenTokenizer } from '../src/index.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../src/model/kv-cache.js';
import { repoRoot } from './common.js';

const PROMPTS = ['Once upon a time', 'Tom and his dog'];
const TEXTS = ['once-upon-a-time.txt', 'tom-and-his-dog.txt'];
const BOS = 1;
const GREEDY_TOKENS = 200;

export interface KvQualityRow {
  dtype: KvCacheDtype;
  bytesPerToken: number;
  positions: number;
  meanKl: number;
  maxKl: number;
  top1Agreement: number;
  greedyAgreement: number[];
}

function logSoftmax(x: Float32Array, off: number, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[off + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = x[off + i] - lse;
}

function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i] > x[off + best]) best = i;
  return best;
}

export async function measureKvQuality(dir: string): Promise<KvQualityRow[]> {
  const fs = await import('node:fs');
  const tok = await QwenTokenizer.fromDir(dir);
  const fixtures = path.join(repoRoot(), 'test', 'fixtures', 'stories260K');
  const texts = TEXTS.map((f) => [BOS, ...tok.encode(fs.readFileSync(path.join(fixtures, f), 'utf8').trim())]);
  const prompts = PROMPTS.map((p) => [BOS, ...tok.encode(p)]);
  const run = async (dtype: KvCacheDtype) => {
    const model = await loadModel(dir, { weights: 'f32', threads: 1, maxSequences: 1, kvCacheDtype: dtype });
    try {
      const vocab = model.config.vocabSize;
      const logits = texts.map((ids) => model.forward(ids, { allLogits: true }));
      const greedy = prompts.map((ids) => {
        const out: number[] = [];
        let last = model.forward(ids);
        for (let i = 0; i < GREEDY_TOKENS; i++) {
          const next = argmax(last, 0, vocab);
          out.push(next);
          last = model.forward([next], { startPos: ids.length + i });
        }
        return out;
      });
      return { logits, greedy, vocab, bytesPerToken: model.kvCache.bytesPerToken };
    } finally {
      await model.close();
    }
  };
  const ref = await run('f32');
  const rows: KvQualityRow[] = [];
  for (const dtype of KV_CACHE_DTYPES) {
    const got = dtype === 'f32' ? ref : await run(dtype);
    const vocab = ref.vocab;
    const p = new Float64Array(vocab),
      q = new Float64Array(vocab);
    let kl = 0,
      maxKl = 0,
      agree = 0,
      positions = 0;
    texts.forEach((ids, i) => {
      for (let t = 0; t < ids.length; t++) {
        logSoftmax(ref.logits[i], t * vocab, vocab, p);
        logSoftmax(got.logits[i], t * vocab, vocab, q);
        let k = 0;
        for (let v = 0; v < vocab; v++) k += Math.exp(p[v]) * (p[v] - q[v]);
        kl += k;
        maxKl = Math.max(maxKl, k);
        if (argmax(ref.logits[i], t * vocab, vocab) === argmax(got.logits[i], t * vocab, vocab)) agree++;
        positions++;
      }
    });
    const greedyAgreement = got.greedy.map((g, i) => {
      let n = 0;
      while (n < g.length && g[n] === ref.greedy[i][n]) n++;
      return n;
    });
    rows.push({
      dtype,
      bytesPerToken: got.bytesPerToken,
      positions,
      meanKl: kl / positions,
      maxKl,
      top1Agreement: agree / positions,
      greedyAgreement,
    });
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { model: { type: 'string' }, json: { type: 'boolean', default: false } } });
  const dir = values.model ?? path.join(repoRoot(), 'assets', 'stories260K');
  const rows = await measureKvQuality(dir);
  if (values.json) return console.log(JSON.stringify({ model: dir, reference: 'f32 cache', rows }));
  console.log(`KV cache dtypes against an f32 cache on ${dir} (f32 weights; run.c's texts teacher-forced;`);
  console.log(`greedy = tokens of each prompt's ${GREEDY_TOKENS}-token greedy continuation equal to the f32 cache's)`);
  console.log('dtype  bytes/token  positions  mean KL   max KL    top-1 agreement  greedy agreement');
  for (const r of rows)
    console.log(
      `${r.dtype.padEnd(5)}  ${String(r.bytesPerToken).padStart(11)}  ${String(r.positions).padStart(9)}  ` +
        `${r.meanKl.toExponential(2).padStart(8)}  ${r.maxKl.toExponential(2).padStart(8)}  ` +
        `${(100 * r.top1Agreement).toFixed(1).padStart(14)}%  ${r.greedyAgreement.map((g) => `${g}/${GREEDY_TOKENS}`).join(', ')}`,
    );
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) await main();
