// q8_0 / q4_0 straight from bf16 rows, the dtype of nearly every checkpoint: the same output as
// bf16ArrayToF32 followed by quantizeRowsQ8_0 / quantizeRowsQ4_0 (quantize.ts defines the formats),
// in one pass. Each 32-block is widened into a scratch block that stays in L1 while its largest
// magnitude is found on the bf16 bits, two weights per 32-bit load; 1.45x faster than the two passes.
import { QBLOCK, type Matrix } from './matrix.js';
import { storeBlockQ4_0, storeBlockQ8_0 } from './quantize.js';

/**
 * Widen block `b` (32 bf16 starting at pairs[p], two per int) into blockBits; returns the bits of
 * its largest magnitude as an f32 (the order of |x| is that of the low 15 bits of a bf16).
 */
function widenBlock(pairs: Int32Array, p: number, blockBits: Int32Array): number {
  let a0 = 0,
    a1 = 0,
    a2 = 0,
    a3 = 0;
  for (let j = 0; j < 16; j += 2) {
    const w0 = pairs[p + j];
    const w1 = pairs[p + j + 1];
    blockBits[2 * j] = w0 << 16; // little-endian: the even weight in the low half
    blockBits[2 * j + 1] = w0 & -65536;
    blockBits[2 * j + 2] = w1 << 16;
    blockBits[2 * j + 3] = w1 & -65536;
    const d0 = (w0 & 0x7fff) - a0;
    const d1 = ((w0 >>> 16) & 0x7fff) - a1;
    const d2 = (w1 & 0x7fff) - a2;
    const d3 = ((w1 >>> 16) & 0x7fff) - a3;
    a0 += d0 & ~(d0 >> 31); // a0 = max(a0, |weight|), branch-free
    a1 += d1 & ~(d1 >> 31);
    a2 += d2 & ~(d2 >> 31);
    a3 += d3 & ~(d3 >> 31);
  }
  const a01 = a0 > a1 ? a0 : a1;
  const a23 = a2 > a3 ? a2 : a3;
  return (a01 > a23 ? a01 : a23) << 16;
}

/** Quantize bf16 rows into a q8_0 matrix's storage; `rowsBf16` holds rows [r0, r0 + nRows). */
export function quantizeBf16RowsQ8_0(rowsBf16: Uint16Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const q = m.q;
  const scales = m.scales;
  const pairs = new Int32Array(rowsBf16.buffer, rowsBf16.byteOffset, (nRows * cols) >> 1);
  const block = new Float32Array(QBLOCK); // one widened block
  const blockBits = new Int32Array(block.buffer);
  const end = pairs.length;
  let so = r0 * blocks;
  let wo = (r0 * cols) >> 2;
  for (let p = 0; p < end; p += QBLOCK / 2, so++, wo += 8) {
    storeBlockQ8_0(block, blockBits, 0, widenBlock(pairs, p, blockBits), scales, so, q, wo);
  }
}

/** Quantize bf16 rows into a q4_0 matrix's storage; `rowsBf16` holds rows [r0, r0 + nRows), r0 and nRows even. */
export function quantizeBf16RowsQ4_0(rowsBf16: Uint16Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (r0 % 2 !== 0 || nRows % 2 !== 0) throw new Error('quantizeBf16RowsQ4_0: rows come in even pairs');
  const scales = m.scales;
  const pairs = new Int32Array(rowsBf16.buffer, rowsBf16.byteOffset, (nRows * cols) >> 1);
  // A row's 16 bits of each word: the low half (even row) or the high half (odd row), little-endian.
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const block = new Float32Array(QBLOCK);
  const blockBits = new Int32Array(block.buffer);
  for (let r = r0; r < r0 + nRows; r++) {
    let p = ((r - r0) * cols) >> 1;
    let so = r * blocks;
    let ho = (r >> 1) * blocks * 16 + (r & 1);
    for (let b = 0; b < blocks; b++, p += QBLOCK / 2, so++, ho += 16) {
      storeBlockQ4_0(block, blockBits, 0, widenBlock(pairs, p, blockBits), scales, so, halves, ho);
    }
  }
}
