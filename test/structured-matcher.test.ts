// The public matcher (createMatcher: allowedTokens / accept / rollback / isComplete /
// forcedTokens) and GBNF grammars. Outputs of seeded random walks are checked by recognizers
// written here (JSON.parse, a recursive-descent arithmetic parser), never by the matcher itself.
// llama.cpp's grammars/*.gbnf are compiled too (test/fixtures/llama-grammars); the other
// grammars below are our own small ones.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compileStructuredOutput,
  createMatcher,
  setCompileBudget,
  vocabularyFromTokenizer,
  type Matcher,
  type TokenVocabulary,
} from '../src/sampler/structured/index.js';
import * as pkg from '../src/index.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';

const TOKENIZER_DIR = new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname;
const LLAMA_GRAMMARS = fileURLToPath(new URL('./fixtures/llama-grammars', import.meta.url));
const EOS = 151643;
let tok: QwenTokenizer;
let vocab: TokenVocabulary;

beforeAll(async () => {
  setCompileBudget({ maxMillis: 60_000 });
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
  vocab = vocabularyFromTokenizer(tok, 151936, [EOS]);
});

const has = (bits: Uint32Array, t: number) => ((bits[t >>> 5]! >>> (t & 31)) & 1) === 1;
const ids = (text: string) => tok.encode(text, { addSpecialTokens: false });
const textOf = (tokens: number[]) =>
  new TextDecoder().decode(Uint8Array.from(tokens.flatMap((t) => [...vocab.bytesOf(t)!])));

/** Random allowed tokens (seeded) for `steps`, then the shortest completion byte by byte; the text. */
function walk(m: Matcher, seed: number, steps: number): string {
  let x = seed * 2654435761 + 7;
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  const single = new Map<number, number>();
  for (let id = 0; id < vocab.size; id++) {
    const b = vocab.bytesOf(id);
    if (b && b.length === 1 && !single.has(b[0]!)) single.set(b[0]!, id);
  }
  m.reset();
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const bits = m.allowedTokens();
    const allowed: number[] = [];
    for (let w = 0; w < bits.length; w++)
      for (let word = bits[w]!; word !== 0; word &= word - 1) {
        const t = w * 32 + (31 - Math.clz32(word & -word));
        if (t !== EOS) allowed.push(t);
      }
    if (allowed.length === 0) break;
    const short = allowed.filter((t) => vocab.bytesOf(t)!.length <= 2);
    const pool = rand() < 0.6 && short.length > 0 ? short : allowed;
    const t = pool[Math.floor(rand() * pool.length)]!;
    expect(m.accept(t)).toBe(true);
    out.push(t);
  }
  const pda = m.guide.pda;
  for (let guard = 0; guard < 5000 && !m.isComplete(); guard++) {
    const c = (m as unknown as { config: number }).config;
    const here = pda.configDist(c);
    let b = 0;
    while (b < 256 && !(pda.configNext(c, b) >= 0 && pda.configDist(pda.configNext(c, b)) === here - 1)) b++;
    expect(b).toBeLessThan(256);
    const t = single.get(b)!;
    expect(m.accept(t)).toBe(true);
    out.push(t);
  }
  expect(m.accept(EOS)).toBe(true);
  return textOf(out);
}

const ARITHMETIC = `
# our own fixture: expressions with parentheses (recursive through "term")
root   ::= expr
expr   ::= term (ws [-+*/] ws term)*
term   ::= num | "(" ws expr ws ")"
num    ::= [0-9]+ ("." [0-9]+)?
ws     ::= [ ]?
`;

/** An independent recognizer for ARITHMETIC. */
function isArithmetic(s: string): boolean {
  let i = 0;
  const ws = () => {
    if (s[i] === ' ') i++;
  };
  const num = (): boolean => {
    const m = /^[0-9]+(\.[0-9]+)?/.exec(s.slice(i));
    if (!m) return false;
    i += m[0].length;
    return true;
  };
  const term = (): boolean => {
    if (s[i] === '(') {
      i++;
      ws();
      if (!expr()) return false;
      ws();
      if (s[i] !== ')') return false;
      i++;
      return true;
    }
    return num();
  };
  const expr = (): boolean => {
    if (!term()) return false;
    for (;;) {
      const save = i;
      ws();
      if (!'+-*/'.includes(s[i] ?? 'x')) {
        i = save;
        return true;
      }
      i++;
      ws();
      if (!term()) return false;
    }
  };
  return expr() && i === s.length;
}

describe('the public matcher', () => {
  it('is exported from the package', () => {
    expect(typeof pkg.createMatcher).toBe('function');
    expect(typeof pkg.Matcher).toBe('function');
  });

  it('accept / allowedTokens / isComplete / rollback follow the output', () => {
    const m = createMatcher(
      { type: 'json', schema: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] } },
      tok,
    );
    const text = ids('{"a": 12}');
    for (const t of text) {
      expect(has(m.allowedTokens(), t)).toBe(true);
      expect(m.isComplete()).toBe(false);
      expect(m.accept(t)).toBe(true);
    }
    expect(m.isComplete()).toBe(true);
    const eos = tok.eosTokenId!;
    expect(has(m.allowedTokens(), eos)).toBe(true);
    expect(m.accept(ids('x')[0]!)).toBe(false); // refused, state unchanged
    expect(m.isComplete()).toBe(true);
    expect(m.accept(eos)).toBe(true);
    expect(m.isTerminated()).toBe(true);
    m.rollback(2); // EOS and "}"
    expect(m.isComplete()).toBe(false);
    expect(m.accept(ids('3}')[0]!)).toBe(true);
    expect(() => m.rollback(100)).toThrow(RangeError);
  });

  it('forcedTokens: the text only the constraint can write, without its last token', () => {
    const schema = {
      type: 'object',
      properties: {
        name: { const: 'get_weather' },
        arguments: {
          type: 'object',
          properties: { city: { type: 'string' } },
          required: ['city'],
          additionalProperties: false,
        },
      },
      required: ['name', 'arguments'],
      additionalProperties: false,
    };
    const m = createMatcher({ type: 'json', schema, whitespace: 'compact' }, tok);
    const forced = m.forcedTokens();
    expect(textOf(forced)).toBe('{"name":"get_weather","arguments":{"city":'.slice(0, textOf(forced).length));
    expect(textOf(forced).length).toBeGreaterThan(20);
    // Every forced token is accepted in order, and afterwards a choice is left.
    for (const t of forced) expect(m.accept(t)).toBe(true);
    expect(createMatcher({ type: 'choice', choices: ['yes', 'no'] }, tok).forcedTokens()).toEqual([]);
  });

  it('regex specs and choices still match as a whole', () => {
    const m = createMatcher({ type: 'regex', pattern: '[0-9]{3}-[A-Z]+' }, vocab);
    for (let seed = 1; seed <= 5; seed++) expect(walk(m, seed, 6)).toMatch(/^[0-9]{3}-[A-Z]+$/);
  });
});

describe('GBNF grammars', () => {
  it('a recursive grammar: every sampled output parses with an independent recognizer', () => {
    const m = createMatcher({ type: 'grammar', gbnf: ARITHMETIC }, vocab);
    let deep = 0;
    for (let seed = 1; seed <= 15; seed++) {
      const text = walk(m, seed, 30);
      expect(isArithmetic(text), JSON.stringify(text)).toBe(true);
      if (text.includes('((')) deep++;
    }
    expect(deep).toBeGreaterThan(0); // the walks nest parentheses: the stack is exercised
    const n = createMatcher({ type: 'grammar', gbnf: ARITHMETIC }, vocab);
    for (const t of ids('((((1 + 2)))) * (3.5)')) expect(n.accept(t)).toBe(true);
    expect(n.isComplete()).toBe(true);
    n.reset();
    for (const t of ids('((1 + 2)')) expect(n.accept(t)).toBe(true);
    expect(n.isComplete()).toBe(false);
  });

  it('a JSON grammar in GBNF: outputs parse with JSON.parse', () => {
    const gbnf = String.raw`
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
`;
    const m = createMatcher({ type: 'grammar', gbnf }, vocab);
    for (let seed = 1; seed <= 5; seed++) {
      const text = walk(m, seed, 25);
      const v: unknown = JSON.parse(text);
      expect(v !== null && typeof v === 'object' && !Array.isArray(v)).toBe(true);
    }
  });

  it('errors name the line and the problem; left recursion is refused', () => {
    const err = (gbnf: string) => {
      try {
        compileStructuredOutput({ type: 'grammar', gbnf });
      } catch (e) {
        return (e as Error).message;
      }
      return 'compiled';
    };
    expect(err('root ::= item\n')).toMatch(/rule "item" is used but not defined/);
    expect(err('start ::= "a"')).toMatch(/no "root" rule/);
    expect(err('root ::= "a\n')).toMatch(/line 1: an unterminated string/);
    expect(err('root ::= expr\nexpr ::= expr "+" "1" | "1"')).toMatch(/left recursion: expr -> expr/);
    expect(err('root ::= [a-z')).toMatch(/unterminated character class/);
  });

  it("llama.cpp's grammars/*.gbnf compile; json.gbnf outputs parse", () => {
    const files = readdirSync(LLAMA_GRAMMARS).filter((f) => f.endsWith('.gbnf'));
    expect(files).toEqual(
      expect.arrayContaining([
        'json.gbnf',
        'arithmetic.gbnf',
        'c.gbnf',
        'chess.gbnf',
        'list.gbnf',
        'japanese.gbnf',
        'english.gbnf',
      ]),
    );
    for (const f of files) {
      const gbnf = readFileSync(`${LLAMA_GRAMMARS}/${f}`, 'utf8');
      const m = createMatcher({ type: 'grammar', gbnf }, vocab);
      const text = walk(m, 3, 12);
      if (f === 'json.gbnf') expect(() => JSON.parse(text), text).not.toThrow();
      if (f === 'list.gbnf') expect(text).toMatch(/^(- [^\n]+\n)+$/);
    }
  });
});
