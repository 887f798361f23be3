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
import { TokenTrie, trieOf, type TokenVocabulary } from './vocabulary.js';

/**
 * Tokens that are plain text (printable ASCII but " and \\, and whole UTF-8 characters) and the
 * trie of all the other tokens, per vocabulary. Inside a free string every plain-text token loops
 * back to the same state, so its mask is "all plain tokens" plus a walk of the small other trie.
 */
interface PlainSplit {
  plain: Uint32Array;
  others: TokenTrie;
}
const splits = new WeakMap<TokenVocabulary, PlainSplit>();

function isPlainText(b: Uint8Array): boolean {
  let need = 0;
  let lo = 0x80;
  let hi = 0xbf;
  for (const x of b) {
    if (need > 0) {
      if (x < lo || x > hi) return false;
      need--;
      lo = 0x80;
      hi = 0xbf;
      continue;
    }
    if (x >= 0x20 && x <= 0x7e && x !== 0x22 && x !== 0x5c) continue;
    if (x >= 0xc2 && x <= 0xdf) need = 1;
    else if (x >= 0xe0 && x <= 0xef) {
      need = 2;
      if (x === 0xe0) lo = 0xa0;
      if (x === 0xed) hi = 0x9f;
    } else if (x >= 0xf0 && x <= 0xf4) {
      need = 3;
      if (x === 0xf0) lo = 0x90;
      if (x === 0xf4) hi = 0x8f;
    } else return false;
  }
  return need === 0;
}

function plainSplit(vocab: TokenVocabulary): PlainSplit {
  let s = splits.get(vocab);
  if (s) return s;
  const plain = new Uint32Array((vocab.size + 31) >>> 5);
  const bytes: (Uint8Array | null)[] = [];
  for (let id = 0; id < vocab.size; id++) {
    const b = vocab.bytesOf(id);
    if (b && b.length > 0 && isPlainText(b)) {
      plain[id >>> 5] |= 1 << (id & 31);
      bytes.push(null);
    } else bytes.push(b);
  }
  const others = new TokenTrie({ size: vocab.size, bytesOf: (id) => bytes[id] ?? null, eosIds: vocab.eosIds });
  s = { plain, others };
  splits.set(vocab, s);
  return s;
}

// The UTF-8 of plain text as a small automaton: state 0 = between characters; the others wait
// for continuation bytes (for checking that a frame state loops on every plain character).
const PLAIN_RANGES: [number, number, number][] = [
  // [lo, hi, next state] from state 0
  [0x20, 0x21, 0],
  [0x23, 0x5b, 0],
  [0x5d, 0x7e, 0],
  [0xc2, 0xdf, 1],
  [0xe1, 0xec, 2],
  [0xee, 0xef, 2],
  [0xe0, 0xe0, 3],
  [0xed, 0xed, 4],
  [0xf1, 0xf3, 5],
  [0xf0, 0xf0, 6],
  [0xf4, 0xf4, 7],
];
// From the waiting states: [state, lo, hi, next]
const CONT_RANGES: [number, number, number, number][] = [
  [1, 0x80, 0xbf, 0],
  [2, 0x80, 0xbf, 1],
  [3, 0xa0, 0xbf, 1],
  [4, 0x80, 0x9f, 1],
  [5, 0x80, 0xbf, 2],
  [6, 0x90, 0xbf, 2],
  [7, 0x80, 0x8f, 2],
];

interface LocalMask {
  bits: Uint32Array;
  /** (trie node, frame state) pairs where the rule may call or return. */
  exits: Int32Array;
  /** The trie the exits' nodes are in. */
  trie: TokenTrie;
}

/** Masks memoised per guide, each vocab/8 bytes (19 KB for Qwen): ~20 MB at most per guide. */
const MAX_MEMO = 512;
/** Below this many tokens left beyond the fewest needed, masks are filtered by the budget. */
const BUDGET_SLACK = 256;

export class TokenGuide {
  readonly trie: TokenTrie;
  readonly words: number;
  private readonly local = new Map<number, LocalMask>();
  private readonly memo = new Map<number, Uint32Array>();
  private readonly stateAt: Int32Array;
  private readonly scratch: Uint32Array;
  private readonly eosBits: Uint32Array;

  constructor(
    readonly pda: Pda,
    readonly vocab: TokenVocabulary,
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
      this.walk(config, -1, this.scratch, budget);
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

  private compute(config: number): Uint32Array {
    const pda = this.pda;
    const bits = new Uint32Array(this.words);
    const exp = pda.expanded(config);
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
    }
    if (pda.isAccepting(config)) or(bits, this.eosBits);
    return bits;
  }

  /**
   * Whether every plain-text character read from d comes back to d, through states that neither
   * call nor return (then every plain-text token is allowed in d and ends in d).
   */
  private loopsOnPlainText(d: number): boolean {
    const pda = this.pda;
    if (pda.exits[d] === 1) return false;
    // Product of the frame DFA from d with the UTF-8 automaton: (utf8 state, frame state) pairs.
    const seen = new Set<number>();
    const work: [number, number][] = [[0, d]];
    seen.add(d * 8);
    while (work.length > 0) {
      const [u, s] = work.pop()!;
      const step = (lo: number, hi: number, nu: number): boolean => {
        for (let b = lo; b <= hi; b++) {
          const t = pda.next(s, b);
          if (t === DEAD || pda.exits[t] === 1) return false;
          if (nu === 0 && t !== d) return false;
          const key = t * 8 + nu;
          if (!seen.has(key)) {
            if (seen.size > 4096) return false;
            seen.add(key);
            work.push([nu, t]);
          }
        }
        return true;
      };
      if (u === 0) {
        for (const [lo, hi, nu] of PLAIN_RANGES) if (!step(lo, hi, nu)) return false;
      } else {
        for (const [su, lo, hi, nu] of CONT_RANGES) if (su === u && !step(lo, hi, nu)) return false;
      }
    }
    return true;
  }

  /** Tokens read from frame state d without a call or a return, and where those may happen. */
  private localMask(d: number): LocalMask {
    let lm = this.local.get(d);
    if (lm) return lm;
    if (this.local.size >= MAX_MEMO) this.local.clear();
    const bits = new Uint32Array(this.words);
    let trie = this.trie;
    if (this.loopsOnPlainText(d)) {
      const split = plainSplit(this.vocab);
      bits.set(split.plain);
      trie = split.others;
    }
    const { byte, depth, subtreeEnd, firstToken, nextToken, nodeCount } = trie;
    const pda = this.pda;
    const exitFlag = pda.exits;
    const exits: number[] = [];
    const stateAt = this.stateAt;
    stateAt[0] = d;
    let trans = pda.trans;
    let i = 0;
    while (i < nodeCount) {
      const from = stateAt[depth[i] - 1];
      let s = trans[from * 256 + byte[i]];
      if (s < DEAD) {
        s = pda.compute(from, byte[i]);
        trans = pda.trans; // may have grown
      }
      if (s === DEAD) {
        i = subtreeEnd[i];
        continue;
      }
      stateAt[depth[i]] = s;
      for (let t = firstToken[i]; t >= 0; t = nextToken[t]) bits[t >>> 5] |= 1 << (t & 31);
      if (exitFlag[s] === 1 && subtreeEnd[i] > i + 1) exits.push(i, s);
      i++;
    }
    lm = { bits, exits: Int32Array.from(exits), trie };
    this.local.set(d, lm);
    return lm;
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

function or(into: Uint32Array, from: Uint32Array): void {
  for (let w = 0; w < into.length; w++) into[w] |= from[w];
}
