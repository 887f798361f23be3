// Q6_K (llama.cpp's k-quant): super-blocks of 256 values with an f16 scale d, sixteen 16-value
// sub-blocks with an int8 scale sc each, and 6-bit levels q stored - 32: w = d*sc * q. In the GGUF
// the levels are split into a 4-bit and a 2-bit plane; here they are repacked at load into int8,
// four per Int32 as q8_0 stores them (q8_0.ts), so that decode is q8_0's Math.imul loop with one
// scale per 16 values (the two halves of a 32-block summed apart). That costs 276 bytes per 256
// values against the file's 210: Q4_K_M files keep only the output (and a few layers' attn_v and
// ffn_down) in Q6_K, where this buys decode speed.
//
// Storage: q [rows, cols/4] int8 levels; u8 [rows, cols/16] the int8 scales; scales [rows, cols/256] d.
import { makeMatrix, Q6_K, type Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';
import { OFFSET_MASK, type MatmulKernel } from './common.js';
import { matmulPanels } from './f32.js';
import { f16At } from './ggml-dequantize.js';
import { lanesApply, matmulLanes, ROUND, type LaneKernel } from './lanes.js';

const fround = Math.fround;
const LANES_MIN_TOKENS = 4;

// Prefill and batches: float64 lanes (below); one token: the integer loop. Without int8
// activations, f32 panels.
export const matmulQ6_KMatrix: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq) => {
  if (xq === null) matmulPanels(m, widenRows, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
  else if (n >= LANES_MIN_TOKENS && lanesApply(LANES_Q6_K, m, n))
    matmulLanes(LANES_Q6_K, m, xq, n, y, yOff, yStride, r0, r1);
  else matvecQ6_K(m, xq, n, y, yOff, yStride, r0, r1);
};

/** An empty Q6_K matrix with shared storage (cols a multiple of 256), filled by packQ6_KRows. */
export function allocQ6_K(rows: number, cols: number): Matrix {
  if (cols % 256 !== 0) throw new Error(`q6_K matrix [${rows}, ${cols}]: cols must be a multiple of 256`);
  return makeMatrix(Q6_K, rows, cols, {
    q: new Int32Array(new SharedArrayBuffer(rows * cols)),
    u8: new Uint8Array(new SharedArrayBuffer(rows * (cols / 16))),
    scales: new Float32Array(new SharedArrayBuffer(rows * (cols / 256) * 4)),
    ggmlType: 14,
  });
}

/** ggml Q6_K blocks (210 bytes per 256 values; d last) of rows [r0, r0 + nRows) (src: those rows) into m. */
export function packQ6_KRows(src: Uint8Array, m: Matrix, r0: number, nRows: number): void {
  const supers = m.cols / 256;
  const levels = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength);
  for (let s = 0; s < nRows * supers; s++) {
    const o = 210 * s,
      g = r0 * supers + s; // super-block index in m
    m.scales[g] = f16At(src, o + 208);
    for (let i = 0; i < 16; i++) m.u8[16 * g + i] = src[o + 192 + i];
    // As ggml's dequantize_row_q6_K: two halves of 128, each from 64 bytes of ql and 32 of qh.
    for (let n = 0; n < 2; n++) {
      const ql = o + 64 * n,
        qh = o + 128 + 32 * n,
        y = 256 * g + 128 * n;
      for (let l = 0; l < 32; l++) {
        const h = src[qh + l];
        levels[y + l] = (((src[ql + l] & 0xf) | ((h & 3) << 4)) - 32) & 0xff;
        levels[y + l + 32] = (((src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32) & 0xff;
        levels[y + l + 64] = (((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32) & 0xff;
        levels[y + l + 96] = (((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32) & 0xff;
      }
    }
  }
}

/** d1 = d * sc of sub-block i (16 values) of row r, as ggml's float. */
function subScale(m: Matrix, r: number, i: number): number {
  return fround(m.scales[r * (m.cols >> 8) + (i >> 4)] * ((m.u8[r * (m.cols >> 4) + i] << 24) >> 24));
}

/** Row r as ggml dequantizes it: fround(fround(d * sc) * q). */
export function readRowQ6_K(m: Matrix, r: number, out: Float32Array, outOff: number): void {
  const cols = m.cols;
  const wo = (r * cols) >> 2;
  for (let i = 0; i < cols / 16; i++) {
    const d1 = subScale(m, r, i);
    for (let j = 0; j < 4; j++) {
      const word = m.q[wo + 4 * i + j];
      const o = outOff + 16 * i + 4 * j;
      out[o] = fround(d1 * ((word << 24) >> 24));
      out[o + 1] = fround(d1 * ((word << 16) >> 24));
      out[o + 2] = fround(d1 * ((word << 8) >> 24));
      out[o + 3] = fround(d1 * (word >> 24));
    }
  }
}

function widenRows(m: Matrix, r: number, nr: number, out: Float32Array): void {
  for (let i = 0; i < nr; i++) readRowQ6_K(m, r + i, out, i * m.cols);
}

/** The int8 dot product of 4 words (16 values) at wq[w] with xv[x, x + 16). */
function dot16(wq: Int32Array, w: number, xv: Int32Array, x: number): number {
  let s = 0;
  for (let j = 0; j < 4; j++) {
    const a = wq[w + j],
      xj = x + 4 * j;
    s =
      (s +
        Math.imul((a << 24) >> 24, xv[xj]) +
        Math.imul((a << 16) >> 24, xv[xj + 1]) +
        Math.imul((a << 8) >> 24, xv[xj + 2]) +
        Math.imul(a >> 24, xv[xj + 3])) |
      0;
  }
  return s;
}

/**
 * Rows r..r+3 against one token (q8_0's 4-row pass): each 16-value half of a 32-block summed in
 * int32 per row, scaled by its sub-block's d * sc, then by the block's activation scale.
 */
function rows4Q6_K(
  m: Matrix,
  r: number,
  xq: QuantizedActivations,
  xo: number,
  xso: number,
  y: Float32Array,
  yt: number,
): void {
  const cols = m.cols;
  const blocks = cols >> 5,
    words = cols >> 2,
    supers = cols >> 8,
    subs = cols >> 4;
  const wq = m.q,
    xv = xq.q,
    xs = xq.scales,
    dd = m.scales,
    sc = m.u8;
  let acc0 = 0,
    acc1 = 0,
    acc2 = 0,
    acc3 = 0;
  const w0 = (r * words) & OFFSET_MASK;
  const e0 = r * supers,
    s0 = r * subs;
  for (let b = 0; b < blocks; b++) {
    const xb = (xo + 32 * b) & OFFSET_MASK;
    const o0 = (w0 + 8 * b) & OFFSET_MASK,
      o1 = (o0 + words) & OFFSET_MASK,
      o2 = (o1 + words) & OFFSET_MASK,
      o3 = (o2 + words) & OFFSET_MASK;
    let blockSum0 = 0,
      blockSum1 = 0,
      blockSum2 = 0,
      blockSum3 = 0;
    for (let h = 0; h < 2; h++) {
      let p0 = 0,
        p1 = 0,
        p2 = 0,
        p3 = 0;
      for (let j = 4 * h; j < 4 * h + 4; j++) {
        const xj = (xb + 4 * j) & OFFSET_MASK;
        const x0 = xv[xj],
          x1 = xv[xj + 1],
          x2 = xv[xj + 2],
          x3 = xv[xj + 3];
        const a = wq[o0 + j],
          c = wq[o1 + j],
          d = wq[o2 + j],
          e = wq[o3 + j];
        p0 =
          (p0 +
            Math.imul((a << 24) >> 24, x0) +
            Math.imul((a << 16) >> 24, x1) +
            Math.imul((a << 8) >> 24, x2) +
            Math.imul(a >> 24, x3)) |
          0;
        p1 =
          (p1 +
            Math.imul((c << 24) >> 24, x0) +
            Math.imul((c << 16) >> 24, x1) +
            Math.imul((c << 8) >> 24, x2) +
            Math.imul(c >> 24, x3)) |
          0;
        p2 =
          (p2 +
            Math.imul((d << 24) >> 24, x0) +
            Math.imul((d << 16) >> 24, x1) +
            Math.imul((d << 8) >> 24, x2) +
            Math.imul(d >> 24, x3)) |
          0;
        p3 =
          (p3 +
            Math.imul((e << 24) >> 24, x0) +
            Math.imul((e << 16) >> 24, x1) +
            Math.imul((e << 8) >> 24, x2) +
            Math.imul(e >> 24, x3)) |
          0;
      }
      // Sub-block 2b + h of each row: its int8 scale times the row's d (as subScale).
      const si = 2 * b + h,
        di = b >> 3;
      blockSum0 += p0 * fround(dd[e0 + di] * ((sc[s0 + si] << 24) >> 24));
      blockSum1 += p1 * fround(dd[e0 + supers + di] * ((sc[s0 + subs + si] << 24) >> 24));
      blockSum2 += p2 * fround(dd[e0 + 2 * supers + di] * ((sc[s0 + 2 * subs + si] << 24) >> 24));
      blockSum3 += p3 * fround(dd[e0 + 3 * supers + di] * ((sc[s0 + 3 * subs + si] << 24) >> 24));
    }
    const xd = xs[xso + b];
    acc0 += blockSum0 * xd;
    acc1 += blockSum1 * xd;
    acc2 += blockSum2 * xd;
    acc3 += blockSum3 * xd;
  }
  y[yt + r] = acc0;
  y[yt + r + 1] = acc1;
  y[yt + r + 2] = acc2;
  y[yt + r + 3] = acc3;
}

/**
 * One token at a time (decode), 2 rows per pass: each activation block feeds both rows; each
 * 16-value half of a 32-block is summed in int32 and scaled by its sub-block's d1.
 */
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
  const cols = m.cols;
  const blocks = cols >> 5,
    words = cols >> 2;
  const wq = m.q,
    xv = xq.q,
    xs = xq.scales,
    dd = m.scales,
    sc = m.u8;
  if (wq.length > OFFSET_MASK || xv.length > OFFSET_MASK) throw new RangeError('q6_K: matrix too large');
  for (let t = 0; t < n; t++) {
    const xo = t * cols,
      xso = t * blocks,
      yt = yOff + t * yStride;
    let r = r0;
    for (; r + 4 <= r1; r += 4) rows4Q6_K(m, r, xq, xo, xso, y, yt);
    for (; r + 2 <= r1; r += 2) {
      let acc0 = 0,
        acc1 = 0;
      const w0 = (r * words) & OFFSET_MASK,
        w1 = (w0 + words) & OFFSET_MASK;
      // Row r's and r + 1's d (per 256) and int8 scales (per 16) start here.
      const d0 = r * (cols >> 8),
        d1 = d0 + (cols >> 8);
      const s0 = r * (cols >> 4),
        s1 = s0 + (cols >> 4);
      for (let b = 0; b < blocks; b++) {
        const xb = (xo + 32 * b) & OFFSET_MASK;
        let lo0 = 0,
          lo1 = 0,
          hi0 = 0,
          hi1 = 0;
        for (let j = 0; j < 4; j++) {
          const xj = (xb + 4 * j) & OFFSET_MASK;
          const x0 = xv[xj],
            x1 = xv[xj + 1],
            x2 = xv[xj + 2],
            x3 = xv[xj + 3];
          const a = wq[w0 + 8 * b + j],
            c = wq[w1 + 8 * b + j];
          lo0 =
            (lo0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          lo1 =
            (lo1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
        }
        for (let j = 4; j < 8; j++) {
          const xj = (xb + 4 * j) & OFFSET_MASK;
          const x0 = xv[xj],
            x1 = xv[xj + 1],
            x2 = xv[xj + 2],
            x3 = xv[xj + 3];
          const a = wq[w0 + 8 * b + j],
            c = wq[w1 + 8 * b + j];
          hi0 =
            (hi0 +
              Math.imul((a << 24) >> 24, x0) +
              Math.imul((a << 16) >> 24, x1) +
              Math.imul((a << 8) >> 24, x2) +
              Math.imul(a >> 24, x3)) |
            0;
          hi1 =
            (hi1 +
              Math.imul((c << 24) >> 24, x0) +
              Math.imul((c << 16) >> 24, x1) +
              Math.imul((c << 8) >> 24, x2) +
              Math.imul(c >> 24, x3)) |
            0;
        }
        const xd = xs[xso + b];
        const dA = dd[d0 + (b >> 3)],
          dB = dd[d1 + (b >> 3)];
        acc0 +=
          (lo0 * fround(dA * ((sc[s0 + 2 * b] << 24) >> 24)) + hi0 * fround(dA * ((sc[s0 + 2 * b + 1] << 24) >> 24))) *
          xd;
        acc1 +=
          (lo1 * fround(dB * ((sc[s1 + 2 * b] << 24) >> 24)) + hi1 * fround(dB * ((sc[s1 + 2 * b + 1] << 24) >> 24))) *
          xd;
      }
      y[yt + r] = acc0;
      y[yt + r + 1] = acc1;
    }
    for (; r < r1; r++) {
      let acc = 0;
      const w0 = r * words;
      for (let b = 0; b < blocks; b++) {
        const xb = xo + 32 * b;
        acc +=
          (dot16(wq, w0 + 8 * b, xv, xb) * subScale(m, r, 2 * b) +
            dot16(wq, w0 + 8 * b + 4, xv, xb + 16) * subScale(m, r, 2 * b + 1)) *
          xs[xso + b];
      }
      y[yt + r] = acc;
    }
  }
}

// ---- lanes (prefill): the panel holds level * sc (|q * sc| <= 32 * 128), so a 32-block's sum needs
// no split at the sub-block boundary: |32 products| <= 32 * 4096 * 127 < 2^24, two tokens per double
// 2^25 apart (as q8_0's two, 2^20 apart), in q8_0's register block of 3 rows x 2 groups, scaled by d
// per 256 and the activation scale. d * sc is exact in f32 (11 + 8 bits), so this is the
// dequantized product up to float rounding.

function widenRowQ6_K(m: Matrix, r: number, panel: Float64Array, po: number): void {
  const cols = m.cols;
  const wq = m.q,
    sc = m.u8;
  const wo = (r * cols) >> 2,
    so = r * (cols >> 4);
  for (let s = 0; s < cols >> 4; s++) {
    const scale = (sc[so + s] << 24) >> 24;
    for (let w = 4 * s; w < 4 * s + 4; w++) {
      const word = wq[wo + w];
      const k = po + 4 * w;
      panel[k] = ((word << 24) >> 24) * scale;
      panel[k + 1] = ((word << 16) >> 24) * scale;
      panel[k + 2] = ((word << 8) >> 24) * scale;
      panel[k + 3] = (word >> 24) * scale;
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
