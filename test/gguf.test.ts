// GGUF files: the committed F32 fixtures (qwen2, qwen3, llama with llama3 rope scaling; written by
// llama.cpp's gguf-py from synthetic HF folders) against the exact float64 oracle of their
// gguf-py-dequantized weights; convert (ours) round trips; split files; errors that name the
// file, key, tensor and type; the public API and the CLI on a .gguf path.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { GGUF_VALUE, GgufModel, readGgufHeader, type GgufEntry } from '../src/model/gguf/file.js';
import { convertToGguf } from '../src/model/gguf/convert.js';
import { tensorType } from '../src/model/gguf/quant-mix.js';
import { writeGguf, type TensorToWrite } from '../src/model/gguf/writer.js';
import { loadModel } from '../src/model/load.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURES = join(ROOT, 'test', 'fixtures', 'gguf');
const STORIES = join(ROOT, 'assets', 'stories260K');
const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'qwen-ts-gguf-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Oracle {
  tokens: number[];
  logits: number[][];
}
const oracle = (name: string) => JSON.parse(fs.readFileSync(join(FIXTURES, `${name}.oracle.json`), 'utf8')) as Oracle;

async function logitsOf(file: string, tokens: number[]): Promise<{ logits: Float32Array; vocab: number }> {
  const m = await loadModel(file, { threads: 1 });
  try {
    return { logits: await m.forward(tokens, { allLogits: true }), vocab: m.config.vocabSize };
  } finally {
    await m.close();
  }
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

/** Rewrite a GGUF with its metadata and tensors changed by `edit`. */
function rewrite(
  src: string,
  out: string,
  edit: (meta: [string, GgufEntry][], tensors: TensorToWrite[]) => void,
): string {
  const h = readGgufHeader(src);
  const meta = [...h.metadata.entries()];
  const fd = fs.openSync(src, 'r');
  const tensors: TensorToWrite[] = h.tensors.map((t) => {
    const bytes = new Uint8Array(t.byteLength);
    fs.readSync(fd, bytes, 0, t.byteLength, t.dataStart);
    return { name: t.name, dims: t.dims, type: t.type, data: () => bytes };
  });
  fs.closeSync(fd);
  edit(meta, tensors);
  writeGguf(out, meta, tensors);
  return out;
}

describe('F32 GGUF fixtures against the exact oracle', () => {
  for (const name of ['qwen2', 'qwen3', 'llama']) {
    it(`${name}: every position's logits within 1e-4 of the float64 forward, same argmax`, async () => {
      const o = oracle(name);
      const { logits, vocab } = await logitsOf(join(FIXTURES, `${name}.f32.gguf`), o.tokens);
      expect(vocab).toBe(512);
      for (let p = 0; p < o.tokens.length; p++) {
        const row = logits.subarray(p * vocab, (p + 1) * vocab);
        expect(maxDiff(row, o.logits[p])).toBeLessThan(1e-4);
        const argmax = (a: ArrayLike<number>) => Array.prototype.indexOf.call(a, Math.max(...Array.from(a)));
        expect(argmax(row)).toBe(argmax(o.logits[p]));
      }
    });
  }

  it('reads the config from the metadata: qwen3 head_dim and q/k norms, llama rope_freqs', async () => {
    const qwen3 = await loadModel(join(FIXTURES, 'qwen3.f32.gguf'), { threads: 1 });
    expect(qwen3.config).toMatchObject({ modelType: 'qwen3', headDim: 16, qkNorm: true, tieWordEmbeddings: true });
    await qwen3.close();
    const llama = await loadModel(join(FIXTURES, 'llama.f32.gguf'), { threads: 1 });
    expect(llama.config.tieWordEmbeddings).toBe(false);
    expect(llama.config.ropeScaling).toEqual({
      type: 'factors',
      factors: [1, expect.closeTo(2.44226, 4), 8, 8, 8, 8, 8, 8],
    });
    expect(llama.generationConfig.eosTokenIds).toEqual([2]);
    await llama.close();
  });
});

describe('split GGUF files', () => {
  it('loads a model split in two by its first file, with the same logits', async () => {
    const src = join(FIXTURES, 'qwen2.f32.gguf');
    const h = readGgufHeader(src);
    const half = Math.floor(h.tensors.length / 2);
    const split = (no: number, out: string) =>
      rewrite(src, out, (meta, tensors) => {
        if (no === 1) meta.splice(0, meta.length);
        meta.push(['split.no', { type: GGUF_VALUE.UINT16, value: no }]);
        meta.push(['split.count', { type: GGUF_VALUE.UINT16, value: 2 }]);
        const keep = no === 0 ? tensors.slice(0, half) : tensors.slice(half);
        tensors.splice(0, tensors.length, ...keep);
      });
    split(0, join(dir, 'm-00001-of-00002.gguf'));
    split(1, join(dir, 'm-00002-of-00002.gguf'));
    const o = oracle('qwen2');
    const { logits } = await logitsOf(join(dir, 'm-00001-of-00002.gguf'), o.tokens);
    const { logits: whole } = await logitsOf(src, o.tokens);
    expect(maxDiff(logits, whole)).toBe(0);
    expect(() => GgufModel.open(join(dir, 'm-00002-of-00002.gguf'))).toThrow(/open its first file/);
    fs.rmSync(join(dir, 'm-00002-of-00002.gguf'));
    expect(() => GgufModel.open(join(dir, 'm-00001-of-00002.gguf'))).toThrow(
      /split file 2 of 2 is missing: .*m-00002-of-00002\.gguf/,
    );
  });
});

describe('errors name the file, key, tensor and type', () => {
  const src = join(FIXTURES, 'qwen2.f32.gguf');
  it('a missing metadata key', async () => {
    const file = rewrite(src, join(dir, 'nokey.gguf'), (meta) => {
      meta.splice(
        meta.findIndex(([k]) => k === 'qwen2.embedding_length'),
        1,
      );
    });
    await expect(loadModel(file)).rejects.toThrow(
      /nokey\.gguf: metadata key "qwen2\.embedding_length" must be a non-negative integer; it is missing/,
    );
  });
  it('a key of the wrong type', async () => {
    const file = rewrite(src, join(dir, 'badkey.gguf'), (meta) => {
      meta[meta.findIndex(([k]) => k === 'qwen2.block_count')][1] = { type: GGUF_VALUE.STRING, value: 'two' };
    });
    await expect(loadModel(file)).rejects.toThrow(
      /"qwen2\.block_count" must be a non-negative integer; got string "two"/,
    );
  });
  it('an unsupported architecture', async () => {
    const file = rewrite(src, join(dir, 'arch.gguf'), (meta) => {
      meta[meta.findIndex(([k]) => k === 'general.architecture')][1] = { type: GGUF_VALUE.STRING, value: 'gemma3' };
    });
    await expect(loadModel(file)).rejects.toThrow(
      /"general\.architecture" is "gemma3"; supported: qwen2, qwen3, llama/,
    );
  });
  it('a tensor type qwen-ts cannot run (MXFP4) names the tensor and the type', async () => {
    const file = rewrite(src, join(dir, 'mxfp4.gguf'), (_meta, tensors) => {
      const t = tensors.find((x) => x.name === 'blk.1.ffn_up.weight')!;
      t.type = 39; // MXFP4: 32-value blocks of 17 bytes
      t.data = () => new Uint8Array((64 * 32 * 17) / 32);
    });
    await expect(loadModel(file)).rejects.toThrow(
      /mxfp4\.gguf: tensor "blk\.1\.ffn_up\.weight" has type MXFP4, which qwen-ts cannot run/,
    );
  });
  it('a missing tensor, a truncated file, not a GGUF at all', async () => {
    const file = rewrite(src, join(dir, 'notensor.gguf'), (_meta, tensors) => {
      tensors.splice(
        tensors.findIndex((t) => t.name === 'blk.1.attn_k.weight'),
        1,
      );
    });
    await expect(loadModel(file)).rejects.toThrow(/notensor\.gguf: tensor "blk\.1\.attn_k\.weight" not found/);
    const bytes = fs.readFileSync(src);
    fs.writeFileSync(join(dir, 'cut.gguf'), bytes.subarray(0, bytes.length - 1000));
    await expect(loadModel(join(dir, 'cut.gguf'))).rejects.toThrow(
      /cut\.gguf: tensor "blk\.1\.ffn_down\.weight": its 8192 bytes at offset \d+ run past the end of the file \(\d+ bytes; truncated download\?\)/,
    );
    fs.writeFileSync(join(dir, 'text.gguf'), 'hello world, not a model at all');
    await expect(loadModel(join(dir, 'text.gguf'))).rejects.toThrow(
      /text\.gguf: not a GGUF file \(it starts with "hell"/,
    );
  });
});

describe('qwen-ts convert', () => {
  it("the Q4_K_M mix is llama-quantize's: Q6_K output, more-bits attn_v/ffn_down, fallbacks for 896-wide rows", () => {
    const role = (name: string, cols: number, layer = 0) => ({
      name,
      cols,
      nDims: 2,
      layer,
      layers: 24,
      tiedEmbedding: true,
    });
    expect(tensorType('q4_k_m', role('token_embd.weight', 896))).toBe(8); // tied: output's Q6_K -> Q8_0 (896 % 256)
    expect(tensorType('q4_k_m', role('blk.0.attn_q.weight', 896))).toBe(6); // Q4_K -> Q5_0
    expect(tensorType('q4_k_m', role('blk.0.attn_v.weight', 896))).toBe(8); // Q6_K -> Q8_0
    expect(tensorType('q4_k_m', role('blk.4.ffn_down.weight', 4864, 4))).toBe(12); // 4864 = 19 * 256: Q4_K
    expect(tensorType('q4_k_m', role('blk.2.ffn_down.weight', 4864, 2))).toBe(14); // 2 < 24/8: Q6_K
    expect(tensorType('q4_k_m', role('blk.0.attn_q.weight', 1536))).toBe(12);
    expect(tensorType('q4_k_m', role('blk.5.attn_v.weight', 1536, 5))).toBe(14); // (5 - 3) % 3 == 2: more bits
    expect(tensorType('q4_k_m', role('blk.6.attn_v.weight', 1536, 6))).toBe(12);
    // C's integer division: of 4 layers, layers 2 and 3 get more bits, layer 0 does not.
    const four = (layer: number) => ({ ...role(`blk.${layer}.attn_v.weight`, 256, layer), layers: 4 });
    expect([0, 1, 2, 3].map((l) => tensorType('q4_k_m', four(l)))).toEqual([12, 12, 14, 14]);
    expect(tensorType('q4_k_m', { ...role('blk.0.attn_norm.weight', 1536), nDims: 1 })).toBe(0);
  });

  it('stories260K to F32 GGUF: the same logits as the folder, and LLM.load runs it with the same greedy text', async () => {
    const file = join(dir, 'stories.f32.gguf');
    convertToGguf(STORIES, file, { type: 'f32' });
    const prompt = [1, 403, 261, 375];
    const fromDir = await logitsOf(STORIES, prompt);
    const fromGguf = await logitsOf(file, prompt);
    expect(maxDiff(fromGguf.logits, fromDir.logits)).toBe(0);
    const greedy = { temperature: 0, maxTokens: 40 };
    const a = await LLM.load(STORIES, { threads: 1 });
    const b = await LLM.load(file, { threads: 1 });
    try {
      const ra = (await a.generate('Once upon a time', greedy))[0].outputs[0];
      const rb = (await b.generate('Once upon a time', greedy))[0].outputs[0];
      expect(rb.text).toBe(ra.text);
      expect(rb.tokenIds).toEqual(ra.tokenIds);
      expect(ra.text.length).toBeGreaterThan(40);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('stories260K to Q8_0: loads quantized, logits near f32', async () => {
    const file = join(dir, 'stories.q8_0.gguf');
    convertToGguf(STORIES, file, { type: 'q8_0' });
    const g = GgufModel.open(file);
    expect(g.tensor('blk.0.attn_q.weight')!.type).toBe(8);
    expect(g.tensor('blk.0.attn_norm.weight')!.type).toBe(0);
    const prompt = [1, 403, 261, 375];
    const f32 = await logitsOf(STORIES, prompt);
    const q8 = await logitsOf(file, prompt);
    expect(maxDiff(q8.logits, f32.logits)).toBeLessThan(0.5);
    expect(maxDiff(q8.logits, f32.logits)).toBeGreaterThan(0);
  });

  it('the CLI generates from a .gguf file and converts with errors that say what is wrong', () => {
    const file = join(dir, 'cli.gguf');
    const conv = spawnSync(process.execPath, [MAIN, 'convert', STORIES, '--out', file, '--type', 'f16'], {
      encoding: 'utf8',
    });
    expect(conv.stderr).toMatch(/wrote .*cli\.gguf .*tensors: \d+ F16, \d+ F32/);
    expect(conv.status).toBe(0);
    const gen = spawnSync(
      process.execPath,
      [MAIN, 'generate', '--model', file, '--temperature', '0', '--max-tokens', '12', 'Once upon a time'],
      { encoding: 'utf8' },
    );
    expect(gen.status).toBe(0);
    expect(gen.stdout.length).toBeGreaterThan(20);
    const bad = spawnSync(process.execPath, [MAIN, 'convert', STORIES, '--out', file, '--type', 'q9_9'], {
      encoding: 'utf8',
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--type must be one of f32, f16, bf16, q8_0/);
  });
});
