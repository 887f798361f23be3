// Regular expressions (the ECMAScript subset below) -> NFA fragments over UTF-8 bytes.
//
// Supported: literals, escapes (\d \w \s \D \W \S with JavaScript's meaning, \n \t \r \f \v \0,
// \xHH, \uHHHH, \u{H...}, escaped punctuation), classes [...] with ranges (any code points) and ^,
// ., groups (...), (?:...), (?<name>...), |, and the quantifiers * + ? {m} {m,} {m,n} (lazy ones
// too: as a language a lazy quantifier matches the same strings). Anything else (backreferences,
// lookaround, \b, \p{...}, anchors inside the pattern) is an error naming the construct.
//
// Characters are whole code points: . and negated classes match one UTF-8 character, so {m,n}
// counts characters. Two uses:
//  - guided_regex / type 'regex': the pattern matches the whole output (as vLLM does);
//  - a JSON schema's `pattern`: the string must contain a match (JSON Schema patterns are not
//    anchored: ^ and $ at the ends of a top-level branch anchor it), and the characters are
//    written as JSON string content (`"` as \", a newline as \n, ...).
import { alt, byteSet, bytesOf, empty, literalBytes, loop1, optional, repeat, seq, star, type Frag } from './nfa.js';

export class RegexSyntaxError extends Error {
  constructor(
    message: string,
    readonly construct: string,
  ) {
    super(message);
    this.name = 'RegexSyntaxError';
  }
}

const MAX_REPEAT = 100_000;
const MAX_NESTING = 200;

/** A set of code points: sorted, disjoint, inclusive [lo, hi] ranges (surrogates never included). */
export type CharClass = [number, number][];

const MAX_CP = 0x10ffff;

export function normalize(ranges: CharClass): CharClass {
  const sorted = ranges
    .flatMap(([lo, hi]): CharClass => {
      // Surrogate code points are never characters of UTF-8 text.
      if (hi < 0xd800 || lo > 0xdfff) return [[lo, hi]];
      const out: CharClass = [];
      if (lo < 0xd800) out.push([lo, 0xd7ff]);
      if (hi > 0xdfff) out.push([0xe000, hi]);
      return out;
    })
    .sort((a, b) => a[0] - b[0]);
  const out: CharClass = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

export function complement(c: CharClass): CharClass {
  const out: CharClass = [];
  let next = 0;
  for (const [lo, hi] of normalize(c)) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return normalize(out);
}

export const ANY_CHAR: CharClass = normalize([[0, MAX_CP]]);
const DIGIT: CharClass = [[0x30, 0x39]];
const WORD: CharClass = normalize([
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
  [0x5f, 0x5f],
]);
// JavaScript's \s: WhiteSpace and LineTerminator.
const SPACE: CharClass = normalize([
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
]);
// JavaScript's . without the s flag: anything but a line terminator.
const DOT: CharClass = complement([
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
]);

/** UTF-8 byte-range sequences covering code points lo..hi (same encoded length, no surrogates). */
function utf8Sequences(lo: number, hi: number, out: [number, number][][]): void {
  for (const lim of [0x7f, 0x7ff, 0xffff]) {
    if (lo <= lim && hi > lim) {
      utf8Sequences(lo, lim, out);
      utf8Sequences(lim + 1, hi, out);
      return;
    }
  }
  if (hi <= 0x7f) {
    out.push([[lo, hi]]);
    return;
  }
  const n = hi <= 0x7ff ? 2 : hi <= 0xffff ? 3 : 4;
  for (let i = 1; i < n; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        utf8Sequences(lo, lo | m, out);
        utf8Sequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) !== m) {
        utf8Sequences(lo, (hi & ~m) - 1, out);
        utf8Sequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  const a = encode(lo);
  const b = encode(hi);
  out.push(a.map((x, i) => [x, b[i]]));
}

function encode(cp: number): number[] {
  return [...new TextEncoder().encode(String.fromCodePoint(cp))];
}

/** How characters are written: as themselves, or as the content of a JSON string. */
export type CharMode = 'raw' | 'json';

const SHORT_ESCAPES: Record<number, string> = { 8: 'b', 9: 't', 10: 'n', 12: 'f', 13: 'r' };

/** The fragment of one character out of `cls`, written in `mode`. */
export function classFrag(cls: CharClass, mode: CharMode = 'raw'): Frag {
  const ascii = new Uint8Array(256);
  const branches: Frag[] = [];
  const seqs: [number, number][][] = [];
  for (const [lo, hi] of cls) {
    if (lo <= 0x7f) {
      for (let c = lo; c <= Math.min(hi, 0x7f); c++) {
        if (mode === 'json' && (c < 0x20 || c === 0x22 || c === 0x5c)) {
          const esc =
            c === 0x22 ? '\\"' : c === 0x5c ? '\\\\' : (SHORT_ESCAPES[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`);
          branches.push(literalBytes(new TextEncoder().encode(esc)));
        } else ascii[c] = 1;
      }
    }
    if (hi > 0x7f) utf8Sequences(Math.max(lo, 0x80), hi, seqs);
  }
  if (ascii.some((v) => v === 1)) branches.push(bytesOf(ascii));
  for (const s of seqs) branches.push(seq(...s.map(([a, b]) => bytesOf(byteSet([[a, b]])))));
  return alt(...branches);
}

const CONTROL_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, f: 12, v: 11, '0': 0 };

function shorthand(ch: string): CharClass | null {
  switch (ch) {
    case 'd':
      return DIGIT;
    case 'D':
      return complement(DIGIT);
    case 'w':
      return WORD;
    case 'W':
      return complement(WORD);
    case 's':
      return SPACE;
    case 'S':
      return complement(SPACE);
    default:
      return null;
  }
}

class Parser {
  private i = 0;
  private depth = 0;
  /** Set while parsing a top-level branch of a JSON-schema pattern. */
  private anchoredStart = false;
  private anchoredEnd = false;

  constructor(
    private readonly src: string,
    private readonly mode: CharMode,
    private readonly search: boolean,
  ) {}

  parse(): Frag {
    let f: Frag;
    if (this.search) {
      // Each top-level branch is unanchored unless it starts with ^ / ends with $.
      const anyChar = classFrag(ANY_CHAR, this.mode);
      const anyRun = star(anyChar);
      // The run after a match: a loop head h that absorbs every other thread of the pattern (all
      // of them read whole characters up to the same end), so a matched string is one DFA state.
      const heads: number[] = [];
      const tailRun: Frag = (nfa, from) => {
        const h = nfa.state();
        nfa.addEps(from, h);
        nfa.addEps(anyChar(nfa, h), h);
        heads.push(h);
        return h;
      };
      // Branches grouped by their anchors, so that unanchored ones share one leading run and one
      // tail (`a|b|c` is .*(a|b|c).*, not three copies of .* that every DFA state would carry).
      const groups: Frag[][] = [[], [], [], []];
      for (;;) {
        this.anchoredStart = this.src[this.i] === '^';
        if (this.anchoredStart) this.i++;
        this.anchoredEnd = false;
        const body = this.sequence(true);
        groups[(this.anchoredStart ? 2 : 0) + (this.anchoredEnd ? 1 : 0)].push(body);
        if (this.src[this.i] !== '|') break;
        this.i++;
      }
      const branches: Frag[] = [];
      for (const [k, bodies] of groups.entries())
        if (bodies.length > 0) branches.push(seq(k & 2 ? empty : anyRun, alt(...bodies), k & 1 ? empty : tailRun));
      const pattern = alt(...branches);
      f = (nfa, from) => {
        heads.length = 0;
        const lo = nfa.eps.length;
        const end = pattern(nfa, from);
        const hi = nfa.eps.length;
        for (const h of heads) nfa.absorbing.set(h, [lo, hi]);
        return end;
      };
    } else {
      if (this.src.startsWith('^')) this.i = 1;
      f = this.alternation();
      if (this.src[this.i] === '$' && this.i === this.src.length - 1) this.i++;
    }
    if (this.i < this.src.length) {
      const ch = this.src[this.i];
      if (ch === ')') this.fail('an unmatched ")"', ')');
      this.fail(`${JSON.stringify(ch)} here`, ch);
    }
    return f;
  }

  private fail(what: string, construct: string): never {
    throw new RegexSyntaxError(`unsupported regex syntax at offset ${this.i}: ${what}`, construct);
  }

  private alternation(): Frag {
    const branches = [this.sequence(false)];
    while (this.src[this.i] === '|') {
      this.i++;
      branches.push(this.sequence(false));
    }
    return alt(...branches);
  }

  private sequence(topLevel: boolean): Frag {
    const parts: Frag[] = [];
    while (this.i < this.src.length) {
      const ch = this.src[this.i];
      if (ch === '|' || ch === ')') break;
      if (ch === '$') {
        const next = this.src[this.i + 1];
        const atBranchEnd = next === undefined || next === '|' || (next === ')' && !topLevel);
        if (topLevel && this.search && (next === undefined || next === '|')) {
          this.anchoredEnd = true;
          this.i++;
          break;
        }
        if (!this.search && this.i === this.src.length - 1) break;
        if (!atBranchEnd || this.search) this.fail('the anchor "$" inside the pattern', '$');
      }
      parts.push(this.quantified(this.atom()));
    }
    return seq(...parts);
  }

  private quantified(f: Frag): Frag {
    const ch = this.src[this.i];
    let out: Frag;
    if (ch === '*') out = star(f);
    else if (ch === '+') out = loop1(f);
    else if (ch === '?') out = optional(f);
    else if (ch === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i, this.i + 32))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i, this.i + 32))!;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (max < min) this.fail(`${m[0]} has max below min`, m[0]);
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT))
        this.fail(`${m[0]}: repetition counts above ${MAX_REPEAT}`, m[0]);
      this.i += m[0].length - 1;
      out = repeat(f, min, max);
    } else return f;
    this.i++;
    if (this.src[this.i] === '?') this.i++; // lazy: the same language
    const after = this.src[this.i];
    if (after === '*' || after === '+' || after === '?' || (after === '{' && /^\{\d/.test(this.src.slice(this.i))))
      this.fail('a quantifier after a quantifier', after);
    return out;
  }

  private atom(): Frag {
    const ch = this.src[this.i];
    if (ch === '(') {
      this.i++;
      if (this.src[this.i] === '?') {
        const rest = this.src.slice(this.i, this.i + 3);
        if (rest.startsWith('?:')) this.i += 2;
        else if (rest.startsWith('?<') && rest !== '?<=' && rest !== '?<!') {
          const close = this.src.indexOf('>', this.i);
          if (close < 0) this.fail('an unclosed group name', '(?<');
          this.i = close + 1;
        } else this.fail(`group syntax "(${rest}" (lookaround is not supported)`, `(${rest}`);
      }
      if (++this.depth > MAX_NESTING) this.fail(`groups nested more than ${MAX_NESTING} deep`, '(');
      const inner = this.alternation();
      this.depth--;
      if (this.src[this.i] !== ')') this.fail('an unclosed "("', '(');
      this.i++;
      return inner;
    }
    if (ch === '[') return classFrag(this.bracketClass(), this.mode);
    if (ch === '.') {
      this.i++;
      return classFrag(DOT, this.mode);
    }
    if (ch === '\\') return classFrag(this.escape(false), this.mode);
    if ('*+?'.includes(ch) || (ch === '{' && /^\{\d/.test(this.src.slice(this.i))))
      this.fail(`nothing to repeat before "${ch}"`, ch);
    if (ch === '^' || ch === '$') this.fail(`the anchor "${ch}" inside the pattern`, ch);
    const cp = this.src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return classFrag([[cp, cp]], this.mode);
  }

  /** An escape at this.i (the backslash); a class of one or more characters. */
  private escape(inClass: boolean): CharClass {
    const e = this.src[this.i + 1];
    if (e === undefined) this.fail('a trailing backslash', '\\');
    const cls = shorthand(e);
    if (cls) {
      this.i += 2;
      return cls;
    }
    if (e in CONTROL_ESCAPES) {
      this.i += 2;
      const c = CONTROL_ESCAPES[e];
      return [[c, c]];
    }
    if (e === 'x' && /^[0-9a-fA-F]{2}$/.test(this.src.slice(this.i + 2, this.i + 4))) {
      const c = parseInt(this.src.slice(this.i + 2, this.i + 4), 16);
      this.i += 4;
      return [[c, c]];
    }
    if (e === 'u') {
      const braced = /^\{([0-9a-fA-F]{1,6})\}/.exec(this.src.slice(this.i + 2, this.i + 10));
      if (braced) {
        const c = parseInt(braced[1], 16);
        if (c > MAX_CP) this.fail(`the code point \\u{${braced[1]}}`, '\\u{');
        this.i += 2 + braced[0].length;
        return normalize([[c, c]]);
      }
      const hex = this.src.slice(this.i + 2, this.i + 6);
      if (/^[0-9a-fA-F]{4}$/.test(hex)) {
        let c = parseInt(hex, 16);
        this.i += 6;
        // A surrogate pair written as two escapes is one character.
        const low = /^\\u([dD][c-fC-F][0-9a-fA-F]{2})/.exec(this.src.slice(this.i, this.i + 6));
        if (c >= 0xd800 && c <= 0xdbff && low) {
          c = 0x10000 + ((c - 0xd800) << 10) + (parseInt(low[1], 16) - 0xdc00);
          this.i += 6;
        }
        if (c >= 0xd800 && c <= 0xdfff) this.fail('a lone surrogate escape', `\\u${hex}`);
        return [[c, c]];
      }
    }
    if (/[A-Za-z0-9]/.test(e)) this.fail(`the escape "\\${e}"${inClass ? ' inside a class' : ''}`, `\\${e}`);
    this.i += 2;
    const c = e.codePointAt(0)!;
    return [[c, c]];
  }

  private bracketClass(): CharClass {
    const start = this.i;
    this.i++; // [
    let negate = false;
    if (this.src[this.i] === '^') {
      negate = true;
      this.i++;
    }
    const ranges: CharClass = [];
    // One class member: a single character (returned as its code point) or a shorthand class.
    const member = (): number | CharClass => {
      const ch = this.src[this.i];
      if (ch === undefined) {
        this.i = start;
        this.fail('an unclosed "["', '[');
      }
      if (ch === '\\') {
        if (this.src[this.i + 1] === 'b') {
          this.i += 2;
          return 8;
        }
        if (this.src[this.i + 1] === '-') {
          this.i += 2;
          return 0x2d;
        }
        const c = this.escape(true);
        return c.length === 1 && c[0][0] === c[0][1] ? c[0][0] : c;
      }
      const cp = this.src.codePointAt(this.i)!;
      this.i += cp > 0xffff ? 2 : 1;
      return cp;
    };
    for (;;) {
      if (this.src[this.i] === ']') break;
      const lo = member();
      if (typeof lo !== 'number') {
        ranges.push(...lo);
        continue;
      }
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        this.i++;
        const hi = member();
        if (typeof hi !== 'number') this.fail('a range ending in a class escape', '-');
        if (hi < lo)
          this.fail(
            `the reversed range "${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}"`,
            `${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}`,
          );
        ranges.push([lo, hi]);
      } else ranges.push([lo, lo]);
    }
    this.i++; // ]
    return negate ? complement(ranges) : normalize(ranges);
  }
}

/** Compiles a pattern that the whole output must match; throws RegexSyntaxError. */
export function regexFrag(pattern: string): Frag {
  return new Parser(pattern, 'raw', false).parse();
}

/**
 * The content of a JSON string (between the quotes) whose decoded value contains a match of
 * `pattern` (JSON Schema semantics: unanchored unless ^ / $ anchor a branch).
 */
export function jsonPatternFrag(pattern: string): Frag {
  return new Parser(pattern, 'json', true).parse();
}
