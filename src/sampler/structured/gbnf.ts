// GBNF grammars (llama.cpp's format) -> rules of the automaton form (nfa.ts).
//
//   root  ::= item ("," item)*          # a rule: alternatives of sequences
//   item  ::= "lit\n" | [a-z0-9_] | [^"\\] | . | ( group ) | other-rule
//   x* x+ x? x{m} x{m,} x{m,n}          # repetition
// A rule that is part of a recursion (it reaches itself) is called through the stack; every other
// rule is inlined where it is used. Left recursion is refused (pda.ts) with the rules named.
import { alt, empty, loop1, optional, repeat, seq, star, call, type Frag, type RuleDef } from './nfa.js';
import { ANY_CHAR, classFrag, complement, normalize, type CharClass } from './regex.js';

export class GbnfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GbnfError';
  }
}

type Node =
  | { k: 'chars'; cls: CharClass }
  | { k: 'seq'; items: Node[] }
  | { k: 'alt'; items: Node[] }
  | { k: 'ref'; name: string; line: number }
  | { k: 'rep'; item: Node; min: number; max: number };

const MAX_NESTING = 200;

class Parser {
  private i = 0;
  private line = 1;
  private depth = 0;
  readonly rules = new Map<string, Node>();
  readonly order: string[] = [];

  constructor(private readonly src: string) {}

  private fail(what: string): never {
    throw new GbnfError(`GBNF line ${this.line}: ${what}`);
  }

  /** Skips spaces and comments; newlines too when `newlines`. */
  private skip(newlines: boolean): void {
    for (;;) {
      const c = this.src[this.i];
      if (c === '#') {
        while (this.i < this.src.length && this.src[this.i] !== '\n') this.i++;
      } else if (c === ' ' || c === '\t' || c === '\r') this.i++;
      else if (c === '\n' && newlines) {
        this.i++;
        this.line++;
      } else return;
    }
  }

  parse(): void {
    this.skip(true);
    while (this.i < this.src.length) {
      const name = this.name();
      if (!name) this.fail(`expected a rule name, got ${JSON.stringify(this.src.slice(this.i, this.i + 12))}`);
      this.skip(false);
      if (!this.src.startsWith('::=', this.i)) this.fail(`expected "::=" after "${name}"`);
      this.i += 3;
      this.skip(true);
      const body = this.alternatives(false);
      if (this.rules.has(name)) this.fail(`rule "${name}" is defined twice`);
      this.rules.set(name, body);
      this.order.push(name);
      this.skip(true);
    }
  }

  private name(): string {
    const m = /^[A-Za-z0-9_-]+/.exec(this.src.slice(this.i, this.i + 256));
    if (!m) return '';
    this.i += m[0].length;
    return m[0];
  }

  private alternatives(nested: boolean): Node {
    const items = [this.sequence(nested)];
    while (this.src[this.i] === '|') {
      this.i++;
      this.skip(true);
      items.push(this.sequence(nested));
    }
    return items.length === 1 ? items[0] : { k: 'alt', items };
  }

  private sequence(nested: boolean): Node {
    const items: Node[] = [];
    for (;;) {
      this.skip(nested);
      const c = this.src[this.i];
      if (c === undefined || c === '|' || c === ')' || c === '\n') break;
      // A new rule starts on this line: "name ::=" (only outside parentheses).
      if (!nested && /^[A-Za-z0-9_-]+[ \t]*::=/.test(this.src.slice(this.i, this.i + 300))) break;
      items.push(this.postfix(this.atom()));
    }
    return items.length === 1 ? items[0] : { k: 'seq', items };
  }

  private postfix(n: Node): Node {
    for (;;) {
      const c = this.src[this.i];
      if (c === '*') n = { k: 'rep', item: n, min: 0, max: Infinity };
      else if (c === '+') n = { k: 'rep', item: n, min: 1, max: Infinity };
      else if (c === '?') n = { k: 'rep', item: n, min: 0, max: 1 };
      else if (c === '{') {
        const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(this.src.slice(this.i, this.i + 40));
        if (!m) this.fail('a malformed {m,n} repetition');
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (max < min || min > 100_000 || (max !== Infinity && max > 100_000)) this.fail(`the repetition ${m[0]}`);
        this.i += m[0].length - 1;
        n = { k: 'rep', item: n, min, max };
      } else return n;
      this.i++;
    }
  }

  private atom(): Node {
    const c = this.src[this.i];
    if (c === '"') {
      this.i++;
      const items: Node[] = [];
      while (this.src[this.i] !== '"') {
        if (this.i >= this.src.length || this.src[this.i] === '\n') this.fail('an unterminated string');
        const cp = this.char();
        items.push({ k: 'chars', cls: [[cp, cp]] });
      }
      this.i++;
      return { k: 'seq', items };
    }
    if (c === '[') {
      this.i++;
      let negate = false;
      if (this.src[this.i] === '^') {
        negate = true;
        this.i++;
      }
      const ranges: CharClass = [];
      while (this.src[this.i] !== ']') {
        if (this.i >= this.src.length) this.fail('an unterminated character class');
        const lo = this.char();
        let hi = lo;
        if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']') {
          this.i++;
          hi = this.char();
        }
        if (hi < lo) this.fail('a reversed range in a character class');
        ranges.push([lo, hi]);
      }
      this.i++;
      return { k: 'chars', cls: negate ? complement(ranges) : normalize(ranges) };
    }
    if (c === '.') {
      this.i++;
      return { k: 'chars', cls: ANY_CHAR };
    }
    if (c === '(') {
      this.i++;
      if (++this.depth > MAX_NESTING) this.fail(`groups nested more than ${MAX_NESTING} deep`);
      this.skip(true);
      const inner = this.alternatives(true);
      this.skip(true);
      if (this.src[this.i] !== ')') this.fail('an unclosed "("');
      this.i++;
      this.depth--;
      return inner;
    }
    if (c === '<') this.fail('token references (<...>) are not supported');
    const name = this.name();
    if (!name) this.fail(`unexpected ${JSON.stringify(c)}`);
    return { k: 'ref', name, line: this.line };
  }

  /** One character of a literal or class, escapes decoded; returns its code point. */
  private char(): number {
    const c = this.src[this.i];
    if (c !== '\\') {
      const cp = this.src.codePointAt(this.i)!;
      this.i += cp > 0xffff ? 2 : 1;
      return cp;
    }
    const e = this.src[this.i + 1];
    const simple: Record<string, number> = {
      n: 10,
      t: 9,
      r: 13,
      '\\': 92,
      '"': 34,
      '[': 91,
      ']': 93,
      '-': 45,
      '^': 94,
    };
    if (e !== undefined && e in simple) {
      this.i += 2;
      return simple[e];
    }
    const len = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
    const hex = this.src.slice(this.i + 2, this.i + 2 + len);
    if (len === 0 || !new RegExp(`^[0-9a-fA-F]{${len}}$`).test(hex)) this.fail(`the escape "\\${e ?? ''}"`);
    this.i += 2 + len;
    const cp = parseInt(hex, 16);
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) this.fail(`the code point \\${e}${hex}`);
    return cp;
  }
}

/** Parses a grammar into rules (the `root` rule first); throws GbnfError. */
export function parseGbnf(text: string): RuleDef[] {
  const p = new Parser(text);
  p.parse();
  if (!p.rules.has('root')) throw new GbnfError('the grammar has no "root" rule');
  // Which rules reach themselves (they need the stack); the rest are inlined.
  const refsOf = (n: Node, out: Set<string>): Set<string> => {
    if (n.k === 'ref') {
      if (!p.rules.has(n.name)) throw new GbnfError(`GBNF line ${n.line}: rule "${n.name}" is used but not defined`);
      out.add(n.name);
    } else if (n.k === 'seq' || n.k === 'alt') for (const x of n.items) refsOf(x, out);
    else if (n.k === 'rep') refsOf(n.item, out);
    return out;
  };
  const edges = new Map([...p.rules].map(([name, body]) => [name, refsOf(body, new Set())]));
  const recursive = new Set<string>();
  for (const name of p.order) {
    const seen = new Set<string>();
    const stack = [...edges.get(name)!];
    while (stack.length > 0) {
      const r = stack.pop()!;
      if (r === name) {
        recursive.add(name);
        break;
      }
      if (seen.has(r)) continue;
      seen.add(r);
      stack.push(...edges.get(r)!);
    }
  }
  const rules: RuleDef[] = [{ name: 'root', body: null }];
  const ruleIds = new Map<string, number>([['root', 0]]);
  for (const name of p.order)
    if (name !== 'root' && recursive.has(name)) {
      ruleIds.set(name, rules.length);
      rules.push({ name, body: null });
    }
  const frags = new Map<string, Frag>();
  const inlining: string[] = [];
  const fragOf = (n: Node): Frag => {
    switch (n.k) {
      case 'chars':
        return classFrag(n.cls);
      case 'seq':
        return n.items.length === 0 ? empty : seq(...n.items.map(fragOf));
      case 'alt':
        return alt(...n.items.map(fragOf));
      case 'rep':
        if (n.min === 0 && n.max === Infinity) return star(fragOf(n.item));
        if (n.min === 1 && n.max === Infinity) return loop1(fragOf(n.item));
        if (n.min === 0 && n.max === 1) return optional(fragOf(n.item));
        return repeat(fragOf(n.item), n.min, n.max);
      case 'ref': {
        const id = ruleIds.get(n.name);
        if (id !== undefined && (recursive.has(n.name) || n.name === 'root')) return call(id);
        let f = frags.get(n.name);
        if (!f) {
          if (inlining.includes(n.name)) throw new GbnfError(`rule "${n.name}" refers to itself`);
          inlining.push(n.name);
          f = fragOf(p.rules.get(n.name)!);
          inlining.pop();
          frags.set(n.name, f);
        }
        return f;
      }
    }
  };
  for (const [name, id] of ruleIds) rules[id].body = fragOf(p.rules.get(name)!);
  return rules;
}
