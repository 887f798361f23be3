// LLM.embed against the float64 numpy reference (tools/make_embed_goldens.py: final-norm hidden
// states pooled and normalised as the folder says) on synthetic Qwen3-Embedding-shaped, Llama and
// Qwen2 models; batched equals one at a time; LLM.score against the model's own last-position
// logits; and the named errors of bad inputs and of the wrong task.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbedInputError, LLM, loadModel, loadPoolingConfig, TaskError, yesProbability } from '../src/index.js';
import { writeSyntheticModel, type SyntheticOptions } from '../src/model/synthetic.js';
import { RERANK_SYSTEM_PROMPT } from '../src/engine/rerank.js';
import { makeTempModel, removeDir } from './helpers/models.js';

interface EmbedGolden {
  synthetic: { preset: SyntheticOptions['preset']; seed: number; embedding?: SyntheticOptions['embedding'] };
  architectures: string[];
  pooling: 'last' | 'mean' | 'cls';
  normalize: boolean;
  cases: { ids: number[]; embedding: number[] }[];
}

const readGolden = (name: string): EmbedGolden =>
  JSON.parse(fs.readFileSync(new URL(`./fixtures/embed/${name}.json`, import.meta.url), 'utf8')) as EmbedGolden;

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0,
    aa = 0,
    bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

function modelOf(g: EmbedGolden): string {
  const d = makeTempModel({ preset: g.synthetic.preset, seed: g.synthetic.seed, embedding: g.synthetic.embedding });
  dirs.push(d);
  return d;
}

describe.each(['qwen3-embedding', 'llama-mean', 'qwen2-cls', 'llama'])('embeddings of %s', (name) => {
  const g = readGolden(name);
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(modelOf(g), {
      threads: 2,
      progressBar: false,
      ...(name === 'llama' ? { task: 'embed' } : {}),
    });
  });
  afterAll(() => llm?.close());

  it(`the folder's pooling (${g.pooling}, normalize ${g.normalize}) and task`, () => {
    expect(llm.pooling.mode).toBe(g.pooling);
    expect(llm.pooling.normalize).toBe(g.normalize);
    expect(llm.task.task).toBe('embed');
  });

  it('match the float64 reference (cosine >= 0.99999), batched equals one at a time', async () => {
    const inputs = g.cases.map((c) => ({ promptTokenIds: c.ids }));
    const batched = await llm.embed(inputs);
    expect(batched.map((b) => b.promptTokenIds)).toEqual(g.cases.map((c) => c.ids));
    for (const [i, c] of g.cases.entries()) {
      const got = batched[i].outputs.embedding;
      expect(got.length).toBe(c.embedding.length);
      expect(cosine(got, c.embedding)).toBeGreaterThanOrEqual(0.99999);
      // Unnormalised vectors (mean pooling without 2_Normalize) also keep their length.
      if (!g.normalize) expect(Math.abs(norm(got) / norm(c.embedding) - 1)).toBeLessThan(1e-4);
      else expect(norm(got)).toBeCloseTo(1, 6);
      const [alone] = await llm.embed(inputs[i]);
      const diff = Math.max(...alone.outputs.embedding.map((v, k) => Math.abs(v - got[k])));
      expect(diff).toBeLessThanOrEqual(1e-6);
    }
  });
});

describe('embedding options and inputs (Qwen3-Embedding layout)', () => {
  const g = readGolden('qwen3-embedding');
  let llm: LLM;
  let dir: string;
  beforeAll(async () => {
    dir = modelOf(g);
    llm = await LLM.load(dir, { threads: 2, progressBar: false, maxSequences: 256, maxBatchTokens: 256 });
  });
  afterAll(() => llm?.close());

  it('loads without lm_head and without the model. prefix; the tokenizer appends <|endoftext|>', async () => {
    const names = Object.keys(
      JSON.parse(
        fs
          .readFileSync(path.join(dir, 'model.safetensors'))
          .subarray(8, 8 + Number(fs.readFileSync(path.join(dir, 'model.safetensors')).readBigUInt64LE(0)))
          .toString(),
      ),
    );
    expect(names).toContain('embed_tokens.weight');
    expect(names.some((n) => n.startsWith('model.') || n.startsWith('lm_head'))).toBe(false);
    expect(llm.model.weights.headless).toBe(true);
    const [out] = await llm.embed('Hello, world!');
    expect(out.promptTokenIds).toEqual(g.cases[0].ids);
    expect(cosine(out.outputs.embedding, g.cases[0].embedding)).toBeGreaterThanOrEqual(0.99999);
  });

  it('prompts from config_sentence_transformers.json by name, or as text', async () => {
    expect(loadPoolingConfig(dir).prompts.query).toMatch(/^Instruct: /);
    const [named] = await llm.embed('Hello, world!', { promptName: 'query' });
    expect(named.prompt).toBe(llm.pooling.prompts.query + 'Hello, world!');
    const [literal] = await llm.embed('Hello, world!', { prompt: llm.pooling.prompts.query });
    expect(literal.outputs.embedding).toEqual(named.outputs.embedding);
    expect(literal.promptTokenIds.at(-1)).toBe(151643);
  });

  it('dimensions truncates (Matryoshka) then renormalises; normalize: false keeps the raw pooled state', async () => {
    const ids = { promptTokenIds: g.cases[2].ids };
    const [raw] = await llm.embed(ids, { normalize: false });
    const [cut] = await llm.embed(ids, { dimensions: 16 });
    expect(cut.outputs.embedding.length).toBe(16);
    expect(norm(cut.outputs.embedding)).toBeCloseTo(1, 6);
    const head = raw.outputs.embedding.slice(0, 16);
    expect(cosine(cut.outputs.embedding, head)).toBeGreaterThanOrEqual(0.9999999);
    expect(cosine(raw.outputs.embedding, g.cases[2].embedding)).toBeGreaterThanOrEqual(0.99999);
    expect(norm(raw.outputs.embedding)).not.toBeCloseTo(1, 2);
  });

  it('bad inputs are named errors; the engine goes on', async () => {
    await expect(llm.embed([])).rejects.toThrow(new EmbedInputError('texts is empty: give at least one text'));
    await expect(llm.embed(['a', ''])).rejects.toThrow('texts[1] is an empty string');
    await expect(llm.embed([{ promptTokenIds: [1, 151936] }])).rejects.toThrow(
      'texts[0][1] is 151936: token ids must be integers from 0 to 151935',
    );
    await expect(llm.embed([{ promptTokenIds: [] }])).rejects.toThrow('texts[0] is an empty list of token ids');
    await expect(llm.embed('a', { dimensions: 65 })).rejects.toThrow(
      "dimensions must be an integer from 1 to 64 (the model's hidden size), got 65",
    );
    await expect(llm.embed('a', { dimensions: 0 })).rejects.toThrow('dimensions must be an integer from 1 to 64');
    await expect(llm.embed('a', { promptName: 'passage' })).rejects.toThrow(
      'promptName "passage" is not one of the model\'s prompts (query, document)',
    );
    await expect(llm.generate('hello')).rejects.toThrow(TaskError);
    await expect(llm.generate('hello')).rejects.toThrow(/this model embeds .*it cannot generate text/);
    await expect(llm.score('q', ['d'])).rejects.toThrow(/score\(\) needs a reranker/);
    expect((await llm.embed('still fine'))[0].outputs.embedding.length).toBe(64);
  });

  it('10,000 texts run in bounded batches (maxSequences at a time) and free their KV cache', async () => {
    const inputs = Array.from({ length: 10_000 }, (_, i) => ({ promptTokenIds: [i % 1000] }));
    const out = await llm.embed(inputs);
    expect(out.length).toBe(10_000);
    expect(out[1000].outputs.embedding).toEqual(out[0].outputs.embedding);
    const state = await llm.stats();
    expect(state.running).toBe(0);
    expect(state.freeTokens).toBe(state.capacityTokens);
  }, 60_000);

  it('qwen-ts embed prints the library vectors; qwen-ts rerank on it exits 2 naming the task', async () => {
    const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [main, ...args, '--model', dir, '-t', '1'], { encoding: 'utf8', timeout: 60_000 });
    const r = run('embed', '--dimensions', '8', '--prompt-name', 'query', 'Hello, world!');
    expect(r.status, r.stderr).toBe(0);
    const line = JSON.parse(r.stdout.trim());
    const [expected] = await llm.embed('Hello, world!', { dimensions: 8, promptName: 'query' });
    expect(line).toMatchObject({ index: 0, text: 'Hello, world!', tokens: expected.promptTokenIds.length });
    expect(line.embedding).toEqual(expected.outputs.embedding);
    const bad = run('rerank', '--query', 'q', 'doc');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/score\(\) needs a reranker \(task "score"\); this model's task is "embed"/);
  }, 60_000);

  it('a causal LM folder refuses task "generate" only when it has no head', async () => {
    await expect(LLM.load(dir, { threads: 1, progressBar: false, task: 'generate' })).rejects.toThrow(
      /option task is "generate", but .* has no output head/,
    );
    await expect(LLM.load(dir, { threads: 1, task: 'encode' as never })).rejects.toThrow(
      'LLM.load: option task must be one of generate, embed, score, got "encode"',
    );
  });
});

describe('reranking (Qwen3-Reranker format)', () => {
  let llm: LLM;
  let dir: string;
  beforeAll(async () => {
    // A causal LM whose folder is named *Reranker*: task "score".
    dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-')), 'Tiny-Reranker');
    dirs.push(path.dirname(dir));
    writeSyntheticModel(dir, { preset: 'tiny-qwen3', seed: 5 });
    llm = await LLM.load(dir, { threads: 2, progressBar: false });
  });
  afterAll(() => llm?.close());

  it('scores are P(yes) of the yes/no logits at the last position of the judging prompt', async () => {
    expect(llm.task.task).toBe('score');
    const docs = ['The capital of China is Beijing.', 'Gravity is a force.', 'Paris'];
    const out = await llm.score('What is the capital of China?', docs);
    expect(out.length).toBe(3);
    expect(out[0].prompt).toBe(
      `<|im_start|>system\n${RERANK_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n` +
        '<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n' +
        `<Query>: What is the capital of China?\n<Document>: ${docs[0]}` +
        '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
    expect(llm.tokenizer.decode(out[0].promptTokenIds, { skipSpecialTokens: false })).toBe(out[0].prompt);
    const model = await loadModel(dir, { threads: 1 });
    try {
      const yes = llm.tokenizer.tokenToId('yes')!,
        no = llm.tokenizer.tokenToId('no')!;
      for (const o of out) {
        const logits = model.forward(o.promptTokenIds);
        model.resetCache(0);
        const expected = yesProbability(logits[yes], logits[no]);
        expect(o.outputs.score).toBeGreaterThanOrEqual(0);
        expect(o.outputs.score).toBeLessThanOrEqual(1);
        expect(Math.abs(o.outputs.score - expected)).toBeLessThan(1e-6);
      }
    } finally {
      await model.close();
    }
    expect(new Set(out.map((o) => o.outputs.score)).size).toBe(3);
  });

  it('an embedding request to a reranker is refused; bad documents are named', async () => {
    await expect(llm.embed('x')).rejects.toThrow(/this model is a reranker \(task "score": the model's name/);
    await expect(llm.score('q', [])).rejects.toThrow('documents is empty');
    await expect(llm.score('q', ['a', ''])).rejects.toThrow('documents[1] must be a non-empty string');
    await expect(llm.score('', ['a'])).rejects.toThrow('query must be a non-empty string');
  });
});
