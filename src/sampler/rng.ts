// Seedable PRNG for sampling: xoshiro128** (Blackman & Vigna, 2018), seeded with SplitMix64.
//
// Why not Math.random: requests with a `seed` must be reproducible. xoshiro128** is small,
// fast with 32-bit integer math (no BigInt in the hot path) and well tested; SplitMix64 is
// the seeding procedure its authors recommend (it turns any 64-bit seed, including 0, into a
// well-mixed non-zero state).

const MASK64 = (1n << 64n) - 1n;

/** SplitMix64 (Steele, Lea & Flood): a 64-bit generator used here only to expand seeds. */
export class SplitMix64 {
  private state: bigint;
  constructor(seed: bigint) {
    this.state = BigInt.asUintN(64, seed);
  }
  next(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }
}

export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Raw state constructor (the four words must not all be zero). Prefer fromSeed/fromEntropy. */
  constructor(s0: number, s1: number, s2: number, s3: number) {
    if ((s0 | s1 | s2 | s3) === 0) throw new RangeError('xoshiro128** state must not be all zero');
    this.s0 = s0 >>> 0;
    this.s1 = s1 >>> 0;
    this.s2 = s2 >>> 0;
    this.s3 = s3 >>> 0;
  }

  /** Deterministic generator for an integer seed (any safe integer, negative included). */
  static fromSeed(seed: number | bigint): Xoshiro128 {
    const sm = new SplitMix64(BigInt(seed));
    const a = sm.next();
    const b = sm.next();
    return new Xoshiro128(Number(a & 0xffffffffn), Number(a >> 32n), Number(b & 0xffffffffn), Number(b >> 32n));
  }

  /** Generator seeded from the OS CSPRNG, for requests without a seed. */
  static fromEntropy(): Xoshiro128 {
    const w = globalThis.crypto.getRandomValues(new Uint32Array(4));
    if ((w[0] | w[1] | w[2] | w[3]) === 0) w[0] = 1;
    return new Xoshiro128(w[0], w[1], w[2], w[3]);
  }

  /** Next 32-bit output as an unsigned integer. */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits (two outputs, top bits, like xoshiro's docs advise). */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992; // (hi * 2^26 + lo) / 2^53
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
