// Loading real-layout model directories: the 0.5B shapes, and clear errors for bad input.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadModel, SafetensorsError } from '../src/index.js';
import { parseModelConfig } from '../src/model/config.js';
import { writeSafetensors } from '../src/model/safetensors-writer.js';
import { makeTempModel, removeDir } from './helpers/models.js';

describe('synthetic Qwen2.5-0.5B', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempModel({ preset: 'qwen2.5-0.5b', seed: 0 });
  });
  afterAll(() => removeDir(dir));

  it('has the upstream checkpoint size and loads and runs one decode step', async () => {
    // Same tensors, shapes and dtype as Qwen/Qwen2.5-0.5B-Instruct's model.safetensors (988,097,824 bytes).
    expect(fs.statSync(path.join(dir, 'model.safetensors')).size).toBe(988_097_824);
    const model = await loadModel(dir, { weights: 'bf16', threads: 2, contextLength: 256 });
    try {
      expect(model.config).toMatchObject({
        hiddenSize: 896,
        numLayers: 24,
        numHeads: 14,
        numKvHeads: 2,
        headDim: 64,
        vocabSize: 151936,
        tieWordEmbeddings: true,
      });
      const prefill = await model.forward([151644, 872, 198]);
      const step = await model.forward([9707], { startPos: 3 });
      for (const logits of [prefill, step]) {
        expect(logits.length).toBe(151936);
        expect(logits.every(Number.isFinite)).toBe(true);
      }
      // Random weights are scaled so the logits are not flat: a std of about 2.5.
      let mean = 0,
        sq = 0;
      for (const v of step) mean += v / step.length;
      for (const v of step) sq += (v - mean) ** 2 / step.length;
      expect(Math.sqrt(sq)).toBeGreaterThan(1);
    } finally {
      await model.close();
    }
  });
});

describe('bad model directories', () => {
  let dir: string;
  const dirs: string[] = [];
  beforeAll(() => {
    dir = makeTempModel({ preset: 'tiny', seed: 0 });
  });
  afterAll(() => [dir, ...dirs].forEach(removeDir));

  function variant(edit: (d: string) => void): string {
    const d = fs.mkdtempSync(path.join(path.dirname(dir), 'qwen-ts-bad-'));
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(d, f));
    edit(d);
    dirs.push(d);
    return d;
  }
  const editConfig = (d: string, change: (c: Record<string, unknown>) => void) => {
    const file = path.join(d, 'config.json');
    const c = JSON.parse(fs.readFileSync(file, 'utf8'));
    change(c);
    fs.writeFileSync(file, JSON.stringify(c));
  };

  it('a missing directory is named', async () => {
    await expect(loadModel('/nonexistent/model')).rejects.toThrow(/\/nonexistent\/model does not exist/);
  });

  it('a missing or broken config.json is named with the problem', async () => {
    await expect(loadModel(variant((d) => fs.rmSync(path.join(d, 'config.json'))))).rejects.toThrow(
      /config\.json: cannot read \(ENOENT\)/,
    );
    await expect(
      loadModel(variant((d) => fs.writeFileSync(path.join(d, 'config.json'), '{"hidden_size": 64,'))),
    ).rejects.toThrow(/config\.json: invalid JSON/);
  });

  it('config fields are validated by name', () => {
    const base = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    const bad = (change: Record<string, unknown>) => () => parseModelConfig({ ...base, ...change });
    expect(bad({ hidden_size: -1 })).toThrow(ConfigError);
    expect(bad({ hidden_size: '64' })).toThrow(/field "hidden_size" must be a positive integer, got "64"/);
    expect(bad({ num_attention_heads: 3 })).toThrow(/hidden_size 64 is not a multiple of num_attention_heads 3/);
    expect(bad({ num_key_value_heads: 3 })).toThrow(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
    expect(bad({ model_type: 'mistral' })).toThrow(/field "model_type" is "mistral", supported/);
    expect(bad({ model_type: 'llama', attention_bias: 'no' })).toThrow(/field "attention_bias" must be true or false/);
    expect(bad({ rope_theta: 0 })).toThrow(/field "rope_theta" must be a positive number/);
    expect(bad({ tie_word_embeddings: 'yes' })).toThrow(/tie_word_embeddings/);
    expect(bad({ rope_scaling: { type: 'longrope', factor: 4 } })).toThrow(/rope_scaling/);
    expect(bad({ vocab_size: undefined })).toThrow(/field "vocab_size"/);
  });

  it('a tensor whose shape does not match config.json is named with both shapes', async () => {
    const d = variant((d) =>
      editConfig(d, (c) => {
        c.intermediate_size = 128;
      }),
    );
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(
      /tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[160, 64\], expected \[128, 64\]/,
    );
  });

  it('a missing tensor is named', async () => {
    const d = variant((d) =>
      editConfig(d, (c) => {
        c.num_hidden_layers = 3;
      }),
    );
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(SafetensorsError);
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(
      /tensor "model\.layers\.2\.input_layernorm\.weight" not found/,
    );
  });

  it('an untied config without lm_head.weight says so', async () => {
    const d = variant((d) =>
      editConfig(d, (c) => {
        c.tie_word_embeddings = false;
      }),
    );
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(
      /"lm_head\.weight" not found, and config\.json has tie_word_embeddings: false/,
    );
  });

  it('a truncated checkpoint is named', async () => {
    const d = variant((d) => {
      const f = path.join(d, 'model.safetensors');
      fs.truncateSync(f, fs.statSync(f).size - 1000);
    });
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(/model\.safetensors.*truncated/);
  });

  it('an unsupported dtype is named', async () => {
    const d = variant((d) =>
      writeSafetensors(
        path.join(d, 'model.safetensors'),
        [{ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [2] }],
        () => {},
      ),
    );
    const f = path.join(d, 'model.safetensors');
    const buf = fs.readFileSync(f);
    fs.writeFileSync(f, Buffer.from(buf.toString('latin1').replace('"F32"', '"I32"'), 'latin1'));
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(/unsupported dtype "I32"/);
  });

  it('bad load options are named', async () => {
    await expect(loadModel(dir, { weights: 'q3_k' as never })).rejects.toThrow(
      /option weights must be one of f32, bf16, q8_0, q4_0/,
    );
    await expect(loadModel(dir, { threads: 0 })).rejects.toThrow(/option threads must be an integer from 1/);
    await expect(loadModel(dir, { contextLength: 1e9 })).rejects.toThrow(/option contextLength/);
  });

  it('a KV cache budget too small for the request is a clear error', async () => {
    const model = await loadModel(dir, { threads: 1, kvCacheBytes: 64 * 1024, contextLength: 1024 });
    try {
      // tiny: 2 layers * 2 (k,v) * 2 kv heads * 16 dims * 4 bytes = 512 bytes per token -> 128 tokens.
      expect(model.kvCache.capacityTokens).toBe(128);
      expect(() => model.forward(new Array(200).fill(5))).toThrow(
        /KV cache full: sequence 0 needs 200 tokens but only 128 fit/,
      );
      expect(model.forward(new Array(100).fill(5))).toHaveLength(151936);
    } finally {
      await model.close();
    }
  });
});
