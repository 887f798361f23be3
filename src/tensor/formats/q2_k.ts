// Q2_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d and min dmin, sixteen
// 16-value sub-blocks with a 4-bit scale sc and min m each, and 2-bit levels q: w = d*sc * q - dmin*m
// (ggml's dl = d*sc and ml = dmin*m are exact in f32: 11 by 4 bits). Llama.cpp's Q2_K files keep
// most matrices in it. Per 32 columns (one activation scale xd, activations.ts) a row's product is
// xd * (d * sum_sub sc * sum q xq - dmin * sum_sub m * sum xq): integer sums, then two multiplies.
//
// Storage (repacked at load, exactly the file's 84 bytes per row and super-block):
//   q   [rows/2, cols/16, 2] words: word w of a sub-block holds columns 8w..8w+7, row r in bits
//       2c..2c+1 and row r+1 in bits 16+2c.. (q4_0's row-pair SWAR layout with 2-bit levels); rows even;
//   u8  [rows, cols/16]: the file's scale bytes (sc in the low nibble, m in the high);
//   u16 [rows, cols/256, 2]: d, dmin as the file's f16 bits.
// Decode: 4 rows per pass; (word >>> 2c) & 0x00030003 gives both rows' levels of a column, one
// Math.imul multiplies both; lanes are split once per sub-block (16 * 3 * 127 < 2^15). Prefill:
// float64 lanes on sc * q, two tokens per double, the mins from the activations' 16-column sums.
// Both compute a block's exact integer sums I = sum sc * q xq and J = sum m * sum xq and scale them
// the same way, (d * I - dmin * J) * xd, so every token's outputs are those of its one-token call,
// bit for bit.
import { f16Values } from '../dtype.js';
import { makeMatrix, Q2_K, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const M2 = 0x00030003;

const LANES_MIN_TOKENS = 4;

export const matmulQ2_KMatrix: MatmulKernel = (m, _x, _xOff, _xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q2_K, m, n)) {
    transposeSums16(xq!, n);
    matmulLanes(LANES_Q2_K, m, xq!, n, y, yOff, yStride, r0, r1);
  } else matvecQ2_K(m, xq!, n, y, yOff, yStride, r0, r1);
};

/** An empty Q2_K matrix with shared storage (rows even, cols a multiple of 256), filled by packQ2_KRows. */
export function allocQ2_K(rows: number, cols: number): Matrix {
  if (rows % 2 !== 0 || cols % 256 !== 0)
    throw new Error(`q2_K matrix [${rows}, ${cols}]: rows must be even, cols a multiple of 256`);
  return makeMatrix(Q2_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer((rows * cols) / 4)),
    u8: new Uint8Array(new SharedArrayBuffer((rows * cols) / 16)),
    u16: new Uint16Array(new SharedArrayBuffer((rows * cols) / 64)),
    ggmlType: 10,
  });
}

/**
 * The 2-bit level of value v (0..255) of the K-quant super-block whose qs start at src[qs]: ggml
 * keeps 32 consecutive values per 2-bit plane, 128 values per 32 bytes.
 */
export function lowBitsK(src: Uint8Array, qs: number, v: number): number {
  const i = v >> 5;
  return (src[qs + ((i >> 2) << 5) + (v & 31)] >> (2 * (i & 3))) & 3;
}

/** ggml Q2_K blocks (84 bytes: scales[16], qs[64], f16 d, f16 dmin) of rows [r0, r0 + nRows) into m. */
export function packQ2_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const subs = m.cols / 16,
    supers = m.cols / 256;
  const halves = new Uint16Array(m.q.buffer, m.q.byteOffset, m.q.length * 2);
  for (let r = r0; r < r0 + nRows; r++) {
    for (let s = 0; s < supers; s++) {
      const o = 84 * ((r - r0) * supers + s);
      m.u16[2 * (r * supers + s)] = src[o + 80] | (src[o + 81] << 8);
      m.u16[2 * (r * supers + s) + 1] = src[o + 82] | (src[o + 83] << 8);
      for (let j = 0; j < 16; j++) {
        const sb = s * 16 + j;
        m.u8[r * subs + sb] = src[o + j];
        const ho = ((r >> 1) * subs + sb) * 4 + (r & 1);
        for (let w = 0; w < 2; w++) {
          let half = 0;
          for (let c = 0; c < 8; c++) half |= lowBitsK(src, o + 16, 16 * j + 8 * w + c) << (2 * c);
          halves[ho + 2 * w] = half;
        }
      }
    }
  }
}

/** Row r as ggml dequantizes it: fround(fround(dl * q) - ml), dl = fround(d * sc), ml = fround(dmin * m). */
export function readRowQ2_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const f16 = f16Values();
  const subs = m.cols / 16,
    supers = m.cols / 256;
  const shift = 16 * (r & 1);
  for (let sb = 0; sb < subs; sb++) {
    const s = r * supers + (sb >> 4);
    const e = m.u8[r * subs + sb];
    const dl = Math.fround(f16[m.u16[2 * s]] * (e & 15)),
      ml = Math.fround(f16[m.u16[2 * s + 1]] * (e >> 4));
    const wo = ((r >> 1) * subs + sb) * 2;
    for (let k = 0; k < 16; k++) {
      const q = (m.q[wo + (k >> 3)] >>> (shift + 2 * (k & 7))) & 3;
      out[outOff + 16 * sb + k] = Math.fround(Math.fround(dl * q) - ml);
    }
  }
}

// Per thread: the activations' sums over each 16 columns, [n, cols/16].
let sums16 = new Int32Array(0);

/** sums16[t * cols/16 + j] = sum of token t's int8 activations over columns 16j..16j+15. */
export function activationSums16(xq: QuantizedActivations, n: number): Int32Array {
  const groups = (n * xq.cols) >> 4;
  if (sums16.length < groups) sums16 = new Int32Array(groups);
  const xv = xq.q;
  for (let g = 0; g < groups; g++) {
    let s = 0;
    for (let k = 16 * g; k < 16 * g + 16; k++) s += xv[k];
    sums16[g] = s;
  }
  return sums16;
}

/** Every token in turn: 4 rows (two row pairs) per pass; a last row pair runs as both pairs. */
function matvecQ2_K(
  m: Matrix,
  xq: QuantizedActivations,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
): void {
  if (r0 % 2 !== 0) throw new RangeError(`q2_K: row slices start on even rows (row pairs), got ${r0}`);
  const cols = m.cols;
  if (m.q.length > OFFSET_MASK || xq.q.length > OFFSET_MASK) throw new RangeError('q2_K: matrix too large');
  const s16 = activationSums16(xq, n);
  const f16 = f16Values();
  for (let t = 0; t < n; t++) {
    const yo = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4(m, r, r + 2, xq, t, s16, f16, y, yo, r1);
    for (; r < r1; r += 2) rows4(m, r, r, xq, t, s16, f16, y, yo, r1);
  }
}

/**
 * Rows (rA, rA + 1) and (rB, rB + 1) against token t; rB = rA when one pair is left (written once,
 * its second row only when below r1).
 */
function rows4(
  m: Matrix,
  rA: number,
  rB: number,
  xq: QuantizedActivations,
  t: number,
  s16: Int32Array,
  f16: Float32Array,
  y: Float32Array,
  yo: number,
  r1: number,
): void {
  const cols = m.cols;
  const subs = cols >> 4,
    supers = cols >> 8,
    blocks = cols >> 5;
  const wq = m.q,
    sm = m.u8,
    dd = m.u16,
    xv = xq.q,
    xs = xq.scales;
  const xo = (t * cols) & OFFSET_MASK,
    xso = t * blocks,
    so16 = (t * subs) & OFFSET_MASK;
  let pa = ((rA >> 1) * subs * 2) & OFFSET_MASK;
  const pb = ((rB >> 1) * subs * 2 - pa) & OFFSET_MASK; // second pair's words, relative
  const e0 = (rA * subs) & OFFSET_MASK,
    e1 = (e0 + subs) & OFFSET_MASK,
    e2 = (rB * subs) & OFFSET_MASK,
    e3 = (e2 + subs) & OFFSET_MASK;
  const v0 = (2 * rA * supers) & OFFSET_MASK,
    v1 = (v0 + 2 * supers) & OFFSET_MASK,
    v2 = (2 * rB * supers) & OFFSET_MASK,
    v3 = (v2 + 2 * supers) & OFFSET_MASK;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  for (let s = 0; s < supers; s++) {
    const d0 = f16[dd[v0 + 2 * s]],
      d1 = f16[dd[v1 + 2 * s]],
      d2 = f16[dd[v2 + 2 * s]],
      d3 = f16[dd[v3 + 2 * s]];
    const n0 = f16[dd[v0 + 2 * s + 1]],
      n1 = f16[dd[v1 + 2 * s + 1]],
      n2 = f16[dd[v2 + 2 * s + 1]],
      n3 = f16[dd[v3 + 2 * s + 1]];
    for (let b = 8 * s; b < 8 * s + 8; b++) {
      // Per row: sum over the block's two sub-blocks of sc * sum q xq, and of m * sum xq.
      let i0 = 0,
        i1 = 0,
        i2 = 0,
        i3 = 0,
        j0 = 0,
        j1 = 0,
        j2 = 0,
        j3 = 0;
      for (let h = 0; h < 2; h++, pa += 2) {
        const sb = (2 * b + h) & OFFSET_MASK;
        const xb = (xo + 16 * sb) & OFFSET_MASK;
        let sA = 0,
          sB = 0;
        {
          const p = wq[pa + 0],
            q = wq[pa + pb + 0];
          {
            const x0 = xv[xb + 0],
              x1 = xv[xb + 1],
              x2 = xv[xb + 2],
              x3 = xv[xb + 3];
            sA =
              (sA +
                Math.imul(p & M2, x0) +
                Math.imul((p >>> 2) & M2, x1) +
                Math.imul((p >>> 4) & M2, x2) +
                Math.imul((p >>> 6) & M2, x3)) |
              0;
            sB =
              (sB +
                Math.imul(q & M2, x0) +
                Math.imul((q >>> 2) & M2, x1) +
                Math.imul((q >>> 4) & M2, x2) +
                Math.imul((q >>> 6) & M2, x3)) |
              0;
          }
          {
            const x0 = xv[xb + 4],
              x1 = xv[xb + 5],
              x2 = xv[xb + 6],
              x3 = xv[xb + 7];
            sA =
              (sA +
                Math.imul((p >>> 8) & M2, x0) +
                Math.imul((p >>> 10) & M2, x1) +
                Math.imul((p >>> 12) & M2, x2) +
                Math.imul((p >>> 14) & M2, x3)) |
              0;
            sB =
              (sB +
                Math.imul((q >>> 8) & M2, x0) +
                Math.imul((q >>> 10) & M2, x1) +
                Math.imul((q >>> 12) & M2, x2) +
                Math.imul((q >>> 14) & M2, x3)) |
              0;
          }
        }
        {
          const p = wq[pa + 1],
            q = wq[pa + pb + 1];
          {
            const x0 = xv[xb + 8],
              x1 = xv[xb + 9],
              x2 = xv[xb + 10],
              x3 = xv[xb + 11];
            sA =
              (sA +
                Math.imul(p & M2, x0) +
                Math.imul((p >>> 2) & M2, x1) +
                Math.imul((p >>> 4) & M2, x2) +
                Math.imul((p >>> 6) & M2, x3)) |
              0;
            sB =
              (sB +
                Math.imul(q & M2, x0) +
                Math.imul((q >>> 2) & M2, x1) +
                Math.imul((q >>> 4) & M2, x2) +
                Math.imul((q >>> 6) & M2, x3)) |
              0;
          }
          {
            const x0 = xv[xb + 12],
              x1 = xv[xb + 13],
              x2 = xv[xb + 14],
              x3 = xv[xb + 15];
            sA =
              (sA +
                Math.imul((p >>> 8) & M2, x0) +
                Math.imul((p >>> 10) & M2, x1) +
                Math.imul((p >>> 12) & M2, x2) +
                Math.imul((p >>> 14) & M2, x3)) |
              0;
            sB =
              (sB +
                Math.imul((q >>> 8) & M2, x0) +
                Math.imul((q >>> 10) & M2, x1) +
                Math.imul((q >>> 12) & M2, x2) +
                Math.imul((q >>> 14) & M2, x3)) |
              0;
          }
        }
        const lA = (sA << 16) >> 16,
          lB = (sB << 16) >> 16;
        const x16 = s16[so16 + sb];
        const c0 = sm[e0 + sb],
          c1 = sm[e1 + sb],
          c2 = sm[e2 + sb],
          c3 = sm[e3 + sb];
        i0 += (c0 & 15) * lA;
        i1 += (c1 & 15) * ((sA - lA) >> 16);
        i2 += (c2 & 15) * lB;
        i3 += (c3 & 15) * ((sB - lB) >> 16);
        j0 += (c0 >> 4) * x16;
        j1 += (c1 >> 4) * x16;
        j2 += (c2 >> 4) * x16;
        j3 += (c3 >> 4) * x16;
      }
      const xd = xs[xso + b];
      acc0 += (d0 * i0 - n0 * j0) * xd;
      acc1 += (d1 * i1 - n1 * j1) * xd;
      acc2 += (d2 * i2 - n2 * j2) * xd;
      acc3 += (d3 * i3 - n3 * j3) * xd;
    }
  }
  y[yo + rA] = acc0;
  if (rA + 1 < r1) y[yo + rA + 1] = acc1;
  if (rB !== rA) {
    y[yo + rB] = acc2;
    y[yo + rB + 1] = acc3;
  }
}

// ---- lanes (prefill): the panel holds sc * q (0..45): |32 products| <= 32 * 45 * 127 < 2^18, two
// tokens per double 2^20 apart, in q6_k's register block of 3 rows x 2 groups. The mins' integer
// sums m_a * S_a + m_b * S_b per block and token come from the 16-column sums, transposed to
// [cols/16, nPad] as lanes.ts transposes the activation scales.

// Per panel row (0..2): [supers] d and dmin, [cols/16] m of the rows widened last.
let panelScale = new Float64Array(0);
let panelDmin = new Float64Array(0);
let panelMin = new Int32Array(0);
// Per thread: the activations' 16-column sums [cols/16, nPad] of the call (tokens past n: 0).
let sums16T = new Float64Array(0);

/** sums16T[j * nPad + t] = token t's sum over columns 16j..16j+15, nPad as matmulLanes pads LANES_Q2_K. */
function transposeSums16(xq: QuantizedActivations, n: number): void {
  const subs = xq.cols >> 4;
  const { lanes, groups: G } = LANES_Q2_K;
  const nPad = Math.ceil(Math.ceil(n / lanes) / G) * G * lanes;
  if (sums16T.length < subs * nPad) sums16T = new Float64Array(subs * nPad);
  const s16 = activationSums16(xq, n);
  sums16T.fill(0, 0, subs * nPad);
  for (let t = 0; t < n; t++) for (let j = 0; j < subs; j++) sums16T[j * nPad + t] = s16[t * subs + j];
}

function widenRowQ2_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const f16 = f16Values();
  const cols = m.cols;
  const subs = cols >> 4,
    supers = cols >> 8;
  const i = po / cols; // which panel row
  if (panelScale.length < 3 * supers) {
    panelScale = new Float64Array(3 * supers);
    panelDmin = new Float64Array(3 * supers);
  }
  if (panelMin.length < 3 * subs) panelMin = new Int32Array(3 * subs);
  for (let s = 0; s < supers; s++) {
    panelScale[i * supers + s] = f16[m.u16[2 * (r * supers + s)]];
    panelDmin[i * supers + s] = f16[m.u16[2 * (r * supers + s) + 1]];
  }
  const wq = m.q;
  const shift = 16 * (r & 1);
  for (let sb = 0; sb < subs; sb++) {
    const e = m.u8[r * subs + sb];
    const sc = e & 15;
    panelMin[i * subs + sb] = e >> 4;
    const wo = ((r >> 1) * subs + sb) * 2;
    const k0 = po + 16 * sb;
    for (let w = 0; w < 2; w++) {
      const word = wq[wo + w] >>> shift;
      for (let c = 0; c < 8; c++) panel[k0 + 8 * w + c] = sc * ((word >>> (2 * c)) & 3);
    }
  }
}

/** q6_k's rowTripleQ6_K with lanes 2^20 apart and the mins: acc[3t + i] += row i . token t, 4 tokens from t0. */
function rowTripleQ2_K(
  panel: Float64Array,
  cols: number,
  packed: Float64Array,
  xOff: number,
  _ws: Float32Array,
  _rA: number,
  _rB: number,
  _rC: number,
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
    supers = c >> 8,
    subs = c >> 4;
  const ps = panelScale,
    pd = panelDmin,
    pm = panelMin,
    st = sums16T;
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
    const s = b >> 3;
    const so = b * nPad + t0;
    const o = 3 * t0;
    // The block's two sub-blocks' 16-column sums for the group's tokens t0..t0+3.
    const sa = (2 * b * nPad + t0) & OFFSET_MASK,
      sbo = (sa + nPad) & OFFSET_MASK;
    const mA0 = pm[2 * b],
      mA1 = pm[2 * b + 1],
      mB0 = pm[subs + 2 * b],
      mB1 = pm[subs + 2 * b + 1],
      mC0 = pm[2 * subs + 2 * b],
      mC1 = pm[2 * subs + 2 * b + 1];
    const dA = ps[s],
      dB = ps[supers + s],
      dC = ps[2 * supers + s],
      nA = pd[s],
      nB = pd[supers + s],
      nC = pd[2 * supers + s];
    const hA0 = a0 * INV_M1 + ROUND - ROUND,
      hB0 = b0 * INV_M1 + ROUND - ROUND,
      hC0 = c0 * INV_M1 + ROUND - ROUND,
      hA1 = a1 * INV_M1 + ROUND - ROUND,
      hB1 = b1 * INV_M1 + ROUND - ROUND,
      hC1 = c1 * INV_M1 + ROUND - ROUND;
    {
      const xd = xsT[so],
        x16a = st[sa],
        x16b = st[sbo];
      acc[o] += (dA * (a0 - hA0 * M1) - nA * (mA0 * x16a + mA1 * x16b)) * xd;
      acc[o + 1] += (dB * (b0 - hB0 * M1) - nB * (mB0 * x16a + mB1 * x16b)) * xd;
      acc[o + 2] += (dC * (c0 - hC0 * M1) - nC * (mC0 * x16a + mC1 * x16b)) * xd;
    }
    {
      const xd = xsT[so + 1],
        x16a = st[sa + 1],
        x16b = st[sbo + 1];
      acc[o + 3] += (dA * hA0 - nA * (mA0 * x16a + mA1 * x16b)) * xd;
      acc[o + 4] += (dB * hB0 - nB * (mB0 * x16a + mB1 * x16b)) * xd;
      acc[o + 5] += (dC * hC0 - nC * (mC0 * x16a + mC1 * x16b)) * xd;
    }
    {
      const xd = xsT[so + 2],
        x16a = st[sa + 2],
        x16b = st[sbo + 2];
      acc[o + 6] += (dA * (a1 - hA1 * M1) - nA * (mA0 * x16a + mA1 * x16b)) * xd;
      acc[o + 7] += (dB * (b1 - hB1 * M1) - nB * (mB0 * x16a + mB1 * x16b)) * xd;
      acc[o + 8] += (dC * (c1 - hC1 * M1) - nC * (mC0 * x16a + mC1 * x16b)) * xd;
    }
    {
      const xd = xsT[so + 3],
        x16a = st[sa + 3],
        x16b = st[sbo + 3];
      acc[o + 9] += (dA * hA1 - nA * (mA0 * x16a + mA1 * x16b)) * xd;
      acc[o + 10] += (dB * hB1 - nB * (mB0 * x16a + mB1 * x16b)) * xd;
      acc[o + 11] += (dC * hC1 - nC * (mC0 * x16a + mC1 * x16b)) * xd;
    }
  }
}

const M1 = 1048576,
  INV_M1 = 1 / M1;

const LANES_Q2_K: LaneKernel = {
  lanes: 2,
  spacing: M1,
  rows: 3,
  groups: 2,
  widenRow: widenRowQ2_K,
  block: rowTripleQ2_K,
};
