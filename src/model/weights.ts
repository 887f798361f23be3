// Loads a Qwen2 / Qwen3 / Llama checkpoint's tensors into the weight format chosen at load time. Every tensor is
// read once from disk into its final SharedArrayBuffer storage (bf16 -> bf16 with no conversion at
// all); conversions and quantization go through a small chunk of rows, never a second full copy.
import { bf16ArrayToF32, f16ArrayToF32 } from '../tensor/dtype.js';
import {
  BF16,
  F32,
  FORMAT_CODES,
  makeMatrix,
  Q4_0,
  QBLOCK,
  sharedFloat32,
  type Matrix,
  type WeightFormat,
} from '../tensor/matrix.js';
import { allocQuantizedMatrix, quantizeRowsQ4_0, quantizeRowsQ8_0 } from '../tensor/quantize.js';
import type { ModelConfig } from './config.js';
import { SafetensorsError, type TensorInfo, type TensorStore } from './safetensors.js';

export interface LayerWeights {
  inputNorm: Float32Array; // [hidden]
  qProj: Matrix; // [heads*headDim, hidden]
  qBias: Float32Array | null; // [heads*headDim]; qwen2 always, llama/qwen3 with attention_bias
  kProj: Matrix; // [kvHeads*headDim, hidden]
  kBias: Float32Array | null; // [kvHeads*headDim]
  vProj: Matrix; // [kvHeads*headDim, hidden]
  vBias: Float32Array | null; // [kvHeads*headDim]
  qNorm: Float32Array | null; // [headDim]: qwen3's per-head RMSNorm of q before RoPE
  kNorm: Float32Array | null; // [headDim]: same for k
  oProj: Matrix; // [hidden, heads*headDim]
  oBias: Float32Array | null; // [hidden]: llama and qwen3 with attention_bias
  postAttentionNorm: Float32Array; // [hidden]
  gateProj: Matrix; // [intermediate, hidden]
  gateBias: Float32Array | null; // [intermediate]: llama's mlp_bias
  upProj: Matrix; // [intermediate, hidden]
  upBias: Float32Array | null; // [intermediate]
  downProj: Matrix; // [hidden, intermediate]
  downBias: Float32Array | null; // [hidden]
}

export interface ModelWeights {
  format: WeightFormat;
  embed: Matrix; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [hidden]
  lmHead: Matrix; // [vocab, hidden]; the same object as embed when tie_word_embeddings
}

const CHUNK_BYTES = 8 << 20;

// Conversion buffers, reused for every tensor of a load and dropped at its end, so converting
// never holds more than a chunk of rows besides the final weights.
let chunkF32 = new Float32Array(0);
let chunkRaw = new Uint16Array(0);

function chunkBuffers(count: number): { f32: Float32Array; raw: Uint16Array } {
  if (chunkF32.length < count) {
    chunkF32 = new Float32Array(count);
    chunkRaw = new Uint16Array(count);
  }
  return { f32: chunkF32, raw: chunkRaw };
}

/** Read rows [r0, r0+n) of a 2-D tensor as f32 into out[0..n*cols). */
function readRowsF32(store: TensorStore, info: TensorInfo, r0: number, n: number, out: Float32Array): void {
  const cols = info.shape[1] ?? info.shape[0];
  const count = n * cols;
  if (info.dtype === 'F32') {
    store.readRange(info, r0 * cols * 4, new Uint8Array(out.buffer, out.byteOffset, count * 4));
    return;
  }
  const raw = chunkBuffers(count).raw;
  store.readRange(info, r0 * cols * 2, new Uint8Array(raw.buffer, 0, count * 2));
  if (info.dtype === 'BF16') bf16ArrayToF32(raw, 0, out, 0, count);
  else f16ArrayToF32(raw, 0, out, 0, count);
}

/** A 1-D tensor (norm weight, bias) as f32. */
function loadVector(store: TensorStore, name: string, n: number): Float32Array {
  const info = store.get(name, [n]);
  const out = sharedFloat32(n);
  readRowsF32(store, info, 0, 1, out);
  return out;
}

function loadMatrix(store: TensorStore, name: string, rows: number, cols: number, format: WeightFormat): Matrix {
  const info = store.get(name, [rows, cols]);
  let code = FORMAT_CODES[format];
  // Quantized formats need whole 32-blocks (and row pairs for q4_0); other shapes stay bf16.
  if (code >= 2 && (cols % QBLOCK !== 0 || (code === Q4_0 && rows % 2 !== 0))) code = BF16;
  if (code === BF16 && info.dtype === 'BF16') {
    const u16 = new Uint16Array(new SharedArrayBuffer(info.byteLength));
    store.readInto(info, new Uint8Array(u16.buffer));
    progress.done += info.byteLength;
    showProgress();
    return makeMatrix(BF16, rows, cols, { u16 });
  }
  if (code === F32 && info.dtype === 'F32') {
    const f32 = sharedFloat32(rows * cols);
    store.readInto(info, new Uint8Array(f32.buffer));
    progress.done += info.byteLength;
    showProgress();
    return makeMatrix(F32, rows, cols, { f32 });
  }
  const chunkRows = Math.max(2, Math.floor(CHUNK_BYTES / (cols * 4)) & ~1);
  // Its own buffer: readRowsF32 uses the shared raw buffer while filling this one.
  const buf = new Float32Array(chunkBuffers(chunkRows * cols).f32.buffer, 0, chunkRows * cols);
  const m =
    code === F32
      ? makeMatrix(F32, rows, cols, { f32: sharedFloat32(rows * cols) })
      : code === BF16
        ? makeMatrix(BF16, rows, cols, { u16: new Uint16Array(new SharedArrayBuffer(rows * cols * 2)) })
        : allocQuantizedMatrix(code, rows, cols);
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const n = Math.min(chunkRows, rows - r0);
    // f32 is widened straight into its final place: one pass over the destination, not two.
    if (code === F32) readRowsF32(store, info, r0, n, m.f32.subarray(r0 * cols, (r0 + n) * cols));
    else readRowsF32(store, info, r0, n, buf);
    if (code === F32) {
      // done above
    } else if (code === BF16) narrowToBf16(buf, n * cols, m.u16, r0 * cols);
    else if (code === Q4_0) quantizeRowsQ4_0(buf, r0, n, m);
    else quantizeRowsQ8_0(buf, r0, n, m);
    progress.done += n * cols * (info.byteLength / (rows * cols));
    showProgress();
  }
  return m;
}

/** out[outOff + i] = the bf16 nearest to src[i] (ties to even, NaN stays NaN), for i < count. */
function narrowToBf16(src: Float32Array, count: number, out: Uint16Array, outOff: number): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, count);
  for (let i = 0; i < count; i++) {
    const u = bits[i];
    out[outOff + i] =
      (u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0
        ? (u >>> 16) | 0x40
        : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
}

// A progress line on stderr for loads that take over a second, when stderr is a terminal.
const progress = { store: null as TensorStore | null, total: 0, done: 0, start: 0, shown: false };

function startProgress(store: TensorStore): void {
  let total = 0;
  for (const t of store.tensors.values()) total += t.byteLength;
  progress.store = store;
  progress.total = total;
  progress.done = 0;
  progress.start = performance.now();
  progress.shown = false;
}

function showProgress(): void {
  const seconds = (performance.now() - progress.start) / 1000;
  if (!process.stderr.isTTY || seconds < 1 || progress.total === 0) return;
  const pct = Math.min(100, (100 * progress.done) / progress.total);
  const mb = (b: number) => (b / 2 ** 20).toFixed(0);
  process.stderr.write(
    `\rloading weights: ${pct.toFixed(0)}% (${mb(progress.done)} / ${mb(progress.total)} MB of ${progress.store!.dir}) ${seconds.toFixed(1)} s`,
  );
  progress.shown = true;
}

function endProgress(): void {
  if (progress.shown) process.stderr.write('\r\x1b[K');
  progress.store = null;
  progress.shown = false;
}

export function loadWeights(store: TensorStore, c: ModelConfig, format: WeightFormat): ModelWeights {
  startProgress(store);
  try {
    return loadAll(store, c, format);
  } finally {
    endProgress();
    chunkF32 = new Float32Array(0);
    chunkRaw = new Uint16Array(0);
  }
}

function loadAll(store: TensorStore, c: ModelConfig, format: WeightFormat): ModelWeights {
  const h = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const embed = loadMatrix(store, 'model.embed_tokens.weight', c.vocabSize, h, format);
  const layers: LayerWeights[] = [];
  const inter = c.intermediateSize;
  // Optional vectors: null when the family (config) has none, so a missing tensor is an error.
  const vector = (has: boolean, name: string, n: number) => (has ? loadVector(store, name, n) : null);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: loadVector(store, p + 'input_layernorm.weight', h),
      qProj: loadMatrix(store, p + 'self_attn.q_proj.weight', qDim, h, format),
      qBias: vector(c.attentionBias, p + 'self_attn.q_proj.bias', qDim),
      kProj: loadMatrix(store, p + 'self_attn.k_proj.weight', kvDim, h, format),
      kBias: vector(c.attentionBias, p + 'self_attn.k_proj.bias', kvDim),
      vProj: loadMatrix(store, p + 'self_attn.v_proj.weight', kvDim, h, format),
      vBias: vector(c.attentionBias, p + 'self_attn.v_proj.bias', kvDim),
      qNorm: vector(c.qkNorm, p + 'self_attn.q_norm.weight', c.headDim),
      kNorm: vector(c.qkNorm, p + 'self_attn.k_norm.weight', c.headDim),
      oProj: loadMatrix(store, p + 'self_attn.o_proj.weight', h, qDim, format),
      oBias: vector(c.oProjBias, p + 'self_attn.o_proj.bias', h),
      postAttentionNorm: loadVector(store, p + 'post_attention_layernorm.weight', h),
      gateProj: loadMatrix(store, p + 'mlp.gate_proj.weight', inter, h, format),
      gateBias: vector(c.mlpBias, p + 'mlp.gate_proj.bias', inter),
      upProj: loadMatrix(store, p + 'mlp.up_proj.weight', inter, h, format),
      upBias: vector(c.mlpBias, p + 'mlp.up_proj.bias', inter),
      downProj: loadMatrix(store, p + 'mlp.down_proj.weight', h, inter, format),
      downBias: vector(c.mlpBias, p + 'mlp.down_proj.bias', h),
    });
  }
  const finalNorm = loadVector(store, 'model.norm.weight', h);
  let lmHead = embed;
  if (!c.tieWordEmbeddings) {
    if (!store.has('lm_head.weight')) {
      throw new SafetensorsError(
        `${store.dir}: tensor "lm_head.weight" not found, and config.json has tie_word_embeddings: false`,
      );
    }
    lmHead = loadMatrix(store, 'lm_head.weight', c.vocabSize, h, format);
  }
  return { format, embed, layers, finalNorm, lmHead };
}
