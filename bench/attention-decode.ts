// node dist/bench/attention-decode.js [--depth 16384] [--dtypes f32,bf16,q8_0] [--rounds 3] [--scalar]:
// one decode row's attention over a deep cache, Qwen2.5-0.5B's shape (24 layers, 14 query heads
// over 2 kv heads of 64), on one thread: the kernel of before this change against the current one,
// interleaved in one process, in CPU time. --scalar also runs the same attention in plain C
// compiled without SIMD and FMA (tools/scalar-limit.c's attn kernel: the scalar limit), same shape
// and depth, and prints its GMAC/s beside the JS kernel's. The cache of all 24 layers is read (384 MB in f32 at 16k), so it
// comes from memory as in a real decode step, not from the CPU's caches.
import { parseArgs } from 'node:util';
import type { ModelConfig } from '../src/model/config.js';
import { BLOCK_SIZE, KvCache, KV_CACHE_DTYPES, type KvCacheDtype } from '../src/model/kv-cache.js';
import * as current from '../src/tensor/attention.js';
import * as before from './attention-lanes.js';
import { num, out, rng } from './common.js';
import { buildScalarLimit } from './scalar.js';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';

const { values: v } = parseArgs({
  options: {
    depth: { type: 'string' },
    dtypes: { type: 'string' },
    rounds: { type: 'string' },
    scalar: { type: 'boolean' },
  },
});
const depth = Number(v.depth ?? 16384);
const dtypes = (v.dtypes ?? 'f32,bf16,q8_0').split(',') as KvCacheDtype[];
const rounds = Number(v.rounds ?? 3);
const layers = 24,
  heads = 14,
  kvHeads = 2,
  headDim = 64;
const group = heads / kvHeads;
const c = { numLayers: layers, numHeads: heads, numKvHeads: kvHeads, headDim } as ModelConfig;

for (const dtype of dtypes) {
  if (!KV_CACHE_DTYPES.includes(dtype)) throw new Error(`--dtypes: one of ${KV_CACHE_DTYPES.join(', ')}`);
  const cache = new KvCache(c, 1, depth + 1, 4 * 2 ** 30, dtype);
  const kvDim = kvHeads * headDim;
  const random = rng(1);
  const rowsK = new Float32Array(64 * kvDim).map(() => 4 * (random() - 0.5));
  const rowsV = new Float32Array(64 * kvDim).map(() => random() - 0.5);
  cache.ensure(0, depth + 1);
  for (let pos = 0; pos <= depth; pos++) {
    const r = ((pos * 37) % 64) * kvDim;
    for (let l = 0; l < layers; l++) cache.write(l, 0, pos, rowsK, r, rowsV, r);
  }
  const a = cache.arrays;
  const words = (x: Float32Array | Uint16Array | Int8Array) =>
    new Int32Array(x.buffer, x.byteOffset, x.byteLength >> 2);
  const layerKv = a.k.map((k, l) => ({
    format: a.format,
    k,
    v: a.v[l],
    k32: a.format !== current.KV_F32 ? words(k) : null,
    v32: a.format !== current.KV_F32 ? words(a.v[l]) : null,
    kScale: a.kScale[l] ?? null,
    vScale: a.vScale[l] ?? null,
    group: a.group,
    blockTables: a.blockTables,
    kvHeads,
    headDim,
    blockSize: BLOCK_SIZE,
  }));
  const q = new Float32Array(heads * headDim).map(() => random() - 0.5);
  const outBefore = new Float32Array(heads * headDim);
  const outCurrent = new Float32Array(heads * headDim);
  const scale = 1 / Math.sqrt(headDim);
  const sBefore = before.allocAttentionScratch(16 * group, BLOCK_SIZE, headDim);
  const sCurrent = current.allocAttentionScratch(16 * group, BLOCK_SIZE, headDim);
  const step = (kernel: (...a: any[]) => void, o: Float32Array, s: unknown) => {
    // CPU time of this (single) thread: steadier than wall time when other jobs share the cores.
    const t = process.cpuUsage();
    for (let l = 0; l < layers; l++)
      for (let h = 0; h < kvHeads; h++) kernel(o, q, 0, heads * headDim, 1, depth, layerKv[l], 0, h, group, scale, s);
    const used = process.cpuUsage(t);
    return (used.user + used.system) / 1000;
  };
  const times: Record<string, number[]> = { before: [], current: [] };
  for (let r = 0; r <= rounds; r++) {
    const tb = step(before.attendRows, outBefore, sBefore);
    const tc = step(current.attendRows, outCurrent, sCurrent);
    if (r > 0) {
      times.before.push(tb);
      times.current.push(tc);
    }
  }
  let maxDiff = 0;
  for (let i = 0; i < outBefore.length; i++) maxDiff = Math.max(maxDiff, Math.abs(outBefore[i] - outCurrent[i]));
  const best = (xs: number[]) => Math.min(...xs);
  const bytes = cache.bytesPerToken * (depth + 1);
  const macs = 2 * layers * heads * (depth + 1) * headDim;
  out(
    `${dtype} depth ${depth}: one decode step's attention on one thread, CPU time, best of ${rounds}: ` +
      `before ${num(best(times.before))} ms, current ${num(best(times.current))} ms ` +
      `(${num(best(times.before) / best(times.current))}x; current reads ${num(bytes / 1e6)} MB at ` +
      `${num(bytes / (best(times.current) / 1000) / 1e9)} GB/s, ${num(macs / (best(times.current) / 1000) / 1e9)} GMAC/s; ` +
      `max |before - current| ${maxDiff.toExponential(2)})`,
  );
  if (v.scalar) {
    // The C loop over its own cache of the same size (48 kv heads of depth positions, rounded down to
    // a whole block), best of its blockings; CPU time as above.
    const { exe, note } = buildScalarLimit(path.join(os.tmpdir(), 'qwen-ts-scalar'));
    if (!exe) out(`  scalar limit: ${note}`);
    else {
      const n = depth - (depth % BLOCK_SIZE);
      const r = spawnSync(exe, ['attn', dtype, String(n), String(rounds * 500)], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`scalar-limit attn ${dtype}: ${r.stderr || r.error}`);
      const f = r.stdout.trim().split(' ');
      const jsGmacs = macs / (best(times.current) / 1000) / 1e9;
      out(
        `  C scalar limit (${note}): ${num(Number(f[3]))} GMAC/s (${f[4]}); current ${num((100 * jsGmacs) / Number(f[3]))}% of it; ` +
          `blockings: ${f.slice(5).join(' ')}`,
      );
    }
  }
}
