// The memory-bandwidth probe: sum a slice of a large Float64Array with 8 independent accumulators
// (so the FP add latency is hidden and the loop is bound by loads).
export function sumRange(a: Float64Array, start: number, end: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0,
    s4 = 0,
    s5 = 0,
    s6 = 0,
    s7 = 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    s0 += a[i];
    s1 += a[i + 1];
    s2 += a[i + 2];
    s3 += a[i + 3];
    s4 += a[i + 4];
    s5 += a[i + 5];
    s6 += a[i + 6];
    s7 += a[i + 7];
  }
  for (; i < end; i++) s0 += a[i];
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

// Control block of the multi-threaded probe (Int32 slots).
export const BW_SEQ = 0; // bumped per run; -1 in BW_OP tells workers to exit
export const BW_OP = 1;
export const BW_DONE = 8; // BW_DONE + w: last run worker w finished
export const BW_READY = 40; // BW_READY + w: worker w is waiting
export const BW_SLOTS = 72;

/** Elements [start, end) of part `part` of `parts`, aligned to 8 elements (64 bytes). */
export function partRange(n: number, part: number, parts: number): [number, number] {
  const units = Math.ceil(n / 8);
  return [
    Math.min(n, Math.floor((units * part) / parts) * 8),
    Math.min(n, Math.floor((units * (part + 1)) / parts) * 8),
  ];
}
