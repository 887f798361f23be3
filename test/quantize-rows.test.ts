// The weight quantizers (quantizeRowsQ8_0 / Q4_0) find block maxima with integer tricks; they
// must give exactly the bits of the plain float loops below (llama.cpp's definitions), on real-
// looking weights and on the values where the tricks could slip: NaN, infinities, signed zeros,
// subnormals, and ties between +max and -max.
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../src/model/synthetic.js';
import { bf16ArrayToF32, bf16ToF32, f32ArrayToBf16, f32ToBf16 } from '../src/tensor/dtype.js';
import { makeMatrix, Q4_0, Q8_0, QBLOCK, type Matrix } from '../src/tensor/matrix.js';
import { quantizeBf16RowsQ4_0, quantizeRowsQ4_0 } from '../src/tensor/formats/q4_0.js';
import { quantizeBf16RowsQ8_0, quantizeRowsQ8_0 } from '../src/tensor/formats/q8_0.js';
import { allocQuantizedMatrix } from '../src/tensor/matmul.js';

/** A NaN (from an Inf or NaN weight) becomes 0, as JavaScript's `| 0` makes it. */
const toInt = (x: number) => (Number.isNaN(x) ? 0 : x);

/** q8_0 by definition: d = max|w| / 127 (NaN skipped), q = round(w / d). */
function q8Reference(w: Float32Array, rows: number, cols: number): Matrix {
  const blocks = cols / QBLOCK;
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows * blocks);
  for (let blk = 0; blk < rows * blocks; blk++) {
    let amax = 0;
    for (let i = 0; i < QBLOCK; i++) if (Math.abs(w[blk * QBLOCK + i]) > amax) amax = Math.abs(w[blk * QBLOCK + i]);
    const d = amax / 127;
    const id = d === 0 ? 0 : 1 / d;
    scales[blk] = d;
    for (let i = 0; i < QBLOCK; i++) q[blk * QBLOCK + i] = toInt(Math.floor(w[blk * QBLOCK + i] * id + 128.5)) - 128;
  }
  return makeMatrix(Q8_0, rows, cols, { q: new Int32Array(q.buffer), scales });
}

/** q4_0 by definition: d = (first value of largest magnitude) / -8, nibble = min(15, round(w / d) + 8). */
function q4Reference(w: Float32Array, rows: number, cols: number): Matrix {
  const blocks = cols / QBLOCK;
  const scales = new Float32Array(rows * blocks);
  const q = new Int32Array((rows * cols) / 8);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const o = r * cols + b * QBLOCK;
      let amax = 0;
      let max = 0;
      for (let i = 0; i < QBLOCK; i++) {
        if (Math.abs(w[o + i]) > amax) {
          amax = Math.abs(w[o + i]);
          max = w[o + i];
        }
      }
      const d = max / -8;
      const id = d === 0 ? 0 : 1 / d;
      scales[r * blocks + b] = d;
      for (let i = 0; i < QBLOCK; i++) {
        const nibble = Math.min(15, toInt(Math.floor(w[o + i] * id + 8.5)));
        // Word j of the block holds columns 4j..4j+3 of the row pair: even row low, odd row high.
        const word = ((r >> 1) * blocks + b) * 8 + (i >> 2);
        q[word] |= nibble << (16 * (r & 1) + 4 * (i & 3));
      }
    }
  }
  return makeMatrix(Q4_0, rows, cols, { q, scales });
}

/** Rows of weights, each 32-block of one kind: random, or built around one hard case. */
function hardWeights(rows: number, cols: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const w = new Float32Array(rows * cols);
  const specials = [0, -0, NaN, Infinity, -Infinity, 1e-40, -1e-40, 2 ** -149, -(2 ** -149), 3.4e38, -3.4e38];
  for (let blk = 0; blk < (rows * cols) / QBLOCK; blk++) {
    for (let i = 0; i < QBLOCK; i++) {
      const k = blk * QBLOCK + i;
      const u = rand();
      switch (blk % 10) {
        case 0: // all zero, with negative zeros
          w[k] = u < 0.5 ? -0 : 0;
          break;
        case 1: // all NaN
          w[k] = NaN;
          break;
        case 2: // a few NaN among random values
          w[k] = i % 7 === 3 ? NaN : u - 0.5;
          break;
        case 3: // +max and -max tie: the first one decides the sign of q4_0's scale
          w[k] = u < 0.5 ? 0.5 : -0.5;
          break;
        case 4: // specials sprinkled into random values
          w[k] = u < 0.2 ? specials[Math.floor(rand() * specials.length)] : u - 0.5;
          break;
        case 5: // subnormals only
          w[k] = (u - 0.5) * 2 ** -140;
          break;
        case 6: // bf16 values: coarse, so equal magnitudes are common
          w[k] = bf16ToF32(f32ToBf16(u - 0.5));
          break;
        default:
          w[k] = (u - 0.5) * 0.2;
      }
    }
  }
  return w;
}

const bytesOf = (a: Int32Array | Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('weight quantizers against their plain-loop definitions', () => {
  const rows = 20;
  const cols = 160;
  for (const [name, format, quantize, reference] of [
    ['q8_0', Q8_0, quantizeRowsQ8_0, q8Reference],
    ['q4_0', Q4_0, quantizeRowsQ4_0, q4Reference],
  ] as const) {
    it(`${name}: the same bits on random and hard values, in one call and in row chunks`, () => {
      for (const seed of [1, 2, 3]) {
        const w = hardWeights(rows, cols, seed);
        const want = reference(w, rows, cols);
        const whole = allocQuantizedMatrix(format, rows, cols);
        quantize(w, 0, rows, whole);
        expect(bytesOf(whole.scales).equals(bytesOf(want.scales)), `seed ${seed} scales`).toBe(true);
        expect(bytesOf(whole.q).equals(bytesOf(want.q)), `seed ${seed} values`).toBe(true);
        // Chunks at an offset into a larger buffer: the integer view must follow the byteOffset.
        const parts = allocQuantizedMatrix(format, rows, cols);
        const padded = new Float32Array(8 + rows * cols);
        padded.set(w, 8);
        quantize(padded.subarray(8, 8 + 6 * cols), 0, 6, parts);
        quantize(padded.subarray(8 + 6 * cols), 6, rows - 6, parts);
        expect(bytesOf(parts.q).equals(bytesOf(want.q))).toBe(true);
        expect(bytesOf(parts.scales).equals(bytesOf(want.scales))).toBe(true);
      }
    });
  }
});

describe('quantizing straight from bf16', () => {
  it('quantizeBf16Rows* give the bits of widening to f32 then quantizeRows*', () => {
    const rows = 20;
    const cols = 160;
    for (const seed of [1, 2, 3]) {
      // Every hard case as bf16 (NaN, Inf, zeros, subnormals, ties), and raw random bit patterns.
      const f32 = hardWeights(rows, cols, seed);
      const bf16 = Uint16Array.from(f32, f32ToBf16);
      const rand = mulberry32(seed);
      for (let i = 0; i < 2 * cols; i++) bf16[i] = Math.floor(rand() * 0x10000);
      const wide = new Float32Array(rows * cols);
      bf16ArrayToF32(bf16, 0, wide, 0, rows * cols);
      for (const [format, viaF32, direct] of [
        [Q8_0, quantizeRowsQ8_0, quantizeBf16RowsQ8_0],
        [Q4_0, quantizeRowsQ4_0, quantizeBf16RowsQ4_0],
      ] as const) {
        const want = allocQuantizedMatrix(format, rows, cols);
        viaF32(wide, 0, rows, want);
        const got = allocQuantizedMatrix(format, rows, cols);
        direct(bf16.subarray(0, 4 * cols), 0, 4, got); // in two calls: rows [0, 4) and [4, rows)
        direct(bf16.subarray(4 * cols), 4, rows - 4, got);
        expect(bytesOf(got.scales).equals(bytesOf(want.scales)), `format ${format} seed ${seed} scales`).toBe(true);
        expect(bytesOf(got.q).equals(bytesOf(want.q)), `format ${format} seed ${seed} values`).toBe(true);
      }
    }
  });
});

describe('bf16 array conversions', () => {
  it('bf16ArrayToF32 widens from an odd offset (no 32-bit pairs) and an even one alike', () => {
    const src = Uint16Array.from({ length: 41 }, (_, i) => (i * 2654435761) >>> 16);
    for (const off of [0, 1]) {
      const out = new Float32Array(40);
      bf16ArrayToF32(src, off, out, 0, 40 - off);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < 40 - off; i++) expect(bits[i]).toBe((src[off + i] << 16) >>> 0);
    }
  });

  it('f32ArrayToBf16 rounds like f32ToBf16 on every kind of value', () => {
    const src = hardWeights(4, 64, 9);
    const out = new Uint16Array(src.length + 2).fill(0xabcd);
    f32ArrayToBf16(src, 0, out, 1, src.length);
    expect(out[0]).toBe(0xabcd);
    expect(out[out.length - 1]).toBe(0xabcd);
    for (let i = 0; i < src.length; i++) expect(out[1 + i], `element ${i}`).toBe(f32ToBf16(src[i]));
  });
});
