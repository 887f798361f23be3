// Prefill and batched decode for the integer formats: several integer multiply-adds per float64
// multiply. A float64 holds every integer below 2^53 exactly, so three tokens' int8 activations
// packed into one double, X = x0 + x1 * L + x2 * L^2, times one integer weight w gives
// w*x0 + w*x1 * L + w*x2 * L^2: three products in one multiply, and summed over a 32-block the
// lanes stay apart as long as each lane's sum stays below L / 2 in magnitude. A format widens R
// weight rows once into a float64 panel, reused by every group of tokens; its register block (R
// rows x G groups, 6 accumulators and 5 loads: what fits x64's FP registers) sums a block's
// columns, splits the sums into their lanes and scales them, in the order of its one-token integer
// kernel, so both give the same results. This file is the part every format shares: packing the
// activations, the panels and the walk over rows and groups.
import type { Matrix } from '../matrix.js';
import { QBLOCK } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK } from './common.js';

/** Rounds a double to the nearest integer for |v| < 2^51 with two adds (no call): v + ROUND - ROUND. */
export const ROUND = 6755399441055744; // 1.5 * 2^52

/**
 * A format's lanes kernel: `lanes` tokens per double `spacing` apart, register block of `rows`
 * weight rows x `groups` packed groups. widenRow writes row r's integer weights into
 * panel[po, po + cols); block adds rows (rA, rB, rC)'s products with the lanes*groups tokens from
 * t0 (packed at packed[xOff + g * cols]) into acc[rows * t + i], scaled by the weight scales of
 * those rows and the activation scales xsT[b * nPad + t] (formats with a min per block also use the
 * activations' block sums xsumT[b * nPad + t]).
 */
export interface LaneKernel {
  lanes: number;
  spacing: number;
  rows: number;
  groups: number;
  widenRow(m: Matrix, r: number, panel: Float64Array, po: number): void;
  block(
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
    xsumT: Float64Array,
  ): void;
}

// Per thread (each worker has its own module instance): grown to the largest call, then reused.
let panelScratch: Float64Array = new Float64Array(0);
let packedScratch: Float64Array = new Float64Array(0);
let accScratch: Float64Array = new Float64Array(0);
let xsScratch: Float64Array = new Float64Array(0);
let xsumScratch: Float64Array = new Float64Array(0);
// What packedScratch and xsScratch hold: xq at its version, n tokens, packed for a kernel.
let packedFrom: QuantizedActivations | null = null;
let packedVersion = -1;
let packedN = 0;
let packedFor: object | null = null;

function grow(a: Float64Array, n: number): Float64Array {
  return a.length >= n ? a : new Float64Array(n);
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

/** True when matmulLanes can run this matrix with this kernel (every index below 2^30). */
export function lanesApply(kernel: LaneKernel, m: Matrix, n: number): boolean {
  return m.cols * (Math.ceil(n / kernel.lanes) + 3) < OFFSET_MASK && 3 * m.cols < OFFSET_MASK;
}

/** The activations as a lanes kernel reads them (packedLanes). */
export interface PackedLanes {
  packed: Float64Array; // [groups, cols]
  xsT: Float64Array; // [blocks, nPad] activation scales, tokens past n scaled by 0
  xsumT: Float64Array; // [blocks, nPad] activation block sums
  groups: number;
  nPad: number;
}

const packedResult: PackedLanes = {
  packed: packedScratch,
  xsT: xsScratch,
  xsumT: xsumScratch,
  groups: 0,
  nPad: 0,
};

/**
 * xq's first n tokens packed `lanes` per double `spacing` apart, in groups rounded up to a multiple
 * of groupBlock, with the scales and block sums transposed to [blocks, nPad] so that a block's
 * tokens sit side by side. Per thread and cached: a thread runs several row chunks of one matrix, or
 * several matrices, on the same activations; `key` names the packing (one per kernel).
 */
export function packedLanes(
  key: object,
  xq: QuantizedActivations,
  n: number,
  lanes: number,
  spacing: number,
  groupBlock: number,
): PackedLanes {
  const cols = xq.cols;
  const blocks = Math.floor(cols / QBLOCK);
  const groups = Math.ceil(Math.ceil(n / lanes) / groupBlock) * groupBlock;
  const nPad = groups * lanes;
  if (packedScratch.length < groups * cols || xsScratch.length < blocks * nPad) packedFrom = null;
  packedScratch = grow(packedScratch, groups * cols);
  xsScratch = grow(xsScratch, blocks * nPad);
  xsumScratch = grow(xsumScratch, blocks * nPad);
  const xsT = xsScratch,
    xsumT = xsumScratch;
  if (packedFrom !== xq || packedVersion !== xq.version || packedN !== n || packedFor !== key) {
    packActivations(xq, n, lanes, spacing, groupBlock, packedScratch);
    xsT.fill(0, 0, blocks * nPad);
    xsumT.fill(0, 0, blocks * nPad);
    for (let t = 0; t < n; t++)
      for (let b = 0; b < blocks; b++) {
        xsT[b * nPad + t] = xq.scales[t * blocks + b];
        xsumT[b * nPad + t] = xq.sums[t * blocks + b];
      }
    packedFrom = xq;
    packedVersion = xq.version;
    packedN = n;
    packedFor = key;
  }
  packedResult.packed = packedScratch;
  packedResult.xsT = xsT;
  packedResult.xsumT = xsumT;
  packedResult.groups = groups;
  packedResult.nPad = nPad;
  return packedResult;
}

/** A per-thread float64 scratch of at least `size` elements (the few-token kernels' accumulators). */
export function laneAccumulators(size: number): Float64Array {
  accScratch = grow(accScratch, size);
  return accScratch;
}

/**
 * Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n, rows [r0, r1), from the int8 activations xq,
 * with a format's lanes kernel.
 */
export function matmulLanes(
  kernel: LaneKernel,
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
  const { lanes, spacing, rows: R, groups: G } = kernel;
  const { packed, xsT, xsumT, groups, nPad } = packedLanes(kernel, xq, n, lanes, spacing, G);
  panelScratch = grow(panelScratch, R * cols);
  accScratch = grow(accScratch, R * nPad);
  const panel = panelScratch, // [R, cols]: the weight rows r..r+R-1 as float64 integers
    acc = accScratch; // [nPad, R]: their outputs for every token, float64 across blocks
  const ws = m.scales;
  for (let r = r0; r < r1; r += R) {
    const live = Math.min(R, r1 - r); // the last rows of a slice run with zero rows beside them
    for (let i = 0; i < R; i++) {
      if (i >= live) panel.fill(0, i * cols, (i + 1) * cols);
      else kernel.widenRow(m, r + i, panel, i * cols);
    }
    acc.fill(0, 0, R * nPad);
    // A zero row's scale is read from row r (any valid row: its sums are 0 and its outputs unused).
    const rB = live > 1 ? r + 1 : r,
      rC = live > 2 ? r + 2 : r;
    for (let g = 0; g < groups; g += G)
      kernel.block(panel, cols, packed, g * cols, ws, r, rB, rC, xsT, nPad, g * lanes, acc, xsumT);
    for (let t = 0; t < n; t++) for (let i = 0; i < live; i++) y[yOff + t * yStride + r + i] = acc[R * t + i];
  }
}
