// The one automaton form every front-end (JSON schema, regex, GBNF, choices, tool calls) compiles
// to: byte-level NFAs, one per rule, whose edges read a byte, move without reading (epsilon), or
// call another rule and come back (a recursive transition network). A rule is called only where
// recursion needs it (a recursive $ref, a free JSON value, a recursive GBNF rule); everything else
// is inlined, so a non-recursive constraint is one rule and the matcher never pushes a frame.
//
// A fragment (`Frag`) appends its states after a given state and returns the state where it ends,
// so a fragment can be instantiated more than once and loops never duplicate their body:
// `loop1(item, sep)` is item (sep item)* with one copy of item.
//
// Budgets: a request's constraint may not build more than `maxStates` NFA states nor spend more
// than `maxMillis` building them (`((a{128}){128}){128}` is two million states); BudgetError
// names the limit, and the server answers it with a 400.

/** 256 flags: which bytes an edge accepts. */
export type ByteSet = Uint8Array;

export function byteSet(ranges: [number, number][], negate = false): ByteSet {
  const s = new Uint8Array(256);
  for (const [lo, hi] of ranges) for (let b = lo; b <= hi; b++) s[b] = 1;
  if (negate) for (let b = 0; b < 256; b++) s[b] ^= 1;
  return s;
}

export class BudgetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BudgetError';
  }
}

export interface Budget {
  /** NFA states one constraint may have. */
  maxStates: number;
  /** Wall time one compile may take. */
  maxMillis: number;
}

export const DEFAULT_BUDGET: Budget = { maxStates: 400_000, maxMillis: 1_000 };

export interface Edge {
  set: ByteSet;
  to: number;
}
export interface CallEdge {
  rule: number;
  to: number;
}

const NO_INTS: number[] = [];
const NO_EDGES: Edge[] = [];
const NO_CALLS: CallEdge[] = [];

export class Nfa {
  /** eps[s]: states reachable from s without reading a byte (shared empty array when none). */
  readonly eps: number[][] = [];
  /** edges[s]: reading a byte in `set` moves to `to`. */
  readonly edges: Edge[][] = [];
  /** calls[s]: run rule `rule` to its end, then continue at `to`. */
  readonly calls: CallEdge[][] = [];
  /** Rule i runs from ruleStart[i] to ruleEnd[i]; rule 0 is the whole constraint. */
  readonly ruleStart: number[] = [];
  readonly ruleEnd: number[] = [];
  readonly ruleName: string[] = [];
  /**
   * absorbing.get(h) = [lo, hi): every state numbered lo..hi-1 reads a subset of what h reads
   * (h: the free run after an unanchored pattern matched), so where h is, they add nothing.
   */
  readonly absorbing = new Map<number, [number, number]>();
  /**
   * charChain.get(q) = r: q is where one character of a counted string starts; every plain-text
   * character read from q ends in r, and no other state of q's closure reads a plain-text byte.
   * The matcher follows these without building the automaton states in between (a string with
   * maxLength 500 is 500 positions of ~8 states each).
   */
  readonly charChain = new Map<number, number>();
  private readonly deadline: number;

  constructor(readonly budget: Budget = DEFAULT_BUDGET) {
    this.deadline = Date.now() + budget.maxMillis;
  }

  state(): number {
    const s = this.eps.length;
    if (s >= this.budget.maxStates)
      throw new BudgetError(
        `the constraint needs more than ${this.budget.maxStates} automaton states (the limit per request); simplify the schema, pattern or grammar (large repetition counts, long enums)`,
      );
    if ((s & 4095) === 0 && Date.now() > this.deadline)
      throw new BudgetError(
        `compiling the constraint took more than ${this.budget.maxMillis} ms (the limit per request)`,
      );
    this.eps.push(NO_INTS);
    this.edges.push(NO_EDGES);
    this.calls.push(NO_CALLS);
    return s;
  }

  addEps(from: number, to: number): void {
    if (this.eps[from] === NO_INTS) this.eps[from] = [];
    this.eps[from].push(to);
  }

  addEdge(from: number, set: ByteSet, to: number): void {
    if (this.edges[from] === NO_EDGES) this.edges[from] = [];
    this.edges[from].push({ set, to });
  }

  addCall(from: number, rule: number, to: number): void {
    if (this.calls[from] === NO_CALLS) this.calls[from] = [];
    this.calls[from].push({ rule, to });
  }

  /** Declares a rule (its body is given later with defineRule, so rules may refer to each other). */
  declareRule(name: string): number {
    this.ruleStart.push(-1);
    this.ruleEnd.push(-1);
    this.ruleName.push(name);
    return this.ruleStart.length - 1;
  }

  defineRule(rule: number, body: Frag): void {
    const start = this.state();
    this.ruleStart[rule] = start;
    this.ruleEnd[rule] = body(this, start);
  }

  get size(): number {
    return this.eps.length;
  }

  /** Rough bytes held (for the compiled-constraint cache, which is bounded by size). */
  get approxBytes(): number {
    return this.eps.length * 48 + this.charChain.size * 40;
  }
}

/** Appends a sub-automaton after state `from`; returns its end state. */
export type Frag = (nfa: Nfa, from: number) => number;

export const empty: Frag = (_nfa, from) => from;

/** Matches nothing: its end state is unreachable. */
export const nothing: Frag = (nfa) => nfa.state();

export function bytesOf(set: ByteSet): Frag {
  return (nfa, from) => {
    const to = nfa.state();
    nfa.addEdge(from, set, to);
    return to;
  };
}

const singleByte: ByteSet[] = Array.from({ length: 256 }, (_, b) => byteSet([[b, b]]));
export const byteOf = (b: number): ByteSet => singleByte[b];

export function literalBytes(bytes: ArrayLike<number>): Frag {
  return (nfa, from) => {
    let s = from;
    for (let i = 0; i < bytes.length; i++) {
      const to = nfa.state();
      nfa.addEdge(s, singleByte[bytes[i]], to);
      s = to;
    }
    return s;
  };
}

const utf8 = new TextEncoder();
export const literal = (text: string): Frag => literalBytes(utf8.encode(text));

/** One of many strings, as a trie (a 50,000-entry enum shares its prefixes instead of 50,000 branches). */
export function literalSet(texts: readonly string[]): Frag {
  const encoded = [...new Set(texts)].map((t) => utf8.encode(t)).sort(compareBytes);
  return (nfa, from) => {
    const end = nfa.state();
    const path: number[] = [from];
    let prev: Uint8Array | null = null;
    for (const b of encoded) {
      let common = 0;
      if (prev) while (common < prev.length && common < b.length && prev[common] === b[common]) common++;
      for (let d = common; d < b.length; d++) {
        const to = nfa.state();
        nfa.addEdge(path[d], singleByte[b[d]], to);
        path[d + 1] = to;
      }
      nfa.addEps(path[b.length], end);
      prev = b;
    }
    return end;
  };
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function seq(...parts: Frag[]): Frag {
  return (nfa, from) => {
    let s = from;
    for (const f of parts) s = f(nfa, s);
    return s;
  };
}

export function alt(...branches: Frag[]): Frag {
  if (branches.length === 0) return nothing;
  if (branches.length === 1) return branches[0];
  return (nfa, from) => {
    const end = nfa.state();
    for (const b of branches) {
      const s = nfa.state();
      nfa.addEps(from, s);
      nfa.addEps(b(nfa, s), end);
    }
    return end;
  };
}

export const optional = (f: Frag): Frag => alt(empty, f);

/** item (sep item)*, with a single copy of item. */
export function loop1(item: Frag, sep: Frag = empty): Frag {
  return (nfa, from) => {
    const s = nfa.state();
    nfa.addEps(from, s);
    const end = item(nfa, s);
    nfa.addEps(sep(nfa, end), s);
    return end;
  };
}

export const star = (f: Frag): Frag => optional(loop1(f));

/** f{min,max}; max = Infinity for f{min,}. */
export function repeat(f: Frag, min: number, max: number): Frag {
  const parts: Frag[] = [];
  for (let i = 0; i < min; i++) parts.push(f);
  if (max === Infinity) parts.push(star(f));
  else {
    // Each optional copy may end the run: one exit per copy keeps the states linear in max - min.
    const extra = max - min;
    if (extra > 0)
      parts.push((nfa, from) => {
        const end = nfa.state();
        let s = from;
        for (let i = 0; i < extra; i++) {
          nfa.addEps(s, end);
          s = f(nfa, s);
        }
        nfa.addEps(s, end);
        return end;
      });
  }
  return seq(...parts);
}

/** Runs rule `rule` (declared in the same Nfa) and continues after it. */
export function call(rule: number): Frag {
  return (nfa, from) => {
    const to = nfa.state();
    nfa.addCall(from, rule, to);
    return to;
  };
}

/** A named rule; `body` may be filled in after the rule is referenced (recursion). */
export interface RuleDef {
  name: string;
  body: Frag | null;
}

/** Builds the NFA of a whole constraint: rules[0] is the root; call(i) refers to rules[i]. */
export function buildNfa(rules: RuleDef[] | Frag, budget: Budget = DEFAULT_BUDGET): Nfa {
  const defs = typeof rules === 'function' ? [{ name: 'root', body: rules }] : rules;
  const nfa = new Nfa(budget);
  for (const d of defs) nfa.declareRule(d.name);
  defs.forEach((d, r) => {
    if (!d.body) throw new Error(`rule "${d.name}" is used but never defined`);
    nfa.defineRule(r, d.body);
  });
  return nfa;
}
