// llama.cpp's reference quantizers (ggml-quants.c's quantize_row_*_ref, what llama-quantize runs
// without an importance matrix), bit for bit: every float operation of the C code is one
// Math.fround here, in the C order (ggml-base is built without FMA contraction), so a GGUF we write
// holds the bytes llama.cpp would. `x` starts at the block's first value xo, the block's bytes go
// to dst[o...]. Layouts: ggml-dequantize.ts.
import { f32ToF16 } from '../dtype.js';
import { f16At, scaleMinK4 } from './ggml-dequantize.js';

const fround = Math.fround;

function putF16(dst: Uint8Array, o: number, v: number): void {
  const h = f32ToF16(v);
  dst[o] = h & 0xff;
  dst[o + 1] = h >> 8;
}

/** ggml's nearest_int: round half to even of a float, through the float add of 1.5 * 2^23. */
function nearestInt(v: number): number {
  return fround(v + 12582912) - 12582912;
}

/** C's (int8_t) of a float in range: truncation toward zero. */
const trunc = Math.trunc;

/** The first value of largest magnitude in x[xo, xo + n) (0 if all are 0). */
function signedAbsMax(x: Float32Array, xo: number, n: number): number {
  let amax = 0,
    max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j];
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

export function quantizeBlockQ8_0(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + j]));
  const d = fround(amax / 127);
  const id = d !== 0 ? fround(1 / d) : 0;
  putF16(dst, o, d);
  for (let j = 0; j < 32; j++) {
    const v = fround(x[xo + j] * id);
    dst[o + 2 + j] = (v < 0 ? -Math.round(-v) : Math.round(v)) & 0xff; // roundf: half away from zero
  }
}

export function quantizeBlockQ4_0(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  const d = fround(signedAbsMax(x, xo, 32) / -8);
  const id = d !== 0 ? fround(1 / d) : 0;
  putF16(dst, o, d);
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(15, trunc(fround(fround(x[xo + j] * id) + 8.5)));
    const q1 = Math.min(15, trunc(fround(fround(x[xo + j + 16] * id) + 8.5)));
    dst[o + 2 + j] = q0 | (q1 << 4);
  }
}

/** The smallest and largest of x[xo, xo + 32). */
function minMax(x: Float32Array, xo: number): [number, number] {
  let min = Infinity,
    max = -Infinity;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

export function quantizeBlockQ4_1(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  const [min, max] = minMax(x, xo);
  const d = fround(fround(max - min) / 15);
  const id = d !== 0 ? fround(1 / d) : 0;
  putF16(dst, o, d);
  putF16(dst, o + 2, min);
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(15, trunc(fround(fround(fround(x[xo + j] - min) * id) + 0.5)));
    const q1 = Math.min(15, trunc(fround(fround(fround(x[xo + j + 16] - min) * id) + 0.5)));
    dst[o + 4 + j] = q0 | (q1 << 4);
  }
}

function putU32(dst: Uint8Array, o: number, v: number): void {
  dst[o] = v & 0xff;
  dst[o + 1] = (v >>> 8) & 0xff;
  dst[o + 2] = (v >>> 16) & 0xff;
  dst[o + 3] = v >>> 24;
}

export function quantizeBlockQ5_0(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  const d = fround(signedAbsMax(x, xo, 32) / -16);
  const id = d !== 0 ? fround(1 / d) : 0;
  putF16(dst, o, d);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(31, trunc(fround(fround(x[xo + j] * id) + 16.5)));
    const q1 = Math.min(31, trunc(fround(fround(x[xo + j + 16] * id) + 16.5)));
    dst[o + 6 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 & 0x10) >> 4) << j;
    qh |= ((q1 & 0x10) >> 4) << (j + 16);
  }
  putU32(dst, o + 2, qh);
}

export function quantizeBlockQ5_1(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  const [min, max] = minMax(x, xo);
  const d = fround(fround(max - min) / 31);
  const id = d !== 0 ? fround(1 / d) : 0;
  putF16(dst, o, d);
  putF16(dst, o + 2, min);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = trunc(fround(fround(fround(x[xo + j] - min) * id) + 0.5)) & 0xff;
    const q1 = trunc(fround(fround(fround(x[xo + j + 16] - min) * id) + 0.5)) & 0xff;
    dst[o + 8 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 & 0x10) >> 4) << j;
    qh |= ((q1 & 0x10) >> 4) << (j + 16);
  }
  putU32(dst, o + 4, qh);
}

// ---- K-quants ----

/**
 * ggml's make_qkx2_quants: the scale and min (returned, min in out[1] as -min) of a sub-block of n
 * values quantized to 0..nmax that minimize the weighted squared error, searching nstep + 1 scales
 * around nmax / (max - min). L receives the levels.
 */
function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  weights: Float32Array,
  L: Uint8Array,
  lo: number,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  out: Float32Array,
): void {
  let min = x[xo],
    max = x[xo];
  let sumW = weights[0];
  let sumX = fround(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i];
    sumW = fround(sumW + w);
    sumX = fround(sumX + fround(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    out[0] = 0;
    out[1] = -min;
    return;
  }
  let iscale = fround(nmax / fround(max - min));
  let scale = fround(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(fround(iscale * fround(x[xo + i] - min)))));
    L[lo + i] = l;
    const diff = fround(fround(fround(scale * l) + min) - x[xo + i]);
    bestError = fround(bestError + fround(weights[i] * fround(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = fround(fround(fround(rmin + fround(rdelta * is)) + nmax) / fround(max - min));
    let sumL = 0,
      sumL2 = 0,
      sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fround(iscale * fround(x[xo + i] - min)))));
      Laux[i] = l;
      const w = weights[i];
      const wl = fround(w * l);
      sumL = fround(sumL + wl);
      sumL2 = fround(sumL2 + fround(wl * l));
      sumXL = fround(sumXL + fround(wl * x[xo + i]));
    }
    const D = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (D > 0) {
      let thisScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / D);
      let thisMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fround(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = fround(fround(fround(thisScale * Laux[i]) + thisMin) - x[xo + i]);
        curError = fround(curError + fround(weights[i] * fround(diff * diff)));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  out[0] = scale;
  out[1] = -min;
}

// Scratch of the K-quant quantizers (one block at a time).
const levels = new Uint8Array(256);
const levelsAux = new Uint8Array(32);
const subWeights = new Float32Array(32);
const subScales = new Float32Array(16);
const subMins = new Float32Array(8);
const scaleAndMin = new Float32Array(2);
const smK4 = new Int32Array(2);

/**
 * The 8 sub-block scales and mins of a Q4_K / Q5_K super-block (nmax 15 or 31; the search of
 * quantize_row_q4_K_ref / q5_K_ref), packed into dst[o, o + 16): d, dmin, scales[12]; then the
 * levels of each value for those packed scales into `levels`.
 */
function quantizeScalesQ45_K(
  x: Float32Array,
  xo: number,
  nmax: number,
  rmin: number,
  nstep: number,
  dst: Uint8Array,
  o: number,
): void {
  let maxScale = 0,
    maxMin = 0;
  for (let j = 0; j < 8; j++) {
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fround(sumX2 + fround(x[xo + 32 * j + l] * x[xo + 32 * j + l]));
    const avX = fround(Math.sqrt(fround(sumX2 / 32)));
    for (let l = 0; l < 32; l++) subWeights[l] = avX + Math.abs(x[xo + 32 * j + l]);
    makeQkx2Quants(
      32,
      nmax,
      x,
      xo + 32 * j,
      subWeights,
      levels,
      32 * j,
      levelsAux,
      rmin,
      fround(0.1),
      nstep,
      scaleAndMin,
    );
    subScales[j] = scaleAndMin[0];
    subMins[j] = scaleAndMin[1];
    if (subScales[j] > maxScale) maxScale = subScales[j];
    if (subMins[j] > maxMin) maxMin = subMins[j];
  }
  const invScale = maxScale > 0 ? fround(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fround(63 / maxMin) : 0;
  const s = o + 4;
  for (let j = 0; j < 12; j++) dst[s + j] = 0;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(fround(invScale * subScales[j])) & 0xff);
    const lm = Math.min(63, nearestInt(fround(invMin * subMins[j])) & 0xff);
    if (j < 4) {
      dst[s + j] = ls;
      dst[s + j + 4] = lm;
    } else {
      dst[s + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      dst[s + j - 4] |= (ls >> 4) << 6;
      dst[s + j] |= (lm >> 4) << 6;
    }
  }
  putF16(dst, o, fround(maxScale / 63));
  putF16(dst, o + 2, fround(maxMin / 63));
  const d = f16At(dst, o),
    dmin = f16At(dst, o + 2);
  for (let j = 0; j < 8; j++) {
    scaleMinK4(dst, s, j, smK4);
    const dj = fround(d * smK4[0]);
    if (dj === 0) continue;
    const dm = fround(dmin * smK4[1]);
    for (let i = 0; i < 32; i++) {
      const l = nearestInt(fround(fround(x[xo + 32 * j + i] + dm) / dj));
      levels[32 * j + i] = Math.max(0, Math.min(nmax, l));
    }
  }
}

export function quantizeBlockQ4_K(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  quantizeScalesQ45_K(x, xo, 15, -1, 20, dst, o);
  for (let j = 0, q = o + 16; j < 256; j += 64, q += 32)
    for (let l = 0; l < 32; l++) dst[q + l] = levels[j + l] | (levels[j + l + 32] << 4);
}

export function quantizeBlockQ5_K(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  quantizeScalesQ45_K(x, xo, 31, -0.5, 15, dst, o);
  const qh = o + 16;
  for (let j = 0; j < 32; j++) dst[qh + j] = 0;
  let m1 = 1,
    m2 = 2;
  for (let n = 0, q = o + 48; n < 256; n += 64, q += 32, m1 <<= 2, m2 <<= 2) {
    for (let j = 0; j < 32; j++) {
      let l1 = levels[n + j];
      if (l1 > 15) {
        l1 -= 16;
        dst[qh + j] |= m1;
      }
      let l2 = levels[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        dst[qh + j] |= m2;
      }
      dst[q + j] = l1 | (l2 << 4);
    }
  }
}

/**
 * ggml's make_qx_quants with rmse_type 1 (weights x^2) for n values in -nmax..nmax-1: the scale,
 * searched over 19 candidates; levels + nmax into L[lo...].
 */
function makeQxQuants(n: number, nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number): number {
  let max = 0,
    amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < fround(1e-15)) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  let iscale = fround(-nmax / max);
  let sumlx = 0,
    suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * v))));
    L[lo + i] = l + nmax;
    const w = fround(v * v);
    sumlx = fround(sumlx + fround(fround(w * v) * l));
    suml2 = fround(suml2 + fround(fround(w * l) * l));
  }
  let scale = suml2 !== 0 ? fround(sumlx / suml2) : 0;
  let best = fround(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fround(-fround(nmax + fround(fround(0.1) * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * v))));
      const w = fround(v * v);
      sumlx = fround(sumlx + fround(fround(w * v) * l));
      suml2 = fround(suml2 + fround(fround(w * l) * l));
    }
    if (suml2 > 0 && fround(sumlx * sumlx) > fround(best * suml2)) {
      for (let i = 0; i < n; i++) {
        const l = nearestInt(fround(iscale * x[xo + i]));
        L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, l));
      }
      scale = fround(sumlx / suml2);
      best = fround(scale * sumlx);
    }
  }
  return scale;
}

export function quantizeBlockQ6_K(x: Float32Array, xo: number, dst: Uint8Array, o: number): void {
  let maxScale = 0,
    maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants(16, 32, x, xo + 16 * ib, levels, 16 * ib);
    subScales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  if (maxAbsScale < fround(1e-15)) {
    dst.fill(0, o, o + 210);
    return;
  }
  const iscale = fround(-128 / maxScale);
  putF16(dst, o + 208, fround(1 / iscale));
  for (let ib = 0; ib < 16; ib++) dst[o + 192 + ib] = Math.min(127, nearestInt(fround(iscale * subScales[ib]))) & 0xff;
  const d = f16At(dst, o + 208);
  for (let j = 0; j < 16; j++) {
    const dj = fround(d * ((dst[o + 192 + j] << 24) >> 24));
    if (dj === 0) continue;
    for (let i = 0; i < 16; i++) {
      const l = nearestInt(fround(x[xo + 16 * j + i] / dj));
      levels[16 * j + i] = Math.max(-32, Math.min(31, l)) + 32;
    }
  }
  for (let j = 0, ql = o, qh = o + 128; j < 256; j += 128, ql += 64, qh += 32) {
    for (let l = 0; l < 32; l++) {
      const q1 = levels[j + l] & 0xf,
        q2 = levels[j + l + 32] & 0xf,
        q3 = levels[j + l + 64] & 0xf,
        q4 = levels[j + l + 96] & 0xf;
      dst[ql + l] = q1 | (q3 << 4);
      dst[ql + l + 32] = q2 | (q4 << 4);
      dst[qh + l] =
        (levels[j + l] >> 4) |
        ((levels[j + l + 32] >> 4) << 2) |
        ((levels[j + l + 64] >> 4) << 4) |
        ((levels[j + l + 96] >> 4) << 6);
    }
  }
}
