// Prefill and batched decode for q4_0 and q8_0 weights: several integer multiply-adds per float64
// multiply. A float64 holds every integer below 2^53 exactly, so three tokens' int8 activations
// packed into one double, X = x0 + x1 * L + x2 * L^2, times one integer weight w gives
// w*x0 + w*x1 * L + w*x2 * L^2: three products in one multiply, and summed over a 32-block the three
// lanes stay apart as long as each lane's sum stays below L / 2 in magnitude. Two (q4_0) or three
// (q8_0) weight rows are widened once into a float64 panel and reused by every group of tokens; the
// register block, 2 rows x 3 groups (q4_0) or 3 x 2 (q8_0), does 5 loads, 6 multiplies and 6 adds
// per column for 18 (q4_0) or 12 (q8_0) multiply-adds, where f32's 3x2 block does 5 loads, 5
// float32 -> float64 conversions and 12 float operations for 6. After each 32-block the sums are
// split into their lanes and scaled. The integer sums are exact and are scaled in the order of the
// one-token integer kernels (quantize.ts), so both give the same results.
// Quiet machine, one run of `bench.js --scalar-only`, 0.5B gate/up and down shapes, n = 64, GFLOP/s:
// q4_0 9.9-10.4, q8_0 8.5-8.8, f32 (matmul.ts) 5.6-5.7, the kernels of before 4.7-5.7; the same
// lanes loop in plain scalar C (tools/scalar-limit.c) 18-21.
//
// Lane widths (int8 activations are -127..127):
//   q4_0: weights -8..7, |32 products| <= 32 * 8 * 127 = 32512 < 2^15: L = 2^16, three lanes, 2^47.
//   q8_0: weights -128..127, |32 products| <= 32 * 128 * 127 < 2^19: L = 2^20, only two lanes fit in 53 bits
//         (three would need 2^60), so q8_0 packs token pairs.
import { Q4_0, QBLOCK, type Matrix } from './matrix.js';
import type { QuantizedActivations } from './quantize.js';

// Per thread (each worker has its own module instance): grown to the largest call, then reused.
let panelScratch: Float64Array = new Float64Array(0);
let packedScratch: Float64Array = new Float64Array(0);
let accScratch: Float64Array = new Float64Array(0);
let xsScratch: Float64Array = new Float64Array(0);
// What packedScratch and xsScratch hold: xq at its version, n tokens, packed for a format.
let packedFrom: QuantizedActivations | null = null;
let packedVersion = -1;
let packedN = 0;
let packedFormat = -1;

function grow(a: Float64Array, n: number): Float64Array {
  return a.length >= n ? a : new Float64Array(n);
}

// Offsets masked into [0, 2^30) so that V8's typer can prove `offset + k` fits an int32 and drops
// its overflow check (as matmul.ts does); the caller checks that every index is below 2^30.
const OFFSET_MASK = 0x3fffffff;

// Rounds a double to the nearest integer for |v| < 2^51 with two adds (no call).
const ROUND = 6755399441055744; // 1.5 * 2^52

/**
 * Lanes per double and lane spacing for a weight format (see the header), and the register block:
 * weight rows x packed groups. q4_0 takes 2 rows x 3 groups (9 tokens), q8_0 3 rows x 2 groups
 * (4 tokens, so that a batch of 8 fills two blocks exactly); both are 6 accumulators and 5 loads.
 */
const LANES_Q4_0 = { lanes: 3, spacing: 65536, rows: 2, groups: 3 };
const LANES_Q8_0 = { lanes: 2, spacing: 1048576, rows: 3, groups: 2 };

function laneShape(format: number): typeof LANES_Q4_0 {
  return format === Q4_0 ? LANES_Q4_0 : LANES_Q8_0;
}

/**
 * packed [groups, cols]: packed[g, k] = sum_i q[g*lanes + i, k] * spacing^i over tokens below n;
 * groups = ceil(n / lanes) rounded up to a multiple of `groupBlock` (the groups the kernel takes at
 * a time), the padding groups zero.
 */
function packActivations(
  xq: QuantizedActivations,
  n: number,
  lanes: number,
  spacing: number,
  groupBlock: number,
  packed: Float64Array,
): number {
  const cols = xq.cols;
  const q = xq.q;
  const groups = Math.ceil(Math.ceil(n / lanes) / groupBlock) * groupBlock;
  packed.fill(0, 0, groups * cols);
  for (let t = 0; t < n; t++) {
    const po = ((t / lanes) | 0) * cols;
    const scale = spacing ** (t % lanes);
    const qo = t * cols;
    for (let k = 0; k < cols; k++) packed[po + k] += q[qo + k] * scale;
  }
  return groups;
}

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

/** Widen q8_0 row r into panel[po, po + cols) as signed integers -127..127. */
function widenRowQ8_0(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const words = m.cols >> 2;
  const wq = m.q;
  const wo = r * words;
  for (let j = 0; j < words; j++) {
    const word = wq[wo + j];
    panel[po + 4 * j] = (word << 24) >> 24;
    panel[po + 4 * j + 1] = (word << 16) >> 24;
    panel[po + 4 * j + 2] = (word << 8) >> 24;
    panel[po + 4 * j + 3] = word >> 24;
  }
}

/** True when matmulLanes can run this matrix (q8_0/q4_0 and every index below 2^30). */
export function lanesApply(m: Matrix, n: number): boolean {
  const { lanes } = laneShape(m.format);
  return m.cols * (Math.ceil(n / lanes) + 3) < OFFSET_MASK && 3 * m.cols < OFFSET_MASK;
}

/**
 * Y[t, r] = sum_k W[r, k] * X[t, k] for q4_0 or q8_0 weights W, tokens t < n, rows [r0, r1), from
 * the int8 activations xq. Register blocks (laneShape): 6 accumulators, 5 loads and 6 multiply-adds
 * per column fit x64's FP registers; in a scratch loop of the bare column sums (2 rows x 3 groups,
 * GFLOP/s of lane products) 3x2 and 2x3 ran 17-19, 4x2 14-15, 6x1 13, 4x1 12.
 */
export function matmulLanes(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  const cols = m.cols & 0x1fffffff;
  const blocks = cols / QBLOCK;
  const q4 = m.format === Q4_0;
  const { lanes, spacing, rows: R, groups: G } = laneShape(m.format);
  const groups = Math.ceil(Math.ceil(n / lanes) / G) * G;
  const nPad = groups * lanes;
  if (packedScratch.length < groups * cols || xsScratch.length < blocks * nPad) packedFrom = null;
  packedScratch = grow(packedScratch, groups * cols);
  panelScratch = grow(panelScratch, R * cols);
  accScratch = grow(accScratch, R * nPad);
  const packed = packedScratch,
    panel = panelScratch, // [R, cols]: the weight rows r..r+R-1 as float64 integers
    acc = accScratch; // [nPad, R]: their outputs for every token, float64 across blocks
  xsScratch = grow(xsScratch, blocks * nPad);
  const xsT = xsScratch;
  // A thread runs several row chunks of one matrix, or several matrices, on the same activations:
  // pack them once.
  if (packedFrom !== xq || packedVersion !== xq.version || packedN !== n || packedFormat !== m.format) {
    packActivations(xq, n, lanes, spacing, G, packed);
    // Activation scales transposed to [blocks, nPad] (tokens past n scaled by 0), so that a block's
    // tokens sit side by side.
    xsT.fill(0, 0, blocks * nPad);
    for (let t = 0; t < n; t++) for (let b = 0; b < blocks; b++) xsT[b * nPad + t] = xq.scales[t * blocks + b];
    packedFrom = xq;
    packedVersion = xq.version;
    packedN = n;
    packedFormat = m.format;
  }
  const ws = m.scales;
  for (let r = r0; r < r1; r += R) {
    const live = Math.min(R, r1 - r); // the last rows of a slice run with zero rows beside them
    for (let i = 0; i < R; i++) {
      if (i >= live) panel.fill(0, i * cols, (i + 1) * cols);
      else if (q4) widenRowQ4_0(m, r + i, panel, i * cols);
      else widenRowQ8_0(m, r + i, panel, i * cols);
    }
    acc.fill(0, 0, R * nPad);
    // A zero row's scale is read from row r (any valid row: its sums are 0 and its outputs unused).
    const rB = live > 1 ? r + 1 : r,
      rC = live > 2 ? r + 2 : r;
    for (let g = 0; g < groups; g += G) {
      if (q4) rowPairQ4(panel, cols, packed, g * cols, ws, r, rB, xsT, nPad, g * lanes, acc);
      else rowTripleQ8(panel, cols, packed, g * cols, ws, r, rB, rC, xsT, nPad, g * lanes, acc);
    }
    for (let t = 0; t < n; t++) for (let i = 0; i < live; i++) y[yOff + t * yStride + r + i] = acc[R * t + i];
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
 * q8_0: acc[3t + i] += row (rA, rB, rC)[i] . token t for the 4 tokens t0..t0+3 packed two per
 * double in groups g, g+1, block by block (as rowPairQ4, with 3 rows x 2 groups).
 */
function rowTripleQ8(
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
  const blocks = c / QBLOCK;
  for (let b = 0; b < blocks; b++) {
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0,
      c0 = 0,
      c1 = 0;
    const k0 = (b * QBLOCK) & OFFSET_MASK;
    for (let k = k0; k < k0 + QBLOCK; k += 2) {
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
    const wA = ws[rA * blocks + b],
      wB = ws[rB * blocks + b],
      wC = ws[rC * blocks + b];
    const so = b * nPad + t0;
    const o = 3 * t0;
    splitQ8(a0, b0, c0, wA, wB, wC, xsT, so, acc, o);
    splitQ8(a1, b1, c1, wA, wB, wC, xsT, so + 2, acc, o + 6);
  }
}

const M1 = 1048576,
  INV_M1 = 1 / M1;

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

/** As splitQ4 for three rows' sums of a q8_0 group of two tokens (one split at M1), acc[o + 3t + row]. */
function splitQ8(
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
