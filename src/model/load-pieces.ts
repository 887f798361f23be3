// The work of a load, cut into pieces that any thread can run. A piece is a range of rows of one
// tensor: its bytes are read from the .safetensors file and widened, narrowed or quantized straight
// into the tensor's final SharedArrayBuffer. The main thread and the loading workers take pieces
// from a shared counter until none are left, so both the conversion and the first touch of the new
// memory (on a VM the larger cost: every fresh 4 KiB page is a fault) run on every thread.
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16 } from '../tensor/dtype.js';
import { quantizeGgmlRows } from '../tensor/formats/ggml.js';
import { BF16, F32, Q4_0, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0, type Matrix } from '../tensor/matrix.js';
import { Q2_K, Q3_K, Q4_1, Q5_1 } from '../tensor/matrix.js';
import { quantizeBf16RowsQ4_0, quantizeRowsQ4_0 } from '../tensor/formats/q4_0.js';
import { quantizeBf16RowsQ8_0, quantizeRowsQ8_0 } from '../tensor/formats/q8_0.js';
import type { TensorInfo, TensorReader } from './safetensors.js';

/** Where a thread reads tensor bytes: its own TensorReader (a worker), or the TensorStore (the main thread). */
export type RangeReader = Pick<TensorReader, 'readRange'>;

/** One tensor to load: `dest` is its final storage (empty SharedArrayBuffers, filled by the pieces). */
export interface TensorJob {
  info: TensorInfo;
  /** The tensor as a [rows, cols] matrix in its in-memory format; a 1-D tensor is one f32 row. */
  dest: Matrix;
}

/** Everything a thread needs to run pieces: plain data and SharedArrayBuffers, so it can be posted to a worker. */
export interface LoadPlan {
  jobs: TensorJob[];
  /** [job, firstRow, endRow] per piece. */
  pieces: Int32Array;
  /** [next piece to take, failed (1: stop taking pieces)], shared by every thread. */
  control: Int32Array;
  /** [bytes of the file read so far], for the progress line. */
  doneBytes: BigInt64Array;
}

const NEXT = 0;
const FAILED = 1;

const SOURCE_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;

/**
 * Cut every tensor into pieces of about `pieceBytes` bytes of the file: small enough that the
 * threads finish within a piece of each other and a piece's f32 rows stay in the L2 cache between
 * widening and quantizing, large enough that a piece's read is one syscall of many pages.
 */
export function planPieces(jobs: TensorJob[], pieceBytes: number): LoadPlan {
  const pieces: number[] = [];
  jobs.forEach((job, j) => {
    const { rows, cols, format } = job.dest;
    const rowBytes = cols * SOURCE_BYTES[job.info.dtype];
    let step = Math.max(1, Math.floor(pieceBytes / rowBytes));
    if (format === Q4_0 || format === Q4_K || format === Q5_0 || format === Q5_K || format === Q6_K)
      step = Math.max(2, step & ~1); // these store rows in pairs
    if (format === Q4_1 || format === Q5_1 || format === Q2_K || format === Q3_K) step = Math.max(2, step & ~1);
    for (let r = 0; r < rows; r += step) pieces.push(j, r, Math.min(rows, r + step));
  });
  return {
    jobs,
    pieces: Int32Array.from(pieces),
    control: new Int32Array(new SharedArrayBuffer(8)),
    doneBytes: new BigInt64Array(new SharedArrayBuffer(8)),
  };
}

/** The index of the next piece nobody has taken, or -1 when there is none (or a thread failed). */
export function takePiece(plan: LoadPlan): number {
  if (Atomics.load(plan.control, FAILED) !== 0) return -1;
  const p = Atomics.add(plan.control, NEXT, 1);
  return p < plan.pieces.length / 3 ? p : -1;
}

/** Make every thread stop taking pieces (one failed: the load is lost anyway). */
export function abandonPieces(plan: LoadPlan): void {
  Atomics.store(plan.control, FAILED, 1);
}

/** Conversion buffers of one thread, grown to the largest piece and reused for every piece. */
export class PieceScratch {
  f32 = new Float32Array(0);
  raw = new Uint16Array(0);

  reserve(count: number): void {
    if (this.f32.length >= count) return;
    this.f32 = new Float32Array(count);
    this.raw = new Uint16Array(count);
  }
}

const bytesOf = (a: Float32Array | Uint16Array, start: number, count: number) =>
  new Uint8Array(a.buffer, a.byteOffset + start * a.BYTES_PER_ELEMENT, count * a.BYTES_PER_ELEMENT);

/** Load piece `p`: read its rows and store them in the destination's format. */
export function runPiece(plan: LoadPlan, p: number, reader: RangeReader, scratch: PieceScratch): void {
  const { info, dest } = plan.jobs[plan.pieces[3 * p]];
  const r0 = plan.pieces[3 * p + 1];
  const r1 = plan.pieces[3 * p + 2];
  loadRows(info, dest, r0, r1, reader, scratch);
  Atomics.add(plan.doneBytes, 0, BigInt((r1 - r0) * dest.cols * SOURCE_BYTES[info.dtype]));
}

function loadRows(
  info: TensorInfo,
  dest: Matrix,
  r0: number,
  r1: number,
  reader: RangeReader,
  scratch: PieceScratch,
): void {
  const cols = dest.cols;
  const count = (r1 - r0) * cols;
  const fileOffset = r0 * cols * SOURCE_BYTES[info.dtype];
  // Same format in the file and in memory: read straight into place.
  if (dest.format === F32 && info.dtype === 'F32') {
    reader.readRange(info, fileOffset, bytesOf(dest.f32, r0 * cols, count));
    return;
  }
  if (dest.format === BF16 && info.dtype === 'BF16') {
    reader.readRange(info, fileOffset, bytesOf(dest.u16, r0 * cols, count));
    return;
  }
  scratch.reserve(count);
  // bf16 to q8_0 / q4_0, the usual quantized load: in one pass.
  if (info.dtype === 'BF16' && dest.ggmlType < 0 && (dest.format === Q8_0 || dest.format === Q4_0)) {
    const raw = scratch.raw.subarray(0, count);
    reader.readRange(info, fileOffset, bytesOf(raw, 0, count));
    if (dest.format === Q8_0) quantizeBf16RowsQ8_0(raw, r0, r1 - r0, dest);
    else quantizeBf16RowsQ4_0(raw, r0, r1 - r0, dest);
    return;
  }
  // Otherwise through f32 rows: the destination itself for f32, else this thread's scratch.
  const rowsF32 = dest.format === F32 ? dest.f32.subarray(r0 * cols, r1 * cols) : scratch.f32.subarray(0, count);
  if (info.dtype === 'F32') {
    reader.readRange(info, fileOffset, bytesOf(rowsF32, 0, count));
  } else {
    reader.readRange(info, fileOffset, bytesOf(scratch.raw, 0, count));
    if (info.dtype === 'BF16') bf16ArrayToF32(scratch.raw, 0, rowsF32, 0, count);
    else f16ArrayToF32(scratch.raw, 0, rowsF32, 0, count);
  }
  // A ggml type (the K-quant load formats): llama.cpp's reference quantizer for it.
  if (dest.ggmlType >= 0) quantizeGgmlRows(rowsF32, r0, r1 - r0, dest);
  else if (dest.format === BF16) f32ArrayToBf16(rowsF32, 0, dest.u16, r0 * cols, count);
  else if (dest.format === Q8_0) quantizeRowsQ8_0(rowsF32, r0, r1 - r0, dest);
  else if (dest.format === Q4_0) quantizeRowsQ4_0(rowsF32, r0, r1 - r0, dest);
}

/** What a worker reports: null, or the error that stopped it (its class name and message). */
export type PiecesResult = { name: string; message: string } | null;

/** A worker's share of a load: pieces until none are left. */
export function runPiecesUntilDone(plan: LoadPlan, reader: TensorReader): PiecesResult {
  const scratch = new PieceScratch();
  try {
    for (let p = takePiece(plan); p >= 0; p = takePiece(plan)) runPiece(plan, p, reader, scratch);
    return null;
  } catch (e) {
    abandonPieces(plan);
    return e instanceof Error ? { name: e.name, message: e.message } : { name: 'Error', message: String(e) };
  } finally {
    reader.close();
  }
}
