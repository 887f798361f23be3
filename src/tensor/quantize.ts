// Block quantization in the spirit of llama.cpp's q8_0 and q4_0: every 32 consecutive weights of a
// row share one f32 scale. Activations are quantized to int8 per 32-block too, so the inner loops
// are integer multiply-adds (Math.imul), exact in int32, with one float multiply per block.
import { makeMatrix, Q4_0, Q8_0, QBLOCK, type Matrix } from './matrix.js';

// See matmul.ts: masking an offset into [0, 2^30) lets V8 prove `offset + small` fits in int32.
const OFFSET_MASK = 0x3fffffff;

export interface QuantizedActivations {
  n: number;
  cols: number;
  q: Int32Array; // [n, cols] one int8 value (-127..127) per element: loaded once, reused by many rows
  scales: Float32Array; // [n, cols/32]
  sums: Int32Array; // [n, cols/32] sum of q in the block (q4_0 stores weights offset by +8)
  version: number; // bumped by every quantizeActivations, so that derived copies (lanes.ts) know when to redo
}

// Only whole 32-blocks are quantized: a matrix whose cols are not a multiple of 32 is never stored
// quantized (loadMatrix keeps it bf16), so e.g. stories260K's 172-wide down_proj input never reads them.
export function allocQuantizedActivations(maxN: number, cols: number, shared: boolean): QuantizedActivations {
  const blocks = Math.floor(cols / QBLOCK);
  const mk = (bytes: number) => (shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  return {
    n: 0,
    cols,
    q: new Int32Array(mk(maxN * cols * 4)),
    scales: new Float32Array(mk(maxN * blocks * 4)),
    sums: new Int32Array(mk(maxN * blocks * 4)),
    version: 0,
  };
}

/** Quantize rows t0 <= t < t1 of x [*, cols] (row stride xStride) into xq. */
export function quantizeActivations(
  x: Float32Array,
  xOff: number,
  xStride: number,
  t0: number,
  t1: number,
  xq: QuantizedActivations,
): void {
  const cols = xq.cols;
  const blocks = Math.floor(cols / QBLOCK);
  xq.version++;
  for (let t = t0; t < t1; t++) {
    for (let b = 0; b < blocks; b++) {
      const xo = xOff + t * xStride + b * QBLOCK;
      let amax = 0;
      for (let i = 0; i < QBLOCK; i++) amax = Math.max(amax, Math.abs(x[xo + i]));
      const d = amax / 127;
      const id = d === 0 ? 0 : 1 / d;
      const qo = t * cols + b * QBLOCK;
      let sum = 0;
      for (let i = 0; i < QBLOCK; i++) {
        const v = Math.round(x[xo + i] * id);
        xq.q[qo + i] = v;
        sum += v;
      }
      xq.scales[t * blocks + b] = d;
      xq.sums[t * blocks + b] = sum;
    }
  }
}

// ---- q8_0: int8 weights, four per Int32 (little-endian byte order), [rows, cols/4] ----

/** Quantize f32 rows into a q8_0 matrix's storage; `rowsF32` holds rows [r0, r0 + nRows). */
export function quantizeRowsQ8_0(rowsF32: Float32Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const w = rowsF32;
  const q = m.q;
  const scales = m.scales;
  const end = nRows * cols;
  // The weights' bits: over non-NaN f32, |x| orders as (bits & 0x7fffffff) does, so a block's
  // largest magnitude is an integer max, branch-free in four independent lanes.
  const bits = new Int32Array(w.buffer, w.byteOffset, end);
  let so = r0 * blocks;
  let wo = (r0 * cols) >> 2;
  for (let o = 0; o < end; o += QBLOCK, so++, wo += 8) {
    let a0 = 0,
      a1 = 0,
      a2 = 0,
      a3 = 0;
    for (let i = o; i < o + QBLOCK; i += 4) {
      const d0 = (bits[i] & 0x7fffffff) - a0;
      const d1 = (bits[i + 1] & 0x7fffffff) - a1;
      const d2 = (bits[i + 2] & 0x7fffffff) - a2;
      const d3 = (bits[i + 3] & 0x7fffffff) - a3;
      a0 += d0 & ~(d0 >> 31); // a0 = max(a0, |w[i]|)
      a1 += d1 & ~(d1 >> 31);
      a2 += d2 & ~(d2 >> 31);
      a3 += d3 & ~(d3 >> 31);
    }
    const a01 = a0 > a1 ? a0 : a1;
    const a23 = a2 > a3 ? a2 : a3;
    storeBlockQ8_0(w, bits, o, a01 > a23 ? a01 : a23, scales, so, q, wo);
  }
}

/**
 * The q8_0 block of the 32 weights w[o, o + 32) (bits: the same memory as int32), whose largest
 * |bits| is amax: its scale into scales[so], its int8 values into q[wo, wo + 8). Shared by the f32
 * and the bf16 quantizers (quantize-bf16.ts), which differ only in how they find amax.
 */
export function storeBlockQ8_0(
  w: Float32Array,
  bits: Int32Array,
  o: number,
  amax: number,
  scales: Float32Array,
  so: number,
  q: Int32Array,
  wo: number,
): void {
  if (amax > 0x7f800000) {
    // A NaN: skip it, as a float compare does.
    amax = 0;
    for (let i = o; i < o + QBLOCK; i++) {
      const a = bits[i] & 0x7fffffff;
      if (a <= 0x7f800000 && a > amax) amax = a;
    }
  }
  const d = bitsToF32(amax) / 127;
  const id = d === 0 ? 0 : 1 / d;
  scales[so] = d;
  // (v + 128.5) | 0 - 128 is Math.round for v in [-127, 127], without the call.
  for (let j = 0; j < 8; j++) {
    const i = o + 4 * j;
    const q0 = (((w[i] * id + 128.5) | 0) - 128) & 0xff;
    const q1 = (((w[i + 1] * id + 128.5) | 0) - 128) & 0xff;
    const q2 = (((w[i + 2] * id + 128.5) | 0) - 128) & 0xff;
    const q3 = (((w[i + 3] * id + 128.5) | 0) - 128) & 0xff;
    q[wo + j] = q0 | (q1 << 8) | (q2 << 16) | (q3 << 24);
  }
}

const oneBits = new Int32Array(1);
const oneF32 = new Float32Array(oneBits.buffer);

/** The f32 with bit pattern `bits`. */
function bitsToF32(bits: number): number {
  oneBits[0] = bits;
  return oneF32[0];
}

export function matmulQ8_0(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales;
  for (let t = 0; t < n; t++) {
    const xo = t * cols;
    const xso = t * blocks;
    let r = r0;
    // Two rows per pass: each activation load feeds two integer multiply-adds.
    for (; r + 2 <= r1; r += 2) {
      let acc0 = 0,
        acc1 = 0;
      const w0o = (r * cols) >> 2,
        w1o = w0o + (cols >> 2);
      for (let b = 0; b < blocks; b++) {
        let s0 = 0,
          s1 = 0;
        const wb = b * 8,
          xb = xo + b * QBLOCK;
        for (let j = 0; j < 8; j++) {
          const a = wq[w0o + wb + j],
            c = wq[w1o + wb + j];
          const x0 = xv[xb + 4 * j],
            x1 = xv[xb + 4 * j + 1],
            x2 = xv[xb + 4 * j + 2],
            x3 = xv[xb + 4 * j + 3];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
        }
        const xd = xs[xso + b];
        acc0 += s0 * ws[r * blocks + b] * xd;
        acc1 += s1 * ws[(r + 1) * blocks + b] * xd;
      }
      y[yOff + t * yStride + r] = acc0;
      y[yOff + t * yStride + r + 1] = acc1;
    }
    for (; r < r1; r++) {
      let acc = 0;
      const wo = (r * cols) >> 2;
      for (let b = 0; b < blocks; b++) {
        let s = 0;
        for (let j = 0; j < 8; j++) {
          const a = wq[wo + b * 8 + j],
            xb = xo + b * QBLOCK + 4 * j;
          s =
            (s +
              Math.imul((a << 24) >> 24, xv[xb]) +
              Math.imul((a << 16) >> 24, xv[xb + 1]) +
              Math.imul((a << 8) >> 24, xv[xb + 2]) +
              Math.imul(a >> 24, xv[xb + 3])) |
            0;
        }
        acc += s * ws[r * blocks + b] * xs[xso + b];
      }
      y[yOff + t * yStride + r] = acc;
    }
  }
}

/**
 * q8_0 decode, 4 rows per pass: each activation load feeds 4 rows' multiply-adds instead of 2
 * (1.13-1.15x matmulQ8_0 on the 0.5B gate/up shape, CPU time, same run). Each step takes 4 words
 * (16 columns) of each row, and the offsets are masked as in matmul.ts's matvecF32 so that V8 can
 * prove every index fits in int32 and drops the overflow checks: 1.13-1.16x the 1-word loop with
 * unmasked offsets (3.6-3.7 -> 4.1-4.2 GFLOP/s, 0.5B gate/up and down shapes, same run; 2 words
 * per step 4.0, 8 words 4.1). Rows past the last multiple of 4 go through matmulQ8_0.
 */
export function matmulQ8_0Rows4(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const words = cols >> 2; // int32 words per row
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales;
  const r4 = r0 + ((r1 - r0) & ~3);
  if (wq.length > OFFSET_MASK || xv.length > OFFSET_MASK) {
    matmulQ8_0(m, xq, n, y, yOff, yStride, r0, r1);
    return;
  }
  for (let t = 0; t < n; t++) {
    const xo = (t * cols) & OFFSET_MASK;
    const xso = t * blocks;
    const yt = yOff + t * yStride;
    for (let r = r0; r < r4; r += 4) {
      let acc0 = 0,
        acc1 = 0,
        acc2 = 0,
        acc3 = 0;
      const w0 = (r * words) & OFFSET_MASK;
      for (let b = 0; b < blocks; b++) {
        let s0 = 0,
          s1 = 0,
          s2 = 0,
          s3 = 0;
        const o0 = (w0 + b * 8) & OFFSET_MASK,
          o1 = (o0 + words) & OFFSET_MASK,
          o2 = (o1 + words) & OFFSET_MASK,
          o3 = (o2 + words) & OFFSET_MASK;
        const xb = (xo + b * QBLOCK) & OFFSET_MASK;
        for (let j = 0; j < 8; j += 4) {
          const xj = (xb + 4 * j) & OFFSET_MASK;
          let x0 = xv[xj],
            x1 = xv[xj + 1],
            x2 = xv[xj + 2],
            x3 = xv[xj + 3];
          let a = wq[o0 + j],
            c = wq[o1 + j],
            d = wq[o2 + j],
            e = wq[o3 + j];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 4];
          x1 = xv[xj + 5];
          x2 = xv[xj + 6];
          x3 = xv[xj + 7];
          a = wq[o0 + j + 1];
          c = wq[o1 + j + 1];
          d = wq[o2 + j + 1];
          e = wq[o3 + j + 1];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 8];
          x1 = xv[xj + 9];
          x2 = xv[xj + 10];
          x3 = xv[xj + 11];
          a = wq[o0 + j + 2];
          c = wq[o1 + j + 2];
          d = wq[o2 + j + 2];
          e = wq[o3 + j + 2];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
          x0 = xv[xj + 12];
          x1 = xv[xj + 13];
          x2 = xv[xj + 14];
          x3 = xv[xj + 15];
          a = wq[o0 + j + 3];
          c = wq[o1 + j + 3];
          d = wq[o2 + j + 3];
          e = wq[o3 + j + 3];
          s0 =
            (s0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          s1 =
            (s1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
          s2 =
            (s2 +
              Math.imul((d << 24) >> 24, x0) +
              Math.imul((d << 16) >> 24, x1) +
              Math.imul((d << 8) >> 24, x2) +
              Math.imul(d >> 24, x3)) |
            0;
          s3 =
            (s3 +
              Math.imul((e << 24) >> 24, x0) +
              Math.imul((e << 16) >> 24, x1) +
              Math.imul((e << 8) >> 24, x2) +
              Math.imul(e >> 24, x3)) |
            0;
        }
        const xd = xs[xso + b];
        acc0 += s0 * ws[r * blocks + b] * xd;
        acc1 += s1 * ws[(r + 1) * blocks + b] * xd;
        acc2 += s2 * ws[(r + 2) * blocks + b] * xd;
        acc3 += s3 * ws[(r + 3) * blocks + b] * xd;
      }
      y[yt + r] = acc0;
      y[yt + r + 1] = acc1;
      y[yt + r + 2] = acc2;
      y[yt + r + 3] = acc3;
    }
  }
  if (r4 < r1) matmulQ8_0(m, xq, n, y, yOff, yStride, r4, r1);
}

// ---- q4_0: 4-bit weights (value + 8, 0..15), two rows interleaved for SWAR ----
// For an even row pair (r, r+1) and a 32-block, 8 Int32 words; word j holds columns 4j..4j+3:
// bits 4c..4c+3 = row r, column 4j+c and bits 16+4c..16+4c+3 = row r+1, same column. So
// (word >>> 4c) & 0x000F000F puts row r's weight in the low 16-bit lane and row r+1's in the high
// lane, and one Math.imul by the activation multiplies both. Lane sums stay below 2^15 over 16
// columns (16 * 15 * 127 = 30480), so the lanes are split twice per block.
// Storage [rows/2, blocks, 8] words. Rows must be even and cols a multiple of 32.

export function quantizeRowsQ4_0(rowsF32: Float32Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (r0 % 2 !== 0 || nRows % 2 !== 0) throw new Error('quantizeRowsQ4_0: rows come in even pairs');
  const w = rowsF32;
  const scales = m.scales;
  // Integer view for the block maxima, as in quantizeRowsQ8_0.
  const bits = new Int32Array(w.buffer, w.byteOffset, nRows * cols);
  // A row's 16 bits of each word: the low half (even row) or the high half (odd row), little-endian.
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  for (let r = r0; r < r0 + nRows; r++) {
    let o = (r - r0) * cols;
    let so = r * blocks;
    let ho = (r >> 1) * blocks * 16 + (r & 1);
    for (let b = 0; b < blocks; b++, o += QBLOCK, so++, ho += 16) {
      let a0 = 0,
        a1 = 0,
        a2 = 0,
        a3 = 0;
      for (let i = o; i < o + QBLOCK; i += 4) {
        const d0 = (bits[i] & 0x7fffffff) - a0;
        const d1 = (bits[i + 1] & 0x7fffffff) - a1;
        const d2 = (bits[i + 2] & 0x7fffffff) - a2;
        const d3 = (bits[i + 3] & 0x7fffffff) - a3;
        a0 += d0 & ~(d0 >> 31);
        a1 += d1 & ~(d1 >> 31);
        a2 += d2 & ~(d2 >> 31);
        a3 += d3 & ~(d3 >> 31);
      }
      const a01 = a0 > a1 ? a0 : a1;
      const a23 = a2 > a3 ? a2 : a3;
      storeBlockQ4_0(w, bits, o, a01 > a23 ? a01 : a23, scales, so, halves, ho);
    }
  }
}

/**
 * The q4_0 block of w[o, o + 32) (bits: the same memory as int32; amax: the largest |bits|): its
 * scale into scales[so], its nibbles into halves[ho + 2j] (one row's 16 bits of word j). Shared with
 * quantize-bf16.ts.
 */
export function storeBlockQ4_0(
  w: Float32Array,
  bits: Int32Array,
  o: number,
  amax: number,
  scales: Float32Array,
  so: number,
  halves: Uint16Array,
  ho: number,
): void {
  // Signed max, llama.cpp style: the first largest-magnitude value maps to -8 exactly.
  let max = 0;
  if (amax > 0x7f800000) {
    // A NaN: skip it, as a float compare does.
    let fmax = 0;
    for (let i = o; i < o + QBLOCK; i++) {
      const v = w[i];
      const a = v < 0 ? -v : v;
      if (a > fmax) {
        fmax = a;
        max = v;
      }
    }
  } else if (amax !== 0) {
    let i = o;
    while ((bits[i] & 0x7fffffff) !== amax) i++;
    max = w[i];
  }
  const d = max / -8;
  const id = d === 0 ? 0 : 1 / d;
  scales[so] = d;
  for (let j = 0; j < 8; j++) {
    const i = o + 4 * j;
    // >= 0 here, so | 0 is floor: round to nearest; values opposite the max clamp to 15 (+7).
    let n0 = (w[i] * id + 8.5) | 0;
    let n1 = (w[i + 1] * id + 8.5) | 0;
    let n2 = (w[i + 2] * id + 8.5) | 0;
    let n3 = (w[i + 3] * id + 8.5) | 0;
    if (n0 > 15) n0 = 15;
    if (n1 > 15) n1 = 15;
    if (n2 > 15) n2 = 15;
    if (n3 > 15) n3 = 15;
    halves[ho + 2 * j] = n0 | (n1 << 4) | (n2 << 8) | (n3 << 12);
  }
}

export function matmulQ4_0(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`matmulQ4_0: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const pairStride = blocks * 8; // words per row pair
  const wq = m.q,
    ws = m.scales,
    xv = xq.q,
    xs = xq.scales,
    xsum = xq.sums;
  for (let t = 0; t < n; t++) {
    const xo = t * cols;
    const xso = t * blocks;
    let r = r0;
    // Two row pairs (4 rows) per pass: each activation load feeds 4 rows' multiply-adds.
    const r4 = r0 + ((r1 - r0) & ~3);
    rows4Q4_0(wq, ws, pairStride, blocks, r0, r4, xv, xo, xs, xsum, xso, y, yOff + t * yStride);
    r = r4;
    for (; r < r1; r += 2) {
      let acc0 = 0,
        acc1 = 0;
      let wo = (r >> 1) * pairStride;
      for (let b = 0; b < blocks; b++, wo += 8) {
        let lo = 0,
          hi = 0;
        for (let h = 0; h < 8; h += 4) {
          let s = 0;
          for (let j = h; j < h + 4; j++) {
            const word = wq[wo + j];
            const xj = xo + b * QBLOCK + 4 * j;
            s =
              (s +
                Math.imul(word & 0xf000f, xv[xj]) +
                Math.imul((word >>> 4) & 0xf000f, xv[xj + 1]) +
                Math.imul((word >>> 8) & 0xf000f, xv[xj + 2]) +
                Math.imul((word >>> 12) & 0xf000f, xv[xj + 3])) |
              0;
          }
          const l = (s << 16) >> 16;
          lo += l;
          hi += (s - l) >> 16;
        }
        const xd = xs[xso + b],
          bsum = 8 * xsum[xso + b];
        acc0 += (lo - bsum) * ws[r * blocks + b] * xd;
        acc1 += (hi - bsum) * ws[(r + 1) * blocks + b] * xd;
      }
      y[yOff + t * yStride + r] = acc0;
      if (r + 1 < r1) y[yOff + t * yStride + r + 1] = acc1;
    }
  }
}

/** Rows [r0, r4) (a multiple of 4, r0 even), 4 at a time, against one token's activations. */
function rows4Q4_0(
  wq: Int32Array,
  ws: Float32Array,
  pairStride: number,
  blocks: number,
  r0: number,
  r4: number,
  xv: Int32Array,
  xo: number,
  xs: Float32Array,
  xsum: Int32Array,
  xso: number,
  y: Float32Array,
  yo: number,
): void {
  for (let r = r0; r < r4; r += 4) {
    let acc0 = 0,
      acc1 = 0,
      acc2 = 0,
      acc3 = 0;
    let wo = (r >> 1) * pairStride,
      so = r * blocks;
    for (let b = 0; b < blocks; b++, wo += 8, so++) {
      const xb = xo + b * QBLOCK;
      let s = 0,
        u = 0;
      for (let j = 0; j < 4; j++) {
        const x0 = xv[xb + 4 * j],
          x1 = xv[xb + 4 * j + 1],
          x2 = xv[xb + 4 * j + 2],
          x3 = xv[xb + 4 * j + 3];
        const p = wq[wo + j],
          q = wq[wo + pairStride + j];
        s =
          (s +
            Math.imul(p & 0xf000f, x0) +
            Math.imul((p >>> 4) & 0xf000f, x1) +
            Math.imul((p >>> 8) & 0xf000f, x2) +
            Math.imul((p >>> 12) & 0xf000f, x3)) |
          0;
        u =
          (u +
            Math.imul(q & 0xf000f, x0) +
            Math.imul((q >>> 4) & 0xf000f, x1) +
            Math.imul((q >>> 8) & 0xf000f, x2) +
            Math.imul((q >>> 12) & 0xf000f, x3)) |
          0;
      }
      // Split the lanes after 16 columns, before they can overflow.
      let l = (s << 16) >> 16;
      let lo0 = l,
        hi0 = (s - l) >> 16;
      l = (u << 16) >> 16;
      let lo1 = l,
        hi1 = (u - l) >> 16;
      s = 0;
      u = 0;
      for (let j = 4; j < 8; j++) {
        const x0 = xv[xb + 4 * j],
          x1 = xv[xb + 4 * j + 1],
          x2 = xv[xb + 4 * j + 2],
          x3 = xv[xb + 4 * j + 3];
        const p = wq[wo + j],
          q = wq[wo + pairStride + j];
        s =
          (s +
            Math.imul(p & 0xf000f, x0) +
            Math.imul((p >>> 4) & 0xf000f, x1) +
            Math.imul((p >>> 8) & 0xf000f, x2) +
            Math.imul((p >>> 12) & 0xf000f, x3)) |
          0;
        u =
          (u +
            Math.imul(q & 0xf000f, x0) +
            Math.imul((q >>> 4) & 0xf000f, x1) +
            Math.imul((q >>> 8) & 0xf000f, x2) +
            Math.imul((q >>> 12) & 0xf000f, x3)) |
          0;
      }
      l = (s << 16) >> 16;
      lo0 += l;
      hi0 += (s - l) >> 16;
      l = (u << 16) >> 16;
      lo1 += l;
      hi1 += (u - l) >> 16;
      // sum (q + 8) * x - 8 * sum x  = sum q * x
      const xd = xs[xso + b],
        bsum = 8 * xsum[xso + b];
      acc0 += (lo0 - bsum) * ws[so] * xd;
      acc1 += (hi0 - bsum) * ws[so + blocks] * xd;
      acc2 += (lo1 - bsum) * ws[so + 2 * blocks] * xd;
      acc3 += (hi1 - bsum) * ws[so + 3 * blocks] * xd;
    }
    y[yo + r] = acc0;
    y[yo + r + 1] = acc1;
    y[yo + r + 2] = acc2;
    y[yo + r + 3] = acc3;
  }
}

/** Dequantize row r of a q8_0/q4_0 matrix into out[0..cols). */
export function dequantizeRow(m: Matrix, r: number, out: Float32Array): void {
  dequantizeRowInto(m, r, out, 0);
}

/** Dequantize row r of a q8_0/q4_0 matrix into out[outOff..outOff+cols). */
export function dequantizeRowInto(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const q = m.q;
  if (m.format === Q8_0) {
    let wo = (r * cols) >> 2;
    for (let b = 0; b < blocks; b++) {
      const d = m.scales[r * blocks + b];
      const o = outOff + b * QBLOCK;
      for (let j = 0; j < 8; j++, wo++) {
        const word = q[wo];
        out[o + 4 * j] = ((word << 24) >> 24) * d;
        out[o + 4 * j + 1] = ((word << 16) >> 24) * d;
        out[o + 4 * j + 2] = ((word << 8) >> 24) * d;
        out[o + 4 * j + 3] = (word >> 24) * d;
      }
    }
    return;
  }
  const shift = 16 * (r & 1);
  let wo = (r >> 1) * blocks * 8;
  for (let b = 0; b < blocks; b++) {
    const d = m.scales[r * blocks + b];
    const o = outOff + b * QBLOCK;
    for (let j = 0; j < 8; j++, wo++) {
      const word = q[wo] >>> shift;
      out[o + 4 * j] = ((word & 0xf) - 8) * d;
      out[o + 4 * j + 1] = (((word >>> 4) & 0xf) - 8) * d;
      out[o + 4 * j + 2] = (((word >>> 8) & 0xf) - 8) * d;
      out[o + 4 * j + 3] = (((word >>> 12) & 0xf) - 8) * d;
    }
  }
}

/** An empty quantized matrix with shared storage, to be filled by quantizeRows*. */
export function allocQuantizedMatrix(format: number, rows: number, cols: number): Matrix {
  if (cols % QBLOCK !== 0) throw new Error(`quantized matrix: cols ${cols} is not a multiple of ${QBLOCK}`);
  if (format === Q4_0 && rows % 2 !== 0) throw new Error(`q4_0 matrix: rows ${rows} must be even`);
  const words = format === Q8_0 ? (rows * cols) / 4 : (rows * cols) / 8;
  return makeMatrix(format, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer(words * 4)),
    scales: new Float32Array(new SharedArrayBuffer(((rows * cols) / QBLOCK) * 4)),
  });
}
