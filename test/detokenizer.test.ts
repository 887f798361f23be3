import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { QwenTokenizer, StreamDecoder, type Decoder } from '../src/tokenizer/index.js';
import { Xoshiro128 } from '../src/sampler/index.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const GOLDENS = (
  JSON.parse(readFileSync(FIXTURES + 'tokenizer-goldens.json', 'utf8')) as { cases: { name: string; ids: number[] }[] }
).cases;

let tok: QwenTokenizer;
beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(FIXTURES + '../../assets/qwen2.5-tokenizer');
});

/** Streams ids through a StreamDecoder; returns every delta, flush last. */
function stream(dec: Decoder, ids: number[], skipSpecialTokens = false): string[] {
  const sd = new StreamDecoder(dec, { skipSpecialTokens });
  const deltas = ids.map((id) => sd.push(id));
  deltas.push(sd.flush());
  return deltas;
}

describe('StreamDecoder', () => {
  it('holds back a character split across tokens until it is complete', () => {
    const ids = tok.encode('I love 🍕!'); // " 🍕" is three byte-level tokens
    const deltas = stream(tok, ids);
    expect(deltas).toEqual(['I', ' love', '', '', ' 🍕', '!', '']);
  });

  it('Chinese and ZWJ emoji sequences never produce U+FFFD', () => {
    for (const text of [
      '跟我讲讲股市运行的逻辑',
      '👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🧑🏿‍💻 coder',
      '你好，世界！Qwen2.5 是阿里云的大语言模型。',
    ]) {
      const deltas = stream(tok, tok.encode(text));
      for (const d of deltas) expect(d).not.toContain('\uFFFD');
      expect(deltas.join('')).toBe(text);
    }
  });

  it('deltas + flush equal decode(all) for every golden, with and without skipSpecialTokens', () => {
    for (const c of GOLDENS) {
      for (const skip of [false, true]) {
        expect(stream(tok, c.ids, skip).join('')).toBe(tok.decode(c.ids, { skipSpecialTokens: skip }));
      }
    }
  });

  it('skipSpecialTokens streams a chat turn without its markers', () => {
    const ids = tok.encode('<|im_start|>assistant\n你好<|im_end|>');
    expect(stream(tok, ids, true).join('')).toBe('assistant\n你好');
    expect(stream(tok, ids, false).join('')).toBe('<|im_start|>assistant\n你好<|im_end|>');
  });

  it('random token sequences (lots of invalid UTF-8) still concatenate to decode(all)', () => {
    const rng = Xoshiro128.fromSeed(2024);
    // Byte tokens of the byte-level alphabet (ids 0..255 are single bytes in a scrambled order),
    // multi-byte pieces of CJK/emoji, ordinary words and special tokens.
    const pool = [
      ...Array(256).keys(),
      11162,
      235,
      243,
      236,
      231,
      378,
      145233,
      108386,
      3837,
      9707,
      1879,
      151643,
      151644,
      151645,
      151657,
      151700,
    ];
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + (rng.nextUint32() % 40);
      const ids = Array.from({ length: n }, () =>
        rng.nextFloat() < 0.2 ? rng.nextUint32() % tok.vocabSize : pool[rng.nextUint32() % pool.length]!,
      );
      for (const skip of [false, true]) {
        const deltas = stream(tok, ids, skip);
        expect(deltas.join('')).toBe(tok.decode(ids, { skipSpecialTokens: skip }));
        // Only the final flush may end in a replacement character for an unfinished sequence.
        for (const d of deltas.slice(0, -1)) expect(d.endsWith('\uFFFD')).toBe(false);
      }
    }
  });

  it('flush emits an unfinished character as U+FFFD, like decode', () => {
    const ids = tok.encode(' 🍕').slice(0, 2);
    const sd = new StreamDecoder(tok);
    expect(sd.push(ids[0]!)).toBe('');
    expect(sd.push(ids[1]!)).toBe('');
    expect(sd.pending).toBe(true);
    expect(sd.flush()).toBe(' \uFFFD');
    expect(sd.pending).toBe(false);
    expect(sd.flush()).toBe('');
  });

  it('decodes a small window per token, not the whole sequence (O(1) per token)', () => {
    let decodedIds = 0;
    const counting: Decoder = {
      decode(ids, opts) {
        decodedIds += ids.length;
        return tok.decode(ids, opts);
      },
    };
    const text = '长文本 long text 😀 '.repeat(300);
    const ids = tok.encode(text);
    expect(ids.length).toBeGreaterThan(2000);
    expect(stream(counting, ids).join('')).toBe(text);
    expect(decodedIds / ids.length).toBeLessThan(8); // a full re-decode would be ~ids.length / 2 per token
  });
});
