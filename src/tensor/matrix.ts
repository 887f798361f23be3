// A weight matrix [rows, cols] (PyTorch Linear layout: one row per output feature) in one of the
// storage formats. Every Matrix has the same fields whatever its format, so V8 sees one object
// shape at every kernel call site; the arrays a format does not use are empty.

/** q4_k, q5_k, q6_k, q4_k_m: llama.cpp's K-quants, a ggml type per tensor as llama-quantize picks it (model/gguf/quant-mix.ts). */
export type WeightFormat = 'f32' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q5_k' | 'q6_k' | 'q4_k_m';
/** The storage format code of each load-time format (the K-quants: of their main type). */
export const FORMAT_CODES: Record<WeightFormat, number> = {
  f32: 0,
  bf16: 1,
  q8_0: 2,
  q4_0: 3,
  q4_k: 5,
  q5_k: 4,
  q6_k: 6,
  q4_k_m: 5,
};
export const F32 = 0;
export const BF16 = 1;
export const Q8_0 = 2;
export const Q4_0 = 3;
/** A ggml tensor type kept in its own blocks (Matrix.u8, type in Matrix.ggmlType): formats/ggml-blocks.ts. */
export const GGML_BLOCKS = 4;
/** llama.cpp's Q4_K, repacked for the SWAR and lanes kernels: formats/q4_k.ts. */
export const Q4_K = 5;
/** llama.cpp's Q6_K, its 6-bit levels repacked in row-pair SWAR words: formats/q6_k.ts. */
export const Q6_K = 6;
/** ggml's Q5_0, its 5-bit levels repacked in row-pair SWAR words: formats/q5_0.ts. */
export const Q5_0 = 7;
/** f16 (GGUF F16 tensors) in half storage, widened in the kernels: formats/f16.ts. */
export const F16 = 8;
/** llama.cpp's Q5_K, its levels in Q5_0's row-pair SWAR words: formats/q5_k.ts. */
export const Q5_K = 9;
/** ggml's Q4_1, q4_0's SWAR layout with its f16 scale and min: formats/q4_1.ts. */
export const Q4_1 = 10;
/** ggml's Q5_1, Q5_0's layout with its f16 scale and min: formats/q5_1.ts. */
export const Q5_1 = 11;
/** llama.cpp's Q2_K, 2-bit levels in row-pair SWAR words: formats/q2_k.ts. */
export const Q2_K = 12;
/** llama.cpp's Q3_K, Q2_K's low bits plus a plane of high bits: formats/q3_k.ts. */
export const Q3_K = 13;
/** ggml's IQ4_NL, row-pair index bytes for float64 lanes: formats/iq4_nl.ts. */
export const IQ4_NL = 14;
/** ggml's IQ4_XS, IQ4_NL's row-pair index bytes with 6-bit sub-block scales: formats/iq4_xs.ts. */
export const IQ4_XS = 15;

/** Quantized formats group 32 consecutive weights of a row under one scale, as llama.cpp does. */
export const QBLOCK = 32;

export interface Matrix {
  format: number;
  rows: number;
  cols: number;
  f32: Float32Array; // f32: [rows, cols]
  u16: Uint16Array; // bf16, f16: [rows, cols]
  q: Int32Array; // q8_0: [rows, cols/4] four int8 per int32; q4_0: see quantize.ts
  scales: Float32Array; // q8_0/q4_0: [rows, cols/32]
  u8: Uint8Array; // ggml blocks: the tensor's bytes as in the GGUF file
  ggmlType: number; // ggml blocks: the ggml_type code (else -1)
}

export function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

const EMPTY_F32 = new Float32Array(0);
const EMPTY_U16 = new Uint16Array(0);
const EMPTY_I32 = new Int32Array(0);
const EMPTY_U8 = new Uint8Array(0);

export function makeMatrix(
  format: number,
  rows: number,
  cols: number,
  parts: Partial<Pick<Matrix, 'f32' | 'u16' | 'q' | 'scales' | 'u8' | 'ggmlType'>>,
): Matrix {
  return {
    format,
    rows,
    cols,
    f32: parts.f32 ?? EMPTY_F32,
    u16: parts.u16 ?? EMPTY_U16,
    q: parts.q ?? EMPTY_I32,
    scales: parts.scales ?? EMPTY_F32,
    u8: parts.u8 ?? EMPTY_U8,
    ggmlType: parts.ggmlType ?? -1,
  };
}

/** Bytes of weight data a pass over the matrix reads (for the roofline). */
export function matrixBytes(m: Matrix): number {
  return m.f32.byteLength + m.u16.byteLength + m.q.byteLength + m.scales.byteLength + m.u8.byteLength;
}
