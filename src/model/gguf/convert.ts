// A Hugging Face model folder -> a GGUF file that llama.cpp loads, in F32, F16, BF16 or one of
// llama.cpp's quantized file types (with llama-quantize's per-tensor mix, quant-mix.ts). What
// convert_hf_to_gguf.py + llama-quantize do, without Python or torch: the same metadata keys,
// tensor names, llama's q/k row permutation, llama3's rope_freqs and the tokenizer keys.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ToF16 } from '../../tensor/dtype.js';
import { loadModelConfig, readJsonFile, type ModelConfig } from '../config.js';
import { TensorStore, type TensorInfo } from '../safetensors.js';
import { FAMILIES, ggufLayerName, hfLayerName, LAYER_TENSORS, MODEL_TENSORS } from '../tensor-names.js';
import { GGML_TYPE_INFO, GGUF_VALUE, GgufError, ggmlTypeName, type GgufEntry } from './file.js';
import { FILE_TYPES, GGML, tensorType } from './quant-mix.js';
import { tokenizerMetadata } from './tokenizer.js';
import { permuteRows } from './weights.js';
import { writeGguf, type TensorToWrite } from './writer.js';
import { quantizeGgml } from '../../tensor/formats/ggml.js';

export const CONVERT_TYPES = Object.keys(FILE_TYPES);

export interface ConvertOptions {
  /** A FILE_TYPES key: f32, f16, bf16, q8_0, q4_0, q4_k_m, ... Default f16. */
  type?: string;
  /** Called after each tensor: (done, total) tensors. */
  onProgress?: (done: number, total: number) => void;
}

const e = {
  u32: (value: number): GgufEntry => ({ type: GGUF_VALUE.UINT32, value }),
  f32: (value: number): GgufEntry => ({ type: GGUF_VALUE.FLOAT32, value }),
  str: (value: string): GgufEntry => ({ type: GGUF_VALUE.STRING, value }),
};

function modelMetadata(c: ModelConfig, name: string, fileType: number): [string, GgufEntry][] {
  const arch = c.modelType;
  const k = (key: string) => `${arch}.${key}`;
  const meta: [string, GgufEntry][] = [
    ['general.architecture', e.str(arch)],
    ['general.name', e.str(name)],
    ['general.file_type', e.u32(fileType)],
    ['general.quantization_version', e.u32(2)],
    [k('block_count'), e.u32(c.numLayers)],
    [k('context_length'), e.u32(c.maxPositionEmbeddings)],
    [k('embedding_length'), e.u32(c.hiddenSize)],
    [k('feed_forward_length'), e.u32(c.intermediateSize)],
    [k('attention.head_count'), e.u32(c.numHeads)],
    [k('attention.head_count_kv'), e.u32(c.numKvHeads)],
    [k('rope.freq_base'), e.f32(c.ropeTheta)],
    [k('attention.layer_norm_rms_epsilon'), e.f32(c.rmsNormEps)],
  ];
  if (c.headDim !== c.hiddenSize / c.numHeads || arch === 'qwen3')
    meta.push([k('attention.key_length'), e.u32(c.headDim)], [k('attention.value_length'), e.u32(c.headDim)]);
  if (arch === 'llama') meta.push([k('vocab_size'), e.u32(c.vocabSize)], [k('rope.dimension_count'), e.u32(c.headDim)]);
  if (c.ropeScaling?.type === 'linear')
    meta.push([k('rope.scaling.type'), e.str('linear')], [k('rope.scaling.factor'), e.f32(c.ropeScaling.factor)]);
  return meta;
}

/** f32 values of a safetensors tensor. */
function readF32(store: TensorStore, info: TensorInfo): Float32Array {
  const raw = store.readShared(info);
  if (raw instanceof Float32Array) return raw;
  const f32 = new Float32Array(raw.length);
  if (info.dtype === 'BF16') bf16ArrayToF32(raw, 0, f32, 0, raw.length);
  else f16ArrayToF32(raw, 0, f32, 0, raw.length);
  return f32;
}

function encode(type: number, f32: Float32Array, rows: number, cols: number, name: string): Uint8Array {
  if (type === GGML.F32) return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  if (type === GGML.F16) {
    const u16 = new Uint16Array(f32.length);
    for (let i = 0; i < f32.length; i++) u16[i] = f32ToF16(f32[i]);
    return new Uint8Array(u16.buffer);
  }
  if (type === GGML.BF16) {
    const u16 = new Uint16Array(f32.length);
    f32ArrayToBf16(f32, 0, u16, 0, f32.length);
    return new Uint8Array(u16.buffer);
  }
  const { blockBytes, blockSize } = GGML_TYPE_INFO[type];
  const out = new Uint8Array((rows * cols * blockBytes) / blockSize);
  try {
    quantizeGgml(type, f32, out, rows, cols);
  } catch (err) {
    throw new GgufError(`convert: tensor "${name}" to ${ggmlTypeName(type)}: ${(err as Error).message}`);
  }
  return out;
}

/** Convert the model folder `dir` to the GGUF file `out`. Returns the tensor types written, by name. */
export function convertToGguf(dir: string, out: string, opts: ConvertOptions = {}): Map<string, number> {
  const fileType = opts.type ?? 'f16';
  const ft = FILE_TYPES[fileType];
  if (ft === undefined)
    throw new GgufError(`convert: --type must be one of ${CONVERT_TYPES.join(', ')}, got ${JSON.stringify(fileType)}`);
  const c = loadModelConfig(dir);
  const tokJson = readJsonFile(path.join(dir, 'tokenizer.json'));
  const tokCfgFile = path.join(dir, 'tokenizer_config.json');
  const tokCfg = fs.existsSync(tokCfgFile) ? readJsonFile(tokCfgFile) : {};
  const meta = [
    ...modelMetadata(c, path.basename(path.resolve(dir)), ft.fileType),
    ...tokenizerMetadata(tokJson, tokCfg, c.vocabSize, path.join(dir, 'tokenizer.json')),
  ];
  const store = TensorStore.open(dir);
  const interleave = FAMILIES[c.modelType as keyof typeof FAMILIES].ropeInterleavedInGguf;
  const tensors: TensorToWrite[] = [];
  const types = new Map<string, number>();
  const add = (hf: string, gguf: string, shape: number[], layer: number, permute: 'q' | 'k' | undefined) => {
    const info = store.get(hf, shape);
    const rows = shape.length === 2 ? shape[0] : 1;
    const cols = shape.length === 2 ? shape[1] : shape[0];
    const type = tensorType(fileType, {
      name: gguf,
      cols,
      nDims: shape.length,
      layer,
      layers: c.numLayers,
      tiedEmbedding: c.tieWordEmbeddings,
    });
    types.set(gguf, type);
    tensors.push({
      name: gguf,
      dims: [...shape].reverse(),
      type,
      data: () => {
        let f32 = readF32(store, info);
        if (permute !== undefined && interleave) {
          const heads = permute === 'q' ? c.numHeads : c.numKvHeads;
          const rowCount = shape[0];
          const rowBytes = (f32.byteLength / rowCount) | 0;
          const bytes = permuteRows(
            new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength),
            rowCount,
            rowBytes,
            rowCount / heads,
          );
          f32 = new Float32Array(bytes.buffer);
        }
        return encode(type, f32, rows, cols, gguf);
      },
    });
  };
  try {
    add(MODEL_TENSORS.embed.hf, MODEL_TENSORS.embed.gguf, [c.vocabSize, c.hiddenSize], 0, undefined);
    if (c.ropeScaling?.type === 'llama3') {
      // As convert_hf_to_gguf: the llama3 scaling as per-frequency divisors.
      const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositionEmbeddings: old } = c.ropeScaling;
      // In float32 step by step, as convert_hf_to_gguf computes them with torch.
      const f = Math.fround;
      const factors = Float32Array.from({ length: c.headDim / 2 }, (_, j) => {
        const freq = f(1 / f(Math.pow(c.ropeTheta, f(f(2 * j) / c.headDim))));
        const wavelen = f(f(2 * Math.PI) / freq);
        if (wavelen < old / hi) return 1;
        if (wavelen > old / lo) return factor;
        const smooth = f(f(f(old / wavelen) - lo) / (hi - lo));
        return f(1 / f(f(f(1 - smooth) / factor) + smooth));
      });
      tensors.push({
        name: MODEL_TENSORS.ropeFreqs.gguf,
        dims: [factors.length],
        type: GGML.F32,
        data: () => new Uint8Array(factors.buffer),
      });
    }
    for (let l = 0; l < c.numLayers; l++) {
      for (const t of LAYER_TENSORS)
        if (t.present(c)) add(hfLayerName(l, t), ggufLayerName(l, t), t.shape(c), l, t.ropePermuted);
    }
    add(MODEL_TENSORS.finalNorm.hf, MODEL_TENSORS.finalNorm.gguf, [c.hiddenSize], 0, undefined);
    if (!c.tieWordEmbeddings)
      add(MODEL_TENSORS.lmHead.hf, MODEL_TENSORS.lmHead.gguf, [c.vocabSize, c.hiddenSize], 0, undefined);
    let done = 0;
    const counted = tensors.map((t) => ({
      ...t,
      data: () => {
        const d = t.data();
        opts.onProgress?.(++done, tensors.length);
        return d;
      },
    }));
    writeGguf(out, meta, counted);
  } finally {
    store.close();
  }
  return types;
}
