// The tensor types of ggml (GGUF files): their block sizes, ggml's own dequantization and reference
// quantization bit for bit, and the repacking of a GGUF tensor into a Matrix the kernels run as is
// (no f32 copy). What src/model/gguf (reading) and `qwen-ts convert` (writing) call.
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ToF16 } from '../dtype.js';
import {
  BF16,
  F32,
  GGML_BLOCKS,
  makeMatrix,
  Q4_0,
  Q4_K,
  Q5_0,
  Q5_K,
  Q6_K,
  Q8_0,
  QBLOCK,
  type Matrix,
} from '../matrix.js';
import {
  dequantizeBlockIQ4_NL,
  dequantizeBlockIQ4_XS,
  dequantizeBlockQ2_K,
  dequantizeBlockQ3_K,
  dequantizeBlockQ4_0,
  dequantizeBlockQ4_1,
  dequantizeBlockQ4_K,
  dequantizeBlockQ5_0,
  dequantizeBlockQ5_1,
  dequantizeBlockQ5_K,
  dequantizeBlockQ6_K,
  dequantizeBlockQ8_0,
  f16At,
} from './ggml-dequantize.js';
import {
  quantizeBlockQ4_0,
  quantizeBlockQ4_1,
  quantizeBlockQ4_K,
  quantizeBlockQ5_0,
  quantizeBlockQ5_1,
  quantizeBlockQ5_K,
  quantizeBlockQ6_K,
  quantizeBlockQ8_0,
} from './ggml-quantize.js';
import { allocQ4_0 } from './q4_0.js';
import { allocQ8_0 } from './q8_0.js';
import { allocQ4_K, packQ4_KRows } from './q4_k.js';
import { allocQ6_K, packQ6_KRows } from './q6_k.js';
import { allocQ5_0, packQ5_0Rows } from './q5_0.js';
import { f16Matrix } from './f16.js';
import { allocQ5_K, packQ5_KRows } from './q5_k.js';
import { GGML_BLOCK_KERNELS } from './ggml-blocks.js';
import { allocQ4_1, packQ4_1Rows } from './q4_1.js';
import { allocQ5_1, packQ5_1Rows } from './q5_1.js';
import { allocQ2_K, packQ2_KRows } from './q2_k.js';
import { allocQ3_K, packQ3_KRows } from './q3_k.js';
import { allocIQ4_NL, packIQ4_NLRows } from './iq4_nl.js';
import { allocIQ4_XS, packIQ4_XSRows } from './iq4_xs.js';
import { IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_1, Q5_1 } from '../matrix.js';

/** ggml_type codes of the types qwen-ts reads (ggml.h). */
export const GGML_TYPE = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  IQ4_NL: 20,
  IQ4_XS: 23,
  BF16: 30,
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPE;

export interface GgmlTypeInfo {
  name: GgmlTypeName;
  /** Values per block. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

type BlockFn = (src: Uint8Array, o: number, out: Float32Array, y: number) => void;
type QuantizeBlockFn = (x: Float32Array, xo: number, dst: Uint8Array, o: number) => void;

interface TypeRow extends GgmlTypeInfo {
  dequantizeBlock: BlockFn | null; // null: F32, F16, BF16 (converted as arrays)
  quantizeBlock: QuantizeBlockFn | null;
}

const ROWS: TypeRow[] = [
  { name: 'F32', blockSize: 1, typeSize: 4, dequantizeBlock: null, quantizeBlock: null },
  { name: 'F16', blockSize: 1, typeSize: 2, dequantizeBlock: null, quantizeBlock: null },
  { name: 'BF16', blockSize: 1, typeSize: 2, dequantizeBlock: null, quantizeBlock: null },
  { name: 'Q4_0', blockSize: 32, typeSize: 18, dequantizeBlock: dequantizeBlockQ4_0, quantizeBlock: quantizeBlockQ4_0 },
  { name: 'Q4_1', blockSize: 32, typeSize: 20, dequantizeBlock: dequantizeBlockQ4_1, quantizeBlock: quantizeBlockQ4_1 },
  { name: 'Q5_0', blockSize: 32, typeSize: 22, dequantizeBlock: dequantizeBlockQ5_0, quantizeBlock: quantizeBlockQ5_0 },
  { name: 'Q5_1', blockSize: 32, typeSize: 24, dequantizeBlock: dequantizeBlockQ5_1, quantizeBlock: quantizeBlockQ5_1 },
  { name: 'Q8_0', blockSize: 32, typeSize: 34, dequantizeBlock: dequantizeBlockQ8_0, quantizeBlock: quantizeBlockQ8_0 },
  { name: 'Q2_K', blockSize: 256, typeSize: 84, dequantizeBlock: dequantizeBlockQ2_K, quantizeBlock: null },
  { name: 'Q3_K', blockSize: 256, typeSize: 110, dequantizeBlock: dequantizeBlockQ3_K, quantizeBlock: null },
  {
    name: 'Q4_K',
    blockSize: 256,
    typeSize: 144,
    dequantizeBlock: dequantizeBlockQ4_K,
    quantizeBlock: quantizeBlockQ4_K,
  },
  {
    name: 'Q5_K',
    blockSize: 256,
    typeSize: 176,
    dequantizeBlock: dequantizeBlockQ5_K,
    quantizeBlock: quantizeBlockQ5_K,
  },
  {
    name: 'Q6_K',
    blockSize: 256,
    typeSize: 210,
    dequantizeBlock: dequantizeBlockQ6_K,
    quantizeBlock: quantizeBlockQ6_K,
  },
  { name: 'IQ4_NL', blockSize: 32, typeSize: 18, dequantizeBlock: dequantizeBlockIQ4_NL, quantizeBlock: null },
  { name: 'IQ4_XS', blockSize: 256, typeSize: 136, dequantizeBlock: dequantizeBlockIQ4_XS, quantizeBlock: null },
];

const BY_CODE = new Map<number, TypeRow>(ROWS.map((r) => [GGML_TYPE[r.name], r]));

/** Name, block size and bytes per block of each type qwen-ts reads, by ggml_type code. */
export const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map(
  ROWS.map((r) => [GGML_TYPE[r.name], { name: r.name, blockSize: r.blockSize, typeSize: r.typeSize }]),
);

// ggml_type names of the codes qwen-ts does not read, for error messages (ggml.h).
const OTHER_NAMES: Record<number, string> = {
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  21: 'IQ3_S',
  22: 'IQ2_S',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  34: 'TQ1_0',
  35: 'TQ2_0',
  39: 'MXFP4',
};

/** The name of a ggml_type code ("type 99" when ggml has none). */
export function ggmlTypeName(type: number): string {
  return BY_CODE.get(type)?.name ?? OTHER_NAMES[type] ?? `type ${type}`;
}

function typeRow(type: number, what: string): TypeRow {
  const row = BY_CODE.get(type);
  if (row === undefined)
    throw new Error(
      `${what}: ggml tensor type ${ggmlTypeName(type)} (${type}) is not supported; supported: ${ROWS.map((r) => r.name).join(', ')}`,
    );
  return row;
}

/** Bytes of one row of `cols` values of `type`; cols must be a whole number of blocks. */
export function ggmlRowBytes(type: number, cols: number): number {
  const row = typeRow(type, 'ggmlRowBytes');
  if (cols % row.blockSize !== 0)
    throw new Error(
      `ggml type ${row.name}: a row of ${cols} values is not a whole number of ${row.blockSize}-value blocks`,
    );
  return (cols / row.blockSize) * row.typeSize;
}

/** The f16/bf16 bits at src[0, 2n) as a Uint16Array (a copy when src is not 2-byte aligned). */
function u16View(src: Uint8Array, n: number): Uint16Array {
  if (src.byteOffset % 2 === 0) return new Uint16Array(src.buffer, src.byteOffset, n);
  return new Uint16Array(src.slice(0, 2 * n).buffer);
}

/**
 * out[0, n) = the first n values of the ggml tensor data `src` of `type`, exactly as ggml's
 * dequantize_row_* (n a whole number of blocks).
 */
export function dequantizeGgml(type: number, src: Uint8Array, out: Float32Array, n: number): void {
  const row = typeRow(type, 'dequantizeGgml');
  if (n % row.blockSize !== 0)
    throw new Error(`dequantizeGgml ${row.name}: ${n} values is not a whole number of blocks`);
  const need = (n / row.blockSize) * row.typeSize;
  if (src.length < need)
    throw new Error(`dequantizeGgml ${row.name}: ${n} values need ${need} bytes, got ${src.length}`);
  if (row.name === 'F32') {
    new Uint8Array(out.buffer, out.byteOffset, 4 * n).set(src.subarray(0, 4 * n));
  } else if (row.name === 'F16') {
    f16ArrayToF32(u16View(src, n), 0, out, 0, n);
  } else if (row.name === 'BF16') {
    bf16ArrayToF32(u16View(src, n), 0, out, 0, n);
  } else {
    const block = row.dequantizeBlock!;
    for (let b = 0, o = 0; b < n; b += row.blockSize, o += row.typeSize) block(src, o, out, b);
  }
}

/**
 * out = `rows` rows of `cols` values of f32 quantized to `type` by llama.cpp's reference quantizers
 * (quantize_row_*_ref: what llama-quantize writes without an importance matrix), bit for bit.
 * Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
 */
export function quantizeGgml(type: number, f32: Float32Array, out: Uint8Array, rows: number, cols: number): void {
  const row = typeRow(type, 'quantizeGgml');
  const rowBytes = ggmlRowBytes(type, cols);
  if (f32.length < rows * cols) throw new Error(`quantizeGgml ${row.name}: ${rows}x${cols} values, got ${f32.length}`);
  if (out.length < rows * rowBytes)
    throw new Error(`quantizeGgml ${row.name}: needs ${rows * rowBytes} bytes, got ${out.length}`);
  const n = rows * cols;
  if (row.name === 'F32') {
    out.set(new Uint8Array(f32.buffer, f32.byteOffset, 4 * n));
  } else if (row.name === 'F16') {
    for (let i = 0; i < n; i++) {
      const h = f32ToF16(f32[i]);
      out[2 * i] = h & 0xff;
      out[2 * i + 1] = h >> 8;
    }
  } else if (row.name === 'BF16') {
    const bits = new Uint16Array(n);
    f32ArrayToBf16(f32, 0, bits, 0, n);
    out.set(new Uint8Array(bits.buffer));
  } else {
    const block = row.quantizeBlock;
    if (block === null) throw new Error(`quantizeGgml: no quantizer for ggml type ${row.name}`);
    for (let b = 0, o = 0; b < n; b += row.blockSize, o += row.typeSize) block(f32, b, out, o);
  }
}

/**
 * A GGUF tensor (`src`: its bytes, `rows` x `cols` values of ggml `type`, row-major as ggml stores
 * [cols, rows]) as a Matrix the kernels run, in about the file's bytes: F32 and BF16 as they are,
 * Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K repacked into the layouts of their kernels (exact: the same
 * values), F16 as f16 (widened in its kernels), the others kept in their ggml blocks. Unsupported types throw an
 * error naming the type (the caller adds the tensor's name).
 */
export function ggmlToMatrix(type: number, src: Uint8Array, rows: number, cols: number): Matrix {
  const row = typeRow(type, 'ggmlToMatrix');
  const rowBytes = ggmlRowBytes(type, cols);
  if (src.length < rows * rowBytes)
    throw new Error(`ggml ${row.name} tensor [${rows}, ${cols}]: needs ${rows * rowBytes} bytes, got ${src.length}`);
  const n = rows * cols;
  switch (row.name) {
    case 'F16':
      return f16Matrix(src, rows, cols);
    case 'F32': {
      const f32 = new Float32Array(new SharedArrayBuffer(4 * n));
      dequantizeGgml(type, src, f32, n);
      return makeMatrix(F32, rows, cols, { f32 });
    }
    case 'BF16': {
      const u16 = new Uint16Array(new SharedArrayBuffer(2 * n));
      new Uint8Array(u16.buffer).set(src.subarray(0, 2 * n));
      return makeMatrix(BF16, rows, cols, { u16 });
    }
  }
  const m = allocGgmlMatrix(type, rows, cols);
  packGgmlRows(m, src, 0, rows);
  return m;
}

/**
 * An empty Matrix for `rows` x `cols` values of quantized ggml `type` (Q8_0, Q4_0, Q4_K in their
 * kernels' layouts, the others in ggml blocks), with `ggmlType` set: filled by packGgmlRows or
 * quantizeGgmlRows.
 */
export function allocGgmlMatrix(type: number, rows: number, cols: number): Matrix {
  const row = typeRow(type, 'allocGgmlMatrix');
  const rowBytes = ggmlRowBytes(type, cols);
  let m: Matrix;
  if (row.name === 'Q8_0') m = allocQ8_0(rows, cols);
  else if (row.name === 'Q4_0' && rows % 2 === 0) m = allocQ4_0(rows, cols);
  else if (row.name === 'Q4_K' && rows % 2 === 0) m = allocQ4_K(rows, cols);
  else if (row.name === 'Q5_0' && rows % 2 === 0) m = allocQ5_0(rows, cols);
  else if (row.name === 'Q5_K' && rows % 2 === 0) m = allocQ5_K(rows, cols);
  else if (row.name === 'Q6_K' && rows % 2 === 0) m = allocQ6_K(rows, cols);
  else if (row.name === 'Q4_1' && rows % 2 === 0) m = allocQ4_1(rows, cols);
  else if (row.name === 'Q5_1' && rows % 2 === 0) m = allocQ5_1(rows, cols);
  else if (row.name === 'Q2_K' && rows % 2 === 0) m = allocQ2_K(rows, cols);
  else if (row.name === 'Q3_K' && rows % 2 === 0) m = allocQ3_K(rows, cols);
  else if (row.name === 'IQ4_NL' && rows % 2 === 0) m = allocIQ4_NL(rows, cols);
  else if (row.name === 'IQ4_XS' && rows % 2 === 0) m = allocIQ4_XS(rows, cols);
  else if (GGML_BLOCK_KERNELS.has(type) || row.name === 'Q4_0' || row.name === 'Q4_K' || row.name === 'Q5_0')
    m = makeMatrix(GGML_BLOCKS, rows, cols, { u8: new Uint8Array(new SharedArrayBuffer(rows * rowBytes)) });
  else throw new Error(`allocGgmlMatrix: ggml type ${row.name} is not a quantized type`);
  m.ggmlType = type;
  return m;
}

/** Rows [r0, r0 + nRows) of m from their ggml bytes `src` (r0 and nRows even for Q4_0 / Q4_K layouts). */
export function packGgmlRows(m: Matrix, src: Uint8Array, r0: number, nRows: number): void {
  const rowBytes = ggmlRowBytes(m.ggmlType, m.cols);
  if (m.format === GGML_BLOCKS) m.u8.set(src.subarray(0, nRows * rowBytes), r0 * rowBytes);
  else if (m.format === Q8_0) packQ8_0Rows(src, m, r0, nRows);
  else if (m.format === Q4_0) packQ4_0Rows(src, m, r0, nRows);
  else if (m.format === Q4_K) packQ4_KRows(src, m, r0, nRows);
  else if (m.format === Q6_K) packQ6_KRows(src, m, r0, nRows);
  else if (m.format === Q5_0) packQ5_0Rows(src, m, r0, nRows);
  else if (m.format === Q5_K) packQ5_KRows(src, m, r0, nRows);
  else if (m.format === Q4_1) packQ4_1Rows(src, m, r0, nRows);
  else if (m.format === Q5_1) packQ5_1Rows(src, m, r0, nRows);
  else if (m.format === Q2_K) packQ2_KRows(src, m, r0, nRows);
  else if (m.format === Q3_K) packQ3_KRows(src, m, r0, nRows);
  else if (m.format === IQ4_NL) packIQ4_NLRows(src, m, r0, nRows);
  else if (m.format === IQ4_XS) packIQ4_XSRows(src, m, r0, nRows);
  else throw new Error(`packGgmlRows: matrix format ${m.format} does not hold ggml blocks`);
}

// This thread's quantized rows (grown to the largest call).
let rowsScratch = new Uint8Array(0);

/** Quantize f32 rows [r0, r0 + nRows) (`rowsF32`: those rows) into m with ggml's reference quantizer for m.ggmlType. */
export function quantizeGgmlRows(rowsF32: Float32Array, r0: number, nRows: number, m: Matrix): void {
  const bytes = nRows * ggmlRowBytes(m.ggmlType, m.cols);
  if (rowsScratch.length < bytes) rowsScratch = new Uint8Array(bytes);
  quantizeGgml(m.ggmlType, rowsF32, rowsScratch, nRows, m.cols);
  packGgmlRows(m, rowsScratch, r0, nRows);
}

/** ggml Q8_0 blocks (f16 d, 32 int8) into q8_0 rows: the same int8 values, d widened to f32. */
function packQ8_0Rows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const bytes = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  const first = (r0 * m.cols) / QBLOCK;
  const blocks = (nRows * m.cols) / QBLOCK;
  for (let b = 0; b < blocks; b++) {
    const o = 34 * b;
    m.scales[first + b] = f16At(src, o);
    bytes.set(src.subarray(o + 2, o + 34), 32 * (first + b));
  }
}

/**
 * ggml Q4_0 blocks (f16 d; byte j: value j in the low nibble, j + 16 in the high, both + 8) into
 * q4_0 rows (row pairs interleaved, see q4_0.ts; the same +8 nibbles), d widened to f32.
 */
function packQ4_0Rows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const blocks = m.cols / QBLOCK;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const nib = new Uint8Array(32);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = 18 * ((r - r0) * blocks + b);
      m.scales[r * blocks + b] = f16At(src, o);
      for (let j = 0; j < 16; j++) {
        nib[j] = src[o + 2 + j] & 0xf;
        nib[j + 16] = src[o + 2 + j] >> 4;
      }
      // One row's 16 bits of word j: columns 4j..4j+3 (see q4_0.ts).
      const ho = ((r >> 1) * blocks + b) * 16 + (r & 1);
      for (let j = 0; j < 8; j++)
        halves[ho + 2 * j] = nib[4 * j] | (nib[4 * j + 1] << 4) | (nib[4 * j + 2] << 8) | (nib[4 * j + 3] << 12);
    }
  }
}
