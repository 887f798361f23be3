import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { QwenTokenizer } from '../src/tokenizer/index.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const TOKENIZER_DIR = join(FIXTURES, '..', '..', 'assets', 'qwen2.5-tokenizer');

interface Golden {
  name: string;
  text: string;
  ids: number[];
}
// Produced by tools/tokenizer_reference.py, an independent from-scratch Python BPE
// (see the "generator" and "command" fields of the file).
const GOLDENS = JSON.parse(readFileSync(join(FIXTURES, 'tokenizer-goldens.json'), 'utf8')) as {
  generator: string;
  cases: Golden[];
};

let tok: QwenTokenizer;
beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
});

describe('fixture', () => {
  it('tokenizer files match the sha256 recorded in NOTICE.md', () => {
    const notice = readFileSync(join(TOKENIZER_DIR, 'NOTICE.md'), 'utf8');
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
      const sha = createHash('sha256')
        .update(readFileSync(join(TOKENIZER_DIR, file)))
        .digest('hex');
      expect(notice).toContain(`| ${file} | `);
      expect(notice).toContain(sha);
    }
  });

  it('goldens come from the independent reference implementation', () => {
    expect(GOLDENS.generator).toMatch(/tokenizer_reference\.py/);
    expect(GOLDENS.cases.length).toBeGreaterThanOrEqual(15);
  });
});

describe('encode matches the independent reference tokenizer', () => {
  it('Qwen adds no BOS or EOS (add_bos_token: false, ByteLevel post-processor)', () => {
    expect(tok.prefixIds).toEqual([]);
    expect(tok.suffixIds).toEqual([]);
  });
  for (const c of GOLDENS.cases) {
    it(`${c.name}: ${JSON.stringify(c.text).slice(0, 50)}`, () => {
      expect(tok.encode(c.text)).toEqual(c.ids);
      expect(tok.encode(c.text, { addSpecialTokens: false })).toEqual(c.ids); // Qwen adds no BOS/EOS
    });
  }
});

describe('decode', () => {
  it('round-trips every golden string (up to NFC normalisation)', () => {
    for (const c of GOLDENS.cases) {
      expect(tok.decode(tok.encode(c.text))).toBe(c.text.normalize('NFC'));
      expect(tok.decode(c.ids)).toBe(c.text.normalize('NFC'));
    }
  });

  it('round-trips a mixed multilingual / code / emoji document', () => {
    const text =
      '# 标题\n\n```ts\nconst x = [1, 2, 3].map((n) => n ** 2); // 😀\n```\n\n' +
      'Ünïcödé — ‘quotes’ “more” … 𝔘𝔫𝔦 🇯🇵🇫🇷 👩🏽‍🚀\t\t\n\n\n   end   ';
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('splits digits one by one', () => {
    const ids = tok.encode('2024');
    expect(ids.map((id) => tok.decode([id]))).toEqual(['2', '0', '2', '4']);
  });

  it('skipSpecialTokens drops special tokens but keeps non-special added tokens', () => {
    const ids = tok.encode('<|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|><|endoftext|>');
    expect(tok.decode(ids)).toBe('<|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|><|endoftext|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('assistant\n<tool_call>{}</tool_call>');
  });

  it('an incomplete UTF-8 sequence decodes to U+FFFD', () => {
    const ids = tok.encode(' 🍕'); // " \xF0\x9F" + "\x8D" + "\x95": the emoji is split over three tokens
    expect(ids).toEqual([11162, 235, 243]);
    expect(tok.decode(ids.slice(0, 1))).toBe(' \uFFFD');
    expect(tok.decode(ids.slice(0, 2))).toBe(' \uFFFD');
    expect(tok.decode(ids.slice(1))).toBe('\uFFFD\uFFFD'); // two lone continuation bytes
  });

  it('empty input, unknown ids and invalid ids', () => {
    expect(tok.decode([])).toBe('');
    expect(tok.encode('')).toEqual([]);
    // 151665..151935 exist in the model's logits (padding) but not in the tokenizer.
    expect(tok.decode([9707, 151700, 1879])).toBe('Hello world');
    expect(() => tok.decode([-1])).toThrow(RangeError);
    expect(() => tok.decode([1.5])).toThrow(RangeError);
    expect(tok.decode(new Int32Array([9707, 1879]))).toBe('Hello world');
  });
});

describe('vocabulary and special tokens', () => {
  it('reads ids from the config', () => {
    expect(tok.vocabSize).toBe(151665);
    expect(tok.eosToken).toBe('<|im_end|>');
    expect(tok.eosTokenId).toBe(151645);
    expect(tok.padToken).toBe('<|endoftext|>');
    expect(tok.padTokenId).toBe(151643);
    expect(tok.bosToken).toBeNull();
    expect(tok.bosTokenId).toBeNull();
    expect(tok.chatTemplate).toContain('<|im_start|>');
  });

  it('maps tokens and ids both ways', () => {
    expect(tok.tokenToId('<|im_start|>')).toBe(151644);
    expect(tok.idToToken(151644)).toBe('<|im_start|>');
    expect(tok.tokenToId('Hello')).toBe(9707);
    expect(tok.idToToken(1879)).toBe('Ġworld'); // byte-level form: Ġ is the space byte
    expect(tok.tokenToId('no-such-token-xyz')).toBeUndefined();
    expect(tok.idToToken(10_000_000)).toBeUndefined();
  });

  it('knows which added tokens are special', () => {
    expect(tok.isSpecialToken(151645)).toBe(true);
    expect(tok.isSpecialToken(151643)).toBe(true);
    expect(tok.isSpecialToken(151657)).toBe(false); // <tool_call>
    expect(tok.isSpecialToken(9707)).toBe(false);
    expect(tok.addedTokens.get('<|file_sep|>')).toBe(151664);
    expect(tok.addedTokens.size).toBe(22);
  });

  it('special tokens written in the text map to their ids', () => {
    expect(tok.encode('<|im_start|>')).toEqual([151644]);
    expect(tok.encode('a<|im_end|>b')).toEqual([64, 151645, 65]);
    expect(tok.encode('<|endoftext|><|endoftext|>')).toEqual([151643, 151643]);
  });
});

describe('fromDir errors', () => {
  it('names the missing file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qwen-tok-'));
    try {
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(/tokenizer(_config)?\.json/);
      copyFileSync(join(TOKENIZER_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(/cannot read .*tokenizer_config\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the file with invalid JSON', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qwen-tok-'));
    try {
      copyFileSync(join(TOKENIZER_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
      writeFileSync(join(dir, 'tokenizer_config.json'), '{ not json');
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(/invalid JSON in .*tokenizer_config\.json/);
      writeFileSync(join(dir, 'tokenizer_config.json'), '{}');
      writeFileSync(join(dir, 'tokenizer.json'), '{"hello": 1}');
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(/tokenizer\.json is not a tokenizer\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
