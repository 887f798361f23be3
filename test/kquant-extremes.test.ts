// The SWAR kernels of the GGUF types sum two rows per int32 in 16-bit lanes, split every 8 or 16
// columns: their bounds hold only if every level and activation may be at its extreme. Matrices whose
// levels are all the lowest or all the highest, scales and mins at their largest, times activations
// all +127 or -127 (or alternating), must still equal the dequantized product (decode and prefill).
import { describe, expect, it } from 'vitest';
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { dequantizeGgml, GGML_TYPE, ggmlRowBytes, ggmlToMatrix } from '../src/tensor/formats/ggml.js';
import { matmul } from '../src/tensor/matmul.js';

const ROWS = 6, // one 4-row pass and a last row pair
  COLS = 512;

/** Where each type's f16 scales sit in its block and how many values a block holds. */
const LAYOUT = {
  Q4_K: { values: 256, scales: [0, 2] },
  Q5_K: { values: 256, scales: [0, 2] },
  Q6_K: { values: 256, scales: [208] },
  Q5_0: { values: 32, scales: [0] },
  // Every index 0 (-127) with ls 0 (-32), or every index 15 (113) with ls 63.
  IQ4_XS: { values: 256, scales: [0] },
} as const;

/** Every byte `fill` (levels, packed scales and mins all 0 or all ones), the f16 scales 1.0. */
function extremeBlocks(name: keyof typeof LAYOUT, fill: number): Uint8Array {
  const type = GGML_TYPE[name];
  const bytes = new Uint8Array(ROWS * ggmlRowBytes(type, COLS)).fill(fill);
  const blockBytes = (ggmlRowBytes(type, COLS) * LAYOUT[name].values) / COLS;
  for (let o = 0; o < bytes.length; o += blockBytes)
    for (const s of LAYOUT[name].scales) {
      bytes[o + s] = 0x00;
      bytes[o + s + 1] = 0x3c; // f16 1.0
    }
  if (name === 'Q6_K' && fill === 0)
    // Levels all 0 (-32 after the offset) with the sub-block scales at -128.
    for (let o = 0; o < bytes.length; o += blockBytes) bytes.fill(0x80, o + 192, o + 208);
  return bytes;
}

describe('SWAR lanes at the extremes', () => {
  for (const name of Object.keys(LAYOUT) as (keyof typeof LAYOUT)[])
    for (const fill of [0x00, 0xff])
      for (const pattern of ['+127', '-127', 'alternating'] as const)
        it(`${name}, every byte 0x${fill.toString(16)}, activations ${pattern}`, () => {
          const type = GGML_TYPE[name];
          const bytes = extremeBlocks(name, fill);
          const deq = new Float32Array(ROWS * COLS);
          dequantizeGgml(type, bytes, deq, ROWS * COLS);
          const m = ggmlToMatrix(type, bytes, ROWS, COLS);
          for (const n of [1, 9]) {
            const x = new Float32Array(n * COLS);
            for (let i = 0; i < x.length; i++)
              x[i] = pattern === '+127' ? 1 : pattern === '-127' ? -1 : (i & 1) === 0 ? 1 : -1;
            const xq = allocQuantizedActivations(n, COLS, false);
            quantizeActivations(x, 0, COLS, 0, n, xq);
            const y = new Float32Array(n * ROWS);
            matmul(m, x, 0, COLS, n, y, 0, ROWS, 0, ROWS, xq);
            for (let t = 0; t < n; t++)
              for (let r = 0; r < ROWS; r++) {
                let exact = 0,
                  mag = 0;
                for (let k = 0; k < COLS; k++) {
                  const xk = xq.q[t * COLS + k] * xq.scales[t * (COLS / 32) + (k >> 5)];
                  exact += deq[r * COLS + k] * xk;
                  mag += Math.abs(deq[r * COLS + k] * xk);
                }
                expect(Math.abs(y[t * ROWS + r] - exact)).toBeLessThanOrEqual(1e-5 * mag + 1e-30);
              }
          }
        });
});

describe('Q6_K with an odd row count', () => {
  it('stays in its ggml blocks (the SWAR layout takes row pairs) and multiplies as dequantized', () => {
    const rows = 3,
      cols = 256;
    const bytes = new Uint8Array(rows * ggmlRowBytes(GGML_TYPE.Q6_K, cols));
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff;
    for (let o = 0; o < bytes.length; o += 210) bytes.set([0x00, 0x30], o + 208); // d = 0.125
    const deq = new Float32Array(rows * cols);
    dequantizeGgml(GGML_TYPE.Q6_K, bytes, deq, rows * cols);
    const m = ggmlToMatrix(GGML_TYPE.Q6_K, bytes, rows, cols);
    expect(m.u8.length).toBe(bytes.length);
    const x = new Float32Array(cols).map((_, i) => Math.sin(i));
    const y = new Float32Array(rows);
    matmul(m, x, 0, cols, 1, y, 0, rows, 0, rows, null);
    for (let r = 0; r < rows; r++) {
      let exact = 0,
        mag = 0;
      for (let k = 0; k < cols; k++) {
        exact += deq[r * cols + k] * x[k];
        mag += Math.abs(deq[r * cols + k] * x[k]);
      }
      expect(Math.abs(y[r] - exact)).toBeLessThanOrEqual(1e-5 * mag);
    }
  });
});
