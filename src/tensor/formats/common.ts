// What every format's kernels share: the matmul signature, the index masks that let V8 drop
// overflow checks, the token count from which prefill kernels take over, and the one bit cast JS has.
import type { Matrix } from '../matrix.js';
import type { QuantizedActivations } from './activations.js';

/**
 * Y[t, r] = sum_k W[r, k] * X[t, k] for tokens t < n (rows of x at xOff + t * xStride, of y at
 * yOff + t * yStride) and output rows r0 <= r < r1. xq: x quantized by quantizeActivations, for the
 * formats that multiply in integers (else null).
 */
export type MatmulKernel = (
  m: Matrix,
  x: Float32Array,
  xOff: number,
  xStride: number,
  n: number,
  y: Float32Array,
  yOff: number,
  yStride: number,
  r0: number,
  r1: number,
  xq: QuantizedActivations | null,
) => void;

// Index ranges for V8's typer. Turbofan adds int32 indices with an overflow check (add + jo) unless
// it can prove the sum fits; masking an offset into [0, 2^30) and a column count into [0, 2^29)
// proves `offset + k + 1` < 2^31, so each load loses its add-and-branch. The masks change nothing
// while every index is below 2^30 (each kernel checks that and otherwise runs a plain kernel).
export const OFFSET_MASK = 0x3fffffff;
export const COLS_MASK = 0x1fffffff;

/** From this many tokens on, matmul runs the prefill (register-blocked, several tokens) kernels. */
export const PANEL_MIN_TOKENS = 4;

// Bits become a float through this tiny Int32Array/Float32Array alias (JS has no cheaper bit cast),
// one per thread (each worker has its own module instance).
export const castBits = new Int32Array(8);
export const castFloats = new Float32Array(castBits.buffer);

/** The f32 with bit pattern `bits`. */
export function bitsToF32(bits: number): number {
  castBits[0] = bits;
  return castFloats[0];
}

/**
 * The largest |bits[i] & 0x7fffffff| over the 32-block bits[o, o + 32): over non-NaN f32, |x|
 * orders as its bits without the sign do, so a block's largest magnitude is an integer max,
 * branch-free in four independent lanes (a NaN gives a value above 0x7f800000).
 */
export function blockAbsMaxBits(bits: Int32Array, o: number): number {
  let a0 = 0,
    a1 = 0,
    a2 = 0,
    a3 = 0;
  for (let i = o; i < o + 32; i += 4) {
    const d0 = (bits[i] & 0x7fffffff) - a0;
    const d1 = (bits[i + 1] & 0x7fffffff) - a1;
    const d2 = (bits[i + 2] & 0x7fffffff) - a2;
    const d3 = (bits[i + 3] & 0x7fffffff) - a3;
    a0 += d0 & ~(d0 >> 31); // a0 = max(a0, |bits[i]|)
    a1 += d1 & ~(d1 >> 31);
    a2 += d2 & ~(d2 >> 31);
    a3 += d3 & ~(d3 >> 31);
  }
  const a01 = a0 > a1 ? a0 : a1;
  const a23 = a2 > a3 ? a2 : a3;
  return a01 > a23 ? a01 : a23;
}
