// Which tokens may come next under a constraint: the automaton walked over the token trie.
//
// A walk goes down the trie from a configuration: a node whose byte has no transition prunes its
// whole subtree, so the cost is the number of trie nodes that stay on a valid path (all of them
// inside a JSON string, a few hundred between values).
//
// The split that keeps recursion cheap: most tokens never leave the top frame (the rule being
// read: a string, a number, a run of object syntax), and which of them are allowed depends only
// on that frame's state, not on the stack below it. So each frame state memoises its "local"
// mask (tokens read inside the rule without a call or a return) and the trie nodes where the
// rule may call or return ("exits"). A configuration's mask is the union of its frames' local
// masks plus, for each exit, a walk of that node's subtree with the full stack (small subtrees:
// tokens such as `"}` or `, {"`). Masks of whole configurations are memoised too.
//
// Token budget: near max_tokens a free-running value would be cut and fail to parse. Each
// configuration knows the fewest bytes to a complete value (every byte is a token of its own), so
// when few tokens are left the walk keeps only tokens after which the value can still be closed,
// keeping one token for EOS; generation then closes the value in time.
import { DEAD, type Pda } from './pda.js';
import { CONT_RANGES, PLAIN_RANGES, slicesOf } from './slices.js';
import { TokenTrie, trieOf, type TokenVocabulary } from './vocabulary.js';

interface LocalMask {
  bits: Uint32Array;
  /** (trie node, frame state) pairs where the rule may call or return. */
  exits: Int32Array;
  /** The trie the exits' nodes are in. */
  trie: TokenTrie;
  /** More exits, in the whole trie. */
  fullExits: Int32Array;
}

const UNSET = -2;
/** Plain-text characters lead to different frame states. */
const MIXED = -3;
/** At most this many ASCII characters may go their own way for exceptionsOf. */
const MAX_EXCEPTIONS = 24;

/** Masks memoised per guide, each vocab/8 bytes (19 KB for Qwen): ~20 MB at most per guide. */
const MAX_MEMO = 512;
/** Below this many tokens left beyond the fewest needed, masks are filtered by the budget. */
const BUDGET_SLACK = 256;

export class TokenGuide {
  readonly trie: TokenTrie;
  readonly words: number;
  private readonly local = new Map<number, LocalMask>();
  private readonly memo = new Map<number, Uint32Array>();
  private readonly uniform = new Map<number, number>();
  /** How the local masks were made: plain tokens sliced, sliced but a few first bytes, walked. */
  readonly localStats = { sliced: 0, excepted: 0, walked: 0 };
  private readonly stateAt: Int32Array;
  private readonly scratch: Uint32Array;
  private readonly eosBits: Uint32Array;

  /**
   * useSlices false walks every token (the reference the sliced masks are tested against).
   */
  constructor(
    readonly pda: Pda,
    readonly vocab: TokenVocabulary,
    readonly useSlices = true,
  ) {
    this.trie = trieOf(vocab);
    this.words = (vocab.size + 31) >>> 5;
    this.stateAt = new Int32Array(this.trie.maxDepth + 1);
    this.scratch = new Uint32Array(this.words);
    if (vocab.eosIds.length === 0) throw new Error('constrained decoding needs at least one EOS token id');
    this.eosBits = new Uint32Array(this.words);
    for (const e of vocab.eosIds) this.eosBits[e >>> 5] |= 1 << (e & 31);
  }

  get start(): number {
    return this.pda.start;
  }

  isAccepting(config: number): boolean {
    return this.pda.isAccepting(config);
  }

  /** Rough bytes held by the memoised masks. */
  get approxBytes(): number {
    return (this.local.size + this.memo.size) * this.words * 4;
  }

  /**
   * The allowed tokens in `config` when `tokensLeft` tokens may still be generated (this one
   * included). The returned bitset is shared: read it before the next call.
   */
  allowed(config: number, tokensLeft = Infinity): Uint32Array {
    const here = this.pda.configDist(config);
    if (tokensLeft - 2 < here + BUDGET_SLACK) {
      // One token stays for EOS. Every token can bring the value one byte closer (single-byte
      // tokens), so "one byte closer" is always possible; when even that does not fit, it is asked.
      const budget = Math.max(tokensLeft - 2, here - 1);
      this.scratch.fill(0);
      if (!this.budgetedSlices(config, budget, this.scratch)) this.walk(config, -1, this.scratch, budget);
      if (this.pda.isAccepting(config)) or(this.scratch, this.eosBits);
      return this.scratch;
    }
    let m = this.memo.get(config);
    if (!m) {
      if (this.memo.size >= MAX_MEMO) this.memo.clear();
      m = this.compute(config);
      this.memo.set(config, m);
    }
    return m;
  }

  /**
   * The budgeted mask of a configuration that is one frame in a sliced state: a plain token of n
   * characters ends in the n-th state of the uniform chain whatever its bytes, so the budget is
   * checked once per n; the other tokens are walked. False when the configuration is not such.
   */
  private budgetedSlices(config: number, budget: number, bits: Uint32Array): boolean {
    if (!this.useSlices) return false;
    const pda = this.pda;
    const exp = pda.expanded(config);
    if (exp.length !== 1) return false;
    const d = pda.frameState[exp[0]];
    const parent = pda.frameParent[exp[0]];
    const slices = slicesOf(this.vocab);
    const below = parent >= 0 ? pda.frameDist[parent] : 0;
    const fits: number[] = [];
    const limit = this.plainLimit(d, slices.maxChars, (n, dist) => {
      if (dist + below <= budget) fits.push(n);
    });
    if (limit < 0) return false;
    const top = Math.min(limit, slices.maxChars);
    if (fits.length === top) or(bits, slices.upTo(top));
    else for (const n of fits) slices.addExactly(n, bits);
    this.walk(config, -1, bits, budget, slices.others);
    return true;
  }

  private compute(config: number): Uint32Array {
    const pda = this.pda;
    const exp = pda.expanded(config);
    if (exp.length === 1 && !pda.isAccepting(config)) {
      // One frame that never leaves its rule (most configurations): its local mask as it is,
      // shared, without a new 19 KB array for the garbage collector.
      const lm = this.localMask(pda.frameState[exp[0]]);
      if (lm.exits.length === 0 && lm.fullExits.length === 0) return lm.bits;
    }
    const bits = new Uint32Array(this.words);
    for (let i = 0; i < exp.length; i++) {
      const f = exp[i];
      const d = pda.frameState[f];
      const parent = pda.frameParent[f];
      const lm = this.localMask(d);
      or(bits, lm.bits);
      for (let k = 0; k < lm.exits.length; k += 2) {
        const frames = pda.exitFrames(lm.exits[k + 1], parent);
        if (frames.length === 0) continue;
        this.walk(pda.internConfig(frames), lm.exits[k], bits, Infinity, lm.trie);
      }
      for (let k = 0; k < lm.fullExits.length; k += 2) {
        const frames = pda.exitFrames(lm.fullExits[k + 1], parent);
        if (frames.length === 0) continue;
        this.walk(pda.internConfig(frames), lm.fullExits[k], bits, Infinity, this.trie);
      }
    }
    if (pda.isAccepting(config)) or(bits, this.eosBits);
    return bits;
  }

  /**
   * The frame state every plain-text character leads to from d (through states that neither call
   * nor return), DEAD when every one of them dies, MIXED when they differ.
   */
  private uniformNext(d: number): number {
    let u = this.uniform.get(d);
    if (u !== undefined) return u;
    u = this.computeUniformNext(d, true);
    this.uniform.set(d, u);
    return u;
  }

  private computeUniformNext(d: number, ascii: boolean): number {
    const pda = this.pda;
    // Product of the frame DFA from d with the UTF-8 automaton: (utf8 state, frame state) pairs.
    const seen = new Set<number>();
    const work: number[] = [0, d];
    let target = UNSET;
    while (work.length > 0) {
      const s = work.pop()!;
      const u = work.pop()!;
      const step = (lo: number, hi: number, nu: number): boolean => {
        for (let b = lo; b <= hi; b++) {
          const t = pda.next(s, b);
          const end = t === DEAD ? DEAD : nu === 0 ? t : UNSET;
          if (end !== UNSET) {
            if (target === UNSET) target = end;
            else if (target !== end) return false;
            continue;
          }
          if (pda.exits[t] === 1) return false;
          const key = t * 8 + nu;
          if (!seen.has(key)) {
            // A string's UTF-8 needs a handful of these; many more means characters are told apart.
            if (seen.size >= 64) return false;
            seen.add(key);
            work.push(nu, t);
          }
        }
        return true;
      };
      if (u === 0) {
        for (const [lo, hi, nu] of PLAIN_RANGES) if ((ascii || nu !== 0) && !step(lo, hi, nu)) return MIXED;
      } else {
        for (const [su, lo, hi, nu] of CONT_RANGES) if (su === u && !step(lo, hi, nu)) return MIXED;
      }
    }
    return target;
  }

  /**
   * How many plain-text characters may be read from d, each one like any other: every plain token
   * of at most that many characters is allowed, every longer one is not. -1 when the characters
   * are not alike (the tokens must be walked). onStep, when given, gets the fewest bytes to the
   * rule's end after each character up to the limit (at most maxChars).
   */
  private plainLimit(d: number, maxChars: number, onStep?: (n: number, dist: number) => void): number {
    const pda = this.pda;
    if (pda.exits[d] === 1) return -1;
    const seen = new Set<number>([d]);
    let s = d;
    let k = 0;
    while (k < maxChars) {
      let u: number;
      let q = this.countedMember(s);
      if (q >= 0) {
        // A counted string's position: follow its characters in the NFA, without building the
        // frame states in between (a position's closure reads no other plain text: Nfa.charChain).
        const chain = pda.nfa.charChain;
        do {
          q = chain.get(q)!;
          k++;
          onStep?.(k, pda.nfaDist[q]);
        } while (k < maxChars && chain.has(q));
        if (k >= maxChars) return Infinity;
        u = pda.stateOf(q);
        if (u === DEAD) return -1;
      } else {
        u = this.uniformNext(s);
        if (u === MIXED) return -1;
        if (u === DEAD) return k;
        k++;
        onStep?.(k, pda.dist[u]);
      }
      if (pda.exits[u] === 1) return -1;
      // A loop: as many characters as wanted (with onStep, go round it to maxChars).
      if (seen.has(u) && !onStep) return Infinity;
      seen.add(u);
      s = u;
    }
    return Infinity;
  }

  /**
   * The member of frame state d where a counted string's next character starts (Nfa.charChain),
   * when no other member reads a plain-text first byte; else -1.
   */
  private countedMember(d: number): number {
    const nfa = this.pda.nfa;
    if (nfa.charChain.size === 0) return -1;
    let found = -1;
    for (const q of this.pda.membersOf(d)) {
      if (nfa.charChain.has(q)) {
        if (found >= 0) return -1;
        found = q;
      } else for (const e of nfa.edges[q]) if (readsPlain(e.set)) return -1;
    }
    return found;
  }

  /**
   * When plain characters from d all go alike but for a few ASCII ones (the first letters of the
   * names a key must not be, of a pattern's literal): those bytes and where the others go.
   */
  private exceptionsOf(d: number, maxChars: number): { bytes: number[]; limit: number } | null {
    const pda = this.pda;
    if (pda.exits[d] === 1) return null;
    const multi = this.computeUniformNext(d, false);
    if (multi === MIXED || multi === DEAD || pda.exits[multi] === 1) return null;
    const bytes: number[] = [];
    for (const [lo, hi, nu] of PLAIN_RANGES) {
      if (nu !== 0) continue;
      for (let b = lo; b <= hi; b++) {
        if (pda.next(d, b) === multi) continue;
        if (bytes.length === MAX_EXCEPTIONS) return null;
        bytes.push(b);
      }
    }
    // The other characters lead to `multi`, from where the rest of a token must be alike too.
    const rest = this.plainLimit(multi, maxChars);
    if (rest < 0) return null;
    return { bytes, limit: rest + 1 };
  }

  /** Tokens read from frame state d without a call or a return, and where those may happen. */
  private localMask(d: number): LocalMask {
    let lm = this.local.get(d);
    if (lm) return lm;
    if (this.local.size >= MAX_MEMO) this.local.clear();
    const bits = new Uint32Array(this.words);
    const exits: number[] = [];
    const fullExits: number[] = [];
    let trie = this.trie;
    let done = false;
    if (this.useSlices) {
      const slices = slicesOf(this.vocab);
      const limit = this.plainLimit(d, slices.maxChars);
      if (limit >= 0) {
        bits.set(slices.upTo(limit));
        trie = slices.others;
        this.localStats.sliced++;
      } else {
        const exc = this.exceptionsOf(d, slices.maxChars);
        if (exc) {
          // Plain tokens but those starting with an exception byte, then the others trie but
          // those same first bytes, then every token starting with an exception byte.
          bits.set(slices.upTo(exc.limit));
          const skip = new Uint8Array(256);
          for (const c of exc.bytes) {
            skip[c] = 1;
            const first = slices.startingWith(c);
            for (let w = 0; w < bits.length; w++) bits[w] &= ~first[w];
          }
          trie = slices.others;
          this.walkLocal(d, trie, -1, skip, bits, exits);
          for (const c of exc.bytes) {
            const root = this.trie.rootChild[c];
            if (root >= 0) this.walkLocal(d, this.trie, root, null, bits, fullExits);
          }
          done = true;
          this.localStats.excepted++;
        }
      }
    }
    if (!done) this.walkLocal(d, trie, -1, null, bits, exits);
    if (trie === this.trie) this.localStats.walked++;
    lm = { bits, exits: Int32Array.from(exits), trie, fullExits: Int32Array.from(fullExits) };
    this.local.set(d, lm);
    return lm;
  }

  /**
   * Walks `trie` from frame state d (all of it, or the subtree of node `root` with root itself),
   * setting the bits of tokens read without a call or a return and listing where those may
   * happen; first bytes marked in `skip` are left out.
   */
  private walkLocal(
    d: number,
    trie: TokenTrie,
    root: number,
    skip: Uint8Array | null,
    bits: Uint32Array,
    exits: number[],
  ): void {
    const { byte, depth, subtreeEnd, firstToken, nextToken, nodeCount } = trie;
    const pda = this.pda;
    const exitFlag = pda.exits;
    const stateAt = this.stateAt;
    stateAt[0] = d;
    const pages = pda.transPages;
    let i = root < 0 ? 0 : root;
    const end = root < 0 ? nodeCount : subtreeEnd[root];
    while (i < end) {
      if (skip !== null && depth[i] === 1 && skip[byte[i]] === 1) {
        i = subtreeEnd[i];
        continue;
      }
      const from = stateAt[depth[i] - 1];
      let s = pages[from >> 6][((from & 63) << 8) | byte[i]];
      if (s < DEAD) s = pda.compute(from, byte[i]);
      if (s === DEAD) {
        i = subtreeEnd[i];
        continue;
      }
      stateAt[depth[i]] = s;
      for (let t = firstToken[i]; t >= 0; t = nextToken[t]) bits[t >>> 5] |= 1 << (t & 31);
      if (exitFlag[s] === 1 && subtreeEnd[i] > i + 1) exits.push(i, s);
      i++;
    }
  }

  /**
   * Sets the bits of tokens allowed from `config` at trie node `root` (-1: the whole trie) whose
   * end configuration is within `budget` bytes of completion.
   */
  private walk(config: number, root: number, bits: Uint32Array, budget: number, trie = this.trie): void {
    const { byte, depth, subtreeEnd, firstToken, nextToken, nodeCount } = trie;
    const pda = this.pda;
    const stateAt = this.stateAt;
    const base = root < 0 ? 0 : depth[root];
    stateAt[base] = config;
    const end = root < 0 ? nodeCount : subtreeEnd[root];
    let i = root + 1;
    while (i < end) {
      const s = pda.configNext(stateAt[depth[i] - 1], byte[i]);
      if (s === DEAD) {
        i = subtreeEnd[i];
        continue;
      }
      stateAt[depth[i]] = s;
      let t = firstToken[i];
      if (t >= 0 && (budget === Infinity || pda.configDist(s) <= budget))
        for (; t >= 0; t = nextToken[t]) bits[t >>> 5] |= 1 << (t & 31);
      i++;
    }
  }

  /** The configuration after `token`, DEAD if the token is not allowed. EOS is not a byte: callers handle it. */
  advance(config: number, token: number): number {
    const { tokenBytes, tokenStart } = this.trie;
    const end = tokenStart[token + 1];
    if (token < 0 || token >= this.vocab.size || tokenStart[token] === end) return DEAD;
    let s = config;
    for (let k = tokenStart[token]; k < end && s !== DEAD; k++) s = this.pda.configNext(s, tokenBytes[k]);
    return s;
  }

  isEos(token: number): boolean {
    return this.vocab.eosIds.includes(token);
  }
}

const readsPlainMemo = new WeakMap<Uint8Array, boolean>();

/** Whether a byte set holds a byte that may start a plain-text character. */
function readsPlain(set: Uint8Array): boolean {
  let r = readsPlainMemo.get(set);
  if (r === undefined) {
    r = PLAIN_RANGES.some(([lo, hi]) => set.subarray(lo, hi + 1).includes(1));
    readsPlainMemo.set(set, r);
  }
  return r;
}

function or(into: Uint32Array, from: Uint32Array): void {
  for (let w = 0; w < into.length; w++) into[w] |= from[w];
}
