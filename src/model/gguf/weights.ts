// A GGUF file's tensors -> ModelWeights. Float tensors (F32, F16, BF16) load as f32 / bf16 or,
// with an explicit `weights` format, are converted as a safetensors checkpoint would be; quantized
// tensors keep the type the file gives each of them (never the file name: a "Q4_K_M" file mixes
// types) and are handed to src/tensor's ggml formats. llama's q/k rows are put back in HF order
// here, so the forward pass is the same for every source.
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16 } from '../../tensor/dtype.js';
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
} from '../../tensor/matrix.js';
import { ggmlToMatrix } from '../../tensor/formats/ggml.js';
import { quantizeRowsQ4_0 } from '../../tensor/formats/q4_0.js';
import { quantizeRowsQ8_0 } from '../../tensor/formats/q8_0.js';
import { allocQuantizedMatrix } from '../../tensor/matmul.js';
import { closeFile, openRegularFile } from '../../platform/files.js';
import type { ModelConfig } from '../config.js';
import {
  FAMILIES,
  ggufLayerName,
  LAYER_TENSORS,
  MODEL_TENSORS,
  type Family,
  type LayerTensorField,
} from '../tensor-names.js';
import type { LayerWeights, ModelWeights } from '../weights.js';
import { GGML_TYPE_INFO, GgufError, ggmlTypeName, readFileRange, type GgufModel, type GgufTensorInfo } from './file.js';

const GGML_F32 = 0;
const GGML_F16 = 1;
const GGML_BF16 = 30;

export interface GgufWeightsOptions {
  /** Convert the float (F32/F16/BF16) tensors to this format; quantized tensors keep their own. Default: f32 (bf16 stays bf16). */
  weights?: WeightFormat;
  /** Scan float tensors for NaN/Inf. */
  checkTensors?: boolean;
  /** Called after each tensor with the tensor bytes read so far and in all (the load's "weights" stage). */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** A quantized ggml tensor as the kernels run it (src/tensor/formats: repacked, never widened to f32). */
function quantizedMatrix(info: GgufTensorInfo, bytes: Uint8Array, rows: number, cols: number): Matrix {
  try {
    return ggmlToMatrix(info.type, bytes, rows, cols);
  } catch (e) {
    throw new GgufError(
      `${info.file}: tensor "${info.name}" has type ${ggmlTypeName(info.type)}, which qwen-ts cannot run (${(e as Error).message}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS`,
    );
  }
}

class TensorReader {
  private fds = new Map<string, number>();

  read(info: GgufTensorInfo): Uint8Array {
    let fd = this.fds.get(info.file);
    if (fd === undefined) {
      fd = openRegularFile(info.file, 'a GGUF file', (problem) => {
        throw new GgufError(`${info.file}: ${problem}`);
      }).fd;
      this.fds.set(info.file, fd);
    }
    // A SharedArrayBuffer: an F32 tensor is used in place as the weights.
    const bytes = new Uint8Array(new SharedArrayBuffer(info.byteLength));
    readFileRange(fd, bytes, info.dataStart, `${info.file}: tensor "${info.name}"`);
    return bytes;
  }

  close(): void {
    for (const fd of this.fds.values()) closeFile(fd);
    this.fds.clear();
  }
}

/**
 * Put back HF's row order of a llama q/k tensor: convert_hf_to_gguf writes head row 2i+j from HF
 * row j*headDim/2+i (its `permute`), so that ggml's adjacent-pair RoPE sees HF's rotate-half pairs.
 */
export function unpermuteRows(bytes: Uint8Array, rows: number, rowBytes: number, headDim: number): Uint8Array {
  const out = new Uint8Array(new SharedArrayBuffer(bytes.length));
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    const head = Math.floor(r / headDim);
    const within = r % headDim;
    const j = Math.floor(within / half);
    const i = within % half;
    const src = head * headDim + 2 * i + j;
    out.set(bytes.subarray(src * rowBytes, (src + 1) * rowBytes), r * rowBytes);
  }
  return out;
}

/** The inverse of unpermuteRows (HF order -> GGUF order), for the writer. */
export function permuteRows(bytes: Uint8Array, rows: number, rowBytes: number, headDim: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    const head = Math.floor(r / headDim);
    const within = r % headDim;
    const j = Math.floor(within / half);
    const i = within % half;
    const dst = head * headDim + 2 * i + j;
    out.set(bytes.subarray(r * rowBytes, (r + 1) * rowBytes), dst * rowBytes);
  }
  return out;
}

function checkFinite(info: GgufTensorInfo, f32: Float32Array): void {
  for (let i = 0; i < f32.length; i++)
    if (!Number.isFinite(f32[i]))
      throw new GgufError(`${info.file}: tensor "${info.name}" holds ${f32[i]} at element ${i}`);
}

/** Float rows as f32 (a view of the bytes when the tensor is F32). */
function floatsOf(info: GgufTensorInfo, bytes: Uint8Array, n: number): Float32Array {
  if (info.type === GGML_F32) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  const f32 = sharedFloat32(n);
  const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  if (info.type === GGML_F16) f16ArrayToF32(u16, 0, f32, 0, n);
  else bf16ArrayToF32(u16, 0, f32, 0, n);
  return f32;
}

export function loadGgufWeights(g: GgufModel, c: ModelConfig, opts: GgufWeightsOptions = {}): ModelWeights {
  const family = c.modelType as Family;
  const reader = new TensorReader();
  const used = new Set<string>();
  const format = opts.weights;

  const lookup = (name: string, shape: number[]): GgufTensorInfo => {
    const info = g.tensor(name);
    if (info === undefined) throw new GgufError(`${g.file}: tensor "${name}" not found`);
    // ggml lists dims fastest first: [cols, rows] for our [rows, cols].
    const want = [...shape].reverse();
    const dims =
      info.dims.length > want.length && info.dims.slice(want.length).every((d) => d === 1)
        ? info.dims.slice(0, want.length)
        : info.dims;
    if (dims.length !== want.length || dims.some((d, i) => d !== want[i]))
      throw new GgufError(
        `${info.file}: tensor "${name}" has dims [${info.dims.join(', ')}], expected [${want.join(', ')}] (ggml order, from the metadata)`,
      );
    used.add(name);
    return info;
  };

  let totalBytes = 0;
  for (const t of g.tensors.values()) totalBytes += t.byteLength;
  let doneBytes = 0;
  opts.onProgress?.(0, totalBytes);

  const bytesOf = (info: GgufTensorInfo, rows: number, permuted: boolean): Uint8Array => {
    const bytes = reader.read(info);
    doneBytes += info.byteLength;
    opts.onProgress?.(doneBytes, totalBytes);
    if (!permuted || !FAMILIES[family].ropeInterleavedInGguf) return bytes;
    return unpermuteRows(bytes, rows, info.byteLength / rows, c.headDim);
  };

  const vector = (name: string, n: number, permuted = false): Float32Array => {
    const info = lookup(name, [n]);
    if (info.type !== GGML_F32 && info.type !== GGML_F16 && info.type !== GGML_BF16)
      throw new GgufError(
        `${info.file}: tensor "${name}" has type ${ggmlTypeName(info.type)}; 1-D tensors must be F32, F16 or BF16`,
      );
    const f32 = floatsOf(info, bytesOf(info, n, permuted), n);
    checkFinite(info, f32); // small tensors (norms, biases): always, it costs nothing
    return f32;
  };

  const matrix = (name: string, rows: number, cols: number, permuted = false): Matrix => {
    const info = lookup(name, [rows, cols]);
    if (GGML_TYPE_INFO[info.type] === undefined)
      throw new GgufError(`${info.file}: tensor "${name}" has unknown type ${info.type}`);
    const bytes = bytesOf(info, rows, permuted);
    const isFloat = info.type === GGML_F32 || info.type === GGML_F16 || info.type === GGML_BF16;
    if (!isFloat) return quantizedMatrix(info, bytes, rows, cols);
    // F16 stays f16 (exact, half of f32's memory) unless a format is asked for.
    if (info.type === GGML_F16 && format === undefined) return ggmlToMatrix(info.type, bytes, rows, cols);
    if (info.type === GGML_BF16 && (format === undefined || format === 'bf16'))
      return makeMatrix(BF16, rows, cols, { u16: new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols) });
    const f32 = floatsOf(info, bytes, rows * cols);
    if (opts.checkTensors) checkFinite(info, f32);
    let code = FORMAT_CODES[format ?? 'f32'];
    if (code >= 2 && (cols % QBLOCK !== 0 || (code === Q4_0 && rows % 2 !== 0))) code = BF16;
    if (code === F32) return makeMatrix(F32, rows, cols, { f32 });
    if (code === BF16) {
      const u16 = new Uint16Array(new SharedArrayBuffer(rows * cols * 2));
      f32ArrayToBf16(f32, 0, u16, 0, rows * cols);
      return makeMatrix(BF16, rows, cols, { u16 });
    }
    const m = allocQuantizedMatrix(code, rows, cols);
    if (code === Q4_0) quantizeRowsQ4_0(f32, 0, rows, m);
    else quantizeRowsQ8_0(f32, 0, rows, m);
    return m;
  };

  try {
    const h = c.hiddenSize;
    const embed = matrix(MODEL_TENSORS.embed.gguf, c.vocabSize, h);
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.numLayers; l++) {
      const layer = {} as Record<LayerTensorField, Matrix | Float32Array | null>;
      for (const t of LAYER_TENSORS) {
        const shape = t.shape(c);
        const name = ggufLayerName(l, t);
        const permuted = t.ropePermuted !== undefined;
        layer[t.field] = !t.present(c)
          ? null
          : shape.length === 2
            ? matrix(name, shape[0], shape[1], permuted)
            : vector(name, shape[0], permuted);
      }
      layers.push(layer as unknown as LayerWeights);
    }
    const finalNorm = vector(MODEL_TENSORS.finalNorm.gguf, h);
    const lmHead = c.tieWordEmbeddings ? embed : matrix(MODEL_TENSORS.lmHead.gguf, c.vocabSize, h);
    if (c.ropeScaling?.type === 'factors') {
      const factors = vector(MODEL_TENSORS.ropeFreqs.gguf, c.headDim / 2);
      for (let j = 0; j < factors.length; j++) {
        if (!(factors[j] > 0))
          throw new GgufError(
            `${g.file}: tensor "${MODEL_TENSORS.ropeFreqs.gguf}" holds ${factors[j]} at ${j}; RoPE factors must be positive`,
          );
        c.ropeScaling.factors[j] = factors[j];
      }
    }
    const unused = [...g.tensors.keys()].filter((n) => !used.has(n));
    if (unused.length > 0)
      throw new GgufError(
        `${g.file}: ${unused.length} tensor(s) this ${family} model does not use, e.g. "${unused[0]}" (a different architecture, or a newer GGUF)`,
      );
    const counts = new Map<string, number>();
    for (const t of g.tensors.values()) counts.set(ggmlTypeName(t.type), (counts.get(ggmlTypeName(t.type)) ?? 0) + 1);
    const anyQuantized = [...g.tensors.values()].some(
      (t) => t.type !== GGML_F32 && t.type !== GGML_F16 && t.type !== GGML_BF16,
    );
    const description = `GGUF ${[...counts].map(([name, n]) => `${n} ${name}`).join(', ')}${format ? `, floats as ${format}` : ''}`;
    return {
      format: format ?? (anyQuantized ? 'q8_0' : embed.format === BF16 ? 'bf16' : 'f32'),
      embed,
      layers,
      finalNorm,
      lmHead,
      description,
    };
  } finally {
    reader.close();
  }
}
