// The GGUF formats' kernels alone, one thread, at the 1.5B's up_proj [8960 x 1536] and down_proj
// [1536 x 8960]: each type against its issue-17 baseline (q4_0 for Q4_K, q8_0 for the others) in
// interleaved rounds in one process, the median time of each, as a time ratio (baseline / type:
// higher is faster). Random block bytes with a fixed f16 scale: the kernels' work does not depend
// on the values. Run: node dist/bench/kquant-kernels.js [--rounds 10] [--n 1,64] [--types Q6_K,...]
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { GGML_TYPE, ggmlRowBytes, ggmlToMatrix, type GgmlTypeName } from '../src/tensor/formats/ggml.js';
import { matmul } from '../src/tensor/matmul.js';
import type { Matrix } from '../src/tensor/matrix.js';

const args = process.argv.slice(2);
function arg(name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
const rounds = Number(arg('--rounds', '10'));
const tokenCounts = arg('--n', '1,64').split(',').map(Number);
const types = arg('--types', 'Q4_K,Q5_K,Q6_K,Q5_0').split(',') as GgmlTypeName[];
const BASELINE: Partial<Record<GgmlTypeName, GgmlTypeName>> = {
  Q4_K: 'Q4_0',
  Q2_K: 'Q4_0',
  Q3_K: 'Q4_0',
  Q4_1: 'Q4_0',
  IQ4_NL: 'Q4_0',
  IQ4_XS: 'Q4_0',
};
const baselineOf = (t: GgmlTypeName): GgmlTypeName => BASELINE[t] ?? 'Q8_0';

// Where each type's f16 scales sit in its block (the rest of the block is random).
const SCALE_OFFSETS: Partial<Record<GgmlTypeName, number[]>> = {
  Q8_0: [0],
  Q4_0: [0],
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q2_K: [80, 82],
  Q3_K: [108],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
  IQ4_NL: [0],
  IQ4_XS: [0],
};
const BLOCK_VALUES: Partial<Record<GgmlTypeName, number>> = {
  Q2_K: 256,
  Q3_K: 256,
  Q4_K: 256,
  Q5_K: 256,
  Q6_K: 256,
  IQ4_XS: 256,
};

let seed = 12345;
function rand(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 4294967296;
}

function randomMatrix(name: GgmlTypeName, rows: number, cols: number): Matrix {
  const type = GGML_TYPE[name];
  const rowBytes = ggmlRowBytes(type, cols);
  const bytes = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (rand() * 256) | 0;
  const blockBytes = (rowBytes * (BLOCK_VALUES[name] ?? 32)) / cols;
  for (let o = 0; o < bytes.length; o += blockBytes)
    for (const s of SCALE_OFFSETS[name] ?? []) {
      bytes[o + s] = 0x00;
      bytes[o + s + 1] = 0x2c; // f16 0.0625
    }
  return ggmlToMatrix(type, bytes, rows, cols);
}

const shapes = [
  { name: 'up', rows: 8960, cols: 1536 },
  { name: 'down', rows: 1536, cols: 8960 },
];
const all = [...new Set(types.flatMap((t) => [t, baselineOf(t)]))];
const results: string[] = [];
for (const shape of shapes) {
  const mats = new Map(all.map((t) => [t, randomMatrix(t, shape.rows, shape.cols)] as const));
  for (const n of tokenCounts) {
    const x = new Float32Array(n * shape.cols);
    for (let i = 0; i < x.length; i++) x[i] = rand() * 2 - 1;
    const xq = allocQuantizedActivations(n, shape.cols, false);
    quantizeActivations(x, 0, shape.cols, 0, n, xq);
    const y = new Float32Array(n * shape.rows);
    const reps = n === 1 ? 8 : 1;
    const times = new Map(all.map((t) => [t, [] as number[]] as const));
    for (let round = 0; round < rounds + 1; round++) {
      for (const t of all) {
        const m = mats.get(t)!;
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) matmul(m, x, 0, shape.cols, n, y, 0, shape.rows, 0, shape.rows, xq);
        if (round > 0) times.get(t)!.push((performance.now() - t0) / reps);
      }
    }
    const median = (a: number[]) => a.slice().sort((p, q) => p - q)[a.length >> 1];
    for (const t of types) {
      const b = baselineOf(t);
      const mt = median(times.get(t)!),
        mb = median(times.get(b)!);
      results.push(
        `${shape.name} n=${n} ${t} ${mt.toFixed(2)} ms vs ${b} ${mb.toFixed(2)} ms: ${(mb / mt).toFixed(2)}x`,
      );
      console.log(results[results.length - 1]);
    }
  }
}
