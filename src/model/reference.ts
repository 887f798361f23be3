// The forward pass in its plainest form: one token, one thread, plain Float32Arrays, the shape of
// llama2.c's run.c. Start reading the project here. The fast path (qwen2.ts + runner.ts +
// src/tensor) computes exactly this, split over threads, batched and with compact weight formats;
// the tests use this function as its oracle.
//
// One function covers the three supported families, which differ only in small ways:
//   Qwen2 / Qwen2.5   biases on q, k, v
//   Qwen3 (dense)     RMSNorm of each head of q and k before RoPE (q_norm, k_norm); head_dim free
//   Llama 1/2/3.x     optional biases (attention_bias, also on o; mlp_bias); llama3 rope scaling
//   (Qwen3 and Llama share HF's LlamaAttention: attention_bias puts biases on q, k, v and o.)
import { readRow } from '../tensor/matmul.js';
import type { Matrix } from '../tensor/matrix.js';
import { ropeAttentionFactor, ropeFrequencies } from '../tensor/ops.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights } from './weights.js';

export interface ReferenceLayer {
  inputNorm: Float32Array; // [hidden]
  wq: Float32Array; // [heads*headDim, hidden] (PyTorch Linear layout: one row per output)
  bq: Float32Array | null; // [heads*headDim]
  wk: Float32Array; // [kvHeads*headDim, hidden]
  bk: Float32Array | null;
  wv: Float32Array; // [kvHeads*headDim, hidden]
  bv: Float32Array | null;
  qNorm: Float32Array | null; // [headDim], Qwen3
  kNorm: Float32Array | null; // [headDim], Qwen3
  wo: Float32Array; // [hidden, heads*headDim]
  bo: Float32Array | null; // [hidden]
  postAttentionNorm: Float32Array; // [hidden]
  wGate: Float32Array; // [intermediate, hidden]
  bGate: Float32Array | null;
  wUp: Float32Array; // [intermediate, hidden]
  bUp: Float32Array | null;
  wDown: Float32Array; // [hidden, intermediate]
  bDown: Float32Array | null;
}

export interface ReferenceWeights {
  embed: Float32Array; // [vocab, hidden]
  layers: ReferenceLayer[];
  finalNorm: Float32Array; // [hidden]
  lmHead: Float32Array; // [vocab, hidden]
}

/** Keys and values of every position so far: per layer [contextLength, kvHeads*headDim]. */
export interface ReferenceCache {
  key: Float32Array[];
  value: Float32Array[];
}

// ---------------------------------------------------------------- the simplest kernels

/** out[rows] = w[rows, cols] · x[cols] (+ bias), summed in float64. */
export function matmulNaive(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  rows: number,
  cols: number,
): void {
  for (let r = 0; r < rows; r++) {
    let sum = bias ? bias[r] : 0;
    for (let c = 0; c < cols; c++) sum += w[r * cols + c] * x[c];
    out[r] = sum;
  }
}

/** out[off..off+n) = x[off..off+n) / sqrt(mean(x²) + eps) * weight; out may be x. */
export function rmsnormNaive(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  off: number,
  n: number,
  eps: number,
): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i] * x[off + i];
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[off + i] = x[off + i] * scale * weight[i];
}

/** Rotate each pair (j, j + headDim/2) of each head by pos·freq[j] (HF's rotate_half layout), times `scale`. */
export function ropeNaive(
  x: Float32Array,
  heads: number,
  headDim: number,
  pos: number,
  freq: Float64Array,
  scale = 1,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      const angle = pos * freq[j];
      const a = x[h * headDim + j],
        b = x[h * headDim + j + half];
      x[h * headDim + j] = (a * Math.cos(angle) - b * Math.sin(angle)) * scale;
      x[h * headDim + j + half] = (b * Math.cos(angle) + a * Math.sin(angle)) * scale;
    }
  }
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

// ---------------------------------------------------------------- the forward pass

/**
 * Logits [vocab] of `token` at position `pos`; writes its keys and values into `cache`, which must
 * hold positions 0..pos-1 already. `onLayer(l, x)` sees the residual stream after each layer;
 * `storeKv(k, isKey)` rounds keys and values in place as a compact cache stores them (kvRoundTrip),
 * `roundQuery(q)` the queries as the attention over such a cache rounds them (queryRoundTrip).
 */
export function referenceForward(
  c: ModelConfig,
  w: ReferenceWeights,
  cache: ReferenceCache,
  token: number,
  pos: number,
  onLayer?: (layer: number, x: Float32Array) => void,
  storeKv?: (kv: Float32Array, isKey: boolean) => void,
  roundQuery?: (q: Float32Array) => void,
): Float32Array {
  const hidden = c.hiddenSize,
    headDim = c.headDim,
    heads = c.numHeads,
    kvHeads = c.numKvHeads;
  const qDim = heads * headDim,
    kvDim = kvHeads * headDim,
    inter = c.intermediateSize,
    eps = c.rmsNormEps;
  // [headDim/2]; dynamic NTK: the frequencies of a sequence of pos+1 tokens.
  const freq = ropeFrequencies(headDim, c.ropeTheta, c.ropeScaling, pos + 1);
  const ropeScale = ropeAttentionFactor(c.ropeScaling); // YaRN's temperature on q and k, 1 otherwise

  const x = w.embed.slice(token * hidden, (token + 1) * hidden); // residual stream [hidden]
  const xb = new Float32Array(hidden); // normed input of a block [hidden]
  const q = new Float32Array(qDim);
  const k = new Float32Array(kvDim);
  const v = new Float32Array(kvDim);
  const scores = new Float32Array(pos + 1); // attention scores of one head (run.c's att)
  const attnOut = new Float32Array(qDim); // attention output, heads concatenated
  const xb2 = new Float32Array(hidden); // block output before the residual add
  const hb = new Float32Array(inter); // gate, then silu(gate) * up
  const hb2 = new Float32Array(inter); // up

  for (let l = 0; l < w.layers.length; l++) {
    const layer = w.layers[l];

    // Attention: q, k, v projections of the normed input.
    rmsnormNaive(xb, x, layer.inputNorm, 0, hidden, eps);
    matmulNaive(q, xb, layer.wq, layer.bq, qDim, hidden);
    matmulNaive(k, xb, layer.wk, layer.bk, kvDim, hidden);
    matmulNaive(v, xb, layer.wv, layer.bv, kvDim, hidden);
    if (layer.qNorm && layer.kNorm) {
      for (let h = 0; h < heads; h++) rmsnormNaive(q, q, layer.qNorm, h * headDim, headDim, eps);
      for (let h = 0; h < kvHeads; h++) rmsnormNaive(k, k, layer.kNorm, h * headDim, headDim, eps);
    }
    ropeNaive(q, heads, headDim, pos, freq, ropeScale);
    ropeNaive(k, kvHeads, headDim, pos, freq, ropeScale);
    roundQuery?.(q);
    storeKv?.(k, true);
    storeKv?.(v, false);
    cache.key[l].set(k, pos * kvDim);
    cache.value[l].set(v, pos * kvDim);

    // Each query head attends over positions 0..pos of its kv head (GQA: heads/kvHeads share one).
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      for (let t = 0; t <= pos; t++) {
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += q[h * headDim + i] * cache.key[l][t * kvDim + kvh * headDim + i];
        scores[t] = dot / Math.sqrt(headDim);
      }
      let max = -Infinity;
      for (let t = 0; t <= pos; t++) max = Math.max(max, scores[t]);
      let sum = 0;
      for (let t = 0; t <= pos; t++) {
        scores[t] = Math.exp(scores[t] - max); // softmax, max-subtracted so exp never overflows
        sum += scores[t];
      }
      for (let i = 0; i < headDim; i++) {
        let acc = 0;
        for (let t = 0; t <= pos; t++) acc += (scores[t] / sum) * cache.value[l][t * kvDim + kvh * headDim + i];
        attnOut[h * headDim + i] = acc;
      }
    }
    matmulNaive(xb2, attnOut, layer.wo, layer.bo, hidden, qDim);
    for (let i = 0; i < hidden; i++) x[i] += xb2[i];

    // MLP: SwiGLU.
    rmsnormNaive(xb, x, layer.postAttentionNorm, 0, hidden, eps);
    matmulNaive(hb, xb, layer.wGate, layer.bGate, inter, hidden);
    matmulNaive(hb2, xb, layer.wUp, layer.bUp, inter, hidden);
    for (let i = 0; i < inter; i++) hb[i] = silu(hb[i]) * hb2[i];
    matmulNaive(xb2, hb, layer.wDown, layer.bDown, hidden, inter);
    for (let i = 0; i < hidden; i++) x[i] += xb2[i];
    onLayer?.(l, x);
  }

  rmsnormNaive(x, x, w.finalNorm, 0, hidden, eps);
  const logits = new Float32Array(c.vocabSize);
  matmulNaive(logits, x, w.lmHead, null, c.vocabSize, hidden);
  return logits;
}

// ---------------------------------------------------------------- setup

export function newReferenceCache(c: ModelConfig, contextLength: number): ReferenceCache {
  const kvDim = c.numKvHeads * c.headDim;
  const layers = Array.from({ length: c.numLayers }, () => 0);
  return {
    key: layers.map(() => new Float32Array(contextLength * kvDim)),
    value: layers.map(() => new Float32Array(contextLength * kvDim)),
  };
}

/** Plain f32 copies of loaded weights, whatever their format (q8_0/q4_0 dequantized). */
export function referenceWeights(w: ModelWeights): ReferenceWeights {
  const f32 = (m: Matrix) => {
    const out = new Float32Array(m.rows * m.cols);
    for (let r = 0; r < m.rows; r++) readRow(m, r, out, r * m.cols);
    return out;
  };
  return {
    embed: f32(w.embed),
    layers: w.layers.map((l) => ({
      inputNorm: l.inputNorm,
      wq: f32(l.qProj),
      bq: l.qBias,
      wk: f32(l.kProj),
      bk: l.kBias,
      wv: f32(l.vProj),
      bv: l.vBias,
      qNorm: l.qNorm,
      kNorm: l.kNorm,
      wo: f32(l.oProj),
      bo: l.oBias,
      postAttentionNorm: l.postAttentionNorm,
      wGate: f32(l.gateProj),
      bGate: l.gateBias,
      wUp: f32(l.upProj),
      bUp: l.upBias,
      wDown: f32(l.downProj),
      bDown: l.downBias,
    })),
    finalNorm: w.finalNorm,
    lmHead: f32(w.lmHead),
  };
}
