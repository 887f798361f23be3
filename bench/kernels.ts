// Kernel micro-benchmarks (tinybench) at a model's real shapes, random weights converted or
// quantized with the library's own functions: matrix-vector (decode) per weight format and thread
// count, matrix-matrix (prefill chunk) for the big shapes, and the small per-token kernels.
import { Bench } from 'tinybench';
import type { ModelConfig } from '../src/model/config.js';
import type { SyntheticPreset } from '../src/model/synthetic.js';
import { allocAttentionScratch, attendRows, KV_F32, type PagedKv } from '../src/tensor/attention.js';
import { allocQuantizedMatrix, matmul } from '../src/tensor/matmul.js';
import {
  BF16,
  F32,
  FORMAT_CODES,
  makeMatrix,
  matrixBytes,
  sharedFloat32,
  type Matrix,
  type WeightFormat,
} from '../src/tensor/matrix.js';
import { rmsnorm, rope, ropeTables, softmax, swiglu } from '../src/tensor/ops.js';
import { ThreadPool } from '../src/tensor/pool.js';
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { allocGgmlMatrix, quantizeGgmlRows } from '../src/tensor/formats/ggml.js';
import { kQuantFileType, tensorType } from '../src/model/gguf/quant-mix.js';
import { quantizeRowsQ4_0 } from '../src/tensor/formats/q4_0.js';
import { quantizeRowsQ8_0 } from '../src/tensor/formats/q8_0.js';
import { attendHead } from './attention-before.js';
import { duration, fillUniform, log, num, StreamTable } from './common.js';
import { createRunner as createMatmulRunner, type MatmulBenchState } from './matmul-runner.js';

export interface KernelDims {
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
}

export function dimsFromPreset(p: SyntheticPreset): KernelDims {
  return {
    hidden: p.hidden_size,
    intermediate: p.intermediate_size,
    heads: p.num_attention_heads,
    kvHeads: p.num_key_value_heads,
    headDim: p.head_dim ?? p.hidden_size / p.num_attention_heads,
    vocab: p.vocab_size,
  };
}

export function dimsFromConfig(c: ModelConfig): KernelDims {
  return {
    hidden: c.hiddenSize,
    intermediate: c.intermediateSize,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    vocab: c.vocabSize,
  };
}

export interface KernelResult {
  model: string;
  kernel: string;
  /** [rows, cols] of the weight matrix, or the vector length / context. */
  shape: number[];
  /** Tokens (activation rows) per call. */
  n: number;
  format: string;
  threads: number;
  meanMs: number;
  p50Ms: number;
  samples: number;
  /** 2 * rows * cols * n / mean time (matmul); 4 * context * headDim / time (attention). */
  gflops: number | null;
  /** Bytes of weights (matmul) or of K and V (attention) read per call / mean time. */
  gbs: number | null;
}

export interface KernelOptions {
  model: string;
  dims: KernelDims;
  formats: WeightFormat[];
  threads: number[];
  /** Activation rows of the prefill (matrix-matrix) benchmark. */
  prefillN: number;
  attentionContext: number;
  quick: boolean;
}

const table = new StreamTable('Kernels (one call; GFLOP/s = 2*rows*cols*n / time; GB/s = weight bytes / time)', [
  { title: 'model', width: 14, align: 'left' },
  { title: 'kernel', width: 18, align: 'left' },
  { title: 'shape', width: 13, align: 'left' },
  { title: 'n', width: 3 },
  { title: 'format', width: 6, align: 'left' },
  { title: 'thr', width: 3 },
  { title: 'mean', width: 10 },
  { title: 'GFLOP/s', width: 7 },
  { title: 'GB/s', width: 6 },
]);

function report(results: KernelResult[], r: KernelResult): void {
  results.push(r);
  table.row([
    r.model,
    r.kernel,
    r.shape.join(' x '),
    String(r.n),
    r.format,
    String(r.threads),
    duration(r.meanMs),
    num(r.gflops),
    num(r.gbs),
  ]);
}

interface Timing {
  meanMs: number;
  p50Ms: number;
  samples: number;
}

function timeIt(name: string, fn: () => void, quick: boolean): Timing {
  const bench = new Bench(
    quick
      ? { time: 10, iterations: 2, warmupTime: 2, warmupIterations: 1, throws: true }
      : { time: 300, iterations: 5, warmupTime: 50, warmupIterations: 2, throws: true },
  );
  bench.add(name, fn);
  bench.runSync();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed')
    throw new Error(`kernel benchmark ${name}: ${r.state === 'errored' ? r.error.message : r.state}`);
  return { meanMs: r.latency.mean, p50Ms: r.latency.p50, samples: r.latency.samplesCount };
}

/** The weight matrix in `format`, built from f32 rows `src` (a SharedArrayBuffer view). */
export function buildMatrix(format: WeightFormat, src: Float32Array, rows: number, cols: number): Matrix {
  switch (format) {
    case 'f32':
      return makeMatrix(F32, rows, cols, { f32: src });
    case 'bf16': {
      const u16 = new Uint16Array(new SharedArrayBuffer(rows * cols * 2));
      const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
      for (let i = 0; i < bits.length; i++) {
        const u = bits[i];
        u16[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff; // round to nearest-even (finite values)
      }
      return makeMatrix(BF16, rows, cols, { u16 });
    }
    case 'q8_0':
    case 'q4_0': {
      const m = allocQuantizedMatrix(FORMAT_CODES[format], rows, cols);
      // In chunks of rows, as the loader does: the quantizers take a view starting at row r0.
      const chunk = Math.max(2, Math.floor((8 << 20) / (cols * 4)) & ~1);
      for (let r0 = 0; r0 < rows; r0 += chunk) {
        const nr = Math.min(chunk, rows - r0);
        const view = src.subarray(r0 * cols, (r0 + nr) * cols);
        if (format === 'q8_0') quantizeRowsQ8_0(view, r0, nr, m);
        else quantizeRowsQ4_0(view, r0, nr, m);
      }
      return m;
    }
    default: {
      // The K-quants: the ggml type of their main weights, by llama.cpp's reference quantizer.
      const type = tensorType(kQuantFileType(format), {
        name: 'blk.0.attn_q.weight',
        cols,
        nDims: 2,
        layer: 0,
        layers: 1,
        tiedEmbedding: false,
      });
      const m = allocGgmlMatrix(type, rows, cols);
      const chunk = Math.max(2, Math.floor((8 << 20) / (cols * 4)) & ~1);
      for (let r0 = 0; r0 < rows; r0 += chunk) {
        const nr = Math.min(chunk, rows - r0);
        quantizeGgmlRows(src.subarray(r0 * cols, (r0 + nr) * cols), r0, nr, m);
      }
      return m;
    }
  }
}

interface Shape {
  kernel: string;
  rows: number;
  cols: number;
  prefill: boolean;
}

export async function runKernels(opts: KernelOptions): Promise<KernelResult[]> {
  const { dims: d, quick, model } = opts;
  const results: KernelResult[] = [];
  const qDim = d.heads * d.headDim;
  const kvDim = d.kvHeads * d.headDim;
  const shapes: Shape[] = [
    { kernel: 'matmul q/o', rows: qDim, cols: d.hidden, prefill: true },
    { kernel: 'matmul k/v', rows: kvDim, cols: d.hidden, prefill: false },
    { kernel: 'matmul gate/up', rows: d.intermediate, cols: d.hidden, prefill: true },
    { kernel: 'matmul down', rows: d.hidden, cols: d.intermediate, prefill: true },
    { kernel: 'matmul lm head', rows: d.vocab, cols: d.hidden, prefill: false },
  ];
  const multi = [...new Set(opts.threads.filter((t) => t > 1))].sort((a, b) => a - b);

  for (const s of shapes) {
    log(`  kernels ${model}: ${s.kernel} [${s.rows} x ${s.cols}] (${opts.formats.join(', ')})`);
    const src = sharedFloat32(s.rows * s.cols);
    fillUniform(src, Math.sqrt(3 / s.cols), s.rows * 31 + s.cols);
    const mats = opts.formats.map((f) => buildMatrix(f, src, s.rows, s.cols));
    const nMax = s.prefill ? opts.prefillN : 1;
    const state: MatmulBenchState = {
      mats,
      x: sharedFloat32(nMax * s.cols),
      xq: allocQuantizedActivations(nMax, s.cols, true),
      y: sharedFloat32(nMax * s.rows),
    };
    fillUniform(state.x, 1, 7);
    quantizeActivations(state.x, 0, s.cols, 0, nMax, state.xq);
    const pools = new Map<number, ThreadPool>();
    try {
      for (const t of multi) {
        pools.set(
          t,
          await ThreadPool.create(t, new URL('./matmul-runner.js', import.meta.url), state, createMatmulRunner(state)),
        );
      }
      const local = createMatmulRunner(state);
      const args = new Int32Array(1);
      const work = new Int32Array(8); // unused by this runner (static row split)
      mats.forEach((m, i) => {
        const format = opts.formats[i];
        const record = (n: number, threads: number, t: Timing) =>
          report(results, {
            model,
            kernel: s.kernel,
            shape: [s.rows, s.cols],
            n,
            format,
            threads,
            ...t,
            gflops: (2 * s.rows * s.cols * n) / (t.meanMs / 1000) / 1e9,
            gbs: matrixBytes(m) / (t.meanMs / 1000) / 1e9,
          });
        args[0] = 1;
        record(
          1,
          1,
          timeIt(`${s.kernel} ${format} n=1`, () => local(i, args, 0, 1, work), quick),
        );
        for (const [t, pool] of pools)
          record(
            1,
            t,
            timeIt(`${s.kernel} ${format} n=1 x${t}`, () => pool.run(i, 1), quick),
          );
        if (s.prefill) {
          const n = opts.prefillN;
          record(
            n,
            1,
            timeIt(
              `${s.kernel} ${format} n=${n}`,
              () => matmul(m, state.x, 0, s.cols, n, state.y, 0, s.rows, 0, s.rows, m.format >= 2 ? state.xq : null),
              quick,
            ),
          );
        }
      });
    } finally {
      for (const pool of pools.values()) await pool.close();
    }
  }

  // The small per-token kernels, single thread.
  log(`  kernels ${model}: rmsnorm, rope, softmax, swiglu, attention, activation quantization`);
  const small = (kernel: string, shape: number[], fn: () => void, extra: { gflops?: number; bytes?: number } = {}) => {
    const t = timeIt(kernel, fn, quick);
    report(results, {
      model,
      kernel,
      shape,
      n: 1,
      format: '-',
      threads: 1,
      ...t,
      gflops: extra.gflops !== undefined ? extra.gflops / (t.meanMs / 1000) / 1e9 : null,
      gbs: extra.bytes !== undefined ? extra.bytes / (t.meanMs / 1000) / 1e9 : null,
    });
  };
  const x = new Float32Array(d.hidden);
  const xo = new Float32Array(d.hidden);
  const w = new Float32Array(d.hidden);
  fillUniform(x, 1, 1);
  fillUniform(w, 0.2, 2);
  for (let i = 0; i < w.length; i++) w[i] += 1;
  small('rmsnorm', [d.hidden], () => rmsnorm(xo, 0, x, 0, w, d.hidden, 1e-6));

  const ctx = opts.attentionContext;
  const tables = ropeTables(ctx, d.headDim, 1e6);
  const q = new Float32Array(qDim);
  const k = new Float32Array(kvDim);
  fillUniform(q, 1, 3);
  fillUniform(k, 1, 4);
  small('rope q+k', [d.heads + d.kvHeads, d.headDim], () => {
    rope(q, 0, d.heads, d.headDim, tables.cos, tables.sin, (ctx - 1) * (d.headDim >> 1));
    rope(k, 0, d.kvHeads, d.headDim, tables.cos, tables.sin, (ctx - 1) * (d.headDim >> 1));
  });

  const logits = new Float32Array(d.vocab);
  fillUniform(logits, 5, 5);
  small('softmax', [d.vocab], () => softmax(logits, 0, d.vocab));

  const gate = new Float32Array(d.intermediate);
  const up = new Float32Array(d.intermediate);
  fillUniform(gate, 2, 6);
  fillUniform(up, 1, 7);
  small('swiglu', [d.intermediate], () => swiglu(gate, 0, up, 0, d.intermediate));

  // One query head over `ctx` cached positions: paged cache, blocks of 16, identity block table.
  const blockSize = 16;
  const blocks = Math.ceil(ctx / blockSize);
  const kc = new Float32Array(blocks * d.kvHeads * blockSize * d.headDim);
  const vc = new Float32Array(kc.length);
  fillUniform(kc, 1, 8);
  fillUniform(vc, 1, 9);
  const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
  const scores = new Float32Array(ctx);
  const group = d.heads / d.kvHeads;
  const qGroup = new Float32Array(d.heads * d.headDim);
  fillUniform(qGroup, 1, 10);
  const att = new Float32Array(d.heads * d.headDim);
  // The query heads of one kv head at the last of `ctx` positions: before, one head at a time.
  small(
    `attention, ${group} heads of a kv head, per head (before), ctx ${ctx}`,
    [ctx, d.headDim],
    () => {
      for (let g = 0; g < group; g++)
        attendHead(
          qGroup,
          g * d.headDim,
          kc,
          vc,
          blockTable,
          0,
          0,
          d.kvHeads,
          d.headDim,
          blockSize,
          ctx,
          scores,
          att,
          g * d.headDim,
        );
    },
    { gflops: 4 * group * ctx * d.headDim, bytes: 2 * ctx * d.headDim * 4 },
  );
  const kv: PagedKv = {
    format: KV_F32,
    k: kc,
    v: vc,
    k32: null,
    v32: null,
    kScale: null,
    vScale: null,
    group: 32,
    blockTables: blockTable,
    kvHeads: d.kvHeads,
    headDim: d.headDim,
    blockSize,
  };
  const attScratch = allocAttentionScratch(group, blockSize, d.headDim);
  const scale = 1 / Math.sqrt(d.headDim);
  small(
    `attention, ${group} heads of a kv head, attendRows (online softmax), ctx ${ctx}`,
    [ctx, d.headDim],
    () => attendRows(att, qGroup, 0, d.heads * d.headDim, 1, ctx - 1, kv, 0, 0, group, scale, attScratch),
    { gflops: 4 * group * ctx * d.headDim, bytes: 2 * ctx * d.headDim * 4 },
  );

  if (opts.formats.some((f) => f === 'q8_0' || f === 'q4_0')) {
    for (const cols of [d.hidden, d.intermediate]) {
      const xa = new Float32Array(cols);
      fillUniform(xa, 1, cols);
      const xq = allocQuantizedActivations(1, cols, false);
      small('quantize activations', [cols], () => quantizeActivations(xa, 0, cols, 0, 1, xq));
    }
  }
  return results;
}
