// Unit tests of the CPU kernels in src/tensor against naive float64 references.
// Every random input comes from a seeded mulberry32 generator, so a failure reproduces exactly.
import { describe, expect, it } from 'vitest';
import { allocAttentionScratch, attendRows, KV_F32, type PagedKv } from '../src/tensor/attention.js';
import { bf16ArrayToF32, bf16ToF32, f16ArrayToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';
import { matmulReference } from '../bench/matmul-reference.js';
import { allocQuantizedMatrix, matmul, readRow } from '../src/tensor/matmul.js';
import { BF16, F32, makeMatrix, Q4_0, Q8_0, QBLOCK, type Matrix } from '../src/tensor/matrix.js';
import { addInPlace, rmsnorm, rope, ropeTables, softmax, swiglu } from '../src/tensor/ops.js';
import { claimedEnd, claimRows, splitRange } from '../src/tensor/pool.js';
import {
  allocQuantizedActivations,
  quantizeActivations,
  type QuantizedActivations,
} from '../src/tensor/formats/activations.js';
import { quantizeRowsQ4_0 } from '../src/tensor/formats/q4_0.js';
import { quantizeRowsQ8_0 } from '../src/tensor/formats/q8_0.js';

const dequantizeRow = (m: Matrix, r: number, out: Float32Array) => readRow(m, r, out, 0);

// ---------------------------------------------------------------------------------------------
// Helpers

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [-scale, scale), as f32. */
function randomF32(rand: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rand() - 1) * scale;
  return out;
}

const bitsF32 = new Float32Array(1);
const bitsU32 = new Uint32Array(bitsF32.buffer);
/** The f32 whose bit pattern is `u`. */
function f32FromBits(u: number): number {
  bitsU32[0] = u >>> 0;
  return bitsF32[0];
}

/** The first index where check(i) returns a message, as "i: message", or null if none does. */
function firstFailure(n: number, check: (i: number) => string | null): string | null {
  for (let i = 0; i < n; i++) {
    const m = check(i);
    if (m !== null) return `${i}: ${m}`;
  }
  return null;
}

/** Naive float64 y[t][r] = sum_k w(r, k) * x[t][k] and sum_k |w(r, k) * x[t][k]| (the error scale). */
function naiveMatmul(
  w: (r: number, k: number) => number,
  rows: number,
  cols: number,
  x: ArrayLike<number>,
  xOff: number,
  xStride: number,
  n: number,
): { ref: Float64Array; mag: Float64Array } {
  const ref = new Float64Array(n * rows);
  const mag = new Float64Array(n * rows);
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0,
        a = 0;
      for (let k = 0; k < cols; k++) {
        const p = w(r, k) * x[xOff + t * xStride + k];
        s += p;
        a += Math.abs(p);
      }
      ref[t * rows + r] = s;
      mag[t * rows + r] = a;
    }
  }
  return { ref, mag };
}

/**
 * Check y (filled with NaN before the call) against ref for rows [r0, r1) and every token, and
 * that nothing else in y was written. |y - ref| <= rel * |ref| + magRel * mag.
 */
function checkOutput(
  y: Float32Array,
  yOff: number,
  yStride: number,
  rows: number,
  n: number,
  r0: number,
  r1: number,
  ref: Float64Array,
  mag: Float64Array,
  rel: number,
  magRel: number,
): string | null {
  const written = new Uint8Array(y.length);
  for (let t = 0; t < n; t++) {
    for (let r = r0; r < r1; r++) {
      const i = yOff + t * yStride + r;
      written[i] = 1;
      const e = ref[t * rows + r];
      const tol = rel * Math.abs(e) + magRel * mag[t * rows + r];
      if (!(Math.abs(y[i] - e) <= tol)) return `t=${t} r=${r}: got ${y[i]}, want ${e} (tol ${tol})`;
    }
  }
  for (let i = 0; i < y.length; i++) {
    if (!written[i] && !Number.isNaN(y[i])) return `y[${i}] outside rows [${r0}, ${r1}) was overwritten with ${y[i]}`;
  }
  return null;
}

/** Independent decoder of q8_0 storage: int8 weights in row-major byte order (little-endian). */
function q8Weight(m: Matrix, r: number, k: number): number {
  return new Int8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength)[r * m.cols + k];
}

/**
 * Independent decoder of q4_0 storage (the layout documented in quantize.ts): pair p = r >> 1,
 * block b, word j = (k % 32) >> 2 at index (p * blocks + b) * 8 + j; column c = k % 4 of row r
 * sits in bits 4c..4c+3 (even r) or 16+4c.. (odd r). As little-endian bytes: byte 2*(r&1) + (c>>1)
 * of the word, low nibble for even c. Returns the signed weight (nibble - 8).
 */
function q4Weight(m: Matrix, r: number, k: number): number {
  const blocks = m.cols / QBLOCK;
  const b = Math.floor(k / QBLOCK),
    i = k % QBLOCK;
  const word = ((r >> 1) * blocks + b) * 8 + (i >> 2);
  const byte = new Uint8Array(m.q.buffer, m.q.byteOffset, m.q.byteLength)[word * 4 + 2 * (r & 1) + ((i & 3) >> 1)];
  const nib = i & 1 ? byte >> 4 : byte & 0xf;
  return nib - 8;
}

function quantWeight(m: Matrix, r: number, k: number): number {
  return m.format === Q8_0 ? q8Weight(m, r, k) : q4Weight(m, r, k);
}

function quantizeMatrix(format: number, w: Float32Array, rows: number, cols: number): Matrix {
  const m = allocQuantizedMatrix(format, rows, cols);
  if (format === Q8_0) quantizeRowsQ8_0(w, 0, rows, m);
  else quantizeRowsQ4_0(w, 0, rows, m);
  return m;
}

function quantizeX(x: Float32Array, xOff: number, xStride: number, n: number, cols: number): QuantizedActivations {
  const xq = allocQuantizedActivations(n, cols, false);
  quantizeActivations(x, xOff, xStride, 0, n, xq);
  xq.n = n;
  return xq;
}

// ---------------------------------------------------------------------------------------------

describe('dtype conversions', () => {
  it('bf16ToF32 widens known bit patterns exactly', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc020)).toBe(-2.5);
    expect(bf16ToF32(0x4049)).toBe(3.140625);
    expect(bf16ToF32(0x0000)).toBe(0);
    expect(Object.is(bf16ToF32(0x8000), -0)).toBe(true);
    expect(bf16ToF32(0x7f80)).toBe(Infinity);
    expect(bf16ToF32(0xff80)).toBe(-Infinity);
    expect(bf16ToF32(0x0001)).toBe(2 ** -133); // smallest subnormal
    expect(bf16ToF32(0x7f7f)).toBe(f32FromBits(0x7f7f0000)); // largest finite
    expect(Number.isNaN(bf16ToF32(0x7fc0))).toBe(true);
    expect(Number.isNaN(bf16ToF32(0xffc1))).toBe(true);
  });

  it('f32ToBf16 rounds to nearest, ties to even, and keeps specials', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(-2.5)).toBe(0xc020);
    expect(f32ToBf16(0)).toBe(0x0000);
    expect(f32ToBf16(-0)).toBe(0x8000);
    expect(f32ToBf16(Infinity)).toBe(0x7f80);
    expect(f32ToBf16(-Infinity)).toBe(0xff80);
    // 1 + 2^-8 is halfway between 0x3f80 and 0x3f81: ties go to the even 0x3f80.
    expect(f32ToBf16(f32FromBits(0x3f808000))).toBe(0x3f80);
    // 1 + 3 * 2^-8 is halfway between 0x3f81 and 0x3f82: ties go to the even 0x3f82.
    expect(f32ToBf16(f32FromBits(0x3f818000))).toBe(0x3f82);
    expect(f32ToBf16(f32FromBits(0xbf818000))).toBe(0xbf82);
    expect(f32ToBf16(f32FromBits(0x3f808001))).toBe(0x3f81); // just above a tie
    expect(f32ToBf16(f32FromBits(0x3f817fff))).toBe(0x3f81); // just below a tie
    expect(f32ToBf16(f32FromBits(0x3fffffff))).toBe(0x4000); // carry into the exponent: 2.0
    expect(f32ToBf16(f32FromBits(0x7f7fffff))).toBe(0x7f80); // max f32 rounds to Inf, as torch does
    expect(f32ToBf16(f32FromBits(0x7f7f7fff))).toBe(0x7f7f);
    expect(f32ToBf16(f32FromBits(0x00008000))).toBe(0x0000); // subnormal tie to even (0)
    expect(f32ToBf16(f32FromBits(0x00018000))).toBe(0x0002); // subnormal tie to even (2)
    for (const nanBits of [0x7fc00000, 0xffc00000, 0x7fc00001, 0x7fffffff]) {
      const h = f32ToBf16(f32FromBits(nanBits));
      expect(h & 0x7f80).toBe(0x7f80);
      expect(h & 0x007f).not.toBe(0); // a NaN, not an infinity
      expect(Number.isNaN(bf16ToF32(h))).toBe(true);
    }
    expect(f32ToBf16(NaN) & 0xffff).toBe(f32ToBf16(NaN)); // stays 16 bits
  });

  it('bf16 -> f32 -> bf16 is the identity on every non-NaN pattern', () => {
    const fail = firstFailure(0x10000, (h) => {
      const x = bf16ToF32(h);
      if (Number.isNaN(x)) return (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0 ? null : `non-NaN pattern widened to NaN`;
      const back = f32ToBf16(x);
      return back === h ? null : `round trip gave 0x${back.toString(16)}`;
    });
    expect(fail).toBeNull();
  });

  it('f32ToBf16 matches a float64 round-to-nearest-even reference on random values', () => {
    const rand = mulberry32(11);
    const fail = firstFailure(20000, () => {
      const u = Math.floor(rand() * 0x7f7f0000) | (rand() < 0.5 ? 0x80000000 : 0);
      const x = f32FromBits(u);
      const h = f32ToBf16(x);
      const lo = bf16ToF32(h);
      // The neighbour on the other side of x, and the distances.
      const other = bf16ToF32(Math.abs(lo) < Math.abs(x) ? h + 1 : h - 1);
      const dl = Math.abs(x - lo),
        dother = Math.abs(x - other);
      if (dl > dother) return `x=${x}: 0x${h.toString(16)} is not the nearest bf16`;
      if (dl === dother && (h & 1) !== 0) return `x=${x}: tie not rounded to even`;
      return null;
    });
    expect(fail).toBeNull();
  });

  it('f16ToF32 decodes normals, subnormals and specials', () => {
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0xc000)).toBe(-2);
    expect(f16ToF32(0x3555)).toBe(0.333251953125);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(f16ToF32(0x8001)).toBe(-(2 ** -24));
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(Number.isNaN(f16ToF32(0x7e00))).toBe(true);
    expect(Number.isNaN(f16ToF32(0xfc01))).toBe(true);
  });

  it('f16 -> f32 -> f16 is the identity on every non-NaN pattern (subnormals included)', () => {
    const fail = firstFailure(0x10000, (h) => {
      const x = f16ToF32(h);
      if (Number.isNaN(x)) {
        const back = f32ToF16(x);
        return (back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0 ? null : `NaN became 0x${back.toString(16)}`;
      }
      if (Math.fround(x) !== x) return `f16 value ${x} is not an f32`;
      const back = f32ToF16(x);
      return back === h ? null : `round trip gave 0x${back.toString(16)}`;
    });
    expect(fail).toBeNull();
  });

  it('f32ToF16 rounds to nearest even, overflows to Inf and underflows through subnormals', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2.5)).toBe(0xc100);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519)).toBe(0x7bff); // below the halfway point to 2^16
    expect(f32ToF16(65520)).toBe(0x7c00); // halfway: rounds to even, i.e. Inf
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e6)).toBe(0xfc00);
    expect(f32ToF16(Infinity)).toBe(0x7c00);
    expect(f32ToF16(-Infinity)).toBe(0xfc00);
    expect(f32ToF16(2 ** -24)).toBe(0x0001);
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie between 0 and 2^-24 -> even 0
    expect(f32ToF16(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 ulps -> 2
    expect(f32ToF16(5 * 2 ** -25)).toBe(0x0002); // tie between 2 and 3 ulps -> 2
    expect(f32ToF16(2 ** -26)).toBe(0x0000);
    expect(f32ToF16(-(2 ** -26))).toBe(0x8000);
    expect(f32ToF16(1e-30)).toBe(0x0000);
    expect(f32ToF16(f32FromBits(0x00000001))).toBe(0x0000); // f32 subnormal
    expect(f32ToF16(1023.5 * 2 ** -24)).toBe(0x0400); // largest subnormal + half ulp -> smallest normal
    expect(f32ToF16(-0)).toBe(0x8000);
    const nan = f32ToF16(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });

  it('f32ToF16 picks the nearest f16 on random values, normal and subnormal', () => {
    const rand = mulberry32(12);
    const fail = firstFailure(20000, () => {
      const x = Math.fround((rand() < 0.5 ? -1 : 1) * 2 ** (rand() * 42 - 26) * (1 + rand()));
      const h = f32ToF16(x);
      const v = f16ToF32(h);
      if (Math.abs(x) >= 65520) return h === ((x < 0 ? 0x8000 : 0) | 0x7c00) ? null : `${x} should overflow`;
      const up = f16ToF32(h + 1),
        down = (h & 0x7fff) === 0 ? -v : f16ToF32(h - 1);
      const d = Math.abs(x - v);
      if (d > Math.abs(x - up) || d > Math.abs(x - down)) return `${x} -> ${v} is not the nearest f16`;
      return null;
    });
    expect(fail).toBeNull();
  });

  it('bf16ArrayToF32 / f16ArrayToF32 convert a window and touch nothing else', () => {
    const rand = mulberry32(13);
    const src = new Uint16Array(40);
    for (let i = 0; i < src.length; i++) src[i] = Math.floor(rand() * 0x10000) & 0xff7f; // no NaN/Inf
    const backing = new Float32Array(64).fill(-7);
    const dst = backing.subarray(4, 60); // a view with a byteOffset
    bf16ArrayToF32(src, 3, dst, 5, 30);
    for (let i = 0; i < backing.length; i++) {
      const di = i - 4 - 5;
      if (di >= 0 && di < 30) expect(backing[i]).toBe(bf16ToF32(src[3 + di]));
      else expect(backing[i]).toBe(-7);
    }
    const h16 = Uint16Array.from([0x3c00, 0xc100, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0x8000, 0x3555]);
    const want = [1, -2.5, 2 ** -24, 1023 * 2 ** -24, 65504, Infinity, -0, 0.333251953125];
    const out = new Float32Array(12).fill(-7);
    f16ArrayToF32(h16, 1, out, 2, 7);
    expect(Array.from(out)).toEqual([-7, -7, ...want.slice(1), -7, -7, -7]);
    expect(Object.is(out[7], -0)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe('matmul f32 / bf16 against a float64 triple loop', () => {
  const shapes: [number, number][] = [
    [37, 70],
    [37, 71],
    [3, 5],
    [8, 33],
    [1, 1],
    [13, 64],
  ];
  const tokens = [1, 2, 3, 4, 5, 8, 9];

  function slicesFor(rows: number): [number, number][] {
    const s: [number, number][] = [[0, rows]];
    if (rows > 3) s.push([1, rows - 2], [rows - 1, rows], [2, 2]);
    if (rows > 9) s.push([4, 9], [5, 12]);
    return s;
  }

  for (const [kernelName, kernel] of [
    ['matmul', matmul],
    ['matmulReference', matmulReference],
  ] as const)
    for (const format of ['f32', 'bf16'] as const) {
      it(`${kernelName} ${format}: every shape, token count and row slice (tolerance 1e-6 rel + 1e-9 of sum|w*x|)`, () => {
        const rand = mulberry32(format === 'f32' ? 101 : 102);
        let checked = 0;
        for (const [rows, cols] of shapes) {
          const wf = randomF32(rand, rows * cols);
          let m: Matrix;
          let wAt: (r: number, k: number) => number;
          if (format === 'f32') {
            m = makeMatrix(F32, rows, cols, { f32: wf });
            wAt = (r, k) => wf[r * cols + k];
          } else {
            const u16 = new Uint16Array(rows * cols);
            for (let i = 0; i < u16.length; i++) u16[i] = f32ToBf16(wf[i]);
            m = makeMatrix(BF16, rows, cols, { u16 });
            wAt = (r, k) => bf16ToF32(u16[r * cols + k]);
          }
          for (const n of tokens) {
            const xOff = 3,
              xStride = cols + 2,
              yOff = 5,
              yStride = rows + 3;
            const x = randomF32(rand, xOff + n * xStride, 2);
            const { ref, mag } = naiveMatmul(wAt, rows, cols, x, xOff, xStride, n);
            for (const [r0, r1] of slicesFor(rows)) {
              const y = new Float32Array(yOff + n * yStride + 4).fill(NaN);
              kernel(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, null);
              const fail = checkOutput(y, yOff, yStride, rows, n, r0, r1, ref, mag, 1e-6, 1e-9);
              expect(fail, `${kernelName} ${format} ${rows}x${cols} n=${n} rows [${r0},${r1})`).toBeNull();
              checked++;
            }
          }
        }
        expect(checked).toBeGreaterThan(100);
      });
    }

  it('bf16 results equal f32 results on the widened weights (same kernel after widening)', () => {
    const rand = mulberry32(103);
    const rows = 21,
      cols = 45,
      n = 6;
    const u16 = new Uint16Array(rows * cols);
    for (let i = 0; i < u16.length; i++) u16[i] = f32ToBf16((2 * rand() - 1) * 3);
    const wide = new Float32Array(rows * cols);
    bf16ArrayToF32(u16, 0, wide, 0, rows * cols);
    const x = randomF32(rand, n * cols);
    for (const [r0, r1] of [
      [0, rows],
      [1, 20],
      [3, 4],
    ] as const) {
      const yb = new Float32Array(n * rows).fill(NaN);
      const yf = new Float32Array(n * rows).fill(NaN);
      matmul(makeMatrix(BF16, rows, cols, { u16 }), x, 0, cols, n, yb, 0, rows, r0, r1, null);
      // Same row grouping only when r0 agrees mod 4; compare within f32 rounding instead of bitwise.
      matmul(makeMatrix(F32, rows, cols, { f32: wide }), x, 0, cols, n, yf, 0, rows, r0, r1, null);
      for (let i = 0; i < yb.length; i++) {
        if (Number.isNaN(yf[i])) expect(Number.isNaN(yb[i])).toBe(true);
        else expect(Math.abs(yb[i] - yf[i])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(yf[i])));
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('q8_0 / q4_0 quantization', () => {
  /** Rows with some special blocks: all zero, a single nonzero, all equal, constant negative. */
  function weightsWithSpecialBlocks(rand: () => number, rows: number, cols: number): Float32Array {
    const w = randomF32(rand, rows * cols, 0.5);
    w.fill(0, 0, QBLOCK); // row 0 block 0: all zero (scale 0)
    if (cols >= 2 * QBLOCK) {
      w.fill(0, QBLOCK, 2 * QBLOCK);
      w[QBLOCK + 7] = -0.75; // row 0 block 1: a single nonzero
    }
    if (rows >= 2) w.fill(0.3, cols, cols + QBLOCK); // row 1 block 0: all equal positive
    if (rows >= 3) w.fill(-1e-3, 2 * cols, 2 * cols + QBLOCK); // row 2 block 0: all equal negative
    return w;
  }

  it('q8_0: dequantized weights are within d/2 of the originals; the amax element is exact', () => {
    const rand = mulberry32(201);
    const rows = 9,
      cols = 96,
      blocks = cols / QBLOCK;
    const w = weightsWithSpecialBlocks(rand, rows, cols);
    const m = quantizeMatrix(Q8_0, w, rows, cols);
    const deq = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      dequantizeRow(m, r, deq);
      for (let b = 0; b < blocks; b++) {
        const d = m.scales[r * blocks + b];
        let amax = 0;
        for (let i = 0; i < QBLOCK; i++) amax = Math.max(amax, Math.abs(w[r * cols + b * QBLOCK + i]));
        expect(d).toBe(Math.fround(amax / 127));
        for (let i = 0; i < QBLOCK; i++) {
          const k = b * QBLOCK + i;
          const q = q8Weight(m, r, k);
          expect(Math.abs(q)).toBeLessThanOrEqual(127);
          expect(deq[k]).toBe(Math.fround(q * d)); // dequantizeRow agrees with the byte layout
          const err = Math.abs(w[r * cols + k] - deq[k]);
          expect(err, `r=${r} k=${k}`).toBeLessThanOrEqual(d * (0.5 + 1e-5));
          if (Math.abs(w[r * cols + k]) === amax && amax > 0) {
            expect(Math.abs(q)).toBe(127);
            expect(err).toBeLessThanOrEqual(amax * 1e-6);
          }
        }
      }
    }
    // Special blocks: the zero block has scale 0 and dequantizes to zeros.
    dequantizeRow(m, 0, deq);
    expect(m.scales[0]).toBe(0);
    expect(Array.from(deq.subarray(0, QBLOCK)).every((v) => v === 0)).toBe(true);
    expect(deq[QBLOCK + 7]).toBe(-0.75);
  });

  it('q4_0: the signed max maps to -8 exactly; errors <= |d|/2 except where the +7 clamp applies (<= |d|)', () => {
    const rand = mulberry32(202);
    const rows = 10,
      cols = 160,
      blocks = cols / QBLOCK;
    const w = weightsWithSpecialBlocks(rand, rows, cols);
    const m = quantizeMatrix(Q4_0, w, rows, cols);
    const deq = new Float32Array(cols);
    let clamped = 0;
    for (let r = 0; r < rows; r++) {
      dequantizeRow(m, r, deq);
      for (let b = 0; b < blocks; b++) {
        const d = m.scales[r * blocks + b];
        let max = 0;
        for (let i = 0; i < QBLOCK; i++) {
          const v = w[r * cols + b * QBLOCK + i];
          if (Math.abs(v) > Math.abs(max)) max = v;
        }
        expect(d).toBe(Math.fround(max / -8));
        for (let i = 0; i < QBLOCK; i++) {
          const k = b * QBLOCK + i;
          const v = w[r * cols + k];
          const q = q4Weight(m, r, k);
          expect(q).toBeGreaterThanOrEqual(-8);
          expect(q).toBeLessThanOrEqual(7);
          expect(deq[k]).toBe(Math.fround(q * d));
          const err = Math.abs(v - deq[k]);
          if (v === max && max !== 0) {
            expect(q).toBe(-8);
            expect(deq[k]).toBe(v);
          }
          const ideal = d === 0 ? 0 : v / d; // in units of d; in [-8, 8]
          if (ideal < 7.5) {
            expect(err, `r=${r} k=${k}`).toBeLessThanOrEqual(Math.abs(d) * (0.5 + 1e-5));
          } else {
            // llama.cpp's q4_0 clamps to +7: values on the opposite side of the max lose up to one step.
            clamped++;
            expect(q).toBe(7);
            expect(err, `r=${r} k=${k}`).toBeLessThanOrEqual(Math.abs(d) * (1 + 1e-5));
          }
        }
      }
    }
    expect(clamped).toBeGreaterThan(0); // the clamp branch was exercised
    dequantizeRow(m, 0, deq);
    expect(Array.from(deq.subarray(0, QBLOCK)).every((v) => v === 0)).toBe(true);
    expect(deq[QBLOCK + 7]).toBe(-0.75);
    dequantizeRow(m, 1, deq); // all-equal 0.3 block: each is the max and maps to -8 -> exact
    expect(Array.from(deq.subarray(0, QBLOCK)).every((v) => v === Math.fround(0.3))).toBe(true);
  });

  it('q4_0 packs a row pair into the documented nibble layout', () => {
    const m = allocQuantizedMatrix(Q4_0, 2, 32);
    const w = new Float32Array(64);
    // Row 0: column k quantizes to nibble k % 16 (value = (nib - 8) * d with d = -1 from max = 8).
    for (let k = 0; k < 32; k++) w[k] = 8 - (k % 16);
    // Row 1: all -4 except one 8 -> d = -1, nibble 12 for -4, 0 for 8.
    for (let k = 0; k < 32; k++) w[32 + k] = k === 5 ? 8 : -4;
    quantizeRowsQ4_0(w, 0, 2, m);
    expect(m.scales[0]).toBe(-1);
    expect(m.scales[1]).toBe(-1);
    // Word 0: row 0 columns 0..3 -> nibbles 0,1,2,3 ; row 1 columns 0..3 -> 12,12,12,12.
    expect(m.q[0] >>> 0).toBe(0xcccc3210);
    // Word 1: row 0 columns 4..7 -> 4,5,6,7 ; row 1 -> 12, 0 (the 8 at k=5), 12, 12.
    expect(m.q[1] >>> 0).toBe(0xcc0c7654);
    // Word 4: row 0 columns 16..19 -> 0,1,2,3 (column 16 value 8 also maps to nibble 0).
    expect(m.q[4] & 0xffff).toBe(0x3210);
  });

  it('q8_0 stores int8 weights in little-endian byte order', () => {
    const m = allocQuantizedMatrix(Q8_0, 1, 32);
    const w = new Float32Array(32);
    // Integers with amax 127: scale exactly 1, so each weight is its own int8 value.
    for (let k = 0; k < 32; k++) w[k] = ((k * 37) % 255) - 127;
    w[31] = 127;
    quantizeRowsQ8_0(w, 0, 1, m);
    expect(m.scales[0]).toBe(1);
    const bytes = new Int8Array(m.q.buffer);
    for (let k = 0; k < 32; k++) expect(bytes[k]).toBe(w[k]);
    expect(bytes[0]).toBe(-127);
    expect(bytes[31]).toBe(127);
    // Word 0 holds columns 0..3 with column 0 in the low byte.
    expect(m.q[0]).toBe((w[0] & 0xff) | ((w[1] & 0xff) << 8) | ((w[2] & 0xff) << 16) | ((w[3] & 0xff) << 24));
  });

  it('quantizing in row chunks (r0 > 0) equals quantizing in one call', () => {
    const rand = mulberry32(203);
    const rows = 12,
      cols = 64;
    const w = randomF32(rand, rows * cols);
    for (const format of [Q8_0, Q4_0]) {
      const whole = quantizeMatrix(format, w, rows, cols);
      const parts = allocQuantizedMatrix(format, rows, cols);
      const q = format === Q8_0 ? quantizeRowsQ8_0 : quantizeRowsQ4_0;
      q(w.subarray(0, 4 * cols), 0, 4, parts);
      q(w.subarray(4 * cols, 10 * cols), 4, 6, parts);
      q(w.subarray(10 * cols), 10, 2, parts);
      expect(Array.from(parts.q)).toEqual(Array.from(whole.q));
      expect(Array.from(parts.scales)).toEqual(Array.from(whole.scales));
    }
  });

  it('quantizeActivations: int8 values, per-block scale amax/127, error <= d/2, block sums', () => {
    const rand = mulberry32(204);
    const cols = 96,
      blocks = cols / QBLOCK,
      n = 4,
      xOff = 7,
      xStride = cols + 5;
    const x = randomF32(rand, xOff + n * xStride, 3);
    x.fill(0, xOff + xStride, xOff + xStride + QBLOCK); // token 1 block 0 all zero
    const xq = allocQuantizedActivations(n, cols, true);
    xq.q.fill(999);
    quantizeActivations(x, xOff, xStride, 1, n, xq); // tokens 1..3 only
    expect(Array.from(xq.q.subarray(0, cols)).every((v) => v === 999)).toBe(true); // token 0 untouched
    for (let t = 1; t < n; t++) {
      for (let b = 0; b < blocks; b++) {
        const d = xq.scales[t * blocks + b];
        let amax = 0,
          sum = 0;
        for (let i = 0; i < QBLOCK; i++) amax = Math.max(amax, Math.abs(x[xOff + t * xStride + b * QBLOCK + i]));
        expect(d).toBe(Math.fround(amax / 127));
        for (let i = 0; i < QBLOCK; i++) {
          const q = xq.q[t * cols + b * QBLOCK + i];
          expect(Number.isInteger(q) && Math.abs(q) <= 127).toBe(true);
          expect(Math.abs(x[xOff + t * xStride + b * QBLOCK + i] - q * d)).toBeLessThanOrEqual(d * (0.5 + 1e-5));
          sum += q;
        }
        expect(xq.sums[t * blocks + b]).toBe(sum);
      }
    }
    expect(xq.scales[1 * blocks]).toBe(0);
    expect(xq.sums[1 * blocks]).toBe(0);
  });

  it('quantizeActivations quantizes only whole 32-blocks when cols is not a multiple of 32 (172: 5 blocks)', () => {
    const cols = 172,
      n = 2;
    const xq = allocQuantizedActivations(n, cols, false);
    expect(xq.scales.length).toBe(n * 5);
    const rand = mulberry32(77);
    const x = randomF32(rand, n * cols, 3);
    quantizeActivations(x, 0, cols, 0, n, xq);
    for (let t = 0; t < n; t++) {
      for (let b = 0; b < 5; b++) {
        let amax = 0;
        for (let i = 0; i < QBLOCK; i++) amax = Math.max(amax, Math.abs(x[t * cols + b * QBLOCK + i]));
        expect(xq.scales[t * 5 + b]).toBeCloseTo(amax / 127, 6);
      }
      // The 12-column tail is left alone (its matrix stays bf16, which never reads xq).
      for (let k = 160; k < cols; k++) expect(xq.q[t * cols + k]).toBe(0);
    }
  });

  it('allocQuantizedMatrix / quantizeRowsQ4_0 reject shapes the kernels cannot handle', () => {
    expect(() => allocQuantizedMatrix(Q8_0, 4, 48)).toThrow(/multiple of 32/);
    expect(() => allocQuantizedMatrix(Q4_0, 4, 33)).toThrow(/multiple of 32/);
    expect(() => allocQuantizedMatrix(Q4_0, 3, 32)).toThrow(/even/);
    const q8 = allocQuantizedMatrix(Q8_0, 3, 64); // odd rows are fine for q8_0
    expect(q8.q.length).toBe((3 * 64) / 4);
    expect(q8.scales.length).toBe(3 * 2);
    const q4 = allocQuantizedMatrix(Q4_0, 4, 64);
    expect(q4.q.length).toBe((4 * 64) / 8);
    expect(q4.scales.length).toBe(4 * 2);
    expect(() => quantizeRowsQ4_0(new Float32Array(64 * 3), 0, 3, q4)).toThrow(/even/);
    expect(() => quantizeRowsQ4_0(new Float32Array(64 * 2), 1, 2, q4)).toThrow(/even/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('q8_0 / q4_0 integer matmul kernels', () => {
  const shapes: [number, number][] = [
    [64, 96],
    [2, 32],
    [10, 160],
    [7, 64],
  ];

  for (const [fmtName, format] of [
    ['q8_0', Q8_0],
    ['q4_0', Q4_0],
  ] as const) {
    it(`${fmtName}: equals the float64 dot product of dequantized weights and activations (f32 rounding only)`, () => {
      const rand = mulberry32(300 + format);
      let checked = 0;
      for (const [rows, cols] of shapes) {
        if (format === Q4_0 && rows % 2 !== 0) continue;
        const blocks = cols / QBLOCK;
        const w = randomF32(rand, rows * cols, 0.2);
        w.fill(0, 0, QBLOCK); // a zero block (scale 0)
        const m = quantizeMatrix(format, w, rows, cols);
        // n < 8 (q4_0) / n < 4 (q8_0): the integer kernels; from there on, float64 lanes (lanes.ts),
        // with the last group of tokens full (9, 6) or partial (8, 10, 4, 7).
        for (const n of format === Q4_0 ? [1, 3, 5, 8, 9, 10] : [1, 3, 4, 6, 7]) {
          const xOff = 2,
            xStride = cols + 3;
          const x = randomF32(rand, xOff + n * xStride, 4);
          if (n > 1) x.fill(0, xOff + xStride + QBLOCK, xOff + xStride + 2 * QBLOCK); // a zero activation block
          const xq = quantizeX(x, xOff, xStride, n, cols);
          // Exact reference: per block (sum of integer products) * d_w * d_x, in float64.
          const ref = new Float64Array(n * rows),
            mag = new Float64Array(n * rows);
          // Bound on the quantization error against the unquantized f32 product.
          const qerr = new Float64Array(n * rows),
            exact = new Float64Array(n * rows);
          const deq = new Float32Array(cols);
          for (let r = 0; r < rows; r++) {
            dequantizeRow(m, r, deq);
            for (let t = 0; t < n; t++) {
              let s = 0,
                a = 0,
                e = 0,
                ex = 0;
              for (let b = 0; b < blocks; b++) {
                const dw = m.scales[r * blocks + b],
                  dx = xq.scales[t * blocks + b];
                let isum = 0;
                for (let i = 0; i < QBLOCK; i++) {
                  const k = b * QBLOCK + i;
                  const qw = quantWeight(m, r, k),
                    qx = xq.q[t * cols + k];
                  isum += qw * qx;
                  a += Math.abs(qw * dw * qx * dx);
                  const wv = w[r * cols + k],
                    xv = x[xOff + t * xStride + k];
                  ex += wv * xv;
                  const ew = Math.abs(wv - deq[k]),
                    exq = Math.abs(xv - qx * dx);
                  e += Math.abs(wv) * exq + Math.abs(xv) * ew + ew * exq;
                }
                s += isum * dw * dx;
              }
              ref[t * rows + r] = s;
              mag[t * rows + r] = a;
              qerr[t * rows + r] = e;
              exact[t * rows + r] = ex;
            }
          }
          const slices: [number, number][] = [
            [0, rows],
            [0, 1],
          ];
          if (rows > 4) slices.push([2, rows - 1], format === Q8_0 ? [3, 6] : [4, 7]);
          if (rows > 8 && format === Q8_0) slices.push([1, 8]); // a 4-row group and a 3-row tail
          for (const [r0, r1] of slices) {
            const yOff = 1,
              yStride = rows + 2;
            const y = new Float32Array(yOff + n * yStride + 1).fill(NaN);
            matmul(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq);
            const fail = checkOutput(y, yOff, yStride, rows, n, r0, r1, ref, mag, 2 ** -23, 1e-12);
            expect(fail, `${fmtName} ${rows}x${cols} n=${n} rows [${r0},${r1})`).toBeNull();
            // The kernels of before (matmul-reference.ts) meet the same bound, but for q8_0 prefill,
            // which multiplied the f32 activations (tested below).
            if (format === Q4_0 || n < 4) {
              const yRef = new Float32Array(y.length).fill(NaN);
              matmulReference(m, x, xOff, xStride, n, yRef, yOff, yStride, r0, r1, xq);
              const failRef = checkOutput(yRef, yOff, yStride, rows, n, r0, r1, ref, mag, 2 ** -23, 1e-12);
              expect(failRef, `reference ${fmtName} ${rows}x${cols} n=${n} rows [${r0},${r1})`).toBeNull();
            }
            // And the whole pipeline stays within the rigorous quantization error bound.
            const approx = checkOutput(y, yOff, yStride, rows, n, r0, r1, exact, qerr, 1e-6, 1 + 1e-6);
            expect(approx, `${fmtName} vs unquantized, ${rows}x${cols} n=${n}`).toBeNull();
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThanOrEqual(format === Q8_0 ? 35 : 30);
    });
  }

  for (const [format, fmtName] of [[Q8_0, 'q8_0']] as const) {
    it(`${fmtName} with n >= 4 (prefill): dequantized weights times unquantized activations`, () => {
      const rand = mulberry32(format * 31 + 5);
      const rows = 12,
        cols = 96,
        n = 6;
      const w = randomF32(rand, rows * cols, 1);
      const m = allocQuantizedMatrix(format, rows, cols);
      if (format === Q8_0) quantizeRowsQ8_0(w, 0, rows, m);
      else quantizeRowsQ4_0(w, 0, rows, m);
      const x = randomF32(rand, n * cols, 4);
      const deq = new Float32Array(cols);
      for (const [r0, r1] of [
        [0, rows],
        [4, 8],
      ] as const) {
        const y = new Float32Array(n * rows).fill(NaN);
        matmul(m, x, 0, cols, n, y, 0, rows, r0, r1, null);
        for (let r = 0; r < rows; r++) {
          dequantizeRow(m, r, deq);
          for (let t = 0; t < n; t++) {
            if (r < r0 || r >= r1) {
              expect(y[t * rows + r]).toBeNaN();
              continue;
            }
            let ref = 0,
              mag = 0;
            for (let k = 0; k < cols; k++) {
              ref += deq[k] * x[t * cols + k];
              mag += Math.abs(deq[k] * x[t * cols + k]);
            }
            expect(Math.abs(y[t * rows + r] - ref)).toBeLessThanOrEqual(mag * 1e-6 + 1e-9);
          }
        }
      }
    });
  }

  /** A q4_0 matrix [2, 32 * nibRows[0].length / 32] from explicit nibbles (0..15), scales 1. */
  function q4FromNibbles(nib0: number[], nib1: number[]): Matrix {
    const cols = nib0.length,
      blocks = cols / QBLOCK;
    const m = allocQuantizedMatrix(Q4_0, 2, cols);
    m.scales.fill(1);
    for (let b = 0; b < blocks; b++) {
      for (let j = 0; j < 8; j++) {
        let word = 0;
        for (let c = 0; c < 4; c++) {
          const k = b * QBLOCK + 4 * j + c;
          word |= (nib0[k] << (4 * c)) | (nib1[k] << (16 + 4 * c));
        }
        m.q[b * 8 + j] = word;
      }
    }
    return m;
  }

  it('q4_0 SWAR lanes stay exact at the extremes (nibbles 15/0, activations +-127)', () => {
    const cols = 64;
    const all = (v: number) => new Array<number>(cols).fill(v);
    const pattern = (f: (k: number) => number) => Array.from({ length: cols }, (_, k) => f(k));
    const nibbleCases: [string, number[], number[]][] = [
      ['both 15', all(15), all(15)],
      ['both 0', all(0), all(0)],
      ['15 / 0', all(15), all(0)],
      ['0 / 15', all(0), all(15)],
      ['halves split', pattern((k) => (k % 16 < 8 ? 15 : 0)), pattern((k) => (k % 16 < 8 ? 0 : 15))],
      ['alternating', pattern((k) => (k & 1 ? 15 : 0)), pattern((k) => (k & 1 ? 0 : 15))],
    ];
    const xCases: [string, number[]][] = [
      ['+127', all(127)],
      ['-127', all(-127)],
      ['halves +-', pattern((k) => (k % 16 < 8 ? 127 : -127))],
      ['alternating', pattern((k) => (k & 1 ? -127 : 127))],
      ['block signs', pattern((k) => (k < 32 ? -127 : 127))],
    ];
    for (const [nname, nib0, nib1] of nibbleCases) {
      const m = q4FromNibbles(nib0, nib1);
      for (const [xname, xs] of xCases) {
        const x = Float32Array.from(xs);
        const xq = quantizeX(x, 0, cols, 1, cols);
        expect(Array.from(xq.q)).toEqual(xs); // scale 1: the activations are the int8 values themselves
        const y = new Float32Array(2).fill(NaN);
        matmul(m, x, 0, cols, 1, y, 0, 2, 0, 2, xq);
        let want0 = 0,
          want1 = 0;
        for (let k = 0; k < cols; k++) {
          want0 += (nib0[k] - 8) * xs[k];
          want1 += (nib1[k] - 8) * xs[k];
        }
        expect([y[0], y[1]], `${nname}, x ${xname}`).toEqual([want0, want1]);
        // 9 tokens with these activations fill all three float64 lanes of three groups (lanes.ts)
        // at their extremes: lane sums of +-32512 against the 2^15 they must stay below.
        const n = 9;
        const x9 = new Float32Array(n * cols);
        for (let t = 0; t < n; t++) x9.set(x, t * cols);
        const y9 = new Float32Array(2 * n).fill(NaN);
        matmul(m, x9, 0, cols, n, y9, 0, 2, 0, 2, quantizeX(x9, 0, cols, n, cols));
        for (let t = 0; t < n; t++)
          expect([y9[2 * t], y9[2 * t + 1]], `${nname}, x ${xname}, 9 tokens, t=${t}`).toEqual([want0, want1]);
      }
    }
  });

  it('float64 lanes repack when the same activation buffer is quantized again (lanes.ts caches the packing)', () => {
    const rand = mulberry32(306);
    const rows = 8,
      cols = 64,
      n = 9;
    for (const format of [Q4_0, Q8_0]) {
      const m = quantizeMatrix(format, randomF32(rand, rows * cols, 1), rows, cols);
      const xs = [0, 1, 2].map(() => randomF32(rand, n * cols, 2));
      // Expected outputs first, each from its own activation buffer.
      const want = xs.map((x) => {
        const y = new Float32Array(n * rows).fill(NaN);
        matmul(m, x, 0, cols, n, y, 0, rows, 0, rows, quantizeX(x, 0, cols, n, cols));
        return Array.from(y);
      });
      // Then one buffer quantized again for each: no call with another buffer in between.
      const xq = allocQuantizedActivations(n, cols, false);
      for (let round = 0; round < 3; round++) {
        quantizeActivations(xs[round], 0, cols, 0, n, xq);
        const y = new Float32Array(n * rows).fill(NaN);
        matmul(m, xs[round], 0, cols, n, y, 0, rows, 0, 4, xq);
        matmul(m, xs[round], 0, cols, n, y, 0, rows, 4, rows, xq); // a second chunk reuses the packing
        expect(Array.from(y), `format ${format} round ${round}`).toEqual(want[round]);
      }
    }
  });

  it('batch invariance: every token of a 1..12-token call gets the bits of a one-token call (q4_0, q8_0)', () => {
    // 2..9 tokens run the few-token lanes kernels (q4_0.ts, q8_0.ts), 10+ the panel lanes, 1 the
    // integer kernels; speculation needs a row's result independent of how many rows share the step.
    const rand = mulberry32(307);
    const rows = 22, // 5 quads and a pair left over for the integer kernel
      cols = 96;
    for (const format of [Q4_0, Q8_0]) {
      const m = quantizeMatrix(format, randomF32(rand, rows * cols, 1), rows, cols);
      const maxN = 12;
      const x = randomF32(rand, maxN * cols, 3);
      // A few blocks at the int8 extremes (+-127 after quantizing).
      for (let k = 0; k < QBLOCK; k++) x[(k & 1) * cols + k] = k & 2 ? 1e3 : -1e3;
      const alone = new Float32Array(maxN * rows).fill(NaN);
      for (let t = 0; t < maxN; t++) {
        const xt = x.subarray(t * cols, (t + 1) * cols);
        matmul(m, xt, 0, cols, 1, alone, t * rows, rows, 0, rows, quantizeX(xt, 0, cols, 1, cols));
      }
      for (let n = 1; n <= maxN; n++) {
        const xq = quantizeX(x, 0, cols, n, cols);
        const y = new Float32Array(n * rows).fill(NaN);
        // Row slices as two threads claim them.
        matmul(m, x, 0, cols, n, y, 0, rows, 0, 8, xq);
        matmul(m, x, 0, cols, n, y, 0, rows, 8, rows, xq);
        const bad = firstFailure(n * rows, (i) => (Object.is(y[i], alone[i]) ? null : `${y[i]} != ${alone[i]}`));
        expect(bad, `format ${format}, n = ${n} (token ${Math.floor(Number(bad?.split(':')[0]) / rows)})`).toBeNull();
      }
    }
  });

  it('q4_0 and q8_0 integer sums are exact on random nibbles/bytes with random +-127-range activations', () => {
    const rand = mulberry32(305);
    const rows = 6,
      cols = 128;
    // n = 3: the integer kernels; n = 9: float64 lanes for both formats.
    for (let trial = 0; trial < 20; trial++) {
      const n = trial % 2 === 0 ? 3 : 9;
      // q4_0 from raw nibbles, all scales 1.
      const nibs: number[][] = [];
      for (let r = 0; r < rows; r++) nibs.push(Array.from({ length: cols }, () => Math.floor(rand() * 16)));
      const m4 = allocQuantizedMatrix(Q4_0, rows, cols);
      m4.scales.fill(1);
      for (let p = 0; p < rows / 2; p++) {
        const pair = q4FromNibbles(nibs[2 * p], nibs[2 * p + 1]);
        m4.q.set(pair.q, p * (cols / QBLOCK) * 8);
      }
      // q8_0 from raw bytes (including -128, which the kernel must also handle), all scales 1.
      const m8 = allocQuantizedMatrix(Q8_0, rows, cols);
      m8.scales.fill(1);
      const bytes = new Int8Array(m8.q.buffer);
      for (let i = 0; i < bytes.length; i++)
        bytes[i] = trial < 2 ? (i & 1 ? -128 : 127) : Math.floor(rand() * 256) - 128;
      // Activations: integers with one +-127 per block so the activation scale is exactly 1.
      const x = new Float32Array(n * cols);
      for (let i = 0; i < x.length; i++)
        x[i] = i % QBLOCK === 0 ? (rand() < 0.5 ? 127 : -127) : Math.round((2 * rand() - 1) * 127);
      const xq = quantizeX(x, 0, cols, n, cols);
      expect(Array.from(xq.scales).every((d) => d === 1)).toBe(true);
      for (const m of [m4, m8]) {
        const y = new Float32Array(n * rows).fill(NaN);
        matmul(m, x, 0, cols, n, y, 0, rows, 0, rows, xq);
        for (let t = 0; t < n; t++) {
          for (let r = 0; r < rows; r++) {
            let want = 0;
            for (let k = 0; k < cols; k++) {
              const wq = m.format === Q4_0 ? nibs[r][k] - 8 : bytes[r * cols + k];
              want += wq * x[t * cols + k];
            }
            expect(y[t * rows + r], `trial ${trial} fmt ${m.format} t=${t} r=${r}`).toBe(want);
          }
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('readRow', () => {
  it('returns the dequantized row for every format, at an offset, touching nothing else', () => {
    const rand = mulberry32(401);
    const rows = 6,
      cols = 64;
    const w = randomF32(rand, rows * cols);
    const u16 = new Uint16Array(rows * cols);
    for (let i = 0; i < u16.length; i++) u16[i] = f32ToBf16(w[i]);
    const mats: [string, Matrix, (r: number, k: number) => number][] = [
      ['f32', makeMatrix(F32, rows, cols, { f32: w }), (r, k) => w[r * cols + k]],
      ['bf16', makeMatrix(BF16, rows, cols, { u16 }), (r, k) => bf16ToF32(u16[r * cols + k])],
    ];
    for (const format of [Q8_0, Q4_0]) {
      const m = quantizeMatrix(format, w, rows, cols);
      mats.push([
        format === Q8_0 ? 'q8_0' : 'q4_0',
        m,
        (r, k) => Math.fround(quantWeight(m, r, k) * m.scales[r * (cols / QBLOCK) + Math.floor(k / QBLOCK)]),
      ]);
    }
    for (const [name, m, ref] of mats) {
      for (let r = 0; r < rows; r++) {
        const out = new Float32Array(cols + 10).fill(NaN);
        readRow(m, r, out, 3);
        for (let i = 0; i < out.length; i++) {
          const k = i - 3;
          if (k >= 0 && k < cols) expect(out[i], `${name} r=${r} k=${k}`).toBe(ref(r, k));
          else expect(Number.isNaN(out[i]), `${name} r=${r}: out[${i}] written`).toBe(true);
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('elementwise ops', () => {
  it('rmsnorm matches x / sqrt(mean(x^2) + eps) * w in float64', () => {
    const rand = mulberry32(501);
    const n = 37,
      eps = 1e-6;
    const x = randomF32(rand, n + 4, 5);
    const w = randomF32(rand, n, 2);
    const out = new Float32Array(n + 6).fill(NaN);
    rmsnorm(out, 2, x, 4, w, n, eps);
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[4 + i] ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++)
      expect(Math.abs(out[2 + i] - x[4 + i] * inv * w[i])).toBeLessThanOrEqual(
        1e-6 * (1 + Math.abs(x[4 + i] * inv * w[i])),
      );
    expect(Number.isNaN(out[0]) && Number.isNaN(out[1]) && Number.isNaN(out[n + 2])).toBe(true);
    // eps matters for tiny inputs and keeps an all-zero vector finite.
    const tiny = new Float32Array([1e-4, -1e-4, 1e-4, -1e-4]);
    const o = new Float32Array(4);
    rmsnorm(o, 0, tiny, 0, new Float32Array([1, 1, 1, 1]), 4, 1e-6);
    expect(o[0]).toBeCloseTo(1e-4 / Math.sqrt(1e-8 + 1e-6), 6);
    rmsnorm(o, 0, new Float32Array(4), 0, new Float32Array([1, 1, 1, 1]), 4, 1e-6);
    expect(Array.from(o)).toEqual([0, 0, 0, 0]);
    // In-place use (out === x) is allowed.
    const same = Float32Array.from([3, 4]);
    rmsnorm(same, 0, same, 0, Float32Array.from([1, 2]), 2, 0);
    const rms = Math.sqrt(12.5);
    expect(same[0]).toBeCloseTo(3 / rms, 6);
    expect(same[1]).toBeCloseTo((4 / rms) * 2, 6);
  });

  it('ropeTables: cos/sin of p / theta^(2j/d), exact at position 0', () => {
    const { cos, sin } = ropeTables(50, 8, 10000);
    expect(cos.length).toBe(50 * 4);
    for (let j = 0; j < 4; j++) {
      expect(cos[j]).toBe(1);
      expect(sin[j]).toBe(0);
    }
    // Hand values: d = 8 -> inverse frequencies 1, 0.1, 0.01, 0.001.
    const inv = [1, 0.1, 0.01, 0.001];
    for (const p of [1, 7, 49]) {
      for (let j = 0; j < 4; j++) {
        expect(Math.abs(cos[p * 4 + j] - Math.cos(p * inv[j]))).toBeLessThanOrEqual(1e-6);
        expect(Math.abs(sin[p * 4 + j] - Math.sin(p * inv[j]))).toBeLessThanOrEqual(1e-6);
      }
    }
    expect(cos[1 * 4 + 0]).toBeCloseTo(0.5403023058681398, 6);
    expect(sin[7 * 4 + 2]).toBeCloseTo(Math.sin(0.07), 7);
    // Long positions keep f64 angle precision: 100000 rad for j = 0.
    const big = ropeTables(100001, 2, 10000);
    expect(Math.abs(big.cos[100000] - Math.cos(100000))).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(big.sin[100000] - Math.sin(100000))).toBeLessThanOrEqual(1e-6);
  });

  it('rope: position 0 is the identity; each (j, j + d/2) pair keeps its norm', () => {
    const rand = mulberry32(502);
    const headDim = 16,
      heads = 3,
      half = 8;
    const { cos, sin } = ropeTables(40, headDim, 1_000_000);
    const x0 = randomF32(rand, 5 + heads * headDim);
    const x = x0.slice();
    rope(x, 5, heads, headDim, cos, sin, 0);
    expect(Array.from(x)).toEqual(Array.from(x0));
    for (const pos of [1, 17, 39]) {
      const y = x0.slice();
      rope(y, 5, heads, headDim, cos, sin, pos * half);
      expect(Array.from(y.subarray(0, 5))).toEqual(Array.from(x0.subarray(0, 5)));
      for (let h = 0; h < heads; h++) {
        for (let j = 0; j < half; j++) {
          const a = 5 + h * headDim + j,
            b = a + half;
          const n0 = Math.hypot(x0[a], x0[b]),
            n1 = Math.hypot(y[a], y[b]);
          expect(Math.abs(n1 - n0)).toBeLessThanOrEqual(1e-6 * (1 + n0));
        }
      }
      // Rotating q and k by the same position is a rotation of both: q(p)·k(p) = q(0)·k(0).
      const k0 = randomF32(rand, heads * headDim);
      const k = k0.slice();
      rope(k, 0, heads, headDim, cos, sin, pos * half);
      let dot0 = 0,
        dot1 = 0;
      for (let i = 0; i < headDim; i++) {
        dot0 += x0[5 + i] * k0[i];
        dot1 += y[5 + i] * k[i];
      }
      expect(Math.abs(dot1 - dot0)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('rope: hand-computed 4-dim example at position 1, theta 10000 (rotate-half layout)', () => {
    const { cos, sin } = ropeTables(2, 4, 10000);
    const x = Float32Array.from([1, 2, 3, 4]);
    rope(x, 0, 1, 4, cos, sin, 2);
    // Pairs (x0, x2) rotate by 1 rad, (x1, x3) by 0.01 rad:
    // x0' = 1 cos1 - 3 sin1, x2' = 3 cos1 + 1 sin1, x1' = 2 cos.01 - 4 sin.01, x3' = 4 cos.01 + 2 sin.01.
    const want = [-1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994];
    for (let i = 0; i < 4; i++) expect(Math.abs(x[i] - want[i])).toBeLessThanOrEqual(1e-6);
  });

  it('softmax sums to 1, matches exp/sum, and survives large and -Infinity inputs', () => {
    const rand = mulberry32(503);
    const n = 29;
    const x = randomF32(rand, n + 3, 6);
    const orig = Array.from(x);
    softmax(x, 2, n);
    let sum = 0,
      z = 0;
    for (let i = 0; i < n; i++) z += Math.exp(orig[2 + i]);
    for (let i = 0; i < n; i++) {
      sum += x[2 + i];
      expect(Math.abs(x[2 + i] - Math.exp(orig[2 + i]) / z)).toBeLessThanOrEqual(
        1e-6 * (Math.exp(orig[2 + i]) / z) + 1e-9,
      );
    }
    expect(Math.abs(sum - 1)).toBeLessThanOrEqual(1e-6);
    expect([x[0], x[1], x[n + 2]]).toEqual([orig[0], orig[1], orig[n + 2]]);

    const big = Float64Array.from([1000, 1001]);
    softmax(big, 0, 2);
    expect(big[0]).toBeCloseTo(1 / (1 + Math.E), 12);
    expect(big[1]).toBeCloseTo(Math.E / (1 + Math.E), 12);
    const huge = Float32Array.from([-1e30, 3e38, 3e38]);
    softmax(huge, 0, 3);
    expect(Array.from(huge)).toEqual([0, 0.5, 0.5]);
    const masked = Float32Array.from([-Infinity, 0, -Infinity, 0]);
    softmax(masked, 0, 4);
    expect(Array.from(masked)).toEqual([0, 0.5, 0, 0.5]);
    const one = Float32Array.from([-123.5]);
    softmax(one, 0, 1);
    expect(one[0]).toBe(1);
  });

  it('swiglu computes silu(g) * u = g / (1 + e^-g) * u, finite at +-1000', () => {
    const rand = mulberry32(504);
    const n = 23;
    const g = randomF32(rand, n + 2, 8);
    const u = randomF32(rand, n + 1, 3);
    const g0 = Array.from(g);
    swiglu(g, 2, u, 1, n);
    for (let i = 0; i < n; i++) {
      const gv = g0[2 + i];
      const want = (gv / (1 + Math.exp(-gv))) * u[1 + i];
      expect(Math.abs(g[2 + i] - want)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(want)));
    }
    expect([g[0], g[1]]).toEqual([g0[0], g0[1]]);
    const ext = Float32Array.from([1000, -1000, 0]);
    swiglu(ext, 0, Float32Array.from([2, 2, 2]), 0, 3);
    expect(ext[0]).toBe(2000);
    expect(Math.abs(ext[1])).toBe(0);
    expect(ext[2]).toBe(0);
  });

  it('addInPlace adds a window', () => {
    const x = Float32Array.from([1, 2, 3, 4]);
    addInPlace(x, 1, Float32Array.from([10, 20, 30, 40]), 2, 2);
    expect(Array.from(x)).toEqual([1, 32, 43, 4]);
  });
});

// ---------------------------------------------------------------------------------------------

// headDim 8 is the main case; 6 also runs the kernel's scalar tail (headDim not a multiple of 4).
describe.each([8, 6])('attendRows (one row, one head per kv head) over a paged KV cache (headDim %i)', (headDim) => {
  const blockSize = 4,
    kvHeads = 2,
    numBlocks = 5;
  // Logical block i of the sequence lives in physical block table[2 + i]; entries 0, 1 are
  // another sequence's (tableOff = 2). Physical blocks 1 and 4 are not ours and hold NaN.
  const table = Int32Array.from([4, 1, 3, 0, 2, 1]);
  const tableOff = 2;

  function buildCache(
    rand: () => number,
    len: number,
  ): {
    k: Float32Array;
    v: Float32Array;
    kAt: (h: number, t: number, d: number) => number;
    vAt: (h: number, t: number, d: number) => number;
  } {
    const size = numBlocks * kvHeads * blockSize * headDim;
    const k = new Float32Array(size).fill(NaN);
    const v = new Float32Array(size).fill(NaN);
    const at = (h: number, t: number, d: number) =>
      ((table[tableOff + Math.floor(t / blockSize)] * kvHeads + h) * blockSize + (t % blockSize)) * headDim + d;
    for (let h = 0; h < kvHeads; h++) {
      for (let t = 0; t < len; t++) {
        for (let d = 0; d < headDim; d++) {
          k[at(h, t, d)] = (2 * rand() - 1) * 2;
          v[at(h, t, d)] = 2 * rand() - 1;
        }
      }
    }
    return { k, v, kAt: (h, t, d) => k[at(h, t, d)], vAt: (h, t, d) => v[at(h, t, d)] };
  }

  /** out[qOff + kvHead*headDim ..] = attention of q's head kvHead (group 1) over positions 0..len-1. */
  function attend(
    q: Float32Array,
    qOff: number,
    k: Float32Array,
    v: Float32Array,
    kvHead: number,
    len: number,
    out: Float32Array,
  ) {
    const kv: PagedKv = {
      format: KV_F32,
      k,
      v,
      k32: null,
      v32: null,
      kScale: null,
      vScale: null,
      group: 32,
      blockTables: table,
      kvHeads,
      headDim,
      blockSize,
    };
    const scratch = allocAttentionScratch(1, blockSize, headDim);
    attendRows(out, q, qOff, kvHeads * headDim, 1, len - 1, kv, tableOff, kvHead, 1, 1 / Math.sqrt(headDim), scratch);
  }

  it('matches naive float64 causal attention for len 1, 5, 11 on both kv heads', () => {
    const rand = mulberry32(600 + headDim);
    for (const len of [1, 5, 11]) {
      const { k, v, kAt, vAt } = buildCache(rand, len);
      for (let kvHead = 0; kvHead < kvHeads; kvHead++) {
        const q = randomF32(rand, 3 + kvHeads * headDim, 2);
        const out = new Float32Array(kvHeads * headDim + 4).fill(NaN);
        attend(q, 3, k, v, kvHead, len, out);
        const o = 3 + kvHead * headDim; // where this head's output goes
        const s = new Float64Array(len);
        let mx = -Infinity;
        for (let t = 0; t < len; t++) {
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[o + d] * kAt(kvHead, t, d);
          s[t] = dot / Math.sqrt(headDim);
          mx = Math.max(mx, s[t]);
        }
        let z = 0;
        for (let t = 0; t < len; t++) z += s[t] = Math.exp(s[t] - mx);
        for (let d = 0; d < headDim; d++) {
          let want = 0;
          for (let t = 0; t < len; t++) want += (s[t] / z) * vAt(kvHead, t, d);
          expect(Math.abs(out[o + d] - want), `len=${len} head=${kvHead} d=${d}`).toBeLessThanOrEqual(
            1e-5 * (1 + Math.abs(want)),
          );
        }
        // Nothing outside this head's output is written (the other sequence's NaN blocks are never read).
        for (let i = 0; i < out.length; i++) if (i < o || i >= o + headDim) expect(Number.isNaN(out[i])).toBe(true);
      }
    }
  });

  it('a single position returns its value vector exactly', () => {
    const rand = mulberry32(700 + headDim);
    const { k, v, vAt } = buildCache(rand, 1);
    for (let kvHead = 0; kvHead < kvHeads; kvHead++) {
      const q = randomF32(rand, kvHeads * headDim, 50);
      const out = new Float32Array(kvHeads * headDim);
      attend(q, 0, k, v, kvHead, 1, out);
      for (let d = 0; d < headDim; d++) expect(out[kvHead * headDim + d]).toBe(vAt(kvHead, 0, d));
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('splitRange', () => {
  it('parts tile [0, n) in order, without overlap, with aligned inner boundaries and balanced sizes', () => {
    let cases = 0;
    for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 31, 33, 100, 896, 4863, 151936]) {
      for (const parts of [1, 2, 3, 4, 5, 7, 8, 16]) {
        for (const align of [1, 2, 4, 32]) {
          let prev = 0;
          const units = Math.ceil(n / align);
          for (let p = 0; p < parts; p++) {
            const [s, e] = splitRange(n, p, parts, align);
            const ctx = `n=${n} parts=${parts} align=${align} part=${p}: [${s}, ${e})`;
            expect(s, ctx).toBe(prev);
            expect(e, ctx).toBeGreaterThanOrEqual(s);
            expect(e, ctx).toBeLessThanOrEqual(n);
            expect(s % align === 0 || s === n, ctx).toBe(true);
            expect(e % align === 0 || e === n, ctx).toBe(true);
            expect(e - s, ctx).toBeLessThanOrEqual(Math.ceil(units / parts) * align);
            if (units >= parts) expect(e - s, ctx).toBeGreaterThan(0); // nobody idles when there is work for all
            prev = e;
          }
          expect(prev, `n=${n} parts=${parts} align=${align}`).toBe(n);
          cases++;
        }
      }
    }
    expect(cases).toBe(14 * 8 * 4);
  });
});

describe('claimRows (guided self-scheduling)', () => {
  it('claims tile [0, total) in order, aligned, at least minRows (but the last), in few claims', () => {
    const rand = mulberry32(77);
    let cases = 0;
    for (const total of [0, 1, 5, 12, 13, 128, 896, 4864, 151936]) {
      for (const parts of [1, 2, 3, 8]) {
        for (const [minRows, align] of [
          [1, 1],
          [12, 12],
          [36, 12],
        ] as const) {
          const work = new Int32Array(8);
          const counter = 3;
          let next = 0,
            claims = 0;
          // Threads claim in a random interleaving; the chunks still come out in order.
          for (;;) {
            const part = Math.floor(rand() * parts);
            const start = claimRows(work, counter, total, minRows, align, parts, part);
            if (start >= total) break;
            const end = claimedEnd();
            const ctx = `total=${total} parts=${parts} min=${minRows} align=${align} part=${part}: [${start}, ${end})`;
            expect(start, ctx).toBe(next);
            expect(start % align, ctx).toBe(0);
            expect(end, ctx).toBeLessThanOrEqual(total);
            expect(end - start >= minRows || end === total, ctx).toBe(true);
            expect(end % align === 0 || end === total, ctx).toBe(true);
            next = end;
            claims++;
          }
          expect(next, `total=${total}`).toBe(total);
          expect(work[counter]).toBe(total);
          // A chunk is at least 1/(2 parts) of what is left (or minRows): O(parts log(total / minRows)) claims.
          const bound = Math.ceil(2 * parts * Math.log(Math.max(2, total / minRows)) + 2 * parts + 1);
          expect(claims, `total=${total} parts=${parts} min=${minRows}`).toBeLessThanOrEqual(bound);
          expect(work.filter((v, i) => i !== counter && v !== 0).length).toBe(0); // other counters untouched
          cases++;
        }
      }
    }
    expect(cases).toBe(9 * 4 * 3);
  });
});
