// Which tokens may come next under a constraint: the DFA walked over the token trie.
//
// allowed(state) walks the trie from the DFA state: a node whose byte has no transition prunes
// its whole subtree, so the cost is the number of trie nodes that stay on a valid path (all of
// them inside a JSON string, a few hundred between values). The result, a bitset over the token
// ids, is memoised per DFA state: generation keeps returning to the same states (inside a string,
// after a comma), so most steps only copy a memoised mask. EOS is allowed where the DFA accepts.
//
// Token budget: near max_tokens a free-running value (a long string, a deep object) would be cut
// and fail to parse. dist[s] is the fewest bytes from s to a complete value, and every byte is a
// token of its own, so when a token would leave more bytes to write than tokens remain (keeping
// one for EOS), it is dropped; generation then closes the value in time.
import { DEAD, type LazyDfa } from './nfa.js';
import { trieOf, type TokenTrie, type TokenVocabulary } from './vocabulary.js';

interface Mask {
  bits: Uint32Array;
  /** Largest dist of the state after any allowed token (decides whether the budget bites). */
  maxEndDist: number;
  /** Allowed tokens that leave more to write than `state` does, as (token, dist after it) pairs. */
  farther: Int32Array;
}

/** Masks kept per guide; beyond this the memo starts over (a mask is vocab/8 bytes: 19 KB for Qwen;
 *  with the 16 compiled specs kept in index.ts, at most ~80 MB of masks). */
const MAX_MEMO_STATES = 256;

export class TokenGuide {
  readonly trie: TokenTrie;
  readonly words: number;
  private readonly memo = new Map<number, Mask>();
  private readonly stateAt: Int32Array;
  private readonly scratch: Uint32Array;

  constructor(
    readonly dfa: LazyDfa,
    readonly vocab: TokenVocabulary,
  ) {
    this.trie = trieOf(vocab);
    this.words = (vocab.size + 31) >>> 5;
    this.stateAt = new Int32Array(this.trie.maxDepth + 1);
    this.scratch = new Uint32Array(this.words);
    if (vocab.eosIds.length === 0) throw new Error('constrained decoding needs at least one EOS token id');
  }

  get start(): number {
    return this.dfa.start;
  }

  isAccepting(state: number): boolean {
    return this.dfa.accepting[state] === 1;
  }

  /**
   * The allowed tokens in `state` when `tokensLeft` tokens may still be generated (this one
   * included). The returned bitset is shared: read it before the next call.
   */
  allowed(state: number, tokensLeft = Infinity): Uint32Array {
    let m = this.memo.get(state);
    if (!m) {
      if (this.memo.size >= MAX_MEMO_STATES) this.memo.clear();
      const bits = new Uint32Array(this.words);
      const farther: number[] = [];
      const maxEndDist = this.walk(state, Infinity, bits, farther);
      m = { bits, farther: Int32Array.from(farther), maxEndDist };
      this.memo.set(state, m);
    }
    // One token stays for EOS, so that a value finished in time ends with "stop", not "length".
    // Every token can bring the value one byte closer (single-byte tokens), so "one byte closer"
    // is always possible: when even that does not fit the budget, it is what is asked.
    const here = this.dfa.dist[state]!;
    const budget = Math.max(tokensLeft - 2, here - 1);
    if (m.maxEndDist <= budget) return m.bits;
    this.scratch.set(m.bits);
    if (budget >= here) {
      // Every token that does not move away from completion fits: drop those that go too far.
      for (let k = 0; k < m.farther.length; k += 2) {
        const t = m.farther[k]!;
        if (m.farther[k + 1]! > budget) this.scratch[t >>> 5]! &= ~(1 << (t & 31));
      }
      return this.scratch;
    }
    this.scratch.fill(0);
    this.walk(state, budget, this.scratch, null);
    return this.scratch;
  }

  /** Sets the bits of tokens allowed from `state` whose end state is within `budget` bytes of completion. */
  private walk(state: number, budget: number, bits: Uint32Array, farther: number[] | null): number {
    const { byte, depth, subtreeEnd, firstToken, nextToken, nodeCount } = this.trie;
    const dfa = this.dfa;
    const dist = dfa.dist;
    const stateAt = this.stateAt;
    stateAt[0] = state;
    const here = dist[state]!;
    let maxEndDist = 0;
    let trans = dfa.trans;
    let i = 0;
    while (i < nodeCount) {
      const from = stateAt[depth[i]! - 1]!;
      let s = trans[from * 256 + byte[i]!]!;
      if (s < DEAD) {
        s = dfa.compute(from, byte[i]!);
        trans = dfa.trans; // may have grown
      }
      if (s === DEAD) {
        i = subtreeEnd[i]!;
        continue;
      }
      stateAt[depth[i]!] = s;
      let t = firstToken[i]!;
      if (t >= 0) {
        const d = dist[s]!;
        if (d <= budget) {
          if (d > maxEndDist) maxEndDist = d;
          for (; t >= 0; t = nextToken[t]!) {
            bits[t >>> 5]! |= 1 << (t & 31);
            if (d > here && farther) farther.push(t, d);
          }
        }
      }
      i++;
    }
    if (dfa.accepting[state] === 1) for (const e of this.vocab.eosIds) bits[e >>> 5]! |= 1 << (e & 31);
    return maxEndDist;
  }

  /** The state after `token`, DEAD if the token is not allowed in `state`. EOS is not a byte: callers handle it. */
  advance(state: number, token: number): number {
    const { tokenBytes, tokenStart } = this.trie;
    const end = tokenStart[token + 1]!;
    let s = state;
    for (let k = tokenStart[token]!; k < end && s !== DEAD; k++) s = this.dfa.next(s, tokenBytes[k]!);
    return tokenStart[token] === end ? DEAD : s;
  }

  isEos(token: number): boolean {
    return this.vocab.eosIds.includes(token);
  }
}

/** The constraint of one sequence: follows its output tokens, gives the mask for the next one. */
export class ConstraintState {
  private state: number;
  private consumed = 0;
  private ended = false;

  constructor(readonly guide: TokenGuide) {
    this.state = guide.start;
  }

  /** Advances over output tokens not seen yet; throws if one broke the constraint. */
  sync(outputIds: ArrayLike<number>): void {
    for (; this.consumed < outputIds.length; this.consumed++) {
      const t = outputIds[this.consumed]!;
      if (this.ended) continue;
      if (this.guide.isEos(t) && this.guide.isAccepting(this.state)) {
        this.ended = true;
        continue;
      }
      const next = this.guide.advance(this.state, t);
      if (next === DEAD)
        throw new Error(`structured output: token ${t} at output position ${this.consumed} breaks the constraint`);
      this.state = next;
    }
  }

  /** Allowed next tokens as a bitset over the vocabulary (only EOS after the value ended). */
  mask(tokensLeft: number): Uint32Array {
    if (this.ended) {
      const bits = new Uint32Array(this.guide.words);
      for (const e of this.guide.vocab.eosIds) bits[e >>> 5]! |= 1 << (e & 31);
      return bits;
    }
    return this.guide.allowed(this.state, tokensLeft);
  }

  get complete(): boolean {
    return this.ended || this.guide.isAccepting(this.state);
  }
}
