// Byte-level NFAs built from small combinators, and their lazily determinised DFA.
//
// Every constraint (JSON schema, regex, choice, tool-call block) becomes one NFA over bytes. A
// fragment (`Frag`) appends its states after a given state and returns the state where it ends,
// so a fragment can be instantiated more than once and loops never duplicate their body:
// `loop1(item, sep)` is item (sep item)* with one copy of item. The DFA is built on demand, one
// (state, byte) transition at a time, and memoised in a flat Int32Array: walking the token trie
// costs one array read per trie node once the states it meets have been seen.

/** 256 flags: which bytes an edge accepts. */
export type ByteSet = Uint8Array;

export function byteSet(ranges: [number, number][], negate = false): ByteSet {
  const s = new Uint8Array(256);
  for (const [lo, hi] of ranges) for (let b = lo; b <= hi; b++) s[b] = 1;
  if (negate) for (let b = 0; b < 256; b++) s[b] ^= 1;
  return s;
}

export class Nfa {
  /** eps[s]: states reachable from s without reading a byte. */
  readonly eps: number[][] = [];
  /** edges[s]: (set, to) pairs; reading a byte in `set` moves to `to`. */
  readonly edges: { set: ByteSet; to: number }[][] = [];
  start: number;
  accept = -1;

  constructor() {
    this.start = this.state();
  }

  state(): number {
    this.eps.push([]);
    this.edges.push([]);
    return this.eps.length - 1;
  }

  get size(): number {
    return this.eps.length;
  }
}

/** Appends a sub-automaton after state `from`; returns its end state. */
export type Frag = (nfa: Nfa, from: number) => number;

export const empty: Frag = (_nfa, from) => from;

export function bytesOf(set: ByteSet): Frag {
  return (nfa, from) => {
    const to = nfa.state();
    nfa.edges[from]!.push({ set, to });
    return to;
  };
}

const singleByte: ByteSet[] = Array.from({ length: 256 }, (_, b) => byteSet([[b, b]]));

export function literalBytes(bytes: ArrayLike<number>): Frag {
  return (nfa, from) => {
    let s = from;
    for (let i = 0; i < bytes.length; i++) {
      const to = nfa.state();
      nfa.edges[s]!.push({ set: singleByte[bytes[i]!]!, to });
      s = to;
    }
    return s;
  };
}

const utf8 = new TextEncoder();
export const literal = (text: string): Frag => literalBytes(utf8.encode(text));

export function seq(...parts: Frag[]): Frag {
  return (nfa, from) => parts.reduce((s, f) => f(nfa, s), from);
}

export function alt(...branches: Frag[]): Frag {
  return (nfa, from) => {
    const end = nfa.state();
    for (const b of branches) {
      const s = nfa.state();
      nfa.eps[from]!.push(s);
      nfa.eps[b(nfa, s)]!.push(end);
    }
    return end;
  };
}

export const optional = (f: Frag): Frag => alt(empty, f);

/** item (sep item)*, with a single copy of item. */
export function loop1(item: Frag, sep: Frag = empty): Frag {
  return (nfa, from) => {
    const s = nfa.state();
    nfa.eps[from]!.push(s);
    const end = item(nfa, s);
    nfa.eps[sep(nfa, end)]!.push(s);
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
    // f? nested: (f (f (f)?)?)? keeps the copies linear in max - min.
    let tail: Frag = empty;
    for (let i = min; i < max; i++) tail = optional(seq(f, tail));
    parts.push(tail);
  }
  return seq(...parts);
}

/** Builds the NFA of a whole constraint. */
export function buildNfa(root: Frag): Nfa {
  const nfa = new Nfa();
  nfa.accept = root(nfa, nfa.start);
  return nfa;
}

const UNKNOWN = -2;
export const DEAD = -1;

/**
 * The DFA of an NFA, built lazily. DFA states are sets of "important" NFA states (those with byte
 * edges, and the accept state) after epsilon closure. `dist[s]` is the fewest bytes that take s to
 * acceptance (used to finish within a token budget).
 */
export class LazyDfa {
  /** trans[s * 256 + b]: next state, DEAD, or UNKNOWN (not computed yet). */
  trans: Int32Array = new Int32Array(256 * 64).fill(UNKNOWN);
  readonly accepting: number[] = [];
  readonly dist: number[] = [];
  readonly start: number;
  private readonly members: Int32Array[] = [];
  private readonly ids = new Map<string, number>();
  private readonly nfaDist: Int32Array;
  private readonly mark: Int32Array;
  private stamp = 0;

  constructor(readonly nfa: Nfa) {
    this.mark = new Int32Array(nfa.size);
    this.nfaDist = distancesToAccept(nfa);
    this.start = this.intern(this.closure([nfa.start]));
    if (this.start === DEAD) throw new Error('constraint matches nothing');
  }

  get stateCount(): number {
    return this.members.length;
  }

  next(s: number, b: number): number {
    const t = this.trans[s * 256 + b]!;
    return t !== UNKNOWN ? t : this.compute(s, b);
  }

  /** Computes and memoises trans[s * 256 + b]. */
  compute(s: number, b: number): number {
    const edges = this.nfa.edges;
    const targets: number[] = [];
    for (const q of this.members[s]!) for (const e of edges[q]!) if (e.set[b]) targets.push(e.to);
    const t = targets.length === 0 ? DEAD : this.intern(this.closure(targets));
    this.trans[s * 256 + b] = t;
    return t;
  }

  private closure(seeds: number[]): number[] {
    const stamp = ++this.stamp;
    const stack = seeds.slice();
    const kept: number[] = [];
    for (const q of stack) this.mark[q] = stamp;
    while (stack.length > 0) {
      const q = stack.pop()!;
      if (this.nfa.edges[q]!.length > 0 || q === this.nfa.accept) kept.push(q);
      for (const r of this.nfa.eps[q]!) {
        if (this.mark[r] !== stamp) {
          this.mark[r] = stamp;
          stack.push(r);
        }
      }
    }
    return kept.sort((a, b) => a - b);
  }

  private intern(set: number[]): number {
    if (set.length === 0) return DEAD;
    const key = set.join(',');
    let id = this.ids.get(key);
    if (id !== undefined) return id;
    id = this.members.length;
    this.members.push(Int32Array.from(set));
    this.ids.set(key, id);
    let d = Infinity;
    for (const q of set) d = Math.min(d, this.nfaDist[q]!);
    this.accepting.push(set.includes(this.nfa.accept) ? 1 : 0);
    this.dist.push(d);
    if ((id + 1) * 256 > this.trans.length) {
      const grown = new Int32Array(this.trans.length * 2).fill(UNKNOWN);
      grown.set(this.trans);
      this.trans = grown;
    }
    return id;
  }
}

/** Fewest bytes from each NFA state to the accept state (0-1 BFS on the reversed graph). */
function distancesToAccept(nfa: Nfa): Int32Array {
  const n = nfa.size;
  const revEps: number[][] = Array.from({ length: n }, () => []);
  const revByte: number[][] = Array.from({ length: n }, () => []);
  for (let q = 0; q < n; q++) {
    for (const r of nfa.eps[q]!) revEps[r]!.push(q);
    for (const e of nfa.edges[q]!) revByte[e.to]!.push(q);
  }
  const dist = new Int32Array(n).fill(0x3fffffff);
  dist[nfa.accept] = 0;
  // Two-level BFS: eps edges cost 0, byte edges 1.
  let frontier = [nfa.accept];
  while (frontier.length > 0) {
    for (let i = 0; i < frontier.length; i++) {
      const q = frontier[i]!;
      for (const p of revEps[q]!) {
        if (dist[p]! > dist[q]!) {
          dist[p] = dist[q]!;
          frontier.push(p);
        }
      }
    }
    const next: number[] = [];
    for (const q of frontier) {
      for (const p of revByte[q]!) {
        if (dist[p]! > dist[q]! + 1) {
          dist[p] = dist[q]! + 1;
          next.push(p);
        }
      }
    }
    frontier = next;
  }
  return dist;
}
