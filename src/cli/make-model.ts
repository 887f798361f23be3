#!/usr/bin/env node
// npm run make-model -- --preset tiny|qwen2.5-0.5b|qwen2.5-1.5b --out DIR [--seed N] [--dtype bf16|f16|f32] [--shards N]
//   [--embedding last|mean|cls [--no-normalize]]: an embedding model laid out as Qwen3-Embedding
import { parseArgs } from 'node:util';
import { isSyntheticPreset, PRESETS, writeSyntheticModel } from '../model/synthetic.js';
import { ProgressLine } from '../platform/progress.js';

const usage = `usage: make-model --preset ${Object.keys(PRESETS).join('|')} --out DIR [--seed N] [--dtype bf16|f16|f32] [--shards N] [--untied] [--embedding last|mean|cls [--no-normalize]]`;

// Qwen3-Embedding's prompts (config_sentence_transformers.json).
const EMBEDDING_PROMPTS = {
  query: 'Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:',
  document: '',
};

function main(): void {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        preset: { type: 'string' },
        out: { type: 'string' },
        seed: { type: 'string', default: '0' },
        dtype: { type: 'string', default: 'bf16' },
        shards: { type: 'string', default: '1' },
        untied: { type: 'boolean', default: false },
        embedding: { type: 'string' },
        'no-normalize': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    console.error(`make-model: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) return void console.log(usage);
  const fail = (msg: string) => {
    console.error(`make-model: ${msg}\n${usage}`);
    process.exit(2);
  };
  const preset = values.preset;
  if (!preset || !isSyntheticPreset(preset)) return fail(`--preset must be one of ${Object.keys(PRESETS).join(', ')}`);
  if (!values.out) return fail('--out DIR is required');
  const seed = Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) return fail(`--seed must be a non-negative integer, got "${values.seed}"`);
  if (!['bf16', 'f16', 'f32'].includes(values.dtype!))
    return fail(`--dtype must be bf16, f16 or f32, got "${values.dtype}"`);
  const shards = Number(values.shards);
  if (!Number.isInteger(shards) || shards < 1)
    return fail(`--shards must be a positive integer, got "${values.shards}"`);
  const pooling = values.embedding;
  if (pooling !== undefined && pooling !== 'last' && pooling !== 'mean' && pooling !== 'cls')
    return fail(`--embedding must be last, mean or cls, got "${pooling}"`);
  if (values['no-normalize'] && pooling === undefined) return fail('--no-normalize needs --embedding');
  const t0 = performance.now();
  const line = new ProgressLine('writing weights', { prefix: 'make-model: ' });
  writeSyntheticModel(values.out, {
    onProgress: (done, total) => (done < total ? line.update(done, total) : line.end()),
    preset,
    seed,
    dtype: values.dtype as 'bf16' | 'f16' | 'f32',
    shards,
    overrides: values.untied ? { tie_word_embeddings: false } : undefined,
    embedding: pooling && { pooling, normalize: !values['no-normalize'], prompts: EMBEDDING_PROMPTS },
  });
  console.log(
    `wrote synthetic ${values.preset} (seed ${seed}, ${values.dtype}) to ${values.out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}

main();
