// The K-quant load formats (q4_k, q5_k, q6_k, q4_k_m: llama.cpp's reference quantizers at load, one
// ggml type per tensor) end to end on a small synthetic model whose widths are multiples of 256, so
// that the Q4_K / Q5_K / Q6_K kernels run (not their fallbacks): against the plain reference forward
// on the same dequantized weights, and prefill / batched decode against one-token decodes.
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { newReferenceCache, referenceForward, referenceWeights } from '../src/model/reference.js';
import { kQuantFileType, tensorType } from '../src/model/gguf/quant-mix.js';
import { GGML_TYPE } from '../src/tensor/formats/ggml.js';
import { Q4_K, Q5_K, Q6_K, Q8_0 } from '../src/tensor/matrix.js';
import { argmax, makeTempModel, removeDir } from './helpers/models.js';

const OVERRIDES = {
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 1024,
};

// The type the load-time format gives a tensor: llama-quantize's mix (quant-mix.ts, as convert uses).
function kQuantTensorType(
  format: 'q4_k' | 'q5_k' | 'q6_k' | 'q4_k_m',
  role: 'output' | 'attn_v' | 'ffn_down' | 'other',
  layer: number,
  layers: number,
  cols: number,
): number {
  const name =
    role === 'output'
      ? 'output.weight'
      : role === 'other'
        ? `blk.${layer}.attn_q.weight`
        : `blk.${layer}.${role}.weight`;
  return tensorType(kQuantFileType(format), { name, cols, nDims: 2, layer, layers, tiedEmbedding: false });
}

describe('K-quant mixes', () => {
  it("q4_k_m picks llama-quantize's types: Q6_K output, Q6_K attn_v/ffn_down where use_more_bits, fallbacks", () => {
    // 24 layers (Qwen2.5-0.5B): use_more_bits is layers 0-2, 21-23 and every third between.
    const more = Array.from({ length: 24 }, (_, l) => kQuantTensorType('q4_k_m', 'ffn_down', l, 24, 4864));
    expect(more.map((t) => (t === GGML_TYPE.Q6_K ? 6 : 4)).join('')).toBe('666446446446446446446666');
    expect(kQuantTensorType('q4_k_m', 'other', 5, 24, 4864)).toBe(GGML_TYPE.Q4_K);
    expect(kQuantTensorType('q4_k_m', 'other', 5, 24, 896)).toBe(GGML_TYPE.Q5_0); // 896 % 256 != 0
    expect(kQuantTensorType('q4_k_m', 'attn_v', 0, 24, 896)).toBe(GGML_TYPE.Q8_0);
    expect(kQuantTensorType('q4_k_m', 'output', 0, 24, 896)).toBe(GGML_TYPE.Q8_0);
    expect(kQuantTensorType('q4_k_m', 'output', 0, 28, 1536)).toBe(GGML_TYPE.Q6_K);
    expect(kQuantTensorType('q5_k', 'other', 3, 28, 1536)).toBe(GGML_TYPE.Q5_K);
    expect(kQuantTensorType('q5_k', 'other', 3, 24, 896)).toBe(GGML_TYPE.Q5_1);
  });

  // q4_k runs the Q4_K kernels as q4_k_m does (whose Q6_K tensors run q6_k's).
  for (const weights of ['q4_k_m', 'q5_k', 'q6_k'] as const) {
    it(`${weights}, 2 threads: close to the reference on its dequantized weights; prefill and batches == decodes`, async () => {
      const d = makeTempModel({ preset: 'tiny', seed: 7, overrides: OVERRIDES });
      const model = await loadModel(d, { weights, threads: 2, maxSequences: 16 });
      try {
        const layer0 = model.weights.layers[0];
        expect(layer0.qProj.format).toBe(weights === 'q4_k_m' ? Q4_K : weights === 'q5_k' ? Q5_K : Q6_K);
        if (weights === 'q4_k_m') expect(model.weights.layers[1].downProj.ggmlType).toBe(GGML_TYPE.Q6_K);
        expect(model.weights.embed.ggmlType).toBe(GGML_TYPE.Q6_K);
        expect(layer0.kProj.format).not.toBe(Q8_0);
        const c = model.config,
          vocab = c.vocabSize;
        const tokens = Array.from({ length: 20 }, (_, i) => (i * 37 + 11) % vocab);
        const prefill = await model.forward(tokens, { allLogits: true, seq: 0 });
        // The reference forward on the same (dequantized) weights: what is left is the int8
        // quantization of activations in the integer kernels (q8_0/q4_0 measure up to 0.33).
        const w = referenceWeights(model.weights);
        const cache = newReferenceCache(c, tokens.length);
        let toReference = 0,
          agree = 0,
          scale = 0;
        for (let pos = 0; pos < tokens.length; pos++) {
          const ref = referenceForward(c, w, cache, tokens[pos], pos);
          for (let v = 0; v < vocab; v++) {
            toReference = Math.max(toReference, Math.abs(prefill[pos * vocab + v] - ref[v]));
            scale = Math.max(scale, Math.abs(ref[v]));
          }
          agree += argmax(prefill, pos * vocab, vocab) === argmax(ref, 0, vocab) ? 1 : 0;
        }
        expect(scale).toBeGreaterThan(1);
        expect(toReference).toBeLessThan(0.5);
        expect(agree).toBeGreaterThanOrEqual(18);

        let err = 0;
        for (let i = 0; i < tokens.length; i++) {
          const decoded = await model.forward([tokens[i]], { startPos: i, seq: 1 });
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(decoded[v] - prefill[i * vocab + v]));
        }
        expect(err).toBeLessThan(1e-4);
        const steps = Array.from({ length: 8 }, (_, s) => ({ seq: 2 + s, prompt: tokens.slice(0, 3 + s) }));
        for (const { seq, prompt } of steps) await model.forward(prompt.slice(0, -1), { seq });
        const batched = await model.decodeBatch(
          steps.map(({ seq, prompt }) => ({ seq, token: prompt[prompt.length - 1], pos: prompt.length - 1 })),
        );
        err = 0;
        for (const [i, { prompt }] of steps.entries()) {
          const alone = await model.forward(prompt, { seq: 10 });
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(batched[i * vocab + v] - alone[v]));
        }
        expect(err).toBeLessThan(1e-4);
      } finally {
        await model.close();
        removeDir(d);
      }
    });
  }
});
