// ggml tensor types (src/tensor/formats/ggml.ts) against fixtures made by ggml itself
// (tools/make_ggml_fixtures.py: ggml_quantize_chunk and to_float of llama.cpp's libggml-base,
// cross-checked there with gguf-py): dequantization and quantization bit for bit, and the Matrix a
// GGUF tensor becomes runs the same values through the kernels.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import {
  dequantizeGgml,
  GGML_TYPE,
  GGML_TYPES,
  ggmlRowBytes,
  ggmlToMatrix,
  quantizeGgml,
  type GgmlTypeName,
} from '../src/tensor/formats/ggml.js';
import { matmul, readRow } from '../src/tensor/matmul.js';

const DIR = path.join(import.meta.dirname, 'fixtures', 'ggml');
const ROWS = 4,
  COLS = 512;
const input = new Float32Array(fs.readFileSync(path.join(DIR, 'input.f32')).buffer.slice(0));

function fixture(name: string): { q: Uint8Array; deq: Float32Array } {
  const q = new Uint8Array(fs.readFileSync(path.join(DIR, `${name}.q`)));
  const deq = new Float32Array(new Uint8Array(fs.readFileSync(path.join(DIR, `${name}.f32`))).buffer);
  return { q, deq };
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const QUANTIZED: GgmlTypeName[] = [
  'F32',
  'F16',
  'BF16',
  'Q8_0',
  'Q4_0',
  'Q4_1',
  'Q5_0',
  'Q5_1',
  'Q4_K',
  'Q5_K',
  'Q6_K',
];

describe('ggml types', () => {
  it('table: block sizes and bytes as ggml.h; row bytes; unknown types named', () => {
    expect(GGML_TYPES.get(GGML_TYPE.Q4_K)).toEqual({ name: 'Q4_K', blockSize: 256, typeSize: 144 });
    expect(GGML_TYPES.get(GGML_TYPE.Q6_K)).toEqual({ name: 'Q6_K', blockSize: 256, typeSize: 210 });
    expect(ggmlRowBytes(GGML_TYPE.Q8_0, 896)).toBe(28 * 34);
    expect(ggmlRowBytes(GGML_TYPE.F16, 896)).toBe(1792);
    expect(() => ggmlRowBytes(GGML_TYPE.Q4_K, 896)).toThrow(
      /Q4_K: a row of 896 values is not a whole number of 256-value blocks/,
    );
    expect(() => ggmlToMatrix(16, new Uint8Array(0), 1, 256)).toThrow(/IQ2_XXS \(16\) is not supported/);
    expect(() => ggmlToMatrix(39, new Uint8Array(0), 1, 32)).toThrow(/MXFP4/);
  });

  for (const [code, info] of GGML_TYPES) {
    it(`${info.name}: dequantizeGgml equals ggml's to_float bit for bit`, () => {
      const { q, deq } = fixture(info.name);
      expect(q.length).toBe(ROWS * ggmlRowBytes(code, COLS));
      const out = new Float32Array(ROWS * COLS);
      dequantizeGgml(code, q, out, ROWS * COLS);
      expect(bits(out)).toEqual(bits(deq));
    });
  }

  for (const name of QUANTIZED) {
    it(`${name}: quantizeGgml equals ggml's reference quantizer byte for byte`, () => {
      const code = GGML_TYPE[name];
      const { q } = fixture(name);
      const out = new Uint8Array(q.length);
      quantizeGgml(code, input, out, ROWS, COLS);
      expect(Array.from(out)).toEqual(Array.from(q));
    });
  }

  for (const [code, info] of GGML_TYPES) {
    it(`${info.name}: ggmlToMatrix keeps the values (readRow) and its matmul is the dequantized product`, () => {
      const { q, deq } = fixture(info.name);
      const m = ggmlToMatrix(code, q, ROWS, COLS);
      const row = new Float32Array(COLS);
      for (let r = 0; r < ROWS; r++) {
        readRow(m, r, row, 0);
        if (info.name === 'F16' || info.name === 'F32')
          expect(bits(row)).toEqual(bits(deq.subarray(r * COLS, (r + 1) * COLS)));
        else expect(bits(row)).toEqual(bits(deq.subarray(r * COLS, (r + 1) * COLS)));
      }
      // Resident bytes within 10% of the file's (Q4_0's f16 scales widen to f32: 20 bytes per 32
      // values against 18, 1.11x).
      const resident = m.f32.byteLength + m.u16.byteLength + m.q.byteLength + m.scales.byteLength + m.u8.byteLength;
      if (info.name === 'Q4_0') expect(resident).toBeLessThanOrEqual((20 / 18) * q.length);
      else expect(resident).toBeLessThanOrEqual(1.1 * q.length);
      // Products with x for n = 1, 2 (decode) and 9 (prefill: lanes), against float64 sums of the
      // dequantized weights times the activations the kernel multiplies: x itself for the formats
      // that widen to f32, x quantized to int8 per 32 (xq * its scale) for the integer ones.
      const integer = m.q.length > 0;
      for (const n of [1, 2, 9]) {
        const x = new Float32Array(n * COLS);
        for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) + 0.25 * Math.cos(i * 1.3);
        const xq = allocQuantizedActivations(n, COLS, false);
        quantizeActivations(x, 0, COLS, 0, n, xq);
        const y = new Float32Array(n * ROWS);
        matmul(m, x, 0, COLS, n, y, 0, ROWS, 0, ROWS, xq);
        for (let t = 0; t < n; t++)
          for (let r = 0; r < ROWS; r++) {
            let exact = 0,
              mag = 0;
            for (let k = 0; k < COLS; k++) {
              const xk = integer ? xq.q[t * COLS + k] * xq.scales[t * (COLS / 32) + (k >> 5)] : x[t * COLS + k];
              exact += deq[r * COLS + k] * xk;
              mag += Math.abs(deq[r * COLS + k] * xk);
            }
            expect(Math.abs(y[t * ROWS + r] - exact)).toBeLessThanOrEqual(1e-5 * mag + 1e-30);
          }
      }
    });
  }

  // The row-pair and lanes kernels: a matrix multiplied in row slices (as threads split it: [0, 2)
  // alone takes the last-pair path) equals the whole bit for bit, and a prefill's rows (n = 9:
  // lanes) equal one-token decodes of the same tokens within float rounding (1e-5 of the sum of
  // |products|: the lanes scale each block's exact integer sum in another order).
  for (const name of ['Q8_0', 'Q4_0', 'Q5_0', 'Q4_K', 'Q5_K', 'Q6_K'] as const) {
    it(`${name}: row slices equal the whole matrix; prefill rows equal decodes`, () => {
      const { q, deq } = fixture(name);
      const m = ggmlToMatrix(GGML_TYPE[name], q, ROWS, COLS);
      const n = 9;
      const x = new Float32Array(n * COLS);
      for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.91) - 0.3 * Math.cos(i * 0.23);
      const xq = allocQuantizedActivations(n, COLS, false);
      quantizeActivations(x, 0, COLS, 0, n, xq);
      const whole = new Float32Array(ROWS),
        sliced = new Float32Array(ROWS);
      matmul(m, x, 0, COLS, 1, whole, 0, ROWS, 0, ROWS, xq);
      matmul(m, x, 0, COLS, 1, sliced, 0, ROWS, 0, 2, xq);
      matmul(m, x, 0, COLS, 1, sliced, 0, ROWS, 2, ROWS, xq);
      expect(bits(sliced)).toEqual(bits(whole));
      const prefill = new Float32Array(n * ROWS);
      matmul(m, x, 0, COLS, n, prefill, 0, ROWS, 0, ROWS, xq);
      for (let t = 0; t < n; t++) {
        const one = new Float32Array(ROWS);
        const xt = allocQuantizedActivations(1, COLS, false);
        quantizeActivations(x, t * COLS, COLS, 0, 1, xt);
        matmul(m, x, t * COLS, COLS, 1, one, 0, ROWS, 0, ROWS, xt);
        for (let r = 0; r < ROWS; r++) {
          let mag = 0;
          for (let k = 0; k < COLS; k++) mag += Math.abs(deq[r * COLS + k] * x[t * COLS + k]);
          expect(Math.abs(prefill[t * ROWS + r] - one[r])).toBeLessThanOrEqual(1e-5 * mag);
        }
      }
    });
  }
});

// Batch invariance of the kernels of Q4_1, Q5_1, Q2_K, Q3_K, IQ4_NL and IQ4_XS: a prefill (n = 9 and 64: the lanes
// where a format has them) gives every token exactly the bits of its one-token decode, since both
// scale each block's exact integer sums by the same float operations in the same order.
describe('ggml kernels: batch invariant bit for bit', () => {
  for (const name of ['Q4_1', 'Q5_1', 'Q2_K', 'Q3_K', 'IQ4_NL', 'IQ4_XS'] as const) {
    it(`${name}: every token of a prefill equals its one-token decode; row slices equal the whole`, () => {
      const { q } = fixture(name);
      const rows = 8;
      // Two copies of the fixture's 4 rows, so that rows4 and the last row pair both run.
      const src = new Uint8Array(2 * q.length);
      src.set(q, 0);
      src.set(q, q.length);
      const m = ggmlToMatrix(GGML_TYPE[name], src, rows, COLS);
      for (const n of [9, 64]) {
        const x = new Float32Array(n * COLS);
        for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.91) - 0.3 * Math.cos(i * 0.23);
        const xq = allocQuantizedActivations(n, COLS, false);
        quantizeActivations(x, 0, COLS, 0, n, xq);
        const prefill = new Float32Array(n * rows);
        matmul(m, x, 0, COLS, n, prefill, 0, rows, 0, rows, xq);
        for (let t = 0; t < n; t++) {
          const xt = allocQuantizedActivations(1, COLS, false);
          quantizeActivations(x, t * COLS, COLS, 0, 1, xt);
          const one = new Float32Array(rows),
            sliced = new Float32Array(rows);
          matmul(m, x, t * COLS, COLS, 1, one, 0, rows, 0, rows, xt);
          matmul(m, x, t * COLS, COLS, 1, sliced, 0, rows, 0, 6, xt);
          matmul(m, x, t * COLS, COLS, 1, sliced, 0, rows, 6, rows, xt);
          expect(bits(prefill.subarray(t * rows, (t + 1) * rows))).toEqual(bits(one));
          expect(bits(sliced)).toEqual(bits(one));
        }
      }
    });
  }
});
