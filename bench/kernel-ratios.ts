// One matrix's kernel alone, one thread, per ggml type against its baseline (q4_0 for 4 bits and
// fewer, q8_0 for more), in interleaved rounds: the 1.5B's up_proj [8960 x 1536] and down_proj
// [1536 x 8960] (and the 0.5B's [4864 x 896] / [896 x 4864] for the 32-block types), random GGUF
// blocks repacked by ggmlToMatrix as a load does, decode (n = 1) and a prefill chunk (n = 64).
// Prints the median CPU time of each and its speed ratio to the baseline of the same run.
// usage: node dist/bench/kernel-ratios.js [--types Q4_1,Q5_1] [--rounds 10] [--shapes 1.5b,0.5b] [--n 1,64]
import { parseArgs } from 'node:util';
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { GGML_TYPE, GGML_TYPES, ggmlToMatrix } from '../src/tensor/formats/ggml.js';
import { matmul } from '../src/tensor/matmul.js';
import type { Matrix } from '../src/tensor/matrix.js';
import { fillUniform } from './common.js';
import { randomTensor } from './formats.js';

const { values } = parseArgs({
  options: {
    types: { type: 'string', default: 'Q4_0,Q8_0,Q4_K,Q4_1,Q5_1,Q2_K,Q3_K' },
    rounds: { type: 'string', default: '10' },
    shapes: { type: 'string', default: '1.5b' },
    n: { type: 'string', default: '1,64' },
  },
});
const types = values.types!.split(',');
const rounds = Number(values.rounds);
const SHAPES: Record<string, [string, number, number][]> = {
  '1.5b': [
    ['1.5b up', 8960, 1536],
    ['1.5b down', 1536, 8960],
  ],
  '0.5b': [
    ['0.5b up', 4864, 896],
    ['0.5b down', 896, 4864],
  ],
};
const baselineOf = (t: string) =>
  ['Q4_0', 'Q4_1', 'Q4_K', 'Q2_K', 'Q3_K', 'IQ4_NL', 'IQ4_XS'].includes(t) ? 'Q4_0' : 'Q8_0';
const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];

for (const shapeName of values.shapes!.split(',')) {
  for (const [name, rows, cols] of SHAPES[shapeName]) {
    const shapeTypes = types.filter(
      (t) => cols % GGML_TYPES.get(GGML_TYPE[t as keyof typeof GGML_TYPE])!.blockSize === 0,
    );
    const mats = new Map<string, Matrix>();
    for (const t of shapeTypes)
      mats.set(
        t,
        ggmlToMatrix(GGML_TYPE[t as keyof typeof GGML_TYPE], randomTensor(t, rows, cols, 7 + rows), rows, cols),
      );
    const nMax = 64;
    const x = new Float32Array(nMax * cols);
    fillUniform(x, 1, cols);
    const xq = allocQuantizedActivations(nMax, cols, false);
    quantizeActivations(x, 0, cols, 0, nMax, xq);
    const y = new Float32Array(nMax * rows);
    // CPU time of this process (one thread): on a shared machine, time spent waiting for a core
    // is not counted, so loaded rounds stay comparable.
    const time = (m: Matrix, n: number, reps: number) => {
      const t0 = process.cpuUsage();
      for (let k = 0; k < reps; k++) matmul(m, x, 0, cols, n, y, 0, rows, 0, rows, xq);
      const dt = process.cpuUsage(t0);
      return (dt.user + dt.system) / 1e3 / reps;
    };
    for (const n of values.n!.split(',').map(Number)) {
      const times = new Map<string, number[]>(shapeTypes.map((t) => [t, []]));
      // Repetitions so that one timing takes about 40 ms on q4_0.
      const reps = Math.max(1, Math.round(40 / time(mats.get(shapeTypes[0])!, n, 1)));
      for (const t of shapeTypes) time(mats.get(t)!, n, reps); // warm up
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? shapeTypes : [...shapeTypes].reverse();
        for (const t of order) times.get(t)!.push(time(mats.get(t)!, n, reps));
      }
      for (const t of shapeTypes) {
        const ms = median(times.get(t)!);
        const base = times.get(baselineOf(t));
        const ratio = base ? median(base) / ms : NaN;
        console.log(
          `${name.padEnd(10)} n=${String(n).padEnd(3)} ${t.padEnd(5)} ${ms.toFixed(3).padStart(9)} ms  vs ${baselineOf(t).toLowerCase()} ${ratio.toFixed(2)}`,
        );
      }
    }
  }
}
