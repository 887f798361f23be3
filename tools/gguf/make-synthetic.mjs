// Small synthetic HF model folders for the GGUF fixtures: the tiny presets shrunk to hidden 32 and
// the 512-token stories260K tokenizer (SentencePiece-style), so that a whole F32 GGUF is ~150 KB.
// usage: node tools/gguf/make-synthetic.mjs OUT_DIR [--wide]   (after `npx tsc -p tsconfig.json`)
// --wide: dims that are multiples of 256 (for the K-quants; 4 layers) plus the 0.5B's 896/4864 shape
// with 2 layers (its Q4_K_M falls back to Q5_0/Q8_0), for tools/gguf/fidelity.sh; not committed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSyntheticModel } from '../../dist/src/model/synthetic.js';

const out = process.argv[2];
const wide = process.argv[3] === '--wide';
if (!out) throw new Error('usage: make-synthetic.mjs OUT_DIR [--wide]');
const small = {
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 512,
  max_position_embeddings: 2048,
};
const wideShape = {
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 512,
  max_position_embeddings: 2048,
};
const shape05 = {
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 2,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  vocab_size: 512,
  max_position_embeddings: 2048,
};
const models = wide
  ? {
      qwen2: { preset: 'tiny', overrides: wideShape },
      qwen3: { preset: 'tiny-qwen3', overrides: { ...wideShape, head_dim: 64 } },
      llama: {
        preset: 'tiny-llama3',
        overrides: {
          ...wideShape,
          head_dim: 64,
          rope_scaling: {
            rope_type: 'llama3',
            factor: 8,
            low_freq_factor: 1,
            high_freq_factor: 4,
            original_max_position_embeddings: 256,
          },
        },
      },
      'qwen2-0.5b-shape': { preset: 'tiny', overrides: shape05 },
    }
  : {
      qwen2: { preset: 'tiny', overrides: small },
      qwen3: { preset: 'tiny-qwen3', overrides: { ...small, head_dim: 16 } },
      llama: {
        preset: 'tiny-llama3',
        overrides: {
          ...small,
          rope_scaling: {
            rope_type: 'llama3',
            factor: 8,
            low_freq_factor: 1,
            high_freq_factor: 4,
            original_max_position_embeddings: 64,
          },
        },
      },
    };
const stories = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../assets/stories260K');
for (const [name, { preset, overrides }] of Object.entries(models)) {
  const dir = path.join(out, name);
  writeSyntheticModel(dir, { preset, seed: 1, dtype: 'f32', overrides });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
    fs.copyFileSync(path.join(stories, f), path.join(dir, f));
  console.log(`wrote ${dir}`);
}
