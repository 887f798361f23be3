// Q6_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d, sixteen 16-value
// sub-blocks with an int8 scale sc each, and 6-bit levels q stored - 32: w = d*sc * (q - 32). The
// GGUF splits the levels into a 4-bit and a 2-bit plane; they stay split here (212 bytes per row
// and 256 values against the file's 210: d widens to f32), repacked at load for a SWAR kernel.
//
// Storage, rows even, cols % 256 == 0:
//   q      [rows/2, cols/32, 12] words per row pair and 32-block, three per 8 columns: a word's
//          low 16 bits are row r's, its high 16 bits row r+1's, and each 16-bit lane holds, for
//          the group's columns 0..7 (levels l0..l7, 0..63):
//            word A: l0 in bits 0..5, l1 in 6..11, the low 4 bits of l6 in 12..15;
//            word B: l2, l3, the low 4 bits of l7;
//            word C: l4, l5, the high 2 bits of l6 in 12..13 and of l7 in 14..15;
//   u8     [rows, cols/16] the int8 sub-block scales;
//   scales [rows, cols/256] d.
// Decode: a column's levels of both rows come out of one word with a shift and a mask (two
// columns of 8 need a second word's 2 bits) and go through one Math.imul by the activation (two
// rows' multiply-adds). Unsigned levels times int8 could overflow a 16-bit lane after 4 columns;
// the lanes are made signed (q - 32, |(q - 32) x| <= 4064) by subtracting 32 * (the 8 columns'
// activation sum) from both lanes at once, so 8 columns share one split. Each sub-block's int32 sum
// is multiplied by its int8 scale in integers, a 32-block by its activation scale, a super-block by
// d. Prefill: float64 lanes with level * sc in the panel.
import { makeMatrix, Q6_K, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { matmulPanels } from './f32.js';
import { f16At } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const fround = Math.fround;
const LANES_MIN_TOKENS = 4;
/** Words per row pair and 32-block. */
const PAIR_WORDS = 12;
const LEVELS = 0x3f003f,
  NIBBLES = 0xf000f,
  HIGH_BITS = 0x300030;

// Prefill and batches: float64 lanes (below); one token: the SWAR loop. Without int8
// activations, f32 panels.
export const matmulQ6_KMatrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (xq === null) matmulPanels(m, widenRows, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q6_K, m, n))
    matmulLanes(LANES_Q6_K, m, xq, n, y, yOff, yStride, r0, r1);
  else matvecQ6_K(m, xq, n, y, yOff, yStride, r0, r1);
};

/** An empty Q6_K matrix with shared storage (rows even, cols a multiple of 256), filled by packQ6_KRows. */
export function allocQ6_K(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`q6_K matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(Q6_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows / 2) * (cols / 32) * PAIR_WORDS * 4)),
    u8: new Uint8Array(new SharedArrayBuffer(rows * (cols / 16))),
    scales: new Float32Array(new SharedArrayBuffer(rows * (cols / 256) * 4)),
    ggmlType: 14,
  });
}

/** ggml Q6_K blocks (210 bytes per 256 values: ql[128], qh[64], scales[16], d) of rows [r0, r0 + nRows) (src: those rows) into m. */
export function packQ6_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const supers = m.cols / 256,
    blocks = m.cols / 32;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  const levels = new Uint8Array(256);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let s = 0; s < supers; s++) {
      const o = 210 * ((r - r0) * supers + s),
        g = r * supers + s; // super-block index in m
      m.scales[g] = f16At(src, o + 208);
      for (let i = 0; i < 16; i++) m.u8[16 * g + i] = src[o + 192 + i];
      // As ggml's dequantize_row_q6_K: two halves of 128, each from 64 bytes of ql and 32 of qh.
      for (let n = 0; n < 2; n++) {
        const ql = o + 64 * n,
          qh = o + 128 + 32 * n,
          y = 128 * n;
        for (let l = 0; l < 32; l++) {
          const h = src[qh + l];
          levels[y + l] = (src[ql + l] & 0xf) | ((h & 3) << 4);
          levels[y + l + 32] = (src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4);
          levels[y + l + 64] = (src[ql + l] >> 4) | (((h >> 4) & 3) << 4);
          levels[y + l + 96] = (src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4);
        }
      }
      // This row's 16-bit halves of the 8 blocks' words, three per 8 columns.
      const ho = ((r >> 1) * blocks + 8 * s) * 2 * PAIR_WORDS + (r & 1);
      for (let g = 0; g < 32; g++) {
        const v = 8 * g,
          h = ho + 6 * g;
        halves[h] = levels[v] | (levels[v + 1] << 6) | ((levels[v + 6] & 15) << 12);
        halves[h + 2] = levels[v + 2] | (levels[v + 3] << 6) | ((levels[v + 7] & 15) << 12);
        halves[h + 4] =
          levels[v + 4] | (levels[v + 5] << 6) | ((levels[v + 6] >> 4) << 12) | ((levels[v + 7] >> 4) << 14);
      }
    }
  }
}

/** The level 0..63 of column k (0..31) of row r's half (shift 0 or 16) of the block at words q[wo..]. */
function levelAt(q: Int32Array, wo: number, shift: number, k: number): number {
  const w = wo + 3 * (k >> 3),
    i = k & 7;
  const a = (q[w] >>> shift) & 0xffff,
    b = (q[w + 1] >>> shift) & 0xffff,
    c = (q[w + 2] >>> shift) & 0xffff;
  if (i === 6) return (a >>> 12) | (((c >>> 12) & 3) << 4);
  if (i === 7) return (b >>> 12) | ((c >>> 14) << 4);
  return ((i < 2 ? a : i < 4 ? b : c) >>> (6 * (i & 1))) & 63;
}

/** d1 = d * sc of sub-block i (16 values) of row r, as ggml's float. */
function subScale(m: Matrix, r: number, i: number): number {
  return fround(m.scales[r * (m.cols >> 8) + (i >> 4)] * ((m.u8[r * (m.cols >> 4) + i] << 24) >> 24));
}

/** Row r as ggml dequantizes it: fround(fround(d * sc) * (q - 32)). */
export function readRowQ6_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols >> 5;
  const shift = 16 * (r & 1);
  for (let b = 0; b < blocks; b++) {
    const wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    for (let h = 0; h < 2; h++) {
      const d1 = subScale(m, r, 2 * b + h);
      for (let k = 16 * h; k < 16 * h + 16; k++)
        out[outOff + 32 * b + k] = fround(d1 * (levelAt(m.q, wo, shift, k) - 32));
    }
  }
}

function widenRows(m: Matrix, r: number, nr: number, out: Float32Array): void {
  for (let i = 0; i < nr; i++) readRowQ6_K(m, r + i, out, i * m.cols);
}

// Per thread: lane8[t, g] = Math.imul(0x200020, sum of token t's int8 activations at columns
// 8g..8g+7): subtracted from a SWAR sum of unsigned levels, it leaves both lanes' sums of
// (q - 32) * x. Built once per quantized activations (xq.version) and token count.
let lane8 = new Int32Array(0);
let lane8From: QuantizedActivations | null = null;
let lane8Version = -1;
let lane8N = 0;

function laneOffsets(xq: QuantizedActivations, n: number): Int32Array {
  if (lane8From === xq && lane8Version === xq.version && lane8N >= n) return lane8;
  const groups = (n * xq.cols) >> 3;
  if (lane8.length < groups) lane8 = new Int32Array(groups);
  const xv = xq.q;
  for (let g = 0; g < groups; g++) {
    let s = 0;
    for (let k = 8 * g; k < 8 * g + 8; k++) s += xv[k];
    lane8[g] = Math.imul(0x200020, s);
  }
  lane8From = xq;
  lane8Version = xq.version;
  lane8N = n;
  return lane8;
}

/** One token at a time (decode): 4 rows (two row pairs) per pass, a last row pair alone. */
function matvecQ6_K(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q6_K: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q6_K: matrix too large');
  const c8 = laneOffsets(xq, n);
  // The int8 sub-block scales, sign-extended by the loads.
  const sc = new Int8Array(m.u8.buffer, m.u8.byteOffset, m.u8.length);
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * (cols >> 5),
      co = t * (cols >> 3),
      yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, sc, r, xq, xo, xso, c8, co, y, yo);
    for (; r < r1; r += 2) rowPair(m, sc, r, r1, xq, xo, xso, c8, co, y, yo);
  }
}

/**
 * Rows r..r+3 against one token: per 8 columns the two row pairs' SWAR sums, made signed and split
 * into their lanes; per sub-block the lane sums times its int8 scale (exact: |16 * 32 * 127 * 128|
 * < 2^24); per 32-block times the activation scale, per super-block times d.
 */
function rows4(
  m: Matrix,
  sc: Int8Array,
  r: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  c8: Int32Array,
  co: number,
  y: Float32Array,
  yo: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5,
    subs = cols >> 4,
    supers = cols >> 8;
  const wq = m.q,
    xv = xq.q,
    xs = xq.scales,
    dd = m.scales;
  const pairStride = blocks * PAIR_WORDS;
  const w1 = pairStride & OFFSET_MASK;
  let wo = ((r >> 1) * pairStride) & OFFSET_MASK;
  // Each row's sub-block scales start here.
  const s0 = (r * subs) & OFFSET_MASK,
    s1 = (s0 + subs) & OFFSET_MASK,
    s2 = (s1 + subs) & OFFSET_MASK,
    s3 = (s2 + subs) & OFFSET_MASK;
  const e0 = r * supers;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  // The current super-block's sums, before d.
  let part0 = 0,
    part1 = 0,
    part2 = 0,
    part3 = 0;
  for (let b = 0; b < blocks; b++) {
    const xb = (xo + 32 * b) & OFFSET_MASK;
    const cb = (co + 4 * b) & OFFSET_MASK;
    let bs0 = 0,
      bs1 = 0,
      bs2 = 0,
      bs3 = 0;
    for (let h = 0; h < 2; h++) {
      let lo0 = 0,
        hi0 = 0,
        lo1 = 0,
        hi1 = 0;
      for (let g = 2 * h; g < 2 * h + 2; g++, wo += 3) {
        const xj = (xb + 8 * g) & OFFSET_MASK;
        const x0 = xv[xj],
          x1 = xv[xj + 1],
          x2 = xv[xj + 2],
          x3 = xv[xj + 3],
          x4 = xv[xj + 4],
          x5 = xv[xj + 5],
          x6 = xv[xj + 6],
          x7 = xv[xj + 7];
        const pa = wq[wo],
          pb = wq[wo + 1],
          pc = wq[wo + 2];
        const qa = wq[wo + w1],
          qb = wq[wo + w1 + 1],
          qc = wq[wo + w1 + 2];
        let s =
          (Math.imul(pa & LEVELS, x0) +
            Math.imul((pa >>> 6) & LEVELS, x1) +
            Math.imul(pb & LEVELS, x2) +
            Math.imul((pb >>> 6) & LEVELS, x3) +
            Math.imul(pc & LEVELS, x4) +
            Math.imul((pc >>> 6) & LEVELS, x5) +
            Math.imul(((pa >>> 12) & NIBBLES) | ((pc >>> 8) & HIGH_BITS), x6) +
            Math.imul(((pb >>> 12) & NIBBLES) | ((pc >>> 10) & HIGH_BITS), x7)) |
          0;
        let u =
          (Math.imul(qa & LEVELS, x0) +
            Math.imul((qa >>> 6) & LEVELS, x1) +
            Math.imul(qb & LEVELS, x2) +
            Math.imul((qb >>> 6) & LEVELS, x3) +
            Math.imul(qc & LEVELS, x4) +
            Math.imul((qc >>> 6) & LEVELS, x5) +
            Math.imul(((qa >>> 12) & NIBBLES) | ((qc >>> 8) & HIGH_BITS), x6) +
            Math.imul(((qb >>> 12) & NIBBLES) | ((qc >>> 10) & HIGH_BITS), x7)) |
          0;
        // Levels - 32 in both lanes, then the split: |8 * 32 * 127| < 2^15.
        const c = c8[cb + g];
        s = (s - c) | 0;
        u = (u - c) | 0;
        let l = (s << 16) >> 16;
        lo0 += l;
        hi0 += (s - l) >> 16;
        l = (u << 16) >> 16;
        lo1 += l;
        hi1 += (u - l) >> 16;
      }
      const si = 2 * b + h;
      bs0 += Math.imul(sc[s0 + si], lo0);
      bs1 += Math.imul(sc[s1 + si], hi0);
      bs2 += Math.imul(sc[s2 + si], lo1);
      bs3 += Math.imul(sc[s3 + si], hi1);
    }
    const xd = xs[xso + b];
    part0 += bs0 * xd;
    part1 += bs1 * xd;
    part2 += bs2 * xd;
    part3 += bs3 * xd;
    if ((b & 7) === 7) {
      const di = e0 + (b >> 3);
      acc0 += part0 * dd[di];
      acc1 += part1 * dd[di + supers];
      acc2 += part2 * dd[di + 2 * supers];
      acc3 += part3 * dd[di + 3 * supers];
      part0 = 0;
      part1 = 0;
      part2 = 0;
      part3 = 0;
    }
  }
  y[yo + r] = acc0;
  y[yo + r + 1] = acc1;
  y[yo + r + 2] = acc2;
  y[yo + r + 3] = acc3;
}

/** The row pair (r, r + 1) as rows4 computes each row, the second written only when below r1. */
function rowPair(
  m: Matrix,
  sc: Int8Array,
  r: number,
  r1: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  c8: Int32Array,
  co: number,
  y: Float32Array,
  yo: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5,
    subs = cols >> 4,
    supers = cols >> 8;
  const wq = m.q,
    xv = xq.q;
  let wo = (r >> 1) * blocks * PAIR_WORDS;
  let acc0 = 0,
    acc1 = 0,
    part0 = 0,
    part1 = 0;
  for (let b = 0; b < blocks; b++) {
    let bs0 = 0,
      bs1 = 0;
    for (let h = 0; h < 2; h++) {
      let lo = 0,
        hi = 0;
      for (let g = 2 * h; g < 2 * h + 2; g++, wo += 3) {
        const xj = xo + 32 * b + 8 * g;
        const pa = wq[wo],
          pb = wq[wo + 1],
          pc = wq[wo + 2];
        let s =
          (Math.imul(pa & LEVELS, xv[xj]) +
            Math.imul((pa >>> 6) & LEVELS, xv[xj + 1]) +
            Math.imul(pb & LEVELS, xv[xj + 2]) +
            Math.imul((pb >>> 6) & LEVELS, xv[xj + 3]) +
            Math.imul(pc & LEVELS, xv[xj + 4]) +
            Math.imul((pc >>> 6) & LEVELS, xv[xj + 5]) +
            Math.imul(((pa >>> 12) & NIBBLES) | ((pc >>> 8) & HIGH_BITS), xv[xj + 6]) +
            Math.imul(((pb >>> 12) & NIBBLES) | ((pc >>> 10) & HIGH_BITS), xv[xj + 7])) |
          0;
        s = (s - c8[co + 4 * b + g]) | 0;
        const l = (s << 16) >> 16;
        lo += l;
        hi += (s - l) >> 16;
      }
      bs0 += Math.imul(sc[r * subs + 2 * b + h], lo);
      bs1 += Math.imul(sc[(r + 1) * subs + 2 * b + h], hi);
    }
    const xd = xq.scales[xso + b];
    part0 += bs0 * xd;
    part1 += bs1 * xd;
    if ((b & 7) === 7) {
      acc0 += part0 * m.scales[r * supers + (b >> 3)];
      acc1 += part1 * m.scales[(r + 1) * supers + (b >> 3)];
      part0 = 0;
      part1 = 0;
    }
  }
  y[yo + r] = acc0;
  if (r + 1 < r1) y[yo + r + 1] = acc1;
}

// ---- lanes (prefill): the panel holds (level - 32) * sc (|(q - 32) * sc| <= 32 * 128), so a
// 32-block's sum needs no split at the sub-block boundary: |32 products| <= 32 * 4096 * 127 < 2^24,
// two tokens per double 2^25 apart (as q8_0's two, 2^20 apart), in q8_0's register block of 3 rows
// x 2 groups, scaled by d per 256 and the activation scale. d * sc is exact in f32 (11 + 8 bits),
// so this is the dequantized product up to float rounding.

function widenRowQ6_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const blocks = m.cols >> 5;
  const wq = m.q,
    sc = m.u8;
  const shift = 16 * (r & 1),
    so = r * (m.cols >> 4);
  for (let b = 0; b < blocks; b++) {
    let wo = ((r >> 1) * blocks + b) * PAIR_WORDS;
    for (let g = 0; g < 4; g++, wo += 3) {
      const scale = (sc[so + 2 * b + (g >> 1)] << 24) >> 24;
      const a = wq[wo] >>> shift,
        bw = wq[wo + 1] >>> shift,
        c = wq[wo + 2] >>> shift;
      const k = po + 32 * b + 8 * g;
      panel[k] = ((a & 63) - 32) * scale;
      panel[k + 1] = (((a >>> 6) & 63) - 32) * scale;
      panel[k + 2] = ((bw & 63) - 32) * scale;
      panel[k + 3] = (((bw >>> 6) & 63) - 32) * scale;
      panel[k + 4] = ((c & 63) - 32) * scale;
      panel[k + 5] = (((c >>> 6) & 63) - 32) * scale;
      panel[k + 6] = ((((a >>> 12) & 15) | ((c >>> 8) & 48)) - 32) * scale;
      panel[k + 7] = ((((bw >>> 12) & 15) | ((c >>> 10) & 48)) - 32) * scale;
    }
  }
}

/** q8_0's rowTripleQ8 with lanes 2^25 apart and a row scale per 256: acc[3t + i] += row i . token t, 4 tokens from t0. */
function rowTripleQ6_K(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  ws: Float32Array,
  rA: number,
  rB: number,
  rC: number,
  xsT: Float64Array,
  nPad: number,
  t0: number,
  acc: Float64Array,
): void {
  const c = cols & 0x1fffffff;
  const c2 = (2 * c) & OFFSET_MASK;
  const xa = xOff & OFFSET_MASK,
    xb = (xa + c) & OFFSET_MASK;
  const blocks = c >> 5,
    supers = c >> 8;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0,
      c0 = 0,
      c1 = 0;
    const k0 = (b * 32) & OFFSET_MASK;
    for (let k = k0; k < k0 + 32; k += 2) {
      let x0 = packed[xa + k],
        x1 = packed[xb + k];
      let p = panel[k],
        q = panel[c + k],
        u = panel[c2 + k];
      a0 += p * x0;
      a1 += p * x1;
      b0 += q * x0;
      b1 += q * x1;
      c0 += u * x0;
      c1 += u * x1;
      x0 = packed[xa + k + 1];
      x1 = packed[xb + k + 1];
      p = panel[k + 1];
      q = panel[c + k + 1];
      u = panel[c2 + k + 1];
      a0 += p * x0;
      a1 += p * x1;
      b0 += q * x0;
      b1 += q * x1;
      c0 += u * x0;
      c1 += u * x1;
    }
    const wA = ws[rA * supers + (b >> 3)],
      wB = ws[rB * supers + (b >> 3)],
      wC = ws[rC * supers + (b >> 3)];
    const so = b * nPad + t0;
    const o = 3 * t0;
    splitQ6_K(a0, b0, c0, wA, wB, wC, xsT, so, acc, o);
    splitQ6_K(a1, b1, c1, wA, wB, wC, xsT, so + 2, acc, o + 6);
  }
}

const M1 = 33554432,
  INV_M1 = 1 / M1;

/** Three rows' sums of a group of two tokens, split at M1 and scaled, into acc[o + 3t + row]. */
function splitQ6_K(
  sa: number,
  sb: number,
  sc: number,
  wA: number,
  wB: number,
  wC: number,
  xsT: Float64Array,
  so: number,
  acc: Float64Array,
  o: number,
): void {
  const ha = sa * INV_M1 + ROUND - ROUND,
    hb = sb * INV_M1 + ROUND - ROUND,
    hc = sc * INV_M1 + ROUND - ROUND;
  const d0 = xsT[so],
    d1 = xsT[so + 1];
  acc[o] += (sa - ha * M1) * wA * d0;
  acc[o + 1] += (sb - hb * M1) * wB * d0;
  acc[o + 2] += (sc - hc * M1) * wC * d0;
  acc[o + 3] += ha * wA * d1;
  acc[o + 4] += hb * wB * d1;
  acc[o + 5] += hc * wC * d1;
}

const LANES_Q6_K: LaneKernel = {
  lanes: 2,
  spacing: M1,
  rows: 3,
  groups: 2,
  widenRow: widenRowQ6_K,
  block: rowTripleQ6_K,
};
