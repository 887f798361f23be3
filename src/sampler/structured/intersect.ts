// The content of one JSON string that every given fragment matches and whose length, in
// characters, is within [minLength, maxLength]: `pattern` with `minLength`/`maxLength`, `format`
// with `pattern`. Each fragment is built alone (a regex of JSON-string content: no calls), then
// their product is walked from the start, only over reachable states, together with a character
// counter. Characters are found in the bytes by a small tracker of where one starts: the content
// the regex front-end writes is plain ASCII, a backslash escape (\" \\ \n ... \u00XX) or one
// whole UTF-8 character, so a character starts at every byte read at a boundary.

import { BudgetError, buildNfa, Nfa, type Budget, type ByteSet, type Frag } from './nfa.js';

// Tracker states: at a character boundary, inside an escape (after \, after \u: 4..1 hex digits
// left), inside a UTF-8 character (1..3 continuation bytes left).
const AT_BOUNDARY = 0;
const AFTER_BACKSLASH = 1;
const HEX_LEFT_4 = 2; // 3, 4, 5: 3..1 left
const CONT_LEFT_1 = 6; // 7, 8: 2..3 left

/** A DFA over bytes: next[d * 256 + b] is the state after reading b (-1: none). */
interface Dfa {
  next: Int32Array;
  accepting: boolean[];
}

/** Most DFA states one fragment may determinize to before the schema is refused. */
const MAX_DFA_STATES = 4096;
/** Most states one counted product may have (past it the matcher's own state cache would overflow). */
const MAX_PRODUCT_STATES = 32768;
/**
 * Most such states one whole constraint may have: the matcher interns the states it meets up to
 * its own limit (40,000), and counted strings met one after another would fill it.
 */
const MAX_PRODUCT_STATES_PER_CONSTRAINT = 65536;
const productStates = new WeakMap<Nfa, number>();

/** Subset construction of a call-free fragment (regexes are small; the counter multiplies states). */
function determinize(frag: Frag, budget: Budget): Dfa {
  const nfa = buildNfa(frag, budget);
  const closure = (qs: Iterable<number>): number[] => {
    const seen = new Set<number>(qs);
    const stack = [...seen];
    while (stack.length > 0) {
      const s = stack.pop()!;
      if (nfa.calls[s].length > 0) throw new Error('intersectStrings: a fragment with a rule call');
      for (const t of nfa.eps[s])
        if (!seen.has(t)) {
          seen.add(t);
          stack.push(t);
        }
    }
    return [...seen].sort((a, b) => a - b);
  };
  const end = nfa.ruleEnd[0];
  const ids = new Map<string, number>();
  const sets: number[][] = [];
  const idOf = (qs: number[]): number => {
    const key = qs.join(',');
    let id = ids.get(key);
    if (id === undefined) {
      id = sets.length;
      if (id >= MAX_DFA_STATES)
        throw new BudgetError(
          `a pattern or format with a length or another pattern needs more than ${MAX_DFA_STATES} automaton states (the limit per string); simplify the pattern`,
        );
      ids.set(key, id);
      sets.push(qs);
    }
    return id;
  };
  idOf(closure([nfa.ruleStart[0]]));
  let next = new Int32Array(256 * 64);
  const accepting: boolean[] = [];
  for (let d = 0; d < sets.length; d++) {
    if (next.length < (d + 1) * 256) {
      const grown = new Int32Array(next.length * 2);
      grown.set(next);
      next = grown;
    }
    accepting.push(sets[d].includes(end));
    const targets: number[][] = Array.from({ length: 256 }, () => []);
    for (const q of sets[d])
      for (const e of nfa.edges[q]) for (let b = 0; b < 256; b++) if (e.set[b]) targets[b].push(e.to);
    const memo = new Map<string, number>();
    for (let b = 0; b < 256; b++) {
      if (targets[b].length === 0) {
        next[d * 256 + b] = -1;
        continue;
      }
      const key = targets[b].join(',');
      let id = memo.get(key);
      if (id === undefined) memo.set(key, (id = idOf(closure(targets[b]))));
      next[d * 256 + b] = id;
    }
  }
  return { next, accepting };
}

/** The tracker state after reading byte b in state t (-1: not a byte the regex front-end writes there). */
function trackerNext(t: number, b: number): number {
  if (t === AT_BOUNDARY) {
    if (b === 0x5c) return AFTER_BACKSLASH;
    if (b < 0x80) return AT_BOUNDARY;
    if (b >= 0xc0 && b <= 0xdf) return CONT_LEFT_1;
    if (b >= 0xe0 && b <= 0xef) return CONT_LEFT_1 + 1;
    if (b >= 0xf0 && b <= 0xf7) return CONT_LEFT_1 + 2;
    return -1;
  }
  if (t === AFTER_BACKSLASH) return b === 0x75 ? HEX_LEFT_4 : AT_BOUNDARY;
  if (t >= HEX_LEFT_4 && t <= HEX_LEFT_4 + 3) return t === HEX_LEFT_4 + 3 ? AT_BOUNDARY : t + 1;
  return t === CONT_LEFT_1 ? AT_BOUNDARY : t - 1;
}

/**
 * String content matched by every fragment in `parts` (at least one) with a length in
 * [minLength, maxLength] characters; maxLength may be Infinity (then lengths past minLength are
 * not counted). Deterministic: each fragment is determinized first, so matching follows one thread.
 */
export function intersectStrings(parts: Frag[], minLength: number, maxLength: number): Frag {
  return (nfa, from) => {
    const dfas = parts.map((p) => determinize(p, nfa.budget));
    const cap = maxLength === Infinity ? minLength : maxLength;
    const end = nfa.state();
    // Byte sets interned by content: a counted product repeats the same few sets.
    const sets = new Map<string, ByteSet>();
    // A product state: one DFA state per fragment, the tracker, the characters counted.
    const ids = new Map<string, number>();
    const todo: { ds: number[]; tracker: number; count: number; id: number }[] = [];
    const idOf = (ds: number[], tracker: number, count: number): number => {
      const key = `${ds.join(',')}|${tracker}|${count}`;
      let id = ids.get(key);
      if (id === undefined) {
        if (ids.size >= MAX_PRODUCT_STATES)
          throw new BudgetError(
            `a pattern or format with a length needs more than ${MAX_PRODUCT_STATES} automaton states (the limit per string); lower maxLength or simplify the pattern`,
          );
        const total = (productStates.get(nfa) ?? 0) + 1;
        if (total > MAX_PRODUCT_STATES_PER_CONSTRAINT)
          throw new BudgetError(
            `patterns or formats with a length need more than ${MAX_PRODUCT_STATES_PER_CONSTRAINT} automaton states in one schema (the limit per request); lower maxLength or simplify the patterns`,
          );
        productStates.set(nfa, total);
        id = nfa.state();
        ids.set(key, id);
        todo.push({ ds, tracker, count, id });
      }
      return id;
    };
    nfa.addEps(
      from,
      idOf(
        dfas.map(() => 0),
        AT_BOUNDARY,
        0,
      ),
    );
    while (todo.length > 0) {
      const { ds, tracker, count, id } = todo.pop()!;
      if (tracker === AT_BOUNDARY && count >= minLength && ds.every((d, i) => dfas[i].accepting[d]))
        nfa.addEps(id, end);
      let nextCount = count;
      if (tracker === AT_BOUNDARY) {
        nextCount = count + 1;
        if (nextCount > cap) {
          if (maxLength !== Infinity) continue;
          nextCount = cap;
        }
      }
      // Bytes grouped by where they lead.
      const groups = new Map<string, { ds: number[]; tracker: number; set: Uint8Array }>();
      for (let b = 0; b < 256; b++) {
        const t = trackerNext(tracker, b);
        if (t < 0) continue;
        const next: number[] = [];
        for (let i = 0; i < dfas.length; i++) next.push(dfas[i].next[ds[i] * 256 + b]);
        if (next.some((d) => d < 0)) continue;
        const key = `${next.join(',')}|${t}`;
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { ds: next, tracker: t, set: new Uint8Array(256) }));
        g.set[b] = 1;
      }
      for (const g of groups.values()) {
        const k = g.set.join('');
        let set = sets.get(k);
        if (!set) sets.set(k, (set = g.set));
        nfa.addEdge(id, set, idOf(g.ds, g.tracker, nextCount));
      }
    }
    return end;
  };
}
