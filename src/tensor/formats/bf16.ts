// bf16 weights [rows, cols]: the top half of each f32, so widening is a 16-bit shift. Decode reads
// two weights per 32-bit load and casts them in registers (matvecBf16); prefill widens 4-row panels
// to f32 once and runs the f32 kernel over every token (matmulPanels).
import type { Matrix } from '../matrix.js';
import { castBits, castFloats, COLS_MASK, OFFSET_MASK, PANEL_MIN_TOKENS, type MatmulKernel } from './common.js';
import { matmulPanels } from './f32.js';

/** matmul for a bf16 matrix. */
export const matmulBf16Matrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1) => {
  if (n < PANEL_MIN_TOKENS) matvecBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
};

/** Row r of a bf16 matrix into out[outOff..outOff+cols). */
export function readRowBf16(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const cols = m.cols;
  const o32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let k = 0; k < cols; k++) o32[outOff + k] = m.u16[r * cols + k] << 16;
}

/** Rows [r, r + nr) of a bf16 matrix as f32 bits into outBits[0, nr * cols), two weights per 32-bit load when aligned. */
function widenRowsBf16(m: Matrix, r: number, nr: number, _out: Float32Array, outBits: Uint32Array): void {
  const cols = m.cols;
  const start = r * cols,
    len = nr * cols;
  if ((start & 1) === 0 && (len & 1) === 0 && (m.u16.byteOffset & 3) === 0) {
    const u32 = new Uint32Array(m.u16.buffer, m.u16.byteOffset + start * 2, len >> 1);
    for (let i = 0, j = 0; j < len; i++, j += 2) {
      const v = u32[i];
      outBits[j] = v << 16;
      outBits[j + 1] = v & 0xffff0000;
    }
  } else {
    for (let j = 0; j < len; j++) outBits[j] = m.u16[start + j] << 16;
  }
}

// The Uint32Array view of the last bf16 matrix (decode calls one matrix many times in a row).
let wordsOf: Uint16Array | null = null;
let words: Uint32Array = new Uint32Array(0);

/**
 * bf16 weights, one token at a time (decode): one 32-bit load yields two weights of a row, 4 rows
 * x 2 columns per step into 4 accumulators (the 8 of matmulBf16 spill), offsets masked as in
 * matvecF32. Any rows r0..r1 (a last row or three go one at a time); odd cols or a misaligned
 * array take matmulBf16.
 */
export function matvecBf16(
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const u16 = m.u16;
  if ((m.cols & 1) !== 0 || (u16.byteOffset & 3) !== 0 || u16.length > OFFSET_MASK || x.length > OFFSET_MASK) {
    matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  if (wordsOf !== u16) {
    words = new Uint32Array(u16.buffer, u16.byteOffset, u16.length >> 1);
    wordsOf = u16;
  }
  const w32 = words;
  const half = (m.cols >> 1) & COLS_MASK; // words per row
  const bits = castBits,
    f = castFloats;
  for (let t = 0; t < n; t++) {
    const xo = (xOff + t * xStride) & OFFSET_MASK;
    const yt = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) {
      const o0 = (r * half) & OFFSET_MASK,
        o1 = (o0 + half) & OFFSET_MASK,
        o2 = (o1 + half) & OFFSET_MASK,
        o3 = (o2 + half) & OFFSET_MASK;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      for (let k = 0; k < half; k++) {
        const xk = (xo + 2 * k) & OFFSET_MASK;
        const v0 = x[xk],
          v1 = x[xk + 1];
        const p0 = w32[o0 + k],
          p1 = w32[o1 + k],
          p2 = w32[o2 + k],
          p3 = w32[o3 + k];
        bits[0] = p0 << 16;
        bits[1] = p0 & 0xffff0000;
        bits[2] = p1 << 16;
        bits[3] = p1 & 0xffff0000;
        bits[4] = p2 << 16;
        bits[5] = p2 & 0xffff0000;
        bits[6] = p3 << 16;
        bits[7] = p3 & 0xffff0000;
        a0 += f[0] * v0 + f[1] * v1;
        a1 += f[2] * v0 + f[3] * v1;
        a2 += f[4] * v0 + f[5] * v1;
        a3 += f[6] * v0 + f[7] * v1;
      }
      y[yt + r] = a0;
      y[yt + r + 1] = a1;
      y[yt + r + 2] = a2;
      y[yt + r + 3] = a3;
    }
    for (; r < r1; r++) {
      const o = (r * half) & OFFSET_MASK;
      let a = 0;
      for (let k = 0; k < half; k++) {
        const xk = (xo + 2 * k) & OFFSET_MASK;
        const p = w32[o + k];
        bits[0] = p << 16;
        bits[1] = p & 0xffff0000;
        a += f[0] * x[xk] + f[1] * x[xk + 1];
      }
      y[yt + r] = a;
    }
  }
}

export function matmulBf16(
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (n >= PANEL_MIN_TOKENS || (r1 - r0) % 4 !== 0 || m.cols % 2 !== 0) {
    matmulPanels(m, widenRowsBf16, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
    return;
  }
  // Decode: widen on the fly. One 32-bit load yields two bf16 values; bf16 -> f32 is a 16-bit
  // shift, and the bits become a float through a tiny Int32Array/Float32Array alias (JS has no
  // cheaper bit cast). 4 rows x 2 columns per step, 8 accumulators.
  const w32 = new Uint32Array(m.u16.buffer, m.u16.byteOffset, m.u16.length >> 1);
  const half = m.cols >> 1;
  const bits = castBits,
    f = castFloats;
  for (let t = 0; t < n; t++) {
    const xo = xOff + t * xStride;
    for (let r = r0; r < r1; r += 4) {
      const o0 = r * half,
        o1 = o0 + half,
        o2 = o1 + half,
        o3 = o2 + half;
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0,
        b0 = 0,
        b1 = 0,
        b2 = 0,
        b3 = 0;
      for (let k = 0; k < half; k++) {
        const v0 = x[xo + 2 * k],
          v1 = x[xo + 2 * k + 1];
        const p0 = w32[o0 + k],
          p1 = w32[o1 + k],
          p2 = w32[o2 + k],
          p3 = w32[o3 + k];
        bits[0] = p0 << 16;
        bits[1] = p0 & 0xffff0000;
        bits[2] = p1 << 16;
        bits[3] = p1 & 0xffff0000;
        bits[4] = p2 << 16;
        bits[5] = p2 & 0xffff0000;
        bits[6] = p3 << 16;
        bits[7] = p3 & 0xffff0000;
        a0 += f[0] * v0;
        b0 += f[1] * v1;
        a1 += f[2] * v0;
        b1 += f[3] * v1;
        a2 += f[4] * v0;
        b2 += f[5] * v1;
        a3 += f[6] * v0;
        b3 += f[7] * v1;
      }
      const yt = yOff + t * yStride + r;
      y[yt] = a0 + b0;
      y[yt + 1] = a1 + b1;
      y[yt + 2] = a2 + b2;
      y[yt + 3] = a3 + b3;
    }
  }
}

/**
 * Widen block `b` (32 bf16 starting at pairs[p], two per int) into blockBits; returns the bits of
 * its largest magnitude as an f32 (the order of |x| is that of the low 15 bits of a bf16). The
 * quantizers from bf16 rows (q8_0.ts, q4_0.ts) run on it: one pass, the block stays in L1.
 */
export function widenBf16Block(pairs: Int32Array, p: number, blockBits: Int32Array): number {
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
