// Loading on several threads: every weight is bit for bit what a single-threaded load gives, and
// what converting the whole tensor at once gives, for every weight format and checkpoint dtype.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { loadModelConfig } from '../src/model/config.js';
import { defaultKernelThreads } from '../src/model/load.js';
import { TensorStore, SafetensorsError } from '../src/model/safetensors.js';
import { loadWeights, type ModelWeights } from '../src/model/weights.js';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../src/tensor/dtype.js';
import { quantizeRowsQ4_0 } from '../src/tensor/formats/q4_0.js';
import { quantizeRowsQ8_0 } from '../src/tensor/formats/q8_0.js';
import { allocQuantizedMatrix } from '../src/tensor/matmul.js';
import { BF16, F32, Q4_0, Q8_0, type Matrix, type WeightFormat } from '../src/tensor/matrix.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const FORMATS: WeightFormat[] = ['f32', 'bf16', 'q8_0', 'q4_0'];

/** Every tensor of the weights by name, as its matrix (a vector is a 1-row f32 matrix here). */
function tensors(w: ModelWeights): Map<string, Matrix | Float32Array> {
  const out = new Map<string, Matrix | Float32Array>([
    ['model.embed_tokens.weight', w.embed],
    ['model.norm.weight', w.finalNorm],
  ]);
  if (w.lmHead !== w.embed) out.set('lm_head.weight', w.lmHead);
  w.layers.forEach((l, i) => {
    for (const [key, value] of Object.entries(l)) if (value !== null) out.set(`layer ${i} ${key}`, value);
  });
  return out;
}

function bytes(t: Matrix | Float32Array): Uint8Array[] {
  const arrays = t instanceof Float32Array ? [t] : [t.f32, t.u16, t.q, t.scales];
  return arrays.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
}

function expectSameBits(a: ModelWeights, b: ModelWeights, what: string): void {
  const ta = tensors(a);
  const tb = tensors(b);
  expect([...tb.keys()]).toEqual([...ta.keys()]);
  for (const [name, x] of ta) {
    const y = tb.get(name)!;
    const bx = bytes(x);
    const by = bytes(y);
    for (let k = 0; k < bx.length; k++) {
      expect(by[k].length, `${what} ${name}`).toBe(bx[k].length);
      // Buffer.compare: one call per array instead of an expect per byte.
      expect(Buffer.compare(bx[k], by[k]), `${what} ${name} differs`).toBe(0);
    }
  }
}

/** The storage of tensor `name` converted the simplest way: the whole tensor at once, element by element. */
function reference(store: TensorStore, name: string, format: number): Uint8Array[] {
  const info = store.get(name);
  const raw = store.readShared(info);
  const [rows, cols] = info.shape;
  const f32 = new Float32Array(rows * cols);
  for (let i = 0; i < f32.length; i++)
    f32[i] = info.dtype === 'F32' ? raw[i] : info.dtype === 'BF16' ? bf16ToF32(raw[i]) : f16ToF32(raw[i]);
  if (format === F32) return [new Uint8Array(f32.buffer)];
  if (format === BF16) return [new Uint8Array(Uint16Array.from(f32, f32ToBf16).buffer)];
  const m = allocQuantizedMatrix(format, rows, cols);
  if (format === Q8_0) quantizeRowsQ8_0(f32, 0, rows, m);
  else quantizeRowsQ4_0(f32, 0, rows, m);
  return [m.q, m.scales].map((a) => new Uint8Array(a.buffer));
}

/** The arrays of `m` that its format uses, as bytes. */
function stored(m: Matrix): Uint8Array[] {
  const arrays = m.format === F32 ? [m.f32] : m.format === BF16 ? [m.u16] : [m.q, m.scales];
  return arrays.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
}

describe.each(['bf16', 'f16', 'f32'] as const)('loading a %s checkpoint', (dtype) => {
  let dir: string;
  beforeAll(() => {
    // A 4096-token vocabulary keeps the reference conversions quick; two shards for the f32
    // checkpoint: the workers open files of their own.
    const overrides = { vocab_size: 4096 };
    dir = makeTempModel({ preset: 'tiny', seed: 5, dtype, shards: dtype === 'f32' ? 2 : 1, overrides });
  });
  afterAll(() => removeDir(dir));

  it.each(FORMATS)(
    'as %s: three threads in small pieces give the bits of one thread and of a whole-tensor conversion',
    async (format) => {
      const config = loadModelConfig(dir);
      const store = TensorStore.open(dir);
      try {
        const single = await loadWeights(store, config, format, { threads: 1 });
        // ~1000-byte pieces: many per tensor, split at rows no real load would split at.
        const parallel = await loadWeights(store, config, format, {
          threads: 3,
          pieceBytes: 1000,
          parallelMinBytes: 0,
        });
        expectSameBits(single, parallel, `${dtype} -> ${format}`);

        const code = { f32: F32, bf16: BF16, q8_0: Q8_0, q4_0: Q4_0 }[format];
        // down_proj's 160 columns are five 32-blocks: quantized like the others.
        for (const [name, m] of [
          ['model.embed_tokens.weight', parallel.embed],
          ['model.layers.1.mlp.down_proj.weight', parallel.layers[1].downProj],
        ] as const) {
          expect(m.format, name).toBe(code);
          const want = reference(store, name, code);
          const got = stored(m);
          for (let k = 0; k < want.length; k++) expect(Buffer.compare(want[k], got[k]), `${name} array ${k}`).toBe(0);
        }
      } finally {
        store.close();
      }
    },
  );
});

describe('a load that fails on a worker thread', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempModel({ preset: 'tiny', seed: 5 });
  });
  afterAll(() => removeDir(dir));

  it('names the file and the tensor, on any thread count', async () => {
    const config = loadModelConfig(dir);
    const file = path.join(dir, 'model.safetensors');
    for (const threads of [1, 3]) {
      const store = TensorStore.open(dir);
      const size = fs.statSync(file).size;
      // Cut after the header was read: the pieces of the last tensors find the end of the file.
      fs.truncateSync(file, size - 100_000);
      try {
        const load = loadWeights(store, config, 'q8_0', { threads, pieceBytes: 4096, parallelMinBytes: 0 });
        await expect(load).rejects.toThrow(SafetensorsError);
        await expect(load).rejects.toThrow(
          /model\.safetensors: tensor "[^"]+": unexpected end of file at byte \d+ \(file truncated\?\)/,
        );
      } finally {
        store.close();
        fs.truncateSync(file, size); // back to full length (the cut bytes read as zeros: fine for the next round)
      }
    }
  });
});

describe('kernel threads when none are given', () => {
  const STORIES = new URL('../assets/stories260K', import.meta.url).pathname;

  it('one for a model under 4M multiply-adds per token, all cores above', () => {
    const stories = loadModelConfig(STORIES); // 0.26M per token
    expect(defaultKernelThreads(stories)).toBe(1);
    // Just under and just over the line, by the vocabulary (the head is vocab x hidden).
    const withVocab = (vocab: number) => defaultKernelThreads({ ...stories, vocabSize: vocab });
    const rest = 5 * (64 * (2 * 64 + 2 * 32) + 3 * 64 * 172); // stories260K's 5 layers
    expect(withVocab(Math.floor((4_000_000 - rest - 1) / 64))).toBe(1);
    expect(withVocab(Math.ceil((4_000_000 - rest) / 64))).toBe(os.availableParallelism());
  });

  it('LLM.load picks it, and an explicit `threads` wins', async () => {
    const one = await LLM.load(STORIES);
    const two = await LLM.load(STORIES, { threads: 2 });
    try {
      expect(one.model.threads).toBe(1);
      expect(two.model.threads).toBe(2);
      const [a] = await one.generate(['Once upon a time'], { temperature: 0, maxTokens: 24 });
      const [b] = await two.generate(['Once upon a time'], { temperature: 0, maxTokens: 24 });
      expect(a.outputs[0].tokenIds).toEqual(b.outputs[0].tokenIds);
    } finally {
      await one.close();
      await two.close();
    }
  });
});
