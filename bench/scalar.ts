// "% of the scalar limit": each JS matmul kernel next to the same loop in plain C compiled without
// SIMD and without FMA (tools/scalar-limit.c), and next to the kernel as it was before
// (bench/matmul-reference.ts). On a shared machine absolute timings wander, so the three are
// measured in interleaved rounds in one run, on CPU time (time switched out does not count), and
// each keeps its best round: the ratios are what to read. The C program is only a measuring stick; without a C compiler the section prints JS only.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bench } from 'tinybench';
import { matmul } from '../src/tensor/matmul.js';
import { matmulReference } from './matmul-reference.js';
import { sharedFloat32, type WeightFormat } from '../src/tensor/matrix.js';
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { fillUniform, log, num, repoRoot, StreamTable } from './common.js';
import { buildMatrix, type KernelDims } from './kernels.js';

export const SCALAR_CFLAGS = ['-O2', '-fno-tree-vectorize', '-fno-tree-slp-vectorize', '-ffp-contract=off'];

/** Compile tools/scalar-limit.c into <cacheDir> (once per source change); null and why if it cannot. */
export function buildScalarLimit(cacheDir: string): { exe: string | null; note: string } {
  const src = path.join(repoRoot(), 'tools', 'scalar-limit.c');
  const exe = path.join(cacheDir, 'scalar-limit');
  if (!fs.existsSync(src)) return { exe: null, note: `no ${src}` };
  if (fs.existsSync(exe) && fs.statSync(exe).mtimeMs >= fs.statSync(src).mtimeMs)
    return { exe, note: `cc ${SCALAR_CFLAGS.join(' ')}` };
  fs.mkdirSync(cacheDir, { recursive: true });
  for (const cc of [process.env.CC, 'cc', 'gcc', 'clang']) {
    if (!cc) continue;
    const r = spawnSync(cc, [...SCALAR_CFLAGS, '-o', exe, src, '-lm'], { encoding: 'utf8' });
    if (r.status === 0) return { exe, note: `${cc} ${SCALAR_CFLAGS.join(' ')}` };
    if (r.error === undefined) return { exe: null, note: `${cc} failed: ${r.stderr.split('\n')[0]}` };
  }
  return { exe: null, note: 'no C compiler (cc, gcc, clang): scalar limit not measured' };
}

/** Best GFLOP/s of the C loop over `millis` of repetitions, and the register blocking that gave it. */
function runScalar(exe: string, kernel: string, rows: number, cols: number, n: number, millis: number) {
  const r = spawnSync(exe, [kernel, String(rows), String(cols), String(n), String(millis)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scalar-limit ${kernel} ${rows} ${cols} ${n}: ${r.stderr || r.error}`);
  const f = r.stdout.trim().split(' ');
  return { gflops: Number(f[4]), variant: f[5] };
}

const PREFILL_ROWS = 256;

/** CPU time of this process in ms (microsecond resolution). */
function cpuMillis(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export interface ScalarRow {
  model: string;
  kernel: string;
  shape: [number, number];
  n: number;
  format: WeightFormat;
  beforeGflops: number;
  nowGflops: number;
  /** null when there is no C compiler. */
  scalarGflops: number | null;
  scalarVariant: string | null;
  /** The C loop compared against: the same format's loop (dot product for decode, float64 lanes for prefill), or f32 for bf16. */
  scalarKernel: string;
}

export interface ScalarOptions {
  model: string;
  dims: KernelDims;
  formats: WeightFormat[];
  prefillN: number;
  rounds: number;
  millis: number;
  cacheDir: string;
}

export function runScalarLimit(opts: ScalarOptions): ScalarRow[] {
  const { exe, note } = buildScalarLimit(opts.cacheDir);
  const d = opts.dims;
  const title =
    `Scalar limit: one thread, GFLOP/s = 2*rows*cols*n / best CPU time of ${opts.rounds} interleaved rounds ` +
    `(n > 1: the first ${PREFILL_ROWS} rows); ` +
    `before = bench/matmul-reference.ts, now = matmul.ts, C = tools/scalar-limit.c (${note})`;
  const table = new StreamTable(title, [
    { title: 'model', width: 14, align: 'left' },
    { title: 'kernel', width: 14, align: 'left' },
    { title: 'shape', width: 11, align: 'left' },
    { title: 'n', width: 3 },
    { title: 'format', width: 6, align: 'left' },
    { title: 'before', width: 6 },
    { title: 'now', width: 6 },
    { title: 'now/before', width: 10 },
    { title: 'C scalar', width: 8 },
    { title: 'C loop', width: 11, align: 'left' },
    { title: 'before %C', width: 9 },
    { title: 'now %C', width: 6 },
  ]);
  const rows: ScalarRow[] = [];
  const shapes = [
    { kernel: 'gate/up', rows: d.intermediate, cols: d.hidden },
    { kernel: 'down', rows: d.hidden, cols: d.intermediate },
  ];
  for (const s of shapes) {
    if (s.cols % 32 !== 0 || s.rows % 4 !== 0) continue;
    log(`  scalar limit ${opts.model}: ${s.kernel} [${s.rows} x ${s.cols}]`);
    const src = sharedFloat32(s.rows * s.cols);
    fillUniform(src, Math.sqrt(3 / s.cols), s.rows * 31 + s.cols);
    const nMax = opts.prefillN;
    const x = sharedFloat32(nMax * s.cols);
    fillUniform(x, 1, 7);
    const xq = allocQuantizedActivations(nMax, s.cols, true);
    quantizeActivations(x, 0, s.cols, 0, nMax, xq);
    const y = sharedFloat32(nMax * s.rows);
    for (const format of opts.formats) {
      const m = buildMatrix(format, src, s.rows, s.cols);
      for (const n of [1, nMax]) {
        // Prefill times the first PREFILL_ROWS rows only: calls of a few ms fit between the other
        // processes of a busy machine, and a row block's work does not depend on the other rows.
        const rowsTimed = n === 1 ? s.rows : Math.min(s.rows, PREFILL_ROWS);
        const quantized = format === 'q8_0' || format === 'q4_0';
        // The C loops: f32 at every n (and for bf16); for q8_0 / q4_0 the int8 / 4-bit dot products of
        // decode and the float64-lanes loop of prefill (lanes.ts), so that each JS kernel meets its
        // own loop in C. The f32 row at the same n gives the per-token comparison.
        const cKernel = quantized ? format : 'f32';
        const flops = 2 * rowsTimed * s.cols * n;
        const bench = new Bench({
          time: opts.millis,
          iterations: 2,
          warmupTime: 20,
          warmupIterations: 1,
          throws: true,
          now: cpuMillis,
        });
        const xqArg = quantized ? xq : null;
        bench.add('before', () => matmulReference(m, x, 0, s.cols, n, y, 0, s.rows, 0, rowsTimed, xqArg));
        bench.add('now', () => matmul(m, x, 0, s.cols, n, y, 0, s.rows, 0, rowsTimed, xqArg));
        let before = 0,
          now = 0,
          c: number | null = null,
          variant: string | null = null;
        for (let round = 0; round < opts.rounds; round++) {
          if (exe) {
            const r = runScalar(exe, cKernel, rowsTimed, s.cols, n, opts.millis);
            if (c === null || r.gflops > c) {
              c = r.gflops;
              variant = r.variant;
            }
          }
          bench.runSync();
          const [tb, tn] = bench.tasks.map((t) => {
            const res = t.result;
            if (res.state !== 'completed') throw new Error(`scalar limit ${t.name}: ${res.state}`);
            return flops / (res.latency.min / 1000) / 1e9;
          });
          before = Math.max(before, tb);
          now = Math.max(now, tn);
        }
        const row: ScalarRow = {
          model: opts.model,
          kernel: s.kernel,
          shape: [s.rows, s.cols],
          n,
          format,
          beforeGflops: before,
          nowGflops: now,
          scalarGflops: c,
          scalarVariant: variant,
          scalarKernel: cKernel,
        };
        rows.push(row);
        const pct = (v: number) => (c === null ? '-' : `${num((100 * v) / c)}%`);
        table.row([
          opts.model,
          s.kernel,
          `${s.rows}x${s.cols}`,
          String(n),
          format,
          num(before),
          num(now),
          `${num(now / before)}x`,
          num(c),
          c === null ? '-' : `${cKernel} ${variant}`,
          pct(before),
          pct(now),
        ]);
      }
    }
  }
  return rows;
}
