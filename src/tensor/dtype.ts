// Conversions between the storage dtypes of safetensors files and float32.
// bf16 is the top half of an f32, so widening is a shift; narrowing rounds to nearest-even
// (what torch does) so that files we write match what PyTorch would have written.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

export function f32ToBf16(x: number): number {
  f32[0] = x;
  return f32BitsToBf16(u32[0]);
}

/** The bf16 nearest (ties to even) to the f32 with bit pattern `u`. */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff; // keep NaN a NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow to infinity
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // may carry into exponent: still correct
  return sign | half;
}

/**
 * Widen `n` bf16 values starting at src[srcOff] into dst[dstOff..]. Two values per 32-bit load
 * when src allows it: this runs over every weight of a bf16 checkpoint loaded as f32 or quantized.
 */
export function bf16ArrayToF32(src: Uint16Array, srcOff: number, dst: Float32Array, dstOff: number, n: number): void {
  const d32 = new Int32Array(dst.buffer, dst.byteOffset + dstOff * 4, n);
  const srcByte = src.byteOffset + srcOff * 2;
  const pairs = srcByte % 4 === 0 ? n >> 1 : 0;
  const s32 = new Int32Array(src.buffer, srcByte - (srcByte % 4), pairs); // little-endian: value 2j in the low half
  for (let j = 0; j < pairs; j++) {
    const w = s32[j];
    d32[2 * j] = w << 16;
    d32[2 * j + 1] = w & -65536;
  }
  for (let i = 2 * pairs; i < n; i++) d32[i] = src[srcOff + i] << 16;
}

// Every f16 bit pattern widened, built on first use: a table look-up per element instead of a call.
let f16Table: Float32Array | null = null;

/** The f32 value of every f16 bit pattern: f16Values()[h] === f16ToF32(h). */
export function f16Values(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** Widen `n` f16 values starting at src[srcOff] into dst[dstOff..]. */
export function f16ArrayToF32(src: Uint16Array, srcOff: number, dst: Float32Array, dstOff: number, n: number): void {
  const table = f16Values();
  for (let i = 0; i < n; i++) dst[dstOff + i] = table[src[srcOff + i]];
}

/** dst[dstOff + i] = the bf16 nearest to src[srcOff + i] (ties to even, NaN stays NaN), for i < n. */
export function f32ArrayToBf16(src: Float32Array, srcOff: number, dst: Uint16Array, dstOff: number, n: number): void {
  const bits = new Int32Array(src.buffer, src.byteOffset + srcOff * 4, n);
  for (let i = 0; i < n; i++) {
    const u = bits[i];
    dst[dstOff + i] =
      (u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0
        ? (u >>> 16) | 0x40
        : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
}
