// ggml's block types decoded to f32, bit for bit as ggml's dequantize_row_* (ggml-quants.c): each
// float operation of the C code is one Math.fround here, in the same order, so that the values
// equal what llama.cpp computes (test/ggml.test.ts checks them against fixtures made by ggml).
// `src` starts at a block; `o` is the byte offset of the block, `y` the offset of its first value.
import { f16Values } from '../dtype.js';

const fround = Math.fround;

/** The f16 at src[o], src[o + 1] (little-endian) as a number. */
export function f16At(src: Uint8Array, o: number): number {
  return f16Values()[src[o] | (src[o + 1] << 8)];
}

/** IQ4_NL's and IQ4_XS's 16 non-linear levels. */
const IQ4_VALUES = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

// ---- 32-value blocks: f16 scale first ----

/** Q4_0 (18 bytes): d, then 16 bytes of nibbles; byte j holds value j (low) and j + 16 (high), stored + 8. */
export function dequantizeBlockQ4_0(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o);
  for (let j = 0; j < 16; j++) {
    const b = src[o + 2 + j];
    out[y + j] = fround(((b & 0xf) - 8) * d);
    out[y + j + 16] = fround(((b >> 4) - 8) * d);
  }
}

/** Q4_1 (20 bytes): d, m, 16 bytes of nibbles (as Q4_0, unsigned): y = q * d + m. */
export function dequantizeBlockQ4_1(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o),
    m = f16At(src, o + 2);
  for (let j = 0; j < 16; j++) {
    const b = src[o + 4 + j];
    out[y + j] = fround(fround((b & 0xf) * d) + m);
    out[y + j + 16] = fround(fround((b >> 4) * d) + m);
  }
}

/** The 32-bit little-endian word at src[o]. */
function u32At(src: Uint8Array, o: number): number {
  return (src[o] | (src[o + 1] << 8) | (src[o + 2] << 16) | (src[o + 3] << 24)) >>> 0;
}

/** Q5_0 (22 bytes): d, qh (bit j: the fifth bit of value j), nibbles as Q4_0; values stored + 16. */
export function dequantizeBlockQ5_0(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o);
  const qh = u32At(src, o + 2);
  for (let j = 0; j < 16; j++) {
    const b = src[o + 6 + j];
    const h0 = ((qh >>> j) << 4) & 0x10,
      h1 = (qh >>> (j + 12)) & 0x10;
    out[y + j] = fround((((b & 0xf) | h0) - 16) * d);
    out[y + j + 16] = fround((((b >> 4) | h1) - 16) * d);
  }
}

/** Q5_1 (24 bytes): d, m, qh, nibbles: y = q * d + m. */
export function dequantizeBlockQ5_1(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o),
    m = f16At(src, o + 2);
  const qh = u32At(src, o + 4);
  for (let j = 0; j < 16; j++) {
    const b = src[o + 8 + j];
    const h0 = ((qh >>> j) << 4) & 0x10,
      h1 = (qh >>> (j + 12)) & 0x10;
    out[y + j] = fround(fround(((b & 0xf) | h0) * d) + m);
    out[y + j + 16] = fround(fround(((b >> 4) | h1) * d) + m);
  }
}

/** Q8_0 (34 bytes): d, 32 int8. */
export function dequantizeBlockQ8_0(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o);
  for (let j = 0; j < 32; j++) out[y + j] = fround(((src[o + 2 + j] << 24) >> 24) * d);
}

/** IQ4_NL (18 bytes): d, nibbles as Q4_0 indexing IQ4_VALUES. */
export function dequantizeBlockIQ4_NL(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o);
  for (let j = 0; j < 16; j++) {
    const b = src[o + 2 + j];
    out[y + j] = fround(d * IQ4_VALUES[b & 0xf]);
    out[y + j + 16] = fround(d * IQ4_VALUES[b >> 4]);
  }
}

// ---- 256-value super-blocks (K-quants) ----

/**
 * Sub-block j's 6-bit scale and min from the 12 packed bytes at src[s] (ggml's get_scale_min_k4):
 * bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; scales and mins 4-7 take
 * their low 4 bits from bytes 8-11 and their top 2 bits from the top of bytes 0-3 / 4-7.
 */
export function scaleMinK4(src: Uint8Array, s: number, j: number, out: Int32Array): void {
  if (j < 4) {
    out[0] = src[s + j] & 63;
    out[1] = src[s + j + 4] & 63;
  } else {
    out[0] = (src[s + j + 4] & 0xf) | ((src[s + j - 4] >> 6) << 4);
    out[1] = (src[s + j + 4] >> 4) | ((src[s + j] >> 6) << 4);
  }
}
const scaleMin = new Int32Array(2);

/** Q2_K (84 bytes): scales[16] (scale low nibble, min high), qs[64] 2-bit, d, dmin. */
export function dequantizeBlockQ2_K(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o + 80),
    dmin = f16At(src, o + 82);
  let is = 0;
  for (let n = 0, q = o + 16; n < 256; n += 128, q += 32) {
    for (let shift = 0; shift < 8; shift += 2) {
      for (let half = 0; half < 32; half += 16) {
        const sc = src[o + is++];
        const dl = fround(d * (sc & 0xf)),
          ml = fround(dmin * (sc >> 4));
        for (let l = 0; l < 16; l++) out[y++] = fround(fround(dl * ((src[q + half + l] >> shift) & 3)) - ml);
      }
    }
  }
}

/** Q3_K (110 bytes): hmask[32], qs[64] 2-bit, scales[12] (16 packed 6-bit scales, stored + 32), d. */
export function dequantizeBlockQ3_K(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o + 108);
  const s = o + 96;
  // The 16 scales: low 4 bits from bytes 0-7 (low nibbles first), top 2 bits from bytes 8-11.
  const scales = q3Scales;
  for (let i = 0; i < 16; i++) {
    const low = i < 8 ? src[s + i] & 0xf : src[s + i - 8] >> 4;
    const high = (src[s + 8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    scales[i] = (low | (high << 4)) - 32;
  }
  let is = 0,
    m = 1;
  for (let n = 0, q = o + 32; n < 256; n += 128, q += 32) {
    for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
      for (let half = 0; half < 32; half += 16) {
        const dl = fround(d * scales[is++]);
        for (let l = 0; l < 16; l++) {
          const v = ((src[q + half + l] >> shift) & 3) - ((src[o + half + l] & m) !== 0 ? 0 : 4);
          out[y++] = fround(dl * v);
        }
      }
    }
  }
}
const q3Scales = new Int32Array(16);

/** Q4_K (144 bytes): d, dmin, scales[12] (scaleMinK4), qs[128]: 64 values per 32 bytes (low nibbles, then high). */
export function dequantizeBlockQ4_K(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o),
    dmin = f16At(src, o + 2);
  for (let j = 0, q = o + 16; j < 8; j += 2, q += 32) {
    scaleMinK4(src, o + 4, j, scaleMin);
    const d1 = fround(d * scaleMin[0]),
      m1 = fround(dmin * scaleMin[1]);
    scaleMinK4(src, o + 4, j + 1, scaleMin);
    const d2 = fround(d * scaleMin[0]),
      m2 = fround(dmin * scaleMin[1]);
    for (let l = 0; l < 32; l++) out[y + l] = fround(fround(d1 * (src[q + l] & 0xf)) - m1);
    for (let l = 0; l < 32; l++) out[y + 32 + l] = fround(fround(d2 * (src[q + l] >> 4)) - m2);
    y += 64;
  }
}

/** Q5_K (176 bytes): d, dmin, scales[12], qh[32] (bit 2i / 2i+1: fifth bits of the i-th 64 values), qs[128]. */
export function dequantizeBlockQ5_K(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o),
    dmin = f16At(src, o + 2);
  const qh = o + 16;
  let u1 = 1,
    u2 = 2;
  for (let j = 0, q = o + 48; j < 8; j += 2, q += 32, u1 <<= 2, u2 <<= 2) {
    scaleMinK4(src, o + 4, j, scaleMin);
    const d1 = fround(d * scaleMin[0]),
      m1 = fround(dmin * scaleMin[1]);
    scaleMinK4(src, o + 4, j + 1, scaleMin);
    const d2 = fround(d * scaleMin[0]),
      m2 = fround(dmin * scaleMin[1]);
    for (let l = 0; l < 32; l++)
      out[y + l] = fround(fround(d1 * ((src[q + l] & 0xf) + ((src[qh + l] & u1) !== 0 ? 16 : 0))) - m1);
    for (let l = 0; l < 32; l++)
      out[y + 32 + l] = fround(fround(d2 * ((src[q + l] >> 4) + ((src[qh + l] & u2) !== 0 ? 16 : 0))) - m2);
    y += 64;
  }
}

/** Q6_K (210 bytes): ql[128] low nibbles, qh[64] top 2 bits, scales int8[16], then d (last). */
export function dequantizeBlockQ6_K(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o + 208);
  for (let n = 0; n < 2; n++, y += 128) {
    const ql = o + 64 * n,
      qh = o + 128 + 32 * n,
      sc = o + 192 + 8 * n;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4;
      const h = src[qh + l];
      const q1 = ((src[ql + l] & 0xf) | ((h & 3) << 4)) - 32;
      const q2 = ((src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
      const q3 = ((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const q4 = ((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
      out[y + l] = fround(fround(d * ((src[sc + is] << 24) >> 24)) * q1);
      out[y + l + 32] = fround(fround(d * ((src[sc + is + 2] << 24) >> 24)) * q2);
      out[y + l + 64] = fround(fround(d * ((src[sc + is + 4] << 24) >> 24)) * q3);
      out[y + l + 96] = fround(fround(d * ((src[sc + is + 6] << 24) >> 24)) * q4);
    }
  }
}

/** IQ4_XS (136 bytes): d, scales_h (u16: 2 top bits per sub-block), scales_l[4] (nibbles), qs[128]. */
export function dequantizeBlockIQ4_XS(src: Uint8Array, o: number, out: Float32Array, y: number): void {
  const d = f16At(src, o);
  const scalesH = src[o + 2] | (src[o + 3] << 8);
  for (let ib = 0; ib < 8; ib++, y += 32) {
    const ls = ((src[o + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((scalesH >> (2 * ib)) & 3) << 4);
    const dl = fround(d * (ls - 32));
    const q = o + 8 + 16 * ib;
    for (let j = 0; j < 16; j++) {
      out[y + j] = fround(dl * IQ4_VALUES[src[q + j] & 0xf]);
      out[y + j + 16] = fround(dl * IQ4_VALUES[src[q + j] >> 4]);
    }
  }
}
