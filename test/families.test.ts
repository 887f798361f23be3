// The model families' differences as config.json states them (Qwen2, Qwen3 dense, Llama), the
// variants without goldens checked against the plain reference forward, and named errors for
// what is not supported.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadModel } from '../src/index.js';
import { parseModelConfig } from '../src/model/config.js';
import { newReferenceCache, referenceForward, referenceWeights } from '../src/model/reference.js';
import { writeSafetensors } from '../src/model/safetensors-writer.js';
import { PRESETS, tensorSpecs, type SyntheticOptions } from '../src/model/synthetic.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));
function model(opts: SyntheticOptions): string {
  const d = makeTempModel(opts);
  dirs.push(d);
  return d;
}
const readConfig = (d: string) => JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));

describe('config.json of each family', () => {
  it('qwen2, qwen3 and llama presets parse to the differences of their families', () => {
    const qwen2 = parseModelConfig(readConfig(model({ preset: 'tiny' })));
    expect(qwen2).toMatchObject({ modelType: 'qwen2', attentionBias: true, oProjBias: false, qkNorm: false });
    const qwen3 = parseModelConfig(readConfig(model({ preset: 'tiny-qwen3' })));
    expect(qwen3).toMatchObject({ modelType: 'qwen3', headDim: 32, attentionBias: false, qkNorm: true });
    const llama = parseModelConfig(readConfig(model({ preset: 'tiny-llama3' })));
    expect(llama).toMatchObject({ modelType: 'llama', attentionBias: false, mlpBias: false, tieWordEmbeddings: false });
    expect(llama.ropeScaling).toEqual({
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 64,
    });
    const base = { ...PRESETS['tiny-llama3'], model_type: 'llama' };
    const biased = parseModelConfig({ ...base, attention_bias: true, mlp_bias: true, rms_norm_eps: 1e-5 });
    expect(biased).toMatchObject({ attentionBias: true, oProjBias: true, mlpBias: true, rmsNormEps: 1e-5 });
    expect(parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling).toEqual({
      type: 'linear',
      factor: 2,
    });
    expect(parseModelConfig({ ...base, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBeNull();
  });

  it('the config.json of Llama-3.2-1B and Qwen3-0.6B as published on the hub parse', () => {
    const llama32 = {
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 128000,
      eos_token_id: 128001,
      head_dim: 64,
      hidden_act: 'silu',
      hidden_size: 2048,
      initializer_range: 0.02,
      intermediate_size: 8192,
      max_position_embeddings: 131072,
      mlp_bias: false,
      model_type: 'llama',
      num_attention_heads: 32,
      num_hidden_layers: 16,
      num_key_value_heads: 8,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: {
        factor: 32.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 8192,
        rope_type: 'llama3',
      },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      use_cache: true,
      vocab_size: 128256,
    };
    expect(parseModelConfig(llama32)).toMatchObject({
      headDim: 64,
      numKvHeads: 8,
      rmsNormEps: 1e-5,
      attentionBias: false,
      mlpBias: false,
      tieWordEmbeddings: true,
      ropeScaling: {
        type: 'llama3',
        factor: 32,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
    });
    const qwen3 = {
      architectures: ['Qwen3ForCausalLM'],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 151643,
      eos_token_id: 151645,
      head_dim: 128,
      hidden_act: 'silu',
      hidden_size: 1024,
      initializer_range: 0.02,
      intermediate_size: 3072,
      max_position_embeddings: 40960,
      max_window_layers: 28,
      model_type: 'qwen3',
      num_attention_heads: 16,
      num_hidden_layers: 28,
      num_key_value_heads: 8,
      rms_norm_eps: 1e-6,
      rope_scaling: null,
      rope_theta: 1000000,
      sliding_window: null,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 151936,
    };
    // head_dim 128 while hidden_size / heads is 64: q_proj is [2048, 1024].
    expect(parseModelConfig(qwen3)).toMatchObject({
      headDim: 128,
      qkNorm: true,
      attentionBias: false,
      ropeScaling: null,
    });
  });

  it('unsupported features and bad values are named errors', () => {
    const qwen3 = readConfig(model({ preset: 'tiny-qwen3' }));
    const llama = readConfig(model({ preset: 'tiny-llama3' }));
    const bad = (base: Record<string, unknown>, change: Record<string, unknown>) => () =>
      parseModelConfig({ ...base, ...change }, 'DIR/config.json');
    expect(bad(qwen3, { num_experts: 8 })).toThrow(ConfigError);
    expect(bad(qwen3, { num_experts: 8 })).toThrow(
      /DIR\/config\.json: field "num_experts" is 8: mixture-of-experts models are not supported/,
    );
    expect(bad(llama, { num_local_experts: 8 })).toThrow(/field "num_local_experts" is 8: mixture-of-experts/);
    expect(bad(qwen3, { model_type: 'qwen3_moe' })).toThrow(/field "model_type" is "qwen3_moe", supported/);
    expect(bad(qwen3, { use_sliding_window: true })).toThrow(
      /field "use_sliding_window" is true: sliding-window attention is not supported/,
    );
    expect(bad(qwen3, { layer_types: ['full_attention', 'sliding_attention'] })).toThrow(
      /field "layer_types\[1\]" is "sliding_attention": only "full_attention" layers are supported/,
    );
    expect(bad(llama, { rope_scaling: { rope_type: 'longrope', factor: 4 } })).toThrow(
      /field "rope_scaling\.rope_type" is "longrope": supported rope scaling types are "linear", "llama3", "yarn", "dynamic" and "default"/,
    );
    expect(bad(llama, { rope_scaling: { type: 'su', factor: 4 } })).toThrow(/field "rope_scaling\.type" is "su"/);
    expect(bad(llama, { rope_scaling: { rope_type: 'llama3', factor: 8, high_freq_factor: 4 } })).toThrow(
      /field "rope_scaling\.low_freq_factor" must be a positive number, got undefined/,
    );
    expect(
      bad(llama, {
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 4,
          high_freq_factor: 1,
          original_max_position_embeddings: 8192,
        },
      }),
    ).toThrow(/"rope_scaling\.high_freq_factor" \(1\) must be greater than low_freq_factor \(4\)/);
    expect(bad(llama, { rope_scaling: { rope_type: 'linear', factor: -2 } })).toThrow(
      /field "rope_scaling\.factor" must be a positive number, got -2/,
    );
    expect(bad(llama, { rope_scaling: 'llama3' })).toThrow(/field "rope_scaling" must be an object or null/);
    expect(bad(llama, { mlp_bias: 'yes' })).toThrow(/field "mlp_bias" must be true or false, got "yes"/);
    expect(bad(qwen3, { mlp_bias: true })).toThrow(/field "mlp_bias" is true, which qwen3 models do not have/);
    expect(bad(qwen3, { head_dim: 0 })).toThrow(/field "head_dim" must be a positive integer, got 0/);
    expect(bad(qwen3, { head_dim: 33 })).toThrow(/head dimension 33 must be even/);
    expect(bad(llama, { partial_rotary_factor: 0.5 })).toThrow(/field "partial_rotary_factor" is 0\.5: only 1/);
    expect(bad(llama, { hidden_act: 'gelu' })).toThrow(/field "hidden_act" is "gelu", expected "silu"/);
  });

  it('a tensor the family needs is named when missing (qwen3 q_norm, llama biases)', async () => {
    // tiny-qwen3 without its q_norm weights.
    const d = model({ preset: 'tiny-qwen3' });
    const specs = tensorSpecs(PRESETS['tiny-qwen3'], 'BF16').filter((s) => !s.name.endsWith('q_norm.weight'));
    writeSafetensors(path.join(d, 'model.safetensors'), specs, (_s, bytes) => bytes.fill(0x3f));
    await expect(loadModel(d, { threads: 1 })).rejects.toThrow(
      /tensor "model\.layers\.0\.self_attn\.q_norm\.weight" not found/,
    );
    // A llama config that says attention_bias over a checkpoint without biases.
    const l = model({ preset: 'tiny-llama3' });
    const config = readConfig(l);
    fs.writeFileSync(path.join(l, 'config.json'), JSON.stringify({ ...config, attention_bias: true }));
    await expect(loadModel(l, { threads: 1 })).rejects.toThrow(
      /tensor "model\.layers\.0\.self_attn\.q_proj\.bias" not found/,
    );
  });
});

describe('variants without goldens, against the plain reference forward', () => {
  // The fast path and reference.ts share only the loaded weights and the config: the math is
  // written twice. f32 sums in different orders: ~4e-6 apart on the goldens' models.
  const cases: { what: string; opts: SyntheticOptions; check: (m: Awaited<ReturnType<typeof loadModel>>) => void }[] = [
    {
      what: 'llama with linear rope scaling and a tied head',
      opts: {
        preset: 'tiny-llama3',
        overrides: { rope_scaling: { type: 'linear', factor: 4 }, tie_word_embeddings: true },
      },
      check: (m) => expect(m.weights.lmHead).toBe(m.weights.embed),
    },
    {
      what: 'qwen3 with attention_bias (q, k, v and o biases) and head_dim 8 (q_proj 32 x 64)',
      opts: { preset: 'tiny-qwen3', overrides: { attention_bias: true, head_dim: 8 } },
      check: (m) => {
        expect(m.weights.layers[0].qProj.rows).toBe(32);
        expect(m.weights.layers[0].oBias).not.toBeNull();
      },
    },
  ];
  for (const { what, opts, check } of cases) {
    it(`${what}: logits of every position within 1e-4, prefill and batched decode`, async () => {
      const m = await loadModel(model(opts), { weights: 'f32', threads: 2, maxBatchTokens: 5 });
      try {
        check(m);
        const c = m.config,
          vocab = c.vocabSize;
        const ids = [5, 900, 77, 151643, 12, 3, 40000, 8, 9, 10, 11, 151000, 2];
        const fast = await m.forward(ids.slice(0, -1), { allLogits: true });
        const last = await m.decodeBatch([{ seq: 0, token: ids[ids.length - 1], pos: ids.length - 1 }]);
        const w = referenceWeights(m.weights);
        const cache = newReferenceCache(c, ids.length);
        let err = 0,
          spread = 0;
        for (let pos = 0; pos < ids.length; pos++) {
          const ref = referenceForward(c, w, cache, ids[pos], pos);
          const got = pos < ids.length - 1 ? fast.subarray(pos * vocab, (pos + 1) * vocab) : last;
          for (let v = 0; v < vocab; v++) {
            err = Math.max(err, Math.abs(got[v] - ref[v]));
            spread = Math.max(spread, Math.abs(ref[v]));
          }
        }
        expect(err).toBeLessThan(1e-4);
        expect(spread).toBeGreaterThan(1); // the logits are not trivially flat
      } finally {
        await m.close();
      }
    });
  }
});
