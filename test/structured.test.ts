// Constrained decoding: the automata (regex subset, JSON-schema subset, choices, tool-call
// blocks), the token trie over the real Qwen2.5 vocabulary, and generation with the tiny synthetic
// model (random weights: left alone it writes gibberish, so every valid output below is the
// constraint's doing). Outputs are checked with JSON.parse, JavaScript's RegExp and a validator
// written here, never with the constraint's own automaton.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { SamplingParamsError, validateSamplingParams } from '../src/sampler/params.js';
import { Sampler } from '../src/sampler/sampler.js';
import {
  compileStructuredOutput,
  guideFor,
  StructuredOutputError,
  trieOf,
  vocabularyFromTokenizer,
  type StructuredOutput,
  type TokenVocabulary,
} from '../src/sampler/structured/index.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { validate } from './helpers/json-validator.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const TOKENIZER_DIR = new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname;
const EOS = [151645, 151643];
let tok: QwenTokenizer;
let vocab: TokenVocabulary;

beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
  vocab = vocabularyFromTokenizer(tok, 151936, EOS);
});

describe('validator used by these tests', () => {
  it('rejects what it should (a test that cannot fail is a defect)', () => {
    const s = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] };
    expect(validate({ a: 1 }, s)).toEqual([]);
    expect(validate({ a: 1.5 }, s)).toHaveLength(1);
    expect(validate({}, s)).toHaveLength(1);
    expect(validate({ a: 1, b: 2 }, s)).toHaveLength(1);
    expect(validate('x', { enum: ['y'] })).toHaveLength(1);
  });
});

describe('compiling', () => {
  it('names the unsupported JSON-schema keyword and where it is', () => {
    const bad = { type: 'object', properties: { city: { type: 'string', format: 'color' } } };
    expect(() => compileStructuredOutput({ type: 'json', schema: bad })).toThrow(
      /unsupported JSON-schema keyword "format" at properties\.city\.format/,
    );
    try {
      compileStructuredOutput({ type: 'json', schema: { $ref: '#/x' } });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(StructuredOutputError);
      expect((e as StructuredOutputError).path).toBe('schema.$ref');
    }
    expect(() =>
      compileStructuredOutput({ type: 'json', schema: { type: 'object', additionalProperties: true } }),
    ).not.toThrow();
    expect(() =>
      compileStructuredOutput({
        type: 'json',
        schema: { properties: {}, required: ['x'], additionalProperties: false },
      }),
    ).toThrow(/matches nothing/);
  });

  it('names the unsupported regex construct', () => {
    const err = (p: string) => {
      try {
        compileStructuredOutput({ type: 'regex', pattern: p });
      } catch (e) {
        return (e as Error).message;
      }
      return 'compiled';
    };
    expect(err('(a)\\1')).toMatch(/the escape "\\1"/);
    expect(err('a(?=b)')).toMatch(/group syntax "\(\?=/);
    expect(err('a*?')).toBe('compiled'); // lazy: the same language
    expect(err('\\bword')).toMatch(/the escape "\\b"/);
    expect(err('[é-ü]\\u00e9')).toBe('compiled');
    expect(err('a{3,2}')).toMatch(/max below min/);
    expect(err('(ab')).toMatch(/unclosed "\("/);
    expect(err('^[a-z]+\\d{2,3}(x|yz)?$')).toBe('compiled');
  });

  it('a bad spec is a SamplingParamsError on structuredOutput', () => {
    expect(() => validateSamplingParams({ structuredOutput: { type: 'regex', pattern: '(?<=a)b' } })).toThrow(
      SamplingParamsError,
    );
    expect(() => validateSamplingParams({ logitBias: { x: 1 } as never })).toThrow(
      /logit_bias must be keyed by token ids/,
    );
    expect(() => validateSamplingParams({ logitBias: { 5: 101 } })).toThrow(/\[-100, 100\]/);
    expect(() => validateSamplingParams({ minTokens: 5, maxTokens: 2 })).toThrow(/min_tokens must be at most/);
    expect(() => validateSamplingParams({ n: 0 })).toThrow(/n must be an integer from 1/);
    expect(() => validateSamplingParams({ badWords: [''] })).toThrow(/empty word/);
  });
});

describe('token trie and guide on the real Qwen2.5 vocabulary', () => {
  const allowedIds = (bits: Uint32Array): number[] => {
    const out: number[] = [];
    for (let i = 0; i < vocab.size; i++) if ((bits[i >>> 5]! >>> (i & 31)) & 1) out.push(i);
    return out;
  };

  it('holds every text token once; tool-call tags are single reserved bytes; special tokens are out', () => {
    const trie = trieOf(vocab);
    let tokens = 0;
    for (let i = 0; i < trie.nodeCount; i++) for (let t = trie.firstToken[i]!; t >= 0; t = trie.nextToken[t]!) tokens++;
    let withBytes = 0;
    for (let id = 0; id < vocab.size; id++) if (vocab.bytesOf(id)) withBytes++;
    expect(tokens).toBe(withBytes);
    expect(withBytes).toBeGreaterThan(150_000);
    expect([...vocab.bytesOf(tok.tokenToId('<tool_call>')!)!]).toEqual([0xf8]);
    expect([...vocab.bytesOf(tok.tokenToId('</tool_call>')!)!]).toEqual([0xf9]);
    expect(vocab.bytesOf(151645)).toBeNull(); // <|im_end|>
    expect(vocab.bytesOf(151700)).toBeNull(); // padding row of the logits
    expect(new TextDecoder().decode(vocab.bytesOf(tok.encode(' world')[0]!)!)).toBe(' world');
  });

  it('choice: exactly the prefixes of the choices, EOS only once one is complete', () => {
    const g = guideFor({ type: 'choice', choices: ['yes', 'no'] }, vocab);
    const first = allowedIds(g.allowed(g.start)).map((id) => tok.decode([id]));
    expect(first.sort()).toEqual(['n', 'no', 'y', 'ye', 'yes'].sort());
    const afterYes = g.advance(g.start, tok.encode('yes')[0]!);
    expect(allowedIds(g.allowed(afterYes))).toEqual(EOS.slice().sort((a, b) => a - b));
    const afterY = g.advance(g.start, tok.encode('y')[0]!);
    expect(
      allowedIds(g.allowed(afterY))
        .map((id) => tok.decode([id]))
        .sort(),
    ).toEqual(['e', 'es']);
  });

  it('JSON string: everything but unescaped quotes/backslashes/control bytes stays inside; quote tokens close it', () => {
    const g = guideFor({ type: 'json', schema: { type: 'string' } }, vocab);
    const inside = g.advance(g.start, tok.encode('"')[0]!);
    const ids = new Set(allowedIds(g.allowed(inside)));
    expect(ids.has(tok.encode('hello')[0]!)).toBe(true);
    expect(ids.has(tok.encode('"')[0]!)).toBe(true);
    expect(ids.has(tok.encode('\n')[0]!)).toBe(false);
    expect(ids.has(EOS[0]!)).toBe(false);
    expect(ids.has(tok.encode('"}')[0]!)).toBe(false); // nothing may follow the string
    const closed = g.advance(inside, tok.encode('"')[0]!);
    expect(allowedIds(g.allowed(closed))).toEqual([...EOS].sort((a, b) => a - b));
  });

  it('the token budget closes a value in time', () => {
    const g = guideFor(
      { type: 'json', schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] } },
      vocab,
    );
    let s = g.start;
    for (const t of tok.encode('{"a": "abc')) s = g.advance(s, t);
    // Bytes still to write after a token, found by completing the text with JSON.parse.
    const prefix = '{"a": "abc';
    const toWrite = (id: number): number => {
      const t = prefix + tok.decode([id]);
      for (const suffix of ['', '}', '"}', 'n"}']) {
        try {
          JSON.parse(t + suffix);
          return suffix.length;
        } catch {
          // try a longer completion
        }
      }
      return Infinity;
    };
    const hello = tok.encode('hello')[0]!;
    const backslash = tok.encode('\\')[0]!;
    // With k tokens left, a token is allowed only if what remains fits in k - 2 tokens (one token per
    // byte at worst, one token for EOS); when nothing fits, it must bring completion one byte closer
    // (here 2 bytes are missing: '"}').
    for (const k of [1, 2, 3, 4, 5]) {
      const ids = allowedIds(g.allowed(s, k));
      expect(ids.length).toBeGreaterThan(0);
      for (const id of ids)
        expect(toWrite(id), `${k}: ${JSON.stringify(tok.decode([id]))}`).toBeLessThanOrEqual(Math.max(k - 2, 1));
    }
    expect(allowedIds(g.allowed(s, 1))).toContain(tok.encode('"}')[0]);
    expect(allowedIds(g.allowed(s, 2))).toContain(tok.encode('"')[0]);
    expect(allowedIds(g.allowed(s, 2))).not.toContain(hello);
    expect(allowedIds(g.allowed(s, 3))).not.toContain(hello);
    expect(allowedIds(g.allowed(s, 4))).toContain(hello);
    expect(allowedIds(g.allowed(s, 4))).not.toContain(backslash);
    expect(allowedIds(g.allowed(s, 5))).toContain(backslash);
    const done = g.advance(s, tok.encode('"}')[0]!);
    expect(allowedIds(g.allowed(done, 1))).toEqual([...EOS].sort((a, b) => a - b));
  }, 600_000); // walks the whole trie a dozen times: slow only on a loaded machine
});

describe('sampler processors', () => {
  const V = 151936;
  const flat = () => new Float32Array(V);

  it('logitBias moves the argmax; badWords bans a word in both spellings; minTokens holds EOS back', () => {
    const logits = flat();
    logits[7] = 1;
    expect(new Sampler({ temperature: 0 }, V).sample(logits).token).toBe(7);
    expect(new Sampler({ temperature: 0, logitBias: { 42: 5 } }, V).sample(logits).token).toBe(42);
    const word = tok.encode('hello')[0]!;
    const spaced = tok.encode(' hello')[0]!;
    logits[word] = 10;
    logits[spaced] = 9;
    const bad = new Sampler({ temperature: 0, badWords: ['hello'] }, V, { vocabulary: vocab });
    expect(bad.sample(logits).token).toBe(7);
    const eos = flat();
    eos[EOS[0]!] = 10;
    eos[3] = 1;
    const minT = new Sampler({ temperature: 0, minTokens: 2, maxTokens: 10 }, V, { vocabulary: vocab });
    expect(minT.sample(eos, [], [5]).token).toBe(3);
    expect(minT.sample(eos, [], [5, 3]).token).toBe(EOS[0]);
  });

  it('logprobs stay those of the raw logits under a constraint', () => {
    const logits = flat();
    const s = new Sampler({ temperature: 0, logprobs: 1, structuredOutput: { type: 'choice', choices: ['no'] } }, V, {
      vocabulary: vocab,
    });
    const r = s.sample(logits);
    expect(tok.decode([r.token])).toMatch(/^no?$/);
    expect(r.logprob).toBeCloseTo(-Math.log(V), 6);
  });
});

describe('generation with the tiny model (random weights), 20 seeds each', () => {
  let dir: string;
  let llm: LLM;
  beforeAll(async () => {
    dir = makeTempModel({ preset: 'tiny', seed: 0 });
    llm = await LLM.load(dir, { threads: 1, contextLength: 512 });
  });
  afterAll(async () => {
    await llm?.close();
    removeDir(dir);
  });

  const run = async (structuredOutput: StructuredOutput, maxTokens: number): Promise<string[]> => {
    // Seeds 1..20: two requests of n = 10 (completion i of a request gets seed + i).
    const texts: string[] = [];
    for (const seed of [1, 11]) {
      const [r] = await llm.generate('Answer:', { structuredOutput, maxTokens, n: 10, seed, temperature: 1 });
      expect(r!.outputs.map((o) => o.index)).toEqual([...Array(10).keys()]);
      texts.push(...r!.outputs.map((o) => o.text));
    }
    return texts;
  };

  it('library chat with tools: toolChoice names a function, the output carries the parsed call', async () => {
    const parameters = {
      type: 'object',
      properties: { city: { type: 'string' }, days: { type: 'integer' } },
      required: ['city', 'days'],
    };
    const tools = [{ type: 'function', function: { name: 'forecast', parameters } }];
    const [r] = await llm.chat(
      [{ role: 'user', content: 'Forecast for Oslo?' }],
      { maxTokens: 60, seed: 4, n: 2 },
      { chatTemplate: { tools }, toolChoice: { type: 'function', function: { name: 'forecast' } } },
    );
    expect(r!.outputs).toHaveLength(2);
    for (const o of r!.outputs) {
      expect(o.text.startsWith('<tool_call>\n{"name": "forecast", "arguments": ')).toBe(true);
      expect(o.toolCalls).toHaveLength(1);
      expect(o.toolCalls![0]!.function.name).toBe('forecast');
      expect(validate(JSON.parse(o.toolCalls![0]!.function.arguments), parameters)).toEqual([]);
    }
  });

  it('json_schema: every output parses and validates', async () => {
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string' },
        age: { type: 'integer' },
        tags: { type: 'array', items: { type: 'string', enum: ['a', 'b'] } },
        kind: { anyOf: [{ type: 'null' }, { const: 'x' }] },
        ok: { type: 'boolean' },
        score: { type: 'number' },
      },
      required: ['name', 'age', 'ok'],
    };
    const texts = await run({ type: 'json', schema }, 30);
    for (const t of texts) expect(validate(JSON.parse(t), schema), t).toEqual([]);
  });

  it('json_object: every output is a JSON object', async () => {
    const texts = await run({ type: 'json' }, 16);
    for (const t of texts) {
      const v: unknown = JSON.parse(t);
      expect(v !== null && typeof v === 'object' && !Array.isArray(v), t).toBe(true);
    }
  });

  it('choice: every output is one of the choices', async () => {
    const choices = ['Paris', 'London', 'New York', '東京'];
    const texts = await run({ type: 'choice', choices }, 10);
    for (const t of texts) expect(choices).toContain(t);
  });

  it('regex: every output matches as a whole (checked with RegExp)', async () => {
    const pattern = '[A-Z][a-z]{2,5}-\\d{3}(\\.(x|yz))?@[a-z]+\\.(com|org)';
    const texts = await run({ type: 'regex', pattern }, 20);
    for (const t of texts) expect(t).toMatch(new RegExp(`^(?:${pattern})$`));
    expect(new Set(texts).size).toBeGreaterThan(10); // sampled, not one forced string
  });
});
