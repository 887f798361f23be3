// Model names resolved without a network: paths, a hub cache root, the Hugging Face cache (as
// huggingface_hub lays it out), Ollama's store (fixtures of its layout), and the errors that say what to do.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { loadModel } from '../src/model/load.js';
import { listModels, resolveModel, type ResolveOptions } from '../src/model/sources/index.js';
import { removeDir } from './helpers/models.js';

const STORIES = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const MAIN = 'c'.repeat(40);
const OLD = 'd'.repeat(40);
const GGUF_MAGIC = Buffer.from('GGUF\x03\0\0\0');

let tmp: string;
let hfCache: string;
let ollama: string;
let opts: ResolveOptions;

/** A snapshot as huggingface_hub writes it: files in blobs/, links in snapshots/<commit>/. */
function addSnapshot(cache: string, repo: string, commit: string, files: Record<string, Buffer>, ref?: string): string {
  const repoDir = path.join(cache, `models--${repo.replace('/', '--')}`);
  const snapshot = path.join(repoDir, 'snapshots', commit);
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  for (const [name, bytes] of Object.entries(files)) {
    const blob = path.join(repoDir, 'blobs', `${commit.slice(0, 8)}-${name.replace(/\//g, '_')}`);
    fs.writeFileSync(blob, bytes);
    const link = path.join(snapshot, name);
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(link), blob), link);
  }
  if (ref) {
    fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', ref), commit);
  }
  return snapshot;
}

/** An Ollama store entry: a manifest whose model layer is a GGUF blob. */
function addOllama(store: string, name: string, tag: string, bytes: Buffer): string {
  const digest = `sha256:${(bytes.length.toString(16) + name)
    .padEnd(64, '0')
    .slice(0, 64)
    .replace(/[^0-9a-f]/g, 'e')}`;
  const blob = path.join(store, 'blobs', digest.replace(':', '-'));
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  fs.writeFileSync(blob, bytes);
  const [namespace, model] = name.includes('/') ? name.split('/') : ['library', name];
  const manifest = path.join(store, 'manifests', 'registry.ollama.ai', namespace, model, tag);
  fs.mkdirSync(path.dirname(manifest), { recursive: true });
  fs.writeFileSync(
    manifest,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: {
        mediaType: 'application/vnd.docker.container.image.v1+json',
        digest: 'sha256:' + '0'.repeat(64),
        size: 2,
      },
      layers: [
        { mediaType: 'application/vnd.ollama.image.model', digest, size: bytes.length },
        { mediaType: 'application/vnd.ollama.image.template', digest: 'sha256:' + '1'.repeat(64), size: 10 },
      ],
    }),
  );
  return blob;
}

const storyFiles = () =>
  Object.fromEntries(
    ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map(
      (f) => [f, fs.readFileSync(path.join(STORIES, f))],
    ),
  );

let storiesSnapshot: string;
let ollamaBlob: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-sources-'));
  hfCache = path.join(tmp, 'hf', 'hub');
  ollama = path.join(tmp, 'ollama', 'models');
  storiesSnapshot = addSnapshot(hfCache, 'Org/Stories', MAIN, storyFiles(), 'main');
  addSnapshot(hfCache, 'Org/Stories', OLD, { 'config.json': Buffer.from('{}') }, 'v0');
  // A half-fetched snapshot (Python links each file as it arrives): the shard is missing.
  const half = storyFiles();
  delete half['model.safetensors'];
  addSnapshot(hfCache, 'Org/Half', MAIN, half, 'main');
  addSnapshot(
    hfCache,
    'Org/Torch',
    MAIN,
    { 'config.json': Buffer.from('{}'), 'pytorch_model.bin': Buffer.alloc(9) },
    'main',
  );
  addSnapshot(hfCache, 'Org/Q-GGUF', MAIN, { 'q-q4_k_m.gguf': GGUF_MAGIC, 'q-q8_0.gguf': GGUF_MAGIC }, 'main');
  ollamaBlob = addOllama(ollama, 'qwen2.5', '0.5b', Buffer.concat([GGUF_MAGIC, Buffer.alloc(100)]));
  addOllama(ollama, 'someone/tiny', 'latest', GGUF_MAGIC);
  opts = { env: { HF_HOME: path.join(tmp, 'hf'), OLLAMA_MODELS: ollama, HF_HUB_OFFLINE: '1' }, progressBar: false };
});
afterAll(() => removeDir(tmp));

describe('paths', () => {
  it('a model folder and a .gguf file are taken as they are', async () => {
    expect(await resolveModel(STORIES, opts)).toEqual({
      path: STORIES,
      format: 'safetensors',
      source: 'path',
      name: 'stories260K',
    });
    const gguf = path.join(tmp, 'm.gguf');
    fs.writeFileSync(gguf, GGUF_MAGIC);
    expect(await resolveModel(gguf, opts)).toMatchObject({ path: gguf, format: 'gguf', source: 'path' });
    await expect(resolveModel('./no/such/dir', opts)).rejects.toThrow(
      './no/such/dir does not exist (no such folder or file)',
    );
  });

  it('a hub cache root (models--Org--Name) resolves to the snapshot of refs/main, or of --revision', async () => {
    const root = path.join(hfCache, 'models--Org--Stories');
    expect(await resolveModel(root, opts)).toMatchObject({ path: storiesSnapshot, name: 'Org/Stories', commit: MAIN });
    expect((await resolveModel(root, { ...opts, revision: 'v0' })).path).toBe(path.join(root, 'snapshots', OLD));
    await expect(resolveModel(root, { ...opts, revision: 'v7' })).rejects.toThrow(
      `${root} has no snapshot for revision v7; it has:`,
    );
    // Without refs/main and with several snapshots: which one is a question for the user.
    const copy = path.join(tmp, 'models--Org--Copy');
    fs.cpSync(root, copy, { recursive: true, verbatimSymlinks: true });
    fs.rmSync(path.join(copy, 'refs'), { recursive: true });
    await expect(resolveModel(copy, opts)).rejects.toThrow(
      /several snapshots and no refs\/main; give --revision one of: .*(cccc|dddd)/,
    );
    const empty = path.join(tmp, 'models--Org--Empty');
    fs.mkdirSync(path.join(empty, 'blobs'), { recursive: true });
    await expect(resolveModel(empty, opts)).rejects.toThrow(
      /hub cache folder with no snapshot \(snapshots\/<commit>\/\): the download did not finish; run qwen-ts pull Org\/Empty/,
    );
  });

  it('a folder with only pytorch_model.bin says safetensors are needed and how to get them', async () => {
    const dir = path.join(tmp, 'torch-only');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'x');
    await expect(resolveModel(dir, opts)).rejects.toThrow(
      /holds PyTorch weights \(pytorch_model\.bin\) but no safetensors.*qwen-ts pull Org\/Name.*save_pretrained/,
    );
    await expect(resolveModel(path.join(hfCache, 'models--Org--Torch'), opts)).rejects.toThrow(/PyTorch weights/);
  });

  it('loadModel takes a hub cache root and a hub name as it takes a folder', async () => {
    const byRoot = await loadModel(path.join(hfCache, 'models--Org--Stories'), { threads: 1 });
    const byName = await loadModel('Org/Stories', { threads: 1, source: opts });
    try {
      expect(byName.config).toEqual(byRoot.config);
      expect(byName.config.vocabSize).toBe(512);
    } finally {
      await byRoot.close();
      await byName.close();
    }
  });
});

it('LLM.load takes a hub name (its source options, callbacks included, stay on the caller thread)', async () => {
  const llm = await LLM.load('Org/Stories', { threads: 1, maxSequences: 1, source: { ...opts, onProgress: () => {} } });
  try {
    const byName = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 12 });
    const direct = await LLM.load(STORIES, { threads: 1, maxSequences: 1 });
    try {
      const fromFolder = await direct.generate('Once upon a time', { temperature: 0, maxTokens: 12 });
      expect(byName[0].outputs[0].tokenIds).toEqual(fromFolder[0].outputs[0].tokenIds);
      expect(byName[0].outputs[0].tokenIds).toHaveLength(12);
    } finally {
      await direct.close();
    }
  } finally {
    await llm.close();
  }
});

describe('the Hugging Face cache', () => {
  it('Org/Name is found via HF_HOME (and HF_HUB_CACHE) at refs/main or a revision, without a network', async () => {
    expect(await resolveModel('Org/Stories', opts)).toEqual({
      path: storiesSnapshot,
      format: 'safetensors',
      source: 'hf-cache',
      name: 'Org/Stories',
      commit: MAIN,
    });
    const viaHubCache = await resolveModel('Org/Stories', {
      ...opts,
      env: { HF_HUB_CACHE: hfCache, HF_HUB_OFFLINE: '1' },
    });
    expect(viaHubCache.path).toBe(storiesSnapshot);
    expect((await resolveModel('Org/Stories', { ...opts, revision: MAIN })).path).toBe(storiesSnapshot);
    expect((await resolveModel('Org/Q-GGUF:Q8_0', opts)).path).toBe(
      path.join(hfCache, 'models--Org--Q-GGUF', 'snapshots', MAIN, 'q-q8_0.gguf'),
    );
    expect((await resolveModel('Org/Q-GGUF', opts)).path).toMatch(/q-q4_k_m\.gguf$/);
  });

  it('a half-fetched snapshot is never taken for a model: offline, the error lists where it looked and how to fetch it', async () => {
    await expect(resolveModel('Org/Half', opts)).rejects.toThrow(
      `Org/Half is not in the local caches and HF_HUB_OFFLINE=1 forbids downloading it. Looked in: a folder or file ./Org/Half; the Hugging Face cache (${path.join(hfCache, 'models--Org--Half')}); Ollama's store (${ollama}). Fetch it once online: qwen-ts pull Org/Half`,
    );
  });
});

describe("Ollama's store", () => {
  it('name:tag resolves through the manifest to the model blob (a GGUF); namespaces and :latest too', async () => {
    expect(await resolveModel('qwen2.5:0.5b', opts)).toEqual({
      path: ollamaBlob,
      format: 'gguf',
      source: 'ollama',
      name: 'qwen2.5:0.5b',
    });
    expect(await resolveModel('someone/tiny', opts)).toMatchObject({ source: 'ollama', name: 'someone/tiny:latest' });
  });

  it('a name that is not pulled says `ollama pull name:tag`; a manifest whose blob is gone says to pull again', async () => {
    await expect(resolveModel('qwen2.5:7b', opts)).rejects.toThrow(
      `qwen2.5:7b not found. Looked in: a folder or file ./qwen2.5:7b; Ollama's store (${ollama}). Get it with \`ollama pull qwen2.5:7b\``,
    );
    await expect(resolveModel('llama3', opts)).rejects.toThrow('`ollama pull llama3:latest`');
    const store = path.join(tmp, 'ollama-broken');
    const blob = addOllama(store, 'gone', '1b', GGUF_MAGIC);
    fs.rmSync(blob);
    await expect(resolveModel('gone:1b', { ...opts, ollamaDir: store })).rejects.toThrow(
      /names the blob .* which is missing; run `ollama pull gone:1b` again/,
    );
  });
});

describe('listModels', () => {
  it('lists the Hugging Face cache (per snapshot, GGUF per tag) and the Ollama store with format, size and place', () => {
    const rows = listModels({ env: opts.env }).map((m) => [m.name, m.format, m.bytes, m.source]);
    const storiesBytes = Object.values(storyFiles()).reduce((n, b) => n + b.length, 0);
    expect(rows).toEqual([
      ['Org/Half', 'incomplete', expect.any(Number), 'hf-cache'],
      ['Org/Q-GGUF:Q4_K_M', 'gguf', 8, 'hf-cache'],
      ['Org/Q-GGUF:Q8_0', 'gguf', 8, 'hf-cache'],
      ['Org/Stories', 'safetensors', storiesBytes, 'hf-cache'],
      ['Org/Stories@v0', 'incomplete', 2, 'hf-cache'],
      ['Org/Torch', 'pytorch (unusable)', 11, 'hf-cache'],
      ['qwen2.5:0.5b', 'gguf', 108, 'ollama'],
      ['someone/tiny:latest', 'gguf', 8, 'ollama'],
    ]);
  });
});
