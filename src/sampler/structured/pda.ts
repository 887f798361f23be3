// The pushdown automaton of a compiled constraint, determinised lazily.
//
// Three layers, each interned and memoised so that generation keeps reusing what it has seen:
//   frame state  a set of NFA states of one rule (epsilon-closed): the lazy DFA of that rule.
//                transPages[d >> 6][(d & 63) * 256 + b] is the next frame state on byte b.
//   frame        a frame state with the frame below it (its return point): a stack, shared
//                between configurations as a persistent linked list.
//   config       a sorted set of frames: every stack the input read so far may be on (the
//                grammar may be ambiguous). configNext(c, b) is memoised too.
// A rule call pushes a frame (the callee's start, over the caller's return state); a frame whose
// state contains its rule's end may pop. A call whose return state is only the caller's end is a
// tail call and pushes nothing, so right recursion (`list ::= item list?`) keeps the stack flat.
//
// Every kept NFA state can still reach its rule's end (minimum lengths are computed with calls),
// so a live configuration can always complete: the mask never leads into a dead end.
// Left recursion would push forever without reading a byte; it is refused when the PDA is built.
//
// Budgets: frame states, frames and configurations are capped per constraint (BudgetError);
// everything is kept until the constraint is evicted from the cache (index.ts bounds that by size).
import { BudgetError, type Nfa } from './nfa.js';

export const DEAD = -1;
const UNKNOWN = -2;
const INF = 0x3fffffff;
const PAGE_BYTES = 64 * 256 * 4;

export interface PdaLimits {
  maxFrameStates: number;
  maxFrames: number;
  maxConfigs: number;
}
export const DEFAULT_PDA_LIMITS: PdaLimits = { maxFrameStates: 40_000, maxFrames: 400_000, maxConfigs: 100_000 };

export class GrammarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GrammarError';
  }
}

export class Pda {
  // --- frame states (the per-rule lazy DFA) ---
  /**
   * transPages[d >> 6][(d & 63) * 256 + b]: next frame state, DEAD, or UNKNOWN. In pages of 64
   * states, so that growing never copies (one array would be 64 MB to copy at 65,536 states).
   */
  readonly transPages: Int32Array[] = [];
  /** 1 when the frame state contains its rule's end (the frame may pop, or the root may finish). */
  readonly accepting: number[] = [];
  /** Fewest bytes from the frame state to its rule's end. */
  readonly dist: number[] = [];
  /** Frame states with a call or an end: the only places where the stack matters. */
  readonly exits: number[] = [];
  private readonly members: Int32Array[] = [];
  /** Per frame state: [calleeStart, returnState, ...] pairs, computed on first use. */
  private readonly callsOf: (Int32Array | null)[] = [];
  private readonly stateIds = new Map<string, number>();

  // --- frames (stacks) ---
  readonly frameState: number[] = [];
  readonly frameParent: number[] = [];
  /** Fewest bytes to empty the stack from this frame. */
  readonly frameDist: number[] = [];
  private readonly frameIds = new Map<number, number>();

  // --- configurations ---
  private readonly configFrames: Int32Array[] = [];
  private readonly configTrans: (Int32Array | null)[] = [];
  private readonly configExpanded: (Int32Array | null)[] = [];
  private readonly configIds = new Map<string, number>();

  readonly start: number;
  /** Fewest bytes from each NFA state to its rule's end. */
  readonly nfaDist: Int32Array;
  private readonly ruleEndOf: Int32Array;
  private readonly ruleMinLen: Int32Array;
  private readonly ruleStartState: Int32Array;
  private readonly mark: Int32Array;
  private stamp = 0;
  private readonly headClosure = new Map<number, Set<number>>();

  constructor(
    readonly nfa: Nfa,
    readonly limits: PdaLimits = DEFAULT_PDA_LIMITS,
  ) {
    const rules = nfa.ruleStart.length;
    this.mark = new Int32Array(nfa.size);
    this.ruleEndOf = new Int32Array(nfa.size).fill(-1);
    for (let r = 0; r < rules; r++) this.ruleEndOf[nfa.ruleEnd[r]] = r;
    [this.nfaDist, this.ruleMinLen] = distancesToEnd(nfa);
    if (this.ruleMinLen[0] >= INF) throw new GrammarError('the constraint matches nothing');
    checkLeftRecursion(nfa, this.ruleMinLen);
    this.ruleStartState = new Int32Array(rules).fill(UNKNOWN);
    const root = this.ruleStart(0);
    this.start = this.internConfig([this.internFrame(root, -1)]);
  }

  get stats(): { frameStates: number; frames: number; configs: number } {
    return { frameStates: this.members.length, frames: this.frameState.length, configs: this.configFrames.length };
  }

  /** Rough bytes held (the cache in index.ts is bounded by this). */
  get approxBytes(): number {
    return (
      this.transPages.length * PAGE_BYTES +
      this.frameState.length * 40 +
      this.configFrames.length * 1200 +
      this.nfa.approxBytes
    );
  }

  // --- frame states ---

  /** The NFA states of frame state d (do not modify). */
  membersOf(d: number): Int32Array {
    return this.members[d];
  }

  /** The frame state of NFA state q with what it reaches without reading (DEAD if it cannot finish). */
  stateOf(q: number): number {
    return this.internState(this.closure([q]));
  }

  private ruleStart(rule: number): number {
    let s = this.ruleStartState[rule];
    if (s === UNKNOWN) s = this.ruleStartState[rule] = this.internState(this.closure([this.nfa.ruleStart[rule]]));
    return s;
  }

  /** The frame state after byte b; DEAD if b cannot come next inside this rule. */
  next(d: number, b: number): number {
    const t = this.transPages[d >> 6][((d & 63) << 8) | b];
    return t !== UNKNOWN ? t : this.compute(d, b);
  }

  compute(d: number, b: number): number {
    const edges = this.nfa.edges;
    const targets: number[] = [];
    for (const q of this.members[d]) for (const e of edges[q]) if (e.set[b]) targets.push(e.to);
    const t = targets.length === 0 ? DEAD : this.internState(this.closure(targets));
    this.transPages[d >> 6][((d & 63) << 8) | b] = t;
    return t;
  }

  /** [calleeStart, returnState] pairs of the calls a frame state may make. */
  calls(d: number): Int32Array {
    let c = this.callsOf[d];
    if (c) return c;
    const byRule = new Map<number, number[]>();
    for (const q of this.members[d])
      for (const e of this.nfa.calls[q]) {
        if (this.ruleMinLen[e.rule] >= INF || this.nfaDist[e.to] >= INF) continue;
        let list = byRule.get(e.rule);
        if (!list) byRule.set(e.rule, (list = []));
        list.push(e.to);
      }
    const out: number[] = [];
    for (const [rule, returns] of byRule) out.push(this.ruleStart(rule), this.internState(this.closure(returns)));
    c = Int32Array.from(out);
    this.callsOf[d] = c;
    return c;
  }

  private closure(seeds: number[], raw = false): number[] {
    const nfa = this.nfa;
    const stamp = ++this.stamp;
    const stack = seeds.slice();
    const kept: number[] = [];
    for (const q of stack) this.mark[q] = stamp;
    let heads: number[] | null = null;
    while (stack.length > 0) {
      const q = stack.pop()!;
      if (this.nfaDist[q] >= INF) continue; // can never finish: never enter it
      if (nfa.edges[q].length > 0 || nfa.calls[q].length > 0 || this.ruleEndOf[q] >= 0) kept.push(q);
      if (nfa.absorbing.size > 0 && nfa.absorbing.has(q)) (heads ??= []).push(q);
      for (const r of nfa.eps[q]) {
        if (this.mark[r] !== stamp) {
          this.mark[r] = stamp;
          stack.push(r);
        }
      }
    }
    if (heads && !raw) return this.absorb(kept, heads).sort((a, b) => a - b);
    return kept.sort((a, b) => a - b);
  }

  /** The set less the states an absorbing head covers (those of its range not in its own closure). */
  private absorb(kept: number[], heads: number[]): number[] {
    let out = kept;
    const done = new Set<string>();
    for (const h of heads) {
      const [lo, hi] = this.nfa.absorbing.get(h)!;
      if (done.has(`${lo},${hi}`)) continue;
      done.add(`${lo},${hi}`);
      let own = this.headClosure.get(h);
      if (!own) this.headClosure.set(h, (own = new Set(this.closure([h], true))));
      const keep = own;
      out = out.filter((q) => q < lo || q >= hi || keep.has(q));
    }
    return out;
  }

  private internState(set: number[]): number {
    if (set.length === 0) return DEAD;
    const key = set.join(',');
    let id = this.stateIds.get(key);
    if (id !== undefined) return id;
    id = this.members.length;
    if (id >= this.limits.maxFrameStates)
      throw new BudgetError(
        `the constraint's automaton grew past ${this.limits.maxFrameStates} states (the limit per request)`,
      );
    this.members.push(Int32Array.from(set));
    this.callsOf.push(null);
    this.stateIds.set(key, id);
    let d = INF;
    let accepting = 0;
    let exit = 0;
    for (const q of set) {
      d = Math.min(d, this.nfaDist[q]);
      if (this.ruleEndOf[q] >= 0) accepting = exit = 1;
      if (this.nfa.calls[q].length > 0) exit = 1;
    }
    this.accepting.push(accepting);
    this.exits.push(exit);
    this.dist.push(d);
    if ((id & 63) === 0) this.transPages.push(new Int32Array(64 * 256).fill(UNKNOWN));
    return id;
  }

  /** True when the frame state is only its rule's end: returning to it is returning further. */
  private isOnlyEnd(d: number): boolean {
    const m = this.members[d];
    return m.length === 1 && this.ruleEndOf[m[0]] >= 0 && this.nfa.edges[m[0]].length === 0;
  }

  // --- frames ---

  internFrame(d: number, parent: number): number {
    const key = d * 0x4000000 + parent + 1;
    let id = this.frameIds.get(key);
    if (id !== undefined) return id;
    id = this.frameState.length;
    if (id >= this.limits.maxFrames)
      throw new BudgetError(`the constraint's stack grew past ${this.limits.maxFrames} frames (the limit per request)`);
    this.frameState.push(d);
    this.frameParent.push(parent);
    this.frameDist.push(this.dist[d] + (parent >= 0 ? this.frameDist[parent] : 0));
    this.frameIds.set(key, id);
    return id;
  }

  // --- configurations ---

  internConfig(frames: number[]): number {
    if (frames.length === 0) return DEAD;
    if (frames.length > 1) {
      frames.sort((a, b) => a - b);
      let w = 1;
      for (let i = 1; i < frames.length; i++) if (frames[i] !== frames[w - 1]) frames[w++] = frames[i];
      frames.length = w;
    }
    const key = frames.join(',');
    let id = this.configIds.get(key);
    if (id !== undefined) return id;
    id = this.configFrames.length;
    if (id >= this.limits.maxConfigs)
      throw new BudgetError(
        `the constraint's automaton grew past ${this.limits.maxConfigs} configurations (the limit per request)`,
      );
    this.configFrames.push(Int32Array.from(frames));
    this.configTrans.push(null);
    this.configExpanded.push(null);
    this.configIds.set(key, id);
    return id;
  }

  /** The frames of config c closed under calls (push) and returns (pop): where the next byte may go. */
  expanded(c: number): Int32Array {
    let e = this.configExpanded[c];
    if (e) return e;
    e = Int32Array.from(this.expandFrames(this.configFrames[c]));
    this.configExpanded[c] = e;
    return e;
  }

  /** Closes a list of frames under push and pop. */
  expandFrames(frames: ArrayLike<number>): number[] {
    const seen = new Set<number>();
    const work: number[] = [];
    for (let i = 0; i < frames.length; i++) {
      seen.add(frames[i]);
      work.push(frames[i]);
    }
    while (work.length > 0) {
      const f = work.pop()!;
      const d = this.frameState[f];
      if (this.exits[d] === 0) continue;
      const parent = this.frameParent[f];
      const calls = this.calls(d);
      for (let k = 0; k < calls.length; k += 2) {
        const ret = calls[k + 1];
        const below = this.isOnlyEnd(ret) ? parent : this.internFrame(ret, parent);
        const g = this.internFrame(calls[k], below);
        if (!seen.has(g)) {
          seen.add(g);
          work.push(g);
        }
      }
      if (this.accepting[d] === 1 && parent >= 0 && !seen.has(parent)) {
        seen.add(parent);
        work.push(parent);
      }
      if (seen.size > 20_000)
        throw new BudgetError('the constraint is too ambiguous: more than 20000 parse stacks at one point');
    }
    return [...seen];
  }

  /** The configuration after byte b, or DEAD. */
  configNext(c: number, b: number): number {
    let row = this.configTrans[c];
    if (row) {
      const t = row[b];
      if (t !== UNKNOWN) return t;
    } else {
      row = this.configTrans[c] = new Int32Array(256).fill(UNKNOWN);
    }
    const out: number[] = [];
    const exp = this.expanded(c);
    for (let i = 0; i < exp.length; i++) {
      const f = exp[i];
      const t = this.next(this.frameState[f], b);
      if (t !== DEAD) out.push(this.internFrame(t, this.frameParent[f]));
    }
    const t = this.internConfig(out);
    row[b] = t;
    return t;
  }

  /** Whether the whole constraint may end here. */
  isAccepting(c: number): boolean {
    const exp = this.expanded(c);
    for (let i = 0; i < exp.length; i++) {
      const f = exp[i];
      if (this.frameParent[f] === -1 && this.accepting[this.frameState[f]] === 1) return true;
    }
    return false;
  }

  /** Fewest bytes from config c to the end of the constraint. */
  configDist(c: number): number {
    const frames = this.configFrames[c];
    let d = INF;
    for (let i = 0; i < frames.length; i++) d = Math.min(d, this.frameDist[frames[i]]);
    return d;
  }

  /** The frames of a configuration (for the mask computation). */
  framesOf(c: number): Int32Array {
    return this.configFrames[c];
  }

  /** The frames reached from frame state `d` (over `parent`) by a call or a return, expanded. */
  exitFrames(d: number, parent: number): number[] {
    const direct: number[] = [];
    const calls = this.calls(d);
    for (let k = 0; k < calls.length; k += 2) {
      const ret = calls[k + 1];
      direct.push(this.internFrame(calls[k], this.isOnlyEnd(ret) ? parent : this.internFrame(ret, parent)));
    }
    if (this.accepting[d] === 1 && parent >= 0) direct.push(parent);
    return direct.length === 0 ? direct : this.expandFrames(direct);
  }
}

/**
 * Fewest bytes from each NFA state to the end of its rule, and each rule's shortest length; a call
 * costs its callee's shortest length. Rules reference each other, so this repeats until stable.
 */
function distancesToEnd(nfa: Nfa): [Int32Array, Int32Array] {
  const n = nfa.size;
  const rules = nfa.ruleStart.length;
  const minLen = new Int32Array(rules).fill(INF);
  const dist = new Int32Array(n).fill(INF);
  // Reverse edges once: (from, weight kind) lists.
  const revStart = new Int32Array(n + 1);
  for (let q = 0; q < n; q++) {
    for (const r of nfa.eps[q]) revStart[r + 1]++;
    for (const e of nfa.edges[q]) revStart[e.to + 1]++;
    for (const c of nfa.calls[q]) revStart[c.to + 1]++;
  }
  for (let i = 0; i < n; i++) revStart[i + 1] += revStart[i];
  const revFrom = new Int32Array(revStart[n]);
  const revRule = new Int32Array(revStart[n]); // -1 eps, -2 byte, else the called rule
  const fill = revStart.slice(0, n);
  for (let q = 0; q < n; q++) {
    for (const r of nfa.eps[q]) {
      revFrom[fill[r]] = q;
      revRule[fill[r]++] = -1;
    }
    for (const e of nfa.edges[q]) {
      revFrom[fill[e.to]] = q;
      revRule[fill[e.to]++] = -2;
    }
    for (const c of nfa.calls[q]) {
      revFrom[fill[c.to]] = q;
      revRule[fill[c.to]++] = c.rule;
    }
  }
  for (let round = 0; round < 1000; round++) {
    dist.fill(INF);
    // Dijkstra from every rule end at once (weights: eps 0, byte 1, call minLen) with a bucket queue.
    const buckets: number[][] = [[]];
    for (let r = 0; r < rules; r++) {
      dist[nfa.ruleEnd[r]] = 0;
      buckets[0].push(nfa.ruleEnd[r]);
    }
    for (let w = 0; w < buckets.length; w++) {
      const list = buckets[w];
      if (!list) continue;
      for (let i = 0; i < list.length; i++) {
        const q = list[i];
        if (dist[q] !== w) continue;
        for (let k = revStart[q]; k < revStart[q + 1]; k++) {
          const p = revFrom[k];
          const kind = revRule[k];
          const cost = kind === -1 ? 0 : kind === -2 ? 1 : minLen[kind];
          if (cost >= INF) continue;
          const nd = w + cost;
          if (nd < dist[p]) {
            dist[p] = nd;
            if (nd > 1_000_000) continue; // an absurd minimum length: treat as unreachable
            (buckets[nd] ??= []).push(p);
          }
        }
      }
    }
    let changed = false;
    for (let r = 0; r < rules; r++) {
      const d = dist[nfa.ruleStart[r]];
      if (d !== minLen[r]) {
        minLen[r] = d;
        changed = true;
      }
    }
    if (!changed) break;
  }
  return [dist, minLen];
}

/** Refuses rules that can call themselves before reading a byte (they would push forever). */
function checkLeftRecursion(nfa: Nfa, minLen: Int32Array): void {
  const rules = nfa.ruleStart.length;
  const leftCalls: Set<number>[] = [];
  const seen = new Uint8Array(nfa.size);
  for (let r = 0; r < rules; r++) {
    const out = new Set<number>();
    const stack = [nfa.ruleStart[r]];
    const visited: number[] = [];
    while (stack.length > 0) {
      const q = stack.pop()!;
      if (seen[q]) continue;
      seen[q] = 1;
      visited.push(q);
      for (const e of nfa.eps[q]) stack.push(e);
      for (const c of nfa.calls[q]) {
        out.add(c.rule);
        if (minLen[c.rule] === 0) stack.push(c.to);
      }
    }
    for (const q of visited) seen[q] = 0;
    leftCalls.push(out);
  }
  const state = new Uint8Array(rules); // 0 new, 1 on the path, 2 done
  const visit = (r: number, path: number[]): void => {
    state[r] = 1;
    path.push(r);
    for (const s of leftCalls[r]) {
      if (state[s] === 1) {
        const cycle = path.slice(path.indexOf(s)).map((i) => nfa.ruleName[i]);
        throw new GrammarError(
          `left recursion: ${[...cycle, nfa.ruleName[s]].join(' -> ')} can repeat without reading anything; rewrite it as repetition (x ::= y ("," y)*)`,
        );
      }
      if (state[s] === 0) visit(s, path);
    }
    path.pop();
    state[r] = 2;
  };
  for (let r = 0; r < rules; r++) if (state[r] === 0) visit(r, []);
}
