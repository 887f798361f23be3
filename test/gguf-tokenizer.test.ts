// The tokenizer built from GGUF metadata encodes exactly as the tokenizer.json it came from:
// Qwen2.5's byte-level BPE (a GGUF written by our convert, as convert_hf_to_gguf writes it) and
// stories260K's SentencePiece-style vocabulary (a GGUF made by gguf-py: test/fixtures/gguf).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../src/engine/load-tokenizer.js';
import { GgufModel } from '../src/model/gguf/file.js';
import { ggufTokenizerFiles, tokenizerMetadata } from '../src/model/gguf/tokenizer.js';
import { writeGguf } from '../src/model/gguf/writer.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const QWEN_DIR = join(ROOT, 'assets', 'qwen2.5-tokenizer');
const STORIES_DIR = join(ROOT, 'assets', 'stories260K');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'gguf');
const GOLDENS = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'tokenizer-goldens.json'), 'utf8')) as {
  cases: { name: string; text: string; ids: number[] }[];
};

const CORPUS = [
  'Hello, world! The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine; we've DONE it, haven't we?",
  '你好，世界！今天天气很好，我们去公园散步吧。',
  '混合 English 和中文 text 123 与数字 4567',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'const x = { a: [1, 2, 3], b: "str" };\t// comment\n\t\tindented();',
  '🙂 👍🏽 👨‍👩‍👧‍👦 🇯🇵 emoji ✨',
  'spaces:     five, tabs:\t\t\ttwo, newlines:\n\n\n\nend   ',
  '   leading and trailing   ',
  '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
  'text<|endoftext|>more text',
  '<tool_call>{"name": "f"}</tool_call> <|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>',
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
  'café naïve Ångström ﬁ ½ ①',
  '',
];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwen-ts-gguf-tok-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const json = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

/** A GGUF holding only the tokenizer keys of `tokDir` (what convert writes), and its tokenizer. */
function ggufOf(tokDir: string, vocabSize: number, name: string): string {
  const file = join(dir, `${name}.gguf`);
  const meta = tokenizerMetadata(
    json(join(tokDir, 'tokenizer.json')),
    json(join(tokDir, 'tokenizer_config.json')),
    vocabSize,
    tokDir,
  );
  writeGguf(file, [['general.architecture', { type: 8, value: 'qwen2' }], ...meta], []);
  return file;
}

describe('Qwen2.5 tokenizer from GGUF metadata (gpt2 model, qwen2 pre-tokenizer)', () => {
  let hf: QwenTokenizer;
  let gg: QwenTokenizer;
  beforeAll(async () => {
    hf = await QwenTokenizer.fromDir(QWEN_DIR);
    gg = await loadTokenizer(ggufOf(QWEN_DIR, 151936, 'qwen'));
  });

  it('encodes the corpus (English, Chinese, code, emoji, whitespace runs, special tokens) to the same ids', () => {
    for (const text of CORPUS) expect(gg.encode(text), JSON.stringify(text)).toEqual(hf.encode(text));
  });

  it('encodes the 51 independent goldens (tools/tokenizer_reference.py) exactly', () => {
    for (const c of GOLDENS.cases) expect(gg.encode(c.text), c.name).toEqual(c.ids);
  });

  it('has the same vocabulary size, special tokens, eos and chat template; decodes alike', () => {
    expect(gg.vocabSize).toBe(hf.vocabSize);
    expect(gg.eosTokenId).toBe(hf.eosTokenId);
    expect(gg.prefixIds).toEqual([]);
    expect(gg.chatTemplate).toBe(hf.chatTemplate);
    expect(gg.isSpecialToken(151645)).toBe(true);
    const ids = hf.encode(CORPUS.join(' '));
    expect(gg.decode(ids)).toBe(hf.decode(ids));
    // GGUF marks <|fim_prefix|> & co. control tokens (convert_hf_to_gguf's does_token_look_special), as
    // llama.cpp treats them: skipSpecialTokens drops them, where tokenizer.json keeps them.
    const noFim = hf.encode(CORPUS.filter((t) => !t.includes('fim')).join(' '));
    expect(gg.decode(noFim, { skipSpecialTokens: true })).toBe(hf.decode(noFim, { skipSpecialTokens: true }));
    expect(gg.decode(hf.encode('<|fim_prefix|>a'), { skipSpecialTokens: true })).toBe('a');
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    expect(gg.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(
      hf.applyChatTemplate(messages, { addGenerationPrompt: true }),
    );
  });

  it('the metadata has 151936 tokens, [PADn] beyond the tokenizer, and Qwen types', () => {
    const g = GgufModel.open(join(dir, 'qwen.gguf'));
    const tokens = g.value('tokenizer.ggml.tokens') as string[];
    const types = g.value('tokenizer.ggml.token_type') as number[];
    expect(tokens.length).toBe(151936);
    expect(tokens[151665]).toBe('[PAD151665]');
    expect(types[151665]).toBe(5); // unused
    expect(types[151644]).toBe(3); // <|im_start|>: control
    expect(types[151657]).toBe(4); // <tool_call>: user-defined
    expect(g.value('tokenizer.ggml.pre')).toBe('qwen2');
    expect(g.value('tokenizer.ggml.eos_token_id')).toBe(151645);
  });
});

describe('SentencePiece-style tokenizer from GGUF metadata (llama model)', () => {
  const STORIES_CORPUS = [
    ...CORPUS,
    'Once upon a time, there was a little girl named Lily.\nShe loved to play outside in the park.',
    'Tom and Sue were friends. They liked to run and jump!',
  ];

  it('stories260K via our convert encodes as its tokenizer.json (BOS, byte fallback)', async () => {
    const hf = await QwenTokenizer.fromDir(STORIES_DIR);
    const gg = await loadTokenizer(ggufOf(STORIES_DIR, 512, 'stories'));
    for (const text of STORIES_CORPUS) expect(gg.encode(text), JSON.stringify(text)).toEqual(hf.encode(text));
    expect(gg.prefixIds).toEqual([1]);
    const ids = hf.encode(STORIES_CORPUS.join(' '));
    expect(gg.decode(ids)).toBe(hf.decode(ids));
  });

  it('the gguf-py fixture (tools/gguf/hf_to_gguf.py) encodes as stories260K tokenizer.json', async () => {
    const hf = await QwenTokenizer.fromDir(STORIES_DIR);
    const gg = await loadTokenizer(join(FIXTURES, 'llama.f32.gguf'));
    for (const text of STORIES_CORPUS) expect(gg.encode(text), JSON.stringify(text)).toEqual(hf.encode(text));
  });

  it('an unknown tokenizer.ggml.pre is an error naming the key and the supported values', () => {
    const file = join(dir, 'badpre.gguf');
    const meta = tokenizerMetadata(json(join(QWEN_DIR, 'tokenizer.json')), {}, 151936, QWEN_DIR).map(
      ([k, v]): [string, typeof v] => (k === 'tokenizer.ggml.pre' ? [k, { type: 8, value: 'starcoder' }] : [k, v]),
    );
    writeGguf(file, meta, []);
    expect(() => ggufTokenizerFiles(GgufModel.open(file))).toThrow(
      /"tokenizer\.ggml\.pre" is "starcoder"; supported pre-tokenizers: qwen2/,
    );
  });
});
