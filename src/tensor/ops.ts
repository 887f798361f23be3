// Elementwise and normalisation kernels. Plain functions over typed arrays with explicit offsets.

/** out[o..o+n) = x[xo..xo+n) / rms(x) * weight; accumulates in f64 as the reference does in f32/f64. */
export function rmsnorm(
  out: Float32Array,
  outOff: number,
  x: Float32Array,
  xOff: number,
  weight: Float32Array,
  n: number,
  eps: number,
): void {
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xOff + i];
    ss += v * v;
  }
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[outOff + i] = x[xOff + i] * scale * weight[i];
}

/**
 * Rotary embedding, rotate-half (NEOX) layout as in HF Qwen2: dimension j pairs with j + headDim/2.
 * `cos`/`sin` hold [headDim/2] values for this position; applied to `heads` consecutive heads at x[off..].
 */
export function rope(
  x: Float32Array,
  off: number,
  heads: number,
  headDim: number,
  cos: Float32Array,
  sin: Float32Array,
  csOff: number,
): void {
  const half = headDim >> 1;
  for (let h = 0; h < heads; h++) {
    const base = off + h * headDim;
    for (let j = 0; j < half; j++) {
      const a = x[base + j];
      const b = x[base + j + half];
      const c = cos[csOff + j];
      const s = sin[csOff + j];
      x[base + j] = a * c - b * s;
      x[base + j + half] = b * c + a * s;
    }
  }
}

/** RoPE frequency rescaling (the model config's rope_scaling); see ropeFrequencies. */
export type RopeScalingSpec =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      type: 'yarn';
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast: number;
      betaSlow: number;
      /** null: from factor (and mscale / mscaleAllDim when both are set), as the YaRN paper says. */
      attentionFactor: number | null;
      mscale: number | null;
      mscaleAllDim: number | null;
      /** Round the ramp's ends to whole dimensions (transformers' default). */
      truncate: boolean;
    }
  | { type: 'dynamic'; factor: number; originalMaxPositionEmbeddings: number }
  /** Each frequency divided by its own factor: a GGUF's rope_freqs tensor (llama3 scaling, precomputed). */
  | { type: 'factors'; factors: number[] };

/**
 * The headDim/2 rotation frequencies theta^(-2j/headDim), rescaled as HF's rope_scaling says
 * (transformers' modeling_rope_utils):
 * - `linear` divides all by factor;
 * - `llama3` keeps wavelengths shorter than original/highFreqFactor, divides those longer than
 *   original/lowFreqFactor by factor, and blends linearly (in original/wavelength) in between;
 * - `yarn` blends interpolated (f/factor) and original frequencies by a linear ramp over the
 *   dimensions that turn between betaFast and betaSlow times within the original context;
 * - `dynamic` (NTK) raises theta once the sequence is longer than the original context:
 *   theta * (factor * seqLen / original - (factor - 1))^(headDim / (headDim - 2)).
 * `seqLen` matters only for `dynamic`: the length of the sequence so far.
 */
export function ropeFrequencies(
  headDim: number,
  theta: number,
  scaling: RopeScalingSpec | null = null,
  seqLen = 0,
): Float64Array {
  const half = headDim >> 1;
  const freq = new Float64Array(half);
  let base = theta;
  if (scaling?.type === 'dynamic') {
    const { factor, originalMaxPositionEmbeddings: old } = scaling;
    const len = Math.max(seqLen, old);
    base = theta * Math.pow((factor * len) / old - (factor - 1), headDim / (headDim - 2));
  }
  let low = 0,
    high = 0;
  if (scaling?.type === 'yarn') [low, high] = yarnRamp(headDim, theta, scaling);
  for (let j = 0; j < half; j++) {
    const f = 1 / Math.pow(base, (2 * j) / headDim);
    if (scaling === null || scaling.type === 'dynamic') freq[j] = f;
    else if (scaling.type === 'linear') freq[j] = f / scaling.factor;
    else if (scaling.type === 'yarn') {
      // extrapolation weight 1 below `low` (fast dimensions keep their frequency), 0 above `high`.
      const ramp = Math.min(1, Math.max(0, (j - low) / (high === low ? 0.001 : high - low)));
      const keep = 1 - ramp;
      freq[j] = (f / scaling.factor) * (1 - keep) + f * keep;
    } else if (scaling.type === 'factors') freq[j] = f / scaling.factors[j];
    else {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = scaling;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < old / highFreqFactor) freq[j] = f;
      else if (wavelen > old / lowFreqFactor) freq[j] = f / factor;
      else {
        const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        freq[j] = (1 - smooth) * (f / factor) + smooth * f;
      }
    }
  }
  return freq;
}

/** YaRN's ramp ends: the dimensions (in pairs) that turn betaFast and betaSlow times in the original context. */
function yarnRamp(headDim: number, theta: number, s: Extract<RopeScalingSpec, { type: 'yarn' }>): [number, number] {
  const dimOf = (rotations: number) =>
    (headDim * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = dimOf(s.betaFast),
    high = dimOf(s.betaSlow);
  if (s.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  return [Math.max(low, 0), Math.min(high, headDim - 1)];
}

/** The factor on cos and sin (so on q and k): YaRN's attention temperature, 1 otherwise. */
export function ropeAttentionFactor(scaling: RopeScalingSpec | null): number {
  if (scaling?.type !== 'yarn') return 1;
  if (scaling.attentionFactor !== null) return scaling.attentionFactor;
  const mscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  if (scaling.mscale && scaling.mscaleAllDim)
    return mscale(scaling.factor, scaling.mscale) / mscale(scaling.factor, scaling.mscaleAllDim);
  return mscale(scaling.factor);
}

/**
 * cos/sin tables [maxPos, headDim/2], times the attention factor; angles in f64 so long positions
 * keep their precision. Dynamic NTK rotates position p with the frequencies of a sequence of p+1
 * tokens: what transformers computes when it decodes token by token, so that a prefill equals its
 * token-by-token decode (transformers' own prefill rotates a whole prompt with the frequencies of
 * its full length instead).
 */
export function ropeTables(
  maxPos: number,
  headDim: number,
  theta: number,
  scaling: RopeScalingSpec | null = null,
): { cos: Float32Array; sin: Float32Array } {
  const half = headDim >> 1;
  const attention = ropeAttentionFactor(scaling);
  let freq = ropeFrequencies(headDim, theta, scaling);
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    if (scaling?.type === 'dynamic' && p + 1 > scaling.originalMaxPositionEmbeddings)
      freq = ropeFrequencies(headDim, theta, scaling, p + 1);
    for (let j = 0; j < half; j++) {
      const angle = p * freq[j];
      cos[p * half + j] = Math.cos(angle) * attention;
      sin[p * half + j] = Math.sin(angle) * attention;
    }
  }
  return { cos, sin };
}

/** Qwen3's q_norm / k_norm: RMSNorm of each of `heads` consecutive heads at x[off..], in place, one weight [headDim] for all. */
export function rmsnormHeads(
  x: Float32Array,
  off: number,
  heads: number,
  headDim: number,
  weight: Float32Array,
  eps: number,
): void {
  for (let h = 0; h < heads; h++) rmsnorm(x, off + h * headDim, x, off + h * headDim, weight, headDim, eps);
}

/** x[off..off+n) += bias[0..n) */
export function addBias(x: Float32Array, off: number, bias: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[off + i] += bias[i];
}

/** In-place softmax of x[off..off+n), max-subtracted so exp never overflows. */
export function softmax(x: Float32Array | Float64Array, off: number, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > max) max = x[off + i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[off + i] - max);
    x[off + i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < n; i++) x[off + i] *= inv;
}

/** SwiGLU: gate[i] = silu(gate[i]) * up[i]. */
export function swiglu(gate: Float32Array, gateOff: number, up: Float32Array, upOff: number, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[gateOff + i];
    gate[gateOff + i] = (g / (1 + Math.exp(-g))) * up[upOff + i];
  }
}

/** x[xo..] += y[yo..] */
export function addInPlace(x: Float32Array, xOff: number, y: Float32Array, yOff: number, n: number): void {
  for (let i = 0; i < n; i++) x[xOff + i] += y[yOff + i];
}

/**
 * x[off..off+n) = H·x / √n in place, H the n x n Walsh-Hadamard matrix (n a power of two): an
 * orthonormal rotation that is its own inverse. Rotating keys and queries alike leaves q·k
 * unchanged but spreads a key's outlier dimensions over all of them, so an int8 cache with one
 * scale per 32 values loses less of the small ones (QuaRot's trick).
 */
export function hadamard(x: Float32Array, off: number, n: number): void {
  for (let h = 1; h < n; h *= 2) {
    for (let i = off; i < off + n; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = x[j],
          b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const scale = 1 / Math.sqrt(n);
  for (let i = off; i < off + n; i++) x[i] *= scale;
}
