// JSON-schema keywords against an independent validator (ajv with ajv-formats): for each schema,
// hand-written valid instances (serialized as Python's json.dumps and as compact JSON) are
// accepted token by token and complete; invalid ones are rejected at some token or left
// incomplete; and seeded random walks through the matcher (random allowed tokens, then the
// shortest completion) always end in text that parses and that ajv accepts.
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compileStructuredOutput,
  createMatcher,
  setCompileBudget,
  StructuredOutputError,
  vocabularyFromTokenizer,
  type Matcher,
  type StructuredOutput,
  type TokenVocabulary,
} from '../src/sampler/structured/index.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';

const TOKENIZER_DIR = new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname;
const EOS = 151643;
let tok: QwenTokenizer;
let vocab: TokenVocabulary;
const ajv = new Ajv2020.default({ strict: false, allErrors: false, validateFormats: true });
addFormats.default(ajv);

beforeAll(async () => {
  // The machine running the suite may be loaded: the state budget, not the clock, is what these tests check.
  setCompileBudget({ maxMillis: 60_000 });
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
  vocab = vocabularyFromTokenizer(tok, 151936, [EOS]);
});

/** Python's json.dumps separators (", " and ": "). */
const pyDumps = (v: unknown): string =>
  JSON.stringify(v, null, 1)
    .replace(/\n\s*/g, ' ')
    .replace(/([[{]) /g, '$1')
    .replace(/ ([}\]])/g, '$1');

function runs(m: Matcher, text: string): { accepted: boolean; complete: boolean } {
  m.reset();
  for (const t of tok.encode(text, { addSpecialTokens: false }))
    if (!m.accept(t)) return { accepted: false, complete: false };
  return { accepted: true, complete: m.isComplete() };
}

let singleByte: Map<number, number> | null = null;
/** Token id of each single byte. */
function byteTokens(): Map<number, number> {
  if (singleByte) return singleByte;
  singleByte = new Map();
  for (let id = 0; id < vocab.size; id++) {
    const b = vocab.bytesOf(id);
    if (b && b.length === 1 && !singleByte.has(b[0]!)) singleByte.set(b[0]!, id);
  }
  return singleByte;
}

/** A seeded walk: `steps` random allowed tokens, then the shortest completion byte by byte. */
function randomWalk(m: Matcher, seed: number, steps: number): string {
  let x = seed * 2654435761 + 1;
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  m.reset();
  const bytes: number[] = [];
  const take = (t: number) => {
    expect(m.accept(t)).toBe(true);
    if (t !== EOS) bytes.push(...vocab.bytesOf(t)!);
  };
  for (let i = 0; i < steps && !m.isTerminated(); i++) {
    const bits = m.allowedTokens();
    const ids: number[] = [];
    for (let w = 0; w < bits.length; w++)
      for (let word = bits[w]!; word !== 0; word &= word - 1) ids.push(w * 32 + (31 - Math.clz32(word & -word)));
    expect(ids.length).toBeGreaterThan(0);
    // Prefer short tokens (structure) half of the time, so walks go deep into the schema.
    const short = ids.filter((id) => id !== EOS && vocab.bytesOf(id)!.length <= 2);
    const pool = rand() < 0.5 && short.length > 0 ? short : ids;
    take(pool[Math.floor(rand() * pool.length)]!);
  }
  // Shortest completion: the byte that brings the end one byte closer, each time.
  const pda = m.guide.pda;
  for (let guard = 0; guard < 10_000 && !m.isTerminated(); guard++) {
    if (m.isComplete()) {
      take(EOS);
      break;
    }
    const c = (m as unknown as { config: number }).config;
    const here = pda.configDist(c);
    let next = -1;
    for (let b = 0; b < 256 && next < 0; b++) {
      const t = pda.configNext(c, b);
      if (t >= 0 && pda.configDist(t) === here - 1) next = b;
    }
    expect(next).toBeGreaterThanOrEqual(0);
    take(byteTokens().get(next)!);
  }
  expect(m.isTerminated()).toBe(true);
  return new TextDecoder().decode(Uint8Array.from(bytes));
}

interface Case {
  name: string;
  schema: Record<string, unknown> | boolean;
  valid: unknown[];
  invalid: unknown[];
}

const CASES: Case[] = [
  {
    name: 'recursive $ref with $defs (a tree of comments)',
    schema: {
      $defs: {
        comment: {
          type: 'object',
          properties: {
            text: { type: 'string', maxLength: 8 },
            replies: { type: 'array', items: { $ref: '#/$defs/comment' } },
          },
          required: ['text'],
          additionalProperties: false,
        },
      },
      $ref: '#/$defs/comment',
    },
    valid: [
      {
        text: 'a',
        replies: [{ text: 'b', replies: [{ text: 'c', replies: [{ text: 'd', replies: [{ text: 'deep' }] }] }] }],
      },
      { text: 'x' },
    ],
    invalid: [{ text: 'a', replies: [{ replies: [] }] }, { text: 'toolongtext' }, { text: 'a', other: 1 }],
  },
  {
    name: 'definitions with JSON pointers, annotations and vendor keywords ignored',
    schema: {
      definitions: { 'a~b/c': { type: 'integer', minimum: 1, readOnly: true, 'x-vendor': { any: 1 } } },
      type: 'object',
      properties: { days: { $ref: '#/definitions/a~0b~1c', $comment: 'pointer escapes' } },
      required: ['days'],
    },
    valid: [{ days: 1 }, { days: 365 }],
    invalid: [{ days: 0 }, { days: -3 }, { days: 1.5 }, {}],
  },
  {
    name: 'allOf merged, anyOf, oneOf of distinct types',
    schema: {
      allOf: [
        { type: 'object', properties: { id: { type: 'integer', exclusiveMinimum: 0 } }, required: ['id'] },
        {
          properties: {
            v: {
              oneOf: [
                { type: 'string', minLength: 2, maxLength: 4 },
                { type: 'integer', maximum: 250 },
              ],
            },
            w: { anyOf: [{ type: 'null' }, { type: 'boolean' }] },
          },
          required: ['v'],
        },
      ],
    },
    valid: [
      { id: 1, v: 'ab' },
      { id: 7, v: -12, w: null },
      { id: 3, v: 250, w: true },
    ],
    invalid: [{ id: 0, v: 'ab' }, { id: 1, v: 'a' }, { id: 1, v: 251 }, { id: 1 }, { id: 1, v: 'abcde' }],
  },
  {
    name: 'pattern (unanchored unless anchored) and formats',
    schema: {
      type: 'object',
      properties: {
        code: { type: 'string', pattern: '^[A-Z]{2}-\\d+' },
        tag: { type: 'string', pattern: 'x\\d$' },
        when: { type: 'string', format: 'date-time' },
        day: { type: 'string', format: 'date' },
        at: { type: 'string', format: 'time' },
        took: { type: 'string', format: 'duration' },
        mail: { type: 'string', format: 'email' },
        host: { type: 'string', format: 'hostname' },
        ip4: { type: 'string', format: 'ipv4' },
        ip6: { type: 'string', format: 'ipv6' },
        id: { type: 'string', format: 'uuid' },
        link: { type: 'string', format: 'uri' },
      },
      required: ['code', 'tag'],
      additionalProperties: false,
    },
    valid: [
      {
        code: 'AB-12 and more "quoted"',
        tag: 'ends in x9',
        when: '2024-02-29T23:59:59.5Z',
        day: '2023-12-31',
        at: '08:30:00+02:00',
        took: 'P1DT2H',
        mail: 'a.b@example.com',
        host: 'api.example.org',
        ip4: '192.168.0.1',
        ip6: '2001:db8::1',
        id: '123e4567-e89b-12d3-a456-426614174000',
        link: 'https://example.com/a/b?x=1#top',
      },
      { code: 'ZZ-0', tag: 'x0', link: 'file:///etc/hosts' },
    ],
    invalid: [
      { code: 'ab-12', tag: 'x1' },
      { code: 'AB-12', tag: 'x1 ' },
      { code: 'AB-1', tag: 'x1', day: '2023-02-29' },
      { code: 'AB-1', tag: 'x1', ip4: '256.1.1.1' },
      { code: 'AB-1', tag: 'x1', mail: 'not an email' },
    ],
  },
  {
    name: 'numbers: exact bounds on integers and decimals, multipleOf',
    schema: {
      type: 'object',
      properties: {
        t: { type: 'number', minimum: -2.5, exclusiveMaximum: 10.25 },
        n: { type: 'integer', minimum: -20, maximum: 1234 },
        m: { type: 'integer', multipleOf: 7 },
        p: { type: 'number', exclusiveMinimum: 0 },
      },
      additionalProperties: false,
    },
    valid: [{ t: -2.5, n: -20, m: 0, p: 0.001 }, { t: 10.249, n: 1234, m: -14, p: 3 }, { t: 0 }],
    invalid: [{ t: -2.51 }, { t: 10.25 }, { n: 1235 }, { n: -21 }, { m: 8 }, { p: 0 }, { p: -1 }],
  },
  {
    name: 'arrays: prefixItems, items, minItems, maxItems; items: false',
    schema: {
      type: 'object',
      properties: {
        a: {
          type: 'array',
          prefixItems: [{ const: 'x' }, { type: 'boolean' }],
          items: { type: 'null' },
          minItems: 1,
          maxItems: 4,
        },
        b: { type: 'array', prefixItems: [{ type: 'integer' }], items: false },
      },
      additionalProperties: false,
    },
    valid: [
      { a: ['x'], b: [] },
      { a: ['x', true, null, null], b: [5] },
    ],
    invalid: [{ a: [] }, { a: ['y'] }, { a: ['x', true, null, null, null] }, { b: [1, 2] }, { a: ['x', 1] }],
  },
  {
    name: 'objects: additionalProperties schema, required not listed, min/maxProperties',
    schema: {
      type: 'object',
      properties: { id: { type: 'integer' } },
      required: ['id', 'extra'],
      additionalProperties: { type: 'number' },
      minProperties: 2,
      maxProperties: 3,
    },
    valid: [
      { id: 1, extra: 2.5 },
      { id: 1, extra: 2, more: 3 },
    ],
    invalid: [{ id: 1 }, { id: 1, extra: 'x' }, { id: 1, extra: 1, a: 1, b: 2 }, { id: 1, extra: 1, id2: 'x' }],
  },
  {
    name: 'patternProperties and propertyNames',
    schema: {
      type: 'object',
      properties: {
        headers: { type: 'object', patternProperties: { '^x-': { type: 'string' } }, additionalProperties: false },
        flags: {
          type: 'object',
          propertyNames: { pattern: '^[a-z]{1,3}$' },
          additionalProperties: { type: 'boolean' },
        },
      },
      additionalProperties: false,
    },
    valid: [
      { headers: { 'x-a': 'b' }, flags: { ab: true, c: false } },
      { headers: {}, flags: {} },
    ],
    invalid: [{ headers: { y: 'b' } }, { headers: { 'x-a': 1 } }, { flags: { ABC: true } }, { flags: { abcd: true } }],
  },
  {
    name: 'enum and const of any JSON value, nullable, type lists, boolean schemas',
    schema: {
      type: 'object',
      properties: {
        e: { enum: [1, 'a', null, [1, { x: true }], { k: [2] }] },
        f: { type: 'string', enum: ['a', 1, 'b'] },
        g: { type: 'string', nullable: true },
        h: { type: ['integer', 'null'] },
        i: true,
        j: false,
        k: { const: { deep: [1, 'two'] } },
      },
      additionalProperties: false,
    },
    valid: [
      { e: [1, { x: true }], f: 'b', g: null, h: 3, i: { any: ['thing'] }, k: { deep: [1, 'two'] } },
      { e: { k: [2] } },
    ],
    invalid: [{ e: 2 }, { f: 1 }, { g: 1 }, { h: 1.5 }, { j: 1 }, { k: { deep: [1] } }],
  },
  {
    name: 'a property with a false schema is absent, also where other members are allowed',
    schema: { type: 'object', properties: { a: false, b: { type: 'integer' } } },
    valid: [{}, { b: 1, c: 'x' }, { c: 1 }],
    invalid: [{ a: 1 }, { b: 1, a: null }, { c: 1, a: 1 }],
  },
  {
    name: 'not: of required, anyOf of required, enum, bounds, lengths, not of not',
    schema: {
      type: 'object',
      properties: {
        r: { type: 'object', not: { required: ['x', 'y'] } },
        o: { type: 'object', not: { anyOf: [{ required: ['x'] }, { required: ['y'] }] } },
        e: { not: { enum: ['no', 'never', 3, true] } },
        n: { type: 'integer', not: { minimum: 10 } },
        x: { type: 'number', not: { exclusiveMaximum: 2.5 } },
        s: { type: 'string', not: { maxLength: 2 } },
        d: { not: { not: { type: 'string', minLength: 1 } } },
        t: { not: { type: ['string', 'integer'] } },
        p: { type: 'object', not: { properties: { k: { type: 'string' } } } },
        a: { type: 'array', not: { items: false } },
      },
      additionalProperties: false,
    },
    valid: [
      { r: { x: 1 }, o: { z: 1 }, e: 'yes', n: 9, x: 2.5, s: 'abc', d: 'a', t: null, p: { k: 1 }, a: [1] },
      { r: {}, o: {}, e: 4, n: -100, x: 100, s: 'abcdef', d: 'xyz', t: [], p: { k: null }, a: [[]] },
      { e: false, t: true },
      { e: null, t: { a: 1 } },
      { e: 3.5, t: 'x' === 'y' ? 1 : false },
    ],
    invalid: [
      { r: { x: 1, y: 2 } },
      { o: { y: 1 } },
      { e: 'no' },
      { e: 3 },
      { e: true },
      { n: 10 },
      { x: 2.4 },
      { s: 'ab' },
      { d: '' },
      { d: 1 },
      { t: 's' },
      { t: 2 },
      { p: {} },
      { p: { k: 's' } },
      { a: [] },
    ],
  },
  {
    name: 'unanchored pattern alternatives: after a match the string runs free',
    schema: {
      type: 'object',
      properties: { tz: { type: 'string', pattern: 'UTC|(Africa/[A-Za-z]+)|^(Asia/[A-Z][a-z]+)$' } },
      required: ['tz'],
    },
    valid: [{ tz: 'UTC' }, { tz: 'x UTC y "q" é' }, { tz: 'in Africa/Lagos!' }, { tz: 'Asia/Tokyo' }],
    invalid: [{ tz: 'utc' }, { tz: 'Africa/' }, { tz: 'x Asia/Tokyo' }, { tz: 'Asia/tokyo' }],
  },
  {
    name: 'patternProperties ".*" next to listed properties: the other keys take its schema',
    schema: {
      type: 'object',
      properties: { default: { type: 'string' } },
      patternProperties: { '.*': { type: 'string' } },
      required: ['default'],
    },
    valid: [{ default: 'a', print: 'b', web: 'c' }, { default: '' }],
    invalid: [{ default: 'a', print: 1 }, { print: 'b' }, { default: 1 }],
  },
  {
    name: 'oneOf whose branches overlap: each branch and not the others',
    schema: {
      type: 'object',
      properties: {
        q: { type: 'object', oneOf: [{ required: ['a'] }, { required: ['b'] }] },
        n: {
          oneOf: [
            { type: 'integer', minimum: 0 },
            { type: 'integer', maximum: 10 },
          ],
        },
      },
      additionalProperties: false,
    },
    valid: [{ q: { a: 1 } }, { q: { b: 1, c: 2 } }, { n: 11 }, { n: -1 }],
    invalid: [{ q: { a: 1, b: 2 } }, { q: {} }, { n: 5 }, { n: 0 }, { n: 10 }],
  },
  {
    name: 'pattern or format with minLength/maxLength, pattern with format: intersected, length in characters',
    schema: {
      type: 'object',
      properties: {
        slug: { type: 'string', pattern: '^[a-z0-9-]+$', minLength: 3, maxLength: 5 },
        code: { type: 'string', pattern: 'x', maxLength: 3 },
        text: { type: 'string', pattern: '^[^0-9]*$', minLength: 2, maxLength: 3 },
        long: { type: 'string', pattern: '^a', minLength: 4 },
        mail: { type: 'string', format: 'email', maxLength: 8 },
        host: { type: 'string', format: 'hostname', pattern: '\\.org$' },
      },
      additionalProperties: false,
    },
    valid: [
      { slug: 'abc' },
      { slug: 'a-b-c' },
      { code: 'x' },
      { code: 'axb' },
      { text: 'éé' },
      { text: 'a"\\' },
      { text: '日本語' },
      { long: 'abcd' },
      { long: 'a'.repeat(600) },
      { mail: 'a@b.io' },
      { host: 'qwen.org' },
    ],
    invalid: [
      { slug: 'ab' },
      { slug: 'abcdef' },
      { slug: 'ab_c' },
      { code: '' },
      { code: 'axbx' },
      { code: 'abc' },
      { text: 'é' },
      { text: 'a"\\b' },
      { text: 'a1' },
      { long: 'abc' },
      { long: 'babcd' },
      { mail: 'ab@cd.com' },
      { mail: 'a.b.c' },
      { host: 'qwen.com' },
      { host: 'a b.org' },
    ],
  },
];

describe('JSON-schema keywords, checked with ajv', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const validate = ajv.compile(c.schema as object);
      const spec: StructuredOutput = { type: 'json', schema: c.schema };
      const m = createMatcher(spec, vocab);
      for (const v of c.valid) {
        expect(validate(v), `ajv on ${JSON.stringify(v)}`).toBe(true);
        for (const text of [pyDumps(v), JSON.stringify(v)])
          expect(runs(m, text), text).toEqual({ accepted: true, complete: true });
      }
      for (const v of c.invalid) {
        expect(validate(v), `ajv on ${JSON.stringify(v)}`).toBe(false);
        const r = runs(m, pyDumps(v));
        expect(r.accepted && r.complete, pyDumps(v)).toBe(false);
      }
      for (let seed = 1; seed <= 8; seed++) {
        const text = randomWalk(m, seed, 25);
        let value: unknown;
        expect(() => (value = JSON.parse(text)), text).not.toThrow();
        expect(validate(value), `${text}: ${JSON.stringify(validate.errors)}`).toBe(true);
      }
    });
  }
});

describe('what is refused, and how', () => {
  const err = (schema: unknown): string => {
    try {
      compileStructuredOutput({ type: 'json', schema: schema as Record<string, unknown> });
    } catch (e) {
      expect(e).toBeInstanceOf(StructuredOutputError);
      return `${(e as StructuredOutputError).path}: ${(e as Error).message}`;
    }
    return 'compiled';
  };

  it('keywords a grammar cannot enforce are errors naming the keyword and its place', () => {
    expect(err({ type: 'array', uniqueItems: true })).toMatch(/^schema\.uniqueItems: .*"uniqueItems"/);
    expect(err({ properties: { a: { not: { pattern: 'x' } } } })).toMatch(
      /^schema\.properties\.a\.not\.pattern: .*"not"/,
    );
    expect(err({ properties: { a: { not: { multipleOf: 3 } } } })).toMatch(/"not".*"multipleOf"/);
    expect(err({ properties: { a: { not: { required: ['x'] } } } })).toBe('compiled'); // exact forms
    expect(err({ properties: { a: { not: { type: 'string' } } } })).toBe('compiled');
    expect(err({ if: { type: 'string' }, then: { minLength: 1 } })).toMatch(/"if"/);
    expect(err({ oneOf: [{ type: 'string' }, { type: 'string', pattern: 'x' }] })).toMatch(/oneOf.*overlap/);
    expect(err({ type: 'string', format: 'color' })).toMatch(/"format".*"color"/);
    expect(err({ type: [] })).toMatch(/^schema\.type: .*at least one type/);
    expect(err({ $ref: '#/definitions/missing' })).toMatch(/points to nothing/);
    expect(err({ $ref: 'http://other.example/schema.json' })).toMatch(/not a reference inside this schema/);
  });

  it('unknown keywords and annotations are ignored', () => {
    expect(
      err({ type: 'object', $id: 'x', id: 'y', self: { href: 'y' }, readonly: true, 'x-foo': 1, properties: {} }),
    ).toBe('compiled');
  });

  it('a deeply nested schema is a 400-style error, not a crash', () => {
    let s: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < 150; i++) s = { type: 'object', properties: { a: s } };
    expect(err(s)).toMatch(/nests more than 128 levels/);
    for (let i = 0; i < 20_000; i++) s = { type: 'object', properties: { a: s } };
    expect(err(s)).toMatch(/nests too deeply/);
  });

  it('regex and GBNF blow-ups stop at the budget with the limit named', () => {
    for (const pattern of ['((.{256}){256}){256}', '((a{128}){128}){128}']) {
      const t0 = Date.now();
      expect(() => compileStructuredOutput({ type: 'regex', pattern })).toThrow(
        /more than 400000 automaton states \(the limit per request\)/,
      );
      expect(Date.now() - t0).toBeLessThan(20_000);
    }
  });

  it('the compile time budget names its limit', () => {
    setCompileBudget({ maxMillis: 0 });
    try {
      expect(() => compileStructuredOutput({ type: 'regex', pattern: '[a-z]{100000}[0-9]{100000}x' })).toThrow(
        /compiling the constraint took more than 0 ms \(the limit per request\)/,
      );
    } finally {
      setCompileBudget({ maxMillis: 60_000 });
    }
  });

  it('an unanchored pattern that has matched is one automaton state, however the match began', () => {
    const m = createMatcher({ type: 'json', schema: { type: 'string', pattern: 'UTC|(Africa/[A-Za-z]+)' } }, vocab);
    const pda = m.guide.pda;
    expect(runs(m, '"x UTC')).toEqual({ accepted: true, complete: false });
    const before = pda.stats.frameStates;
    expect(runs(m, '"x UTC and Africa/Lagos, Africa/Accra or UTC again"')).toEqual({ accepted: true, complete: true });
    // Only the closing quote's state is new: the text after the first match adds no states.
    expect(pda.stats.frameStates - before).toBeLessThanOrEqual(2);
  });

  it('a 50,000-entry enum compiles as a trie and constrains exactly', () => {
    const values = Array.from({ length: 50_000 }, (_, i) => `item-${i}`);
    const m = createMatcher({ type: 'json', schema: { enum: values } }, vocab);
    expect(runs(m, '"item-49999"')).toEqual({ accepted: true, complete: true });
    expect(runs(m, '"item-50000"').complete).toBe(false);
  });
});
