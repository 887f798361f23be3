// A regular-expression subset -> NFA fragment, matched against the whole output (as vLLM's
// guided_regex does). Supported: literals, escapes (\d \w \s \D \W \S, \n \t \r and escaped
// punctuation), classes [...] with ranges and ^, ., groups (...) and (?:...), |, *, +, ?, {m},
// {m,}, {m,n}; ^ at the start and $ at the end are accepted and mean what they would anyway.
// Anything else (backreferences, lookaround, lazy or possessive quantifiers, anchors elsewhere,
// \b, non-ASCII characters inside a class) is an error naming the construct.
//
// The NFA reads UTF-8 bytes: a literal non-ASCII character is its byte sequence, and . or a
// negated class matches one whole UTF-8 character, so {m,n} still counts characters.
import {
  alt,
  byteSet,
  bytesOf,
  empty,
  literal,
  loop1,
  optional,
  repeat,
  seq,
  star,
  type ByteSet,
  type Frag,
} from './nfa.js';

export class RegexSyntaxError extends Error {
  constructor(
    message: string,
    readonly construct: string,
  ) {
    super(message);
    this.name = 'RegexSyntaxError';
  }
}

const MAX_REPEAT = 256;
const cont = byteSet([[0x80, 0xbf]]);
/** Any multi-byte UTF-8 character (lead byte then continuation bytes). */
export const utf8Multibyte: Frag = alt(
  seq(bytesOf(byteSet([[0xc2, 0xdf]])), bytesOf(cont)),
  seq(bytesOf(byteSet([[0xe0, 0xef]])), bytesOf(cont), bytesOf(cont)),
  seq(bytesOf(byteSet([[0xf0, 0xf4]])), bytesOf(cont), bytesOf(cont), bytesOf(cont)),
);

/** A set of ASCII bytes, plus "and every non-ASCII character" for negated classes and `.`. */
interface CharClass {
  ascii: ByteSet;
  nonAscii: boolean;
}

function classFrag(c: CharClass): Frag {
  return c.nonAscii ? alt(bytesOf(c.ascii), utf8Multibyte) : bytesOf(c.ascii);
}

const DIGIT: [number, number][] = [[0x30, 0x39]];
const WORD: [number, number][] = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
  [0x5f, 0x5f],
];
const SPACE: [number, number][] = [
  [0x09, 0x0d],
  [0x20, 0x20],
];

function shorthand(ch: string): CharClass | null {
  const ascii = (ranges: [number, number][], negate: boolean): CharClass => {
    const set = byteSet(ranges, negate);
    for (let b = 0x80; b < 256; b++) set[b] = 0;
    return { ascii: set, nonAscii: negate };
  };
  switch (ch) {
    case 'd':
      return ascii(DIGIT, false);
    case 'D':
      return ascii(DIGIT, true);
    case 'w':
      return ascii(WORD, false);
    case 'W':
      return ascii(WORD, true);
    case 's':
      return ascii(SPACE, false);
    case 'S':
      return ascii(SPACE, true);
    default:
      return null;
  }
}

const CONTROL_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, f: 12, v: 11, '0': 0 };

class Parser {
  private i = 0;
  constructor(private readonly src: string) {}

  parse(): Frag {
    if (this.src.startsWith('^')) this.i = 1;
    const f = this.alternation();
    if (this.src[this.i] === '$' && this.i === this.src.length - 1) this.i++;
    if (this.i < this.src.length) {
      const ch = this.src[this.i]!;
      if (ch === ')') this.fail('an unmatched ")"', ')');
      this.fail(`${JSON.stringify(ch)} here`, ch);
    }
    return f;
  }

  private fail(what: string, construct: string): never {
    throw new RegexSyntaxError(`unsupported regex syntax at offset ${this.i}: ${what}`, construct);
  }

  private alternation(): Frag {
    const branches = [this.sequence()];
    while (this.src[this.i] === '|') {
      this.i++;
      branches.push(this.sequence());
    }
    return branches.length === 1 ? branches[0]! : alt(...branches);
  }

  private sequence(): Frag {
    const parts: Frag[] = [];
    while (this.i < this.src.length) {
      const ch = this.src[this.i]!;
      if (ch === '|' || ch === ')') break;
      if (ch === '$' && this.i === this.src.length - 1) break;
      parts.push(this.quantified(this.atom()));
    }
    return parts.length === 0 ? empty : seq(...parts);
  }

  private quantified(f: Frag): Frag {
    const ch = this.src[this.i];
    let out: Frag;
    if (ch === '*') out = star(f);
    else if (ch === '+') out = loop1(f);
    else if (ch === '?') out = optional(f);
    else if (ch === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i))!;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (max < min) this.fail(`${m[0]} has max below min`, m[0]);
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT))
        this.fail(`${m[0]}: repetition counts above ${MAX_REPEAT}`, m[0]);
      this.i += m[0].length - 1;
      out = repeat(f, min, max);
    } else return f;
    this.i++;
    const after = this.src[this.i];
    if (after === '?' || after === '+') this.fail(`lazy or possessive quantifier "${ch}${after}"`, `${ch}${after}`);
    if (after === '*' || after === '{') this.fail('a quantifier after a quantifier', after);
    return out;
  }

  private atom(): Frag {
    const ch = this.src[this.i]!;
    if (ch === '(') {
      this.i++;
      if (this.src[this.i] === '?') {
        if (this.src[this.i + 1] !== ':') this.fail(`group syntax "(?${this.src[this.i + 1] ?? ''}"`, '(?');
        this.i += 2;
      }
      const inner = this.alternation();
      if (this.src[this.i] !== ')') this.fail('an unclosed "("', '(');
      this.i++;
      return inner;
    }
    if (ch === '[') return classFrag(this.bracketClass());
    if (ch === '.') {
      this.i++;
      return classFrag({ ascii: byteSet([[0, 0x7f]]).map((v, b) => (b === 10 ? 0 : v)), nonAscii: true });
    }
    if (ch === '\\') return this.escapeAtom();
    if ('*+?{'.includes(ch)) this.fail(`nothing to repeat before "${ch}"`, ch);
    if (ch === '^' || ch === '$') this.fail(`the anchor "${ch}" inside the pattern`, ch);
    const cp = this.src.codePointAt(this.i)!;
    const text = String.fromCodePoint(cp);
    this.i += text.length;
    return literal(text);
  }

  private escapeAtom(): Frag {
    const e = this.src[this.i + 1];
    if (e === undefined) this.fail('a trailing backslash', '\\');
    const cls = shorthand(e);
    this.i += 2;
    if (cls) return classFrag(cls);
    if (e in CONTROL_ESCAPES) return literal(String.fromCharCode(CONTROL_ESCAPES[e]!));
    if (/[A-Za-z0-9]/.test(e)) {
      this.i -= 2;
      this.fail(`the escape "\\${e}"`, `\\${e}`);
    }
    return literal(e);
  }

  private bracketClass(): CharClass {
    const start = this.i;
    this.i++; // [
    let negate = false;
    if (this.src[this.i] === '^') {
      negate = true;
      this.i++;
    }
    const set = new Uint8Array(256);
    let first = true;
    for (;;) {
      const ch = this.src[this.i];
      if (ch === undefined) {
        this.i = start;
        this.fail('an unclosed "["', '[');
      }
      if (ch === ']' && !first) break;
      first = false;
      let lo: number;
      if (ch === '\\') {
        const e = this.src[this.i + 1];
        if (e === undefined) this.fail('a trailing backslash', '\\');
        const sh = shorthand(e);
        if (sh) {
          for (let b = 0; b < 128; b++) if (sh.ascii[b]) set[b] = 1;
          if (sh.nonAscii) this.fail(`"\\${e}" inside a class`, `\\${e}`);
          this.i += 2;
          continue;
        }
        if (e in CONTROL_ESCAPES) lo = CONTROL_ESCAPES[e]!;
        else if (/[A-Za-z0-9]/.test(e)) this.fail(`the escape "\\${e}" inside a class`, `\\${e}`);
        else lo = e.charCodeAt(0);
        this.i += 2;
      } else {
        lo = ch.charCodeAt(0);
        this.i++;
      }
      let hi = lo;
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        let h = this.src[this.i + 1]!;
        this.i += 2;
        if (h === '\\') {
          h = this.src[this.i]!;
          this.i++;
        }
        hi = h.charCodeAt(0);
        if (hi < lo)
          this.fail(`the reversed range "${String.fromCharCode(lo)}-${h}"`, `${String.fromCharCode(lo)}-${h}`);
      }
      if (hi > 0x7f) this.fail('a non-ASCII character inside a class', String.fromCharCode(hi));
      for (let b = lo; b <= hi; b++) set[b] = 1;
    }
    this.i++; // ]
    if (negate) for (let b = 0; b < 128; b++) set[b] ^= 1;
    return { ascii: set, nonAscii: negate };
  }
}

/** Compiles a pattern (whole-output match) into an NFA fragment; throws RegexSyntaxError. */
export function regexFrag(pattern: string): Frag {
  return new Parser(pattern).parse();
}
