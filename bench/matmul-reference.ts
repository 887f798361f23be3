// The matmul kernels as they were before issue 12 (as llm.c keeps its dev/ kernels): the baseline
// that `npm run bench -- --compare-before` and bench/scalar.ts measure the fast kernels against in
// the same run, and a second implementation the kernel tests check. The kernels themselves stay in
// src/tensor/formats where the live path still runs them on the shapes the fast ones leave out
// (indices past 2^30, odd columns, prefill without quantized activations).
//
// f32: 4 weight rows at a time, 8 accumulators for a single token, 4 rows x 4 tokens for prefill.
// bf16 widens on the fly (decode) or in 4-row f32 panels (prefill). q4_0: the SWAR integer kernel at
// every n. q8_0: integers, 2 rows per pass, for decode; 4-row f32 panels for prefill.
import { matmulBf16 } from '../src/tensor/formats/bf16.js';
import { PANEL_MIN_TOKENS, type MatmulKernel } from '../src/tensor/formats/common.js';
import { matmulF32 } from '../src/tensor/formats/f32.js';
import { matmulQ4_0 } from '../src/tensor/formats/q4_0.js';
import { matmulQ8_0, matmulQ8_0Matrix } from '../src/tensor/formats/q8_0.js';
import { BF16, F32, Q4_0, Q8_0 } from '../src/tensor/matrix.js';

export const matmulReference: MatmulKernel = (m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, xq) => {
  switch (m.format) {
    case F32:
      matmulF32(m.f32, m.cols, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case BF16:
      matmulBf16(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1);
      return;
    case Q4_0:
      matmulQ4_0(m, xq!, n, y, yOff, yStride, r0, r1);
      return;
    case Q8_0:
      // Without xq, q8_0's matmul widens 4-row f32 panels (the prefill of before).
      if (n >= PANEL_MIN_TOKENS) matmulQ8_0Matrix(m, x, xOff, xStride, n, y, yOff, yStride, r0, r1, null);
      else matmulQ8_0(m, xq!, n, y, yOff, yStride, r0, r1);
      return;
  }
  throw new Error(`matmulReference: unknown weight format ${m.format}`);
};
