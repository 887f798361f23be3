// The sliced masks (plain-text tokens taken as a precomputed set, only the other tokens walked)
// against the reference: the same guide with slices off, which walks every token of the trie.
// On the real Qwen2.5 tokenizer, every mask along instance texts and seeded random walks must be
// equal bit for bit, in free strings, counted strings (minLength/maxLength), strings with escapes
// and non-ASCII text, keys next to listed names, patterns and enums.
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compileStructuredOutput,
  setCompileBudget,
  TokenGuide,
  vocabularyFromTokenizer,
  type TokenVocabulary,
} from '../src/sampler/structured/index.js';
import { DEAD } from '../src/sampler/structured/pda.js';
import { plainChars, slicesOf } from '../src/sampler/structured/slices.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';

const TOKENIZER_DIR = new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname;
const EOS = 151643;
let tok: QwenTokenizer;
let vocab: TokenVocabulary;

beforeAll(async () => {
  setCompileBudget({ maxMillis: 60_000 });
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
  vocab = vocabularyFromTokenizer(tok, 151936, [EOS]);
});

function guides(schema: unknown): [TokenGuide, TokenGuide] {
  const { pda } = compileStructuredOutput({ type: 'json', schema: schema as Record<string, unknown> });
  return [new TokenGuide(pda, vocab), new TokenGuide(pda, vocab, false)];
}

/** Compares the masks of both guides at every configuration along `tokens` (stops at the first token not allowed). */
function compareAlong(fast: TokenGuide, slow: TokenGuide, tokens: number[]): number {
  let c = fast.start;
  let steps = 0;
  for (const t of tokens) {
    // Near max_tokens too: masks filtered by the tokens left.
    for (const left of [3, 12, 40])
      expect(Array.from(fast.allowed(c, left))).toEqual(Array.from(slow.allowed(c, left)));
    const a = fast.allowed(c).slice();
    const b = slow.allowed(c);
    expect(Array.from(a)).toEqual(Array.from(b));
    steps++;
    if (((a[t >>> 5]! >>> (t & 31)) & 1) === 0) break;
    c = fast.advance(c, t);
    expect(c).not.toBe(DEAD);
  }
  return steps;
}

/** A seeded random walk over the allowed tokens (long plain tokens favoured half the time), masks compared at each step. */
function compareRandom(fast: TokenGuide, slow: TokenGuide, seed: number, steps: number): void {
  let x = seed * 2654435761 + 11;
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  let c = fast.start;
  for (let i = 0; i < steps; i++) {
    const a = fast.allowed(c).slice();
    expect(Array.from(a)).toEqual(Array.from(slow.allowed(c)));
    const allowed: number[] = [];
    for (let w = 0; w < a.length; w++)
      for (let word = a[w]!; word !== 0; word &= word - 1) {
        const t = w * 32 + (31 - Math.clz32(word & -word));
        if (t !== EOS) allowed.push(t);
      }
    if (allowed.length === 0) return;
    const long = allowed.filter((t) => vocab.bytesOf(t)!.length >= 4);
    const pool = rand() < 0.5 && long.length > 0 ? long : allowed;
    c = fast.advance(c, pool[Math.floor(rand() * pool.length)]!);
    expect(c).not.toBe(DEAD);
  }
}

const ids = (text: string) => tok.encode(text, { addSpecialTokens: false });

describe('sliced masks equal the full walk', () => {
  it('plain-text tokens are counted by characters, not bytes', () => {
    expect(plainChars(new TextEncoder().encode(' hello'))).toBe(6);
    expect(plainChars(new TextEncoder().encode('北京'))).toBe(2);
    expect(plainChars(new TextEncoder().encode('a"'))).toBe(-1);
    expect(plainChars(new TextEncoder().encode('a\\'))).toBe(-1);
    expect(plainChars(new TextEncoder().encode('a\n'))).toBe(-1);
    expect(plainChars(Uint8Array.of(0xe5, 0x8c))).toBe(-1); // a character cut short
    const s = slicesOf(vocab);
    const one = s.upTo(1);
    const a = ids('a')[0]!;
    const hello = ids('hello')[0]!;
    expect((one[a >>> 5]! >>> (a & 31)) & 1).toBe(1);
    expect((one[hello >>> 5]! >>> (hello & 31)) & 1).toBe(0);
  });

  it('free strings, with escapes and non-ASCII text', () => {
    const [fast, slow] = guides({ type: 'object', properties: { s: { type: 'string' } }, required: ['s'] });
    for (const text of [
      '{"s": "hello world, 北京 é \\" \\\\ \\n \\u00e9 \\ud83d\\ude00 😀 end"}',
      '{"s": "a\\tb\\/c\\bd\\fe\\rf"}',
      '{"s": "  spaces   and ----- dashes ======"}',
    ])
      expect(compareAlong(fast, slow, ids(text))).toBe(ids(text).length);
    compareRandom(fast, slow, 1, 60);
    expect(fast.localStats.sliced).toBeGreaterThan(0);
  });

  it('counted strings: minLength, maxLength, both, and longer than any token', () => {
    for (const schema of [
      { type: 'string', minLength: 3 },
      { type: 'string', maxLength: 5 },
      { type: 'string', minLength: 2, maxLength: 4 },
      { type: 'string', minLength: 1, maxLength: 200 },
      { type: 'array', items: { type: 'string', maxLength: 2 } },
      { type: 'string', minLength: 150 },
      // Two strings read the same characters: not one counted string's chain (walked instead).
      {
        anyOf: [
          { type: 'string', maxLength: 3 },
          { type: 'string', minLength: 5, maxLength: 8 },
        ],
      },
      {
        anyOf: [
          { type: 'string', maxLength: 3 },
          { type: 'string', pattern: '^x+$' },
        ],
      },
    ]) {
      const [fast, slow] = guides(schema);
      for (const text of ['"abcdefghij"', '"ab"', '"北京北京北京"', '"a\\"b\\u00e9cd"', '["ab", "c", "北"]'])
        compareAlong(fast, slow, ids(text));
      compareRandom(fast, slow, 2, 30);
      expect(fast.localStats.sliced).toBeGreaterThan(0);
    }
  });

  it("a counted string's characters are followed without building a state per position", () => {
    const [fast] = guides({ type: 'string', maxLength: 500 });
    fast.allowed(fast.start);
    const open = fast.advance(fast.start, ids('"')[0]!);
    fast.allowed(open);
    // Before, the mask at the opening quote built ~8 states for each character of the longest
    // plain token (1,032 in all); now only those the other tokens' walk meets (109).
    expect(fast.pda.stats.frameStates).toBeLessThan(200);
  });

  it("a pattern's unanchored branches share one leading run", () => {
    // Before, each of 30 branches carried its own .* (1,321 NFA states per DFA state; 263 ms masks).
    const words = Array.from({ length: 30 }, (_, i) => `Word${String.fromCharCode(65 + (i % 26))}${i}`);
    const [fast, slow] = guides({ type: 'string', pattern: words.join('|') });
    compareAlong(fast, slow, ids('"a WordB1 b"'));
    const open = fast.advance(fast.start, ids('"')[0]!);
    fast.allowed(open);
    expect(
      Math.max(...[...Array(fast.pda.stats.frameStates).keys()].map((d) => fast.pda.membersOf(d).length)),
    ).toBeLessThan(200);
  });

  it('keys next to listed names, patterns, enums and not-enums (a few first bytes walked)', () => {
    for (const schema of [
      { type: 'object', properties: { color: { type: 'string' }, count: { type: 'integer' } } },
      { type: 'string', pattern: 'fo+' },
      { type: 'string', pattern: '^[^x]' },
      { type: 'string', enum: ['red', 'green', 'blue'] },
      { type: 'string', not: { enum: ['red', 'rose'] } },
      { type: 'object', additionalProperties: { type: 'string', maxLength: 3 } },
    ]) {
      const [fast, slow] = guides(schema);
      for (const text of [
        '{"color": "red", "cobalt": 1, "x": "ab"}',
        '"xxfooo yy"',
        '"green"',
        '"ruby"',
        '"xyz"',
        '"yxz"',
      ])
        compareAlong(fast, slow, ids(text));
      compareRandom(fast, slow, 4, 30);
    }
    const [fast, slow] = guides({ type: 'string', pattern: '^[^x]' });
    const x = ids('xylophone')[0]!;
    const mask = fast.allowed(fast.advance(fast.start, ids('"')[0]!));
    expect((mask[x >>> 5]! >>> (x & 31)) & 1).toBe(0);
    compareAlong(fast, slow, ids('"yes"'));
    expect(fast.localStats.excepted).toBeGreaterThan(0);
  });

  it('a recursive schema (strings inside called rules)', () => {
    const [fast, slow] = guides({
      $defs: {
        node: {
          type: 'object',
          properties: {
            text: { type: 'string', maxLength: 8 },
            kids: { type: 'array', items: { $ref: '#/$defs/node' } },
          },
          required: ['text'],
        },
      },
      $ref: '#/$defs/node',
    });
    const text = '{"text": "root", "kids": [{"text": "a \\"b\\"", "kids": [{"text": "北京"}]}]}';
    expect(compareAlong(fast, slow, ids(text))).toBe(ids(text).length);
    compareRandom(fast, slow, 6, 60);
  });
});
