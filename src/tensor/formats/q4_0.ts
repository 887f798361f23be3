// q4_0, in the spirit of llama.cpp's: every 32 consecutive weights of a row share one f32 scale,
// d = -max / 8 where max is the first weight of largest magnitude (it maps to -8 exactly), and keep
// round(w / d) + 8 in 0..15.
//
// Storage: two rows interleaved for SWAR. For an even row pair (r, r+1) and a 32-block, 8 Int32
// words; word j holds columns 4j..4j+3: bits 4c..4c+3 = row r, column 4j+c and bits 16+4c..16+4c+3
// = row r+1, same column. So (word >>> 4c) & 0x000F000F puts row r's weight in the low 16-bit lane
// and row r+1's in the high lane, and one Math.imul by the activation multiplies both. Lane sums
// stay below 2^15 over 16 columns (16 * 15 * 127 = 30480), so the lanes are split twice per block.
// q [rows/2, blocks, 8] words (rows even, cols a multiple of 32); scales [rows, cols/32].
import { makeMatrix, Q4_0, QBLOCK, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { widenBf16Block } from './bf16.js';
import { blockAbsMaxBits, OFFSET_MASK, type MatmulKernel } from './common.js';
import { laneAccumulators, lanesApply, matmulLanes, packedLanes, ROUND, type LaneKernel } from './lanes.js';

// From FEW_MIN_TOKENS to FEW_MAX_TOKENS tokens (speculation's verification rows, small batches) the
// few-token lanes kernel reads the packed nibbles directly; from LANES_MIN_TOKENS on the panel
// lanes kernel amortizes widening the weights (README, Performance and Speculative decoding).
const FEW_MIN_TOKENS = 2;
const FEW_MAX_TOKENS = 9;
const LANES_MIN_TOKENS = 10;

/** matmul for a q4_0 matrix (xq: x quantized by quantizeActivations; q4_0 needs it). */
export const matmulQ4_0Matrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q4_0, m, n))
    matmulLanes(LANES_Q4_0, m, xq!, n, y, yOff, yStride, r0, r1);
  else if (n >= FEW_MIN_TOKENS && n <= FEW_MAX_TOKENS && fewApply(m, n))
    matmulQ4_0Few(m, xq!, n, y, yOff, yStride, r0, r1);
  else matmulQ4_0(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty q4_0 matrix with shared storage, to be filled by quantizeRowsQ4_0 / quantizeBf16RowsQ4_0. */
export function allocQ4_0(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0) throw new Error(`q4_0 matrix: rows ${rows} must be even`);
  return makeMatrix(Q4_0, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 2)),
    scales: new Float32Array(new SharedArrayBuffer(((rows * cols) / QBLOCK) * 4)),
  });
}

export function quantizeRowsQ4_0(rowsF32: Float32Array, r0: number, nRows: number, m: Matrix): void {
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  if (r0 % 2 !== 0 || nRows % 2 !== 0) throw new Error('quantizeRowsQ4_0: rows come in even pairs');
  const w = rowsF32;
  const scales = m.scales;
  // The weights' bits, for the block maxima (blockAbsMaxBits).
  const bits = new Int32Array(w.buffer, w.byteOffset, nRows * cols);
  // A row's 16 bits of each word: the low half (even row) or the high half (odd row), little-endian.
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  for (let r = r0; r < r0 + nRows; r++) {
    let o = (r - r0) * cols;
    let so = r * blocks;
    let ho = (r >> 1) * blocks * 16 + (r & 1);
    for (let b = 0; b < blocks; b++, o += QBLOCK, so++, ho += 16) {
      storeBlockQ4_0(w, bits, o, blockAbsMaxBits(bits, o), scales, so, halves, ho);
    }
  }
}

/**
 * The q4_0 block of w[o, o + 32) (bits: the same memory as int32; amax: the largest |bits|): its
 * scale into scales[so], its nibbles into halves[ho + 2j] (one row's 16 bits of word j). Shared by
 * the f32 and the bf16 quantizers.
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
      storeBlockQ4_0(block, blockBits, 0, widenBf16Block(pairs, p, blockBits), scales, so, halves, ho);
    }
  }
}

/** Dequantize row r of a q4_0 matrix into out[outOff..outOff+cols). */
export function readRowQ4_0(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const blocks = m.cols / QBLOCK;
  const q = m.q;
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

/** The one-token SWAR kernel: two multiply-adds per Math.imul, 4 rows (two pairs) per pass. */
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

// ---- lanes (prefill): weights -8..7 times int8 activations, |32 products| <= 32 * 8 * 127 = 32512
// < 2^15: L = 2^16, three lanes in 2^47, in a register block of 2 rows x 3 groups (9 tokens).

/** Widen q4_0 row r (any parity) into panel[po, po + cols) as signed integers -8..7. */
function widenRowQ4_0(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const blocks = m.cols / QBLOCK;
  const wq = m.q;
  const wo = (r >> 1) * blocks * 8;
  const shift = 16 * (r & 1);
  for (let w = 0; w < blocks * 8; w++) {
    const word = wq[wo + w] >>> shift;
    const k = po + 4 * w; // word w of the row holds columns 4w..4w+3 (8 words per 32-block)
    panel[k] = (word & 15) - 8;
    panel[k + 1] = ((word >>> 4) & 15) - 8;
    panel[k + 2] = ((word >>> 8) & 15) - 8;
    panel[k + 3] = ((word >>> 12) & 15) - 8;
  }
}

const L1 = 65536,
  L2 = L1 * L1,
  INV_L1 = 1 / L1,
  INV_L2 = 1 / L2;

/**
 * q4_0: acc[2t + i] += row (rA, rB)[i] . token t for the 9 tokens t0..t0+8 packed in groups g..g+2
 * (from packed offset xOff), block by block. Its own function so that the inner loop has the
 * registers to itself; the lanes are split right after each block's columns. One function per
 * format: a function serving both ran the second format used 20% slower.
 */
function rowPairQ4(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  ws: Float32Array,
  rA: number,
  rB: number,
  _rC: number,
  xsT: Float64Array,
  nPad: number,
  t0: number,
  acc: Float64Array,
): void {
  const c = cols & 0x1fffffff;
  const xa = xOff & OFFSET_MASK,
    xb = (xa + c) & OFFSET_MASK,
    xc = (xb + c) & OFFSET_MASK;
  const blocks = c / QBLOCK;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      a2 = 0,
      b0 = 0,
      b1 = 0,
      b2 = 0;
    const k0 = (b * QBLOCK) & OFFSET_MASK;
    for (let k = k0; k < k0 + QBLOCK; k += 2) {
      let x0 = packed[xa + k],
        x1 = packed[xb + k],
        x2 = packed[xc + k];
      let p = panel[k],
        q = panel[c + k];
      a0 += p * x0;
      a1 += p * x1;
      a2 += p * x2;
      b0 += q * x0;
      b1 += q * x1;
      b2 += q * x2;
      x0 = packed[xa + k + 1];
      x1 = packed[xb + k + 1];
      x2 = packed[xc + k + 1];
      p = panel[k + 1];
      q = panel[c + k + 1];
      a0 += p * x0;
      a1 += p * x1;
      a2 += p * x2;
      b0 += q * x0;
      b1 += q * x1;
      b2 += q * x2;
    }
    const wA = ws[rA * blocks + b],
      wB = ws[rB * blocks + b];
    const so = b * nPad + t0;
    const o = 2 * t0;
    splitQ4(a0, b0, wA, wB, xsT, so, acc, o);
    splitQ4(a1, b1, wA, wB, xsT, so + 3, acc, o + 6);
    splitQ4(a2, b2, wA, wB, xsT, so + 6, acc, o + 12);
  }
}

/**
 * Split the block sums sa (row A) and sb (row B) of one q4_0 group into their three tokens' lanes
 * (top lane first: round(s / L^2), then round(rest / L), the rest is the low lane) and add them,
 * scaled, to acc[o + 2i + row] for token i of the group.
 */
function splitQ4(
  sa: number,
  sb: number,
  wA: number,
  wB: number,
  xsT: Float64Array,
  so: number,
  acc: Float64Array,
  o: number,
): void {
  const ha = sa * INV_L2 + ROUND - ROUND,
    hb = sb * INV_L2 + ROUND - ROUND;
  const ra = sa - ha * L2,
    rb = sb - hb * L2;
  const ma = ra * INV_L1 + ROUND - ROUND,
    mb = rb * INV_L1 + ROUND - ROUND;
  const d0 = xsT[so],
    d1 = xsT[so + 1],
    d2 = xsT[so + 2];
  acc[o] += (ra - ma * L1) * wA * d0;
  acc[o + 1] += (rb - mb * L1) * wB * d0;
  acc[o + 2] += ma * wA * d1;
  acc[o + 3] += mb * wB * d1;
  acc[o + 4] += ha * wA * d2;
  acc[o + 5] += hb * wB * d2;
}

const LANES_Q4_0: LaneKernel = { lanes: 3, spacing: L1, rows: 2, groups: 3, widenRow: widenRowQ4_0, block: rowPairQ4 };

// ---- few tokens (2..9: verification rows, small batches): the lanes without a panel. Three
// tokens per double, K1 = 2^17 apart, times the stored nibble (0..15, the weight + 8) read straight
// from the SWAR words: |32 products| <= 32 * 15 * 127 = 60960 < 2^16, so each lane stays apart,
// and 8 times the activations' block sum comes off after the split, as in the SWAR kernel. Each
// weight is decoded once for 2 groups (6 tokens), or for one with 4 rows per packed load. The
// integer block sums are exact, and the float steps after them (minus 8 * sum, times the weight
// scale, times the activation scale, added block by block) are the SWAR kernel's, so every token
// gets the same bits as from matmulQ4_0 alone, for any number of tokens in the call.

const K1 = 131072,
  K2 = K1 * K1,
  INV_K1 = 1 / K1,
  INV_K2 = 1 / K2;

/** Names the few-token packing in lanes.ts' per-thread cache. */
const FEW_Q4_0 = {};

/** True when matmulQ4_0Few can run this matrix for n tokens (every index well below 2^30). */
export function fewApply(m: Matrix, n: number): boolean {
  return n <= FEW_MAX_TOKENS && m.cols * 4 < OFFSET_MASK && m.q.length < OFFSET_MASK;
}

/** q4_0 for 1 to 9 tokens, 4 rows per pass; bit-identical to matmulQ4_0 for every token. */
export function matmulQ4_0Few(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`matmulQ4_0Few: row slices start on even rows (row pairs), got ${r0}`);
  if (n < 1 || n > FEW_MAX_TOKENS) throw new RangeError(`matmulQ4_0Few: 1 to ${FEW_MAX_TOKENS} tokens, got ${n}`);
  const cols = m.cols;
  const blocks = cols / QBLOCK;
  const pairStride = blocks * 8;
  // A fourth (or seventh) token alone costs one SWAR pass, less than a group of 3 lanes for it.
  const lanesN = n > 1 && n % 3 === 1 ? n - 1 : n;
  const groups = Math.ceil(lanesN / 3);
  const { packed, xsT, xsumT, nPad } = packedLanes(FEW_Q4_0, xq, lanesN, 3, K1, 1);
  const acc = laneAccumulators(4 * nPad);
  const wq = m.q,
    ws = m.scales;
  const r4 = r0 + ((r1 - r0) & ~3);
  for (let r = r0; r < r4; r += 4) {
    acc.fill(0, 0, 4 * nPad);
    // Two groups (6 tokens) per pass of one row pair at a time, an odd group with 4 rows per pass:
    // wider blocks (4 rows x 2 groups, 2 rows x 3 groups) measured slower (README).
    let g = 0;
    for (; g + 2 <= groups; g += 2) {
      pairQ4_0G2(wq, ws, pairStride, blocks, r, packed, cols, g, xsT, xsumT, nPad, acc, 0);
      pairQ4_0G2(wq, ws, pairStride, blocks, r + 2, packed, cols, g, xsT, xsumT, nPad, acc, 2);
    }
    if (g < groups) quadQ4_0G1(wq, ws, pairStride, blocks, r, packed, cols, g, xsT, xsumT, nPad, acc, 0);
    for (let t = 0; t < lanesN; t++) {
      const yo = yOff + t * yStride + r;
      y[yo] = acc[4 * t];
      y[yo + 1] = acc[4 * t + 1];
      y[yo + 2] = acc[4 * t + 2];
      y[yo + 3] = acc[4 * t + 3];
    }
  }
  if (lanesN < n) {
    const t = n - 1;
    rows4Q4_0(
      wq,
      ws,
      pairStride,
      blocks,
      r0,
      r4,
      xq.q,
      t * cols,
      xq.scales,
      xq.sums,
      t * blocks,
      y,
      yOff + t * yStride,
    );
  }
  if (r4 < r1) matmulQ4_0(m, xq, n, y, yOff, yStride, r4, r1);
}

/**
 * Split one row's group sum s (3 tokens' lanes, nibbles 0..15) and add each token's
 * (lane - 8 * block sum) * weight scale * activation scale to acc[o + 4i], token i of the group.
 */
function addLanesQ4_0(
  s: number,
  w: number,
  xsT: Float64Array,
  xsumT: Float64Array,
  so: number,
  acc: Float64Array,
  o: number,
): void {
  const h = s * INV_K2 + ROUND - ROUND;
  const rest = s - h * K2;
  const mid = rest * INV_K1 + ROUND - ROUND;
  acc[o] += (rest - mid * K1 - 8 * xsumT[so]) * w * xsT[so];
  acc[o + 4] += (mid - 8 * xsumT[so + 1]) * w * xsT[so + 1];
  acc[o + 8] += (h - 8 * xsumT[so + 2]) * w * xsT[so + 2];
}

/** Rows r..r+3 (two row pairs) against packed group g0 (3 tokens from 3 * g0), adding into acc[4t + o + i]. */
function quadQ4_0G1(
  wq: Int32Array,
  ws: Float32Array,
  pairStride: number,
  blocks: number,
  r: number,
  packed: Float64Array,
  cols: number,
  g0: number,
  xsT: Float64Array,
  xsumT: Float64Array,
  nPad: number,
  acc: Float64Array,
  o: number,
): void {
  const wo0 = (r >> 1) * pairStride;
  const so = r * blocks;
  const x0 = g0 * cols;
  const ao = 12 * g0 + o;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      b0 = 0,
      c0 = 0,
      d0 = 0;
    const wo = wo0 + b * 8;
    for (let j = 0; j < 8; j++) {
      const p = wq[wo + j],
        q = wq[wo + pairStride + j];
      const k = b * QBLOCK + 4 * j;
      let wA = p & 15,
        wB = (p >>> 16) & 15,
        wC = q & 15,
        wD = (q >>> 16) & 15;
      let X0 = packed[x0 + k];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = (p >>> 4) & 15;
      wB = (p >>> 20) & 15;
      wC = (q >>> 4) & 15;
      wD = (q >>> 20) & 15;
      X0 = packed[x0 + k + 1];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = (p >>> 8) & 15;
      wB = (p >>> 24) & 15;
      wC = (q >>> 8) & 15;
      wD = (q >>> 24) & 15;
      X0 = packed[x0 + k + 2];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
      wA = (p >>> 12) & 15;
      wB = (p >>> 28) & 15;
      wC = (q >>> 12) & 15;
      wD = (q >>> 28) & 15;
      X0 = packed[x0 + k + 3];
      a0 += wA * X0;
      b0 += wB * X0;
      c0 += wC * X0;
      d0 += wD * X0;
    }
    const t0 = b * nPad + 3 * g0;
    addLanesQ4_0(a0, ws[so + b], xsT, xsumT, t0, acc, ao);
    addLanesQ4_0(b0, ws[so + 1 * blocks + b], xsT, xsumT, t0, acc, ao + 1);
    addLanesQ4_0(c0, ws[so + 2 * blocks + b], xsT, xsumT, t0, acc, ao + 2);
    addLanesQ4_0(d0, ws[so + 3 * blocks + b], xsT, xsumT, t0, acc, ao + 3);
  }
}

/** Rows r, r+1 (one row pair) against packed groups g0..g0+1 (6 tokens from 3 * g0), adding into acc[4t + o + i]. */
function pairQ4_0G2(
  wq: Int32Array,
  ws: Float32Array,
  pairStride: number,
  blocks: number,
  r: number,
  packed: Float64Array,
  cols: number,
  g0: number,
  xsT: Float64Array,
  xsumT: Float64Array,
  nPad: number,
  acc: Float64Array,
  o: number,
): void {
  const wo0 = (r >> 1) * pairStride;
  const so = r * blocks;
  const x0 = g0 * cols;
  const x1 = (g0 + 1) * cols;
  const ao = 12 * g0 + o;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      b0 = 0,
      a1 = 0,
      b1 = 0;
    const wo = wo0 + b * 8;
    for (let j = 0; j < 8; j++) {
      const p = wq[wo + j];
      const k = b * QBLOCK + 4 * j;
      let wA = p & 15,
        wB = (p >>> 16) & 15;
      let X0 = packed[x0 + k];
      a0 += wA * X0;
      b0 += wB * X0;
      let X1 = packed[x1 + k];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = (p >>> 4) & 15;
      wB = (p >>> 20) & 15;
      X0 = packed[x0 + k + 1];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 1];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = (p >>> 8) & 15;
      wB = (p >>> 24) & 15;
      X0 = packed[x0 + k + 2];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 2];
      a1 += wA * X1;
      b1 += wB * X1;
      wA = (p >>> 12) & 15;
      wB = (p >>> 28) & 15;
      X0 = packed[x0 + k + 3];
      a0 += wA * X0;
      b0 += wB * X0;
      X1 = packed[x1 + k + 3];
      a1 += wA * X1;
      b1 += wB * X1;
    }
    const t0 = b * nPad + 3 * g0;
    addLanesQ4_0(a0, ws[so + b], xsT, xsumT, t0, acc, ao);
    addLanesQ4_0(b0, ws[so + 1 * blocks + b], xsT, xsumT, t0, acc, ao + 1);
    addLanesQ4_0(a1, ws[so + b], xsT, xsumT, t0 + 3, acc, ao + 12);
    addLanesQ4_0(b1, ws[so + 1 * blocks + b], xsT, xsumT, t0 + 3, acc, ao + 13);
  }
}
