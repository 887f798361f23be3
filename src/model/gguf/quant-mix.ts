// Which ggml type each tensor gets in a GGUF of a given file type: llama.cpp's choices
// (llama-quant.cpp's llama_tensor_get_type), so that our `convert --type q4_k_m` writes the same
// mix as llama-quantize: the output (and a tied embedding) one step up to Q6_K, attn_v and
// ffn_down of the "more bits" layers Q6_K, and a type whose block does not divide the row length
// replaced by its 32-block fallback (the 0.5B's 896-wide rows: Q4_K -> Q5_0, Q6_K -> Q8_0).
import { GGML_TYPE, GGML_TYPES } from '../../tensor/formats/ggml.js';

/** ggml_type codes (ggml.h): formats/ggml.ts's table, under the name this file and convert use. */
export const GGML = GGML_TYPE;

/** `convert --type` names -> [base type, llama_ftype code written to general.file_type]. */
export const FILE_TYPES: Record<string, { base: number; fileType: number }> = {
  f32: { base: GGML.F32, fileType: 0 },
  f16: { base: GGML.F16, fileType: 1 },
  bf16: { base: GGML.BF16, fileType: 32 },
  q8_0: { base: GGML.Q8_0, fileType: 7 },
  q4_0: { base: GGML.Q4_0, fileType: 2 },
  q4_1: { base: GGML.Q4_1, fileType: 3 },
  q5_0: { base: GGML.Q5_0, fileType: 8 },
  q5_1: { base: GGML.Q5_1, fileType: 9 },
  q4_k_s: { base: GGML.Q4_K, fileType: 14 },
  q4_k_m: { base: GGML.Q4_K, fileType: 15 },
  q5_k_s: { base: GGML.Q5_K, fileType: 16 },
  q5_k_m: { base: GGML.Q5_K, fileType: 17 },
  q6_k: { base: GGML.Q6_K, fileType: 18 },
};

/**
 * The llama-quantize file type of a load-time K-quant format (`weights: 'q4_k' | ...`): q4_k and
 * q5_k are llama.cpp's Q4_K_S and Q5_K_S mixes, q4_k_m and q6_k its Q4_K_M and Q6_K.
 */
export function kQuantFileType(format: 'q4_k' | 'q5_k' | 'q6_k' | 'q4_k_m'): string {
  return format === 'q4_k' ? 'q4_k_s' : format === 'q5_k' ? 'q5_k_s' : format;
}

/** Values per block of a ggml type. */
const blockSize = (type: number): number => GGML_TYPES.get(type)!.blockSize;
const FALLBACK: Record<number, number> = { 10: GGML.Q4_0, 11: GGML.Q4_0, 12: GGML.Q5_0, 13: GGML.Q5_1, 14: GGML.Q8_0 };

// C's integer division: with 4 layers, n/8 is 0 and 7n/8 is 3.
const useMoreBits = (layer: number, layers: number) =>
  layer < Math.floor(layers / 8) || layer >= Math.floor((7 * layers) / 8) || (layer - Math.floor(layers / 8)) % 3 === 2;

export interface TensorRole {
  /** GGUF tensor name. */
  name: string;
  /** Row length (ggml ne[0]). */
  cols: number;
  /** Number of dims: 1-D tensors (norms, biases, rope_freqs) stay F32. */
  nDims: number;
  layer: number;
  layers: number;
  tiedEmbedding: boolean;
}

/** The ggml type of one tensor in a file of type `fileType` (a FILE_TYPES key). */
export function tensorType(fileType: string, t: TensorRole): number {
  const { base } = FILE_TYPES[fileType];
  if (t.nDims < 2 || t.name.endsWith('_norm.weight')) return GGML.F32;
  if (base === GGML.F32 || base === GGML.F16 || base === GGML.BF16) return base;
  let type: number = base;
  const isOutput = t.name === 'output.weight' || (t.tiedEmbedding && t.name === 'token_embd.weight');
  if (isOutput) {
    if (t.cols % blockSize(base) !== 0) type = GGML.Q8_0;
    else if (type !== GGML.Q8_0) type = GGML.Q6_K;
  } else if (t.name.endsWith('attn_v.weight')) {
    if ((fileType === 'q4_k_m' || fileType === 'q5_k_m') && useMoreBits(t.layer, t.layers)) type = GGML.Q6_K;
    else if (fileType === 'q4_k_s' && t.layer < 4) type = GGML.Q5_K;
  } else if (t.name.endsWith('ffn_down.weight')) {
    if ((fileType === 'q4_k_m' || fileType === 'q5_k_m') && useMoreBits(t.layer, t.layers)) type = GGML.Q6_K;
    else if (fileType === 'q4_k_s' && t.layer < Math.floor(t.layers / 8)) type = GGML.Q5_K;
  }
  if (t.cols % blockSize(type) !== 0) {
    const fallback = FALLBACK[type] ?? type;
    type = t.cols % blockSize(fallback) === 0 ? fallback : GGML.F16;
  }
  return type;
}
