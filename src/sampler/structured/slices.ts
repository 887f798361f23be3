// Token sets precomputed per vocabulary for the commonest lexical context: JSON string content
// (LLGuidance's "slices", XGrammar's context-independent tokens).
//
// A plain-text token is whole UTF-8 characters, none of them `"`, `\` or a control byte: 140k of
// Qwen's 151k tokens. Inside a string the automaton usually treats every such character alike:
// a free string loops on them, a counted string (minLength/maxLength) moves from "k characters
// read" to "k + 1". Then a plain token of n characters is allowed exactly when n steps of that
// uniform move stay alive, whatever its bytes are, so its mask is the set of plain tokens of at
// most n characters (a bitset copy) plus a walk of the trie of the other 10k tokens.
import { TokenTrie, type TokenVocabulary } from './vocabulary.js';

/** Characters of a plain-text token, or -1 when it is not plain text. */
export function plainChars(b: Uint8Array): number {
  let need = 0;
  let lo = 0x80;
  let hi = 0xbf;
  let chars = 0;
  for (const x of b) {
    if (need > 0) {
      if (x < lo || x > hi) return -1;
      need--;
      lo = 0x80;
      hi = 0xbf;
      continue;
    }
    chars++;
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
    } else return -1;
  }
  return need === 0 && chars > 0 ? chars : -1;
}

// The UTF-8 of plain text as a small automaton: state 0 = between characters; the others wait
// for continuation bytes.
/** [lo, hi, next state] from state 0. */
export const PLAIN_RANGES: readonly (readonly [number, number, number])[] = [
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
/** [state, lo, hi, next] from the waiting states. */
export const CONT_RANGES: readonly (readonly [number, number, number, number])[] = [
  [1, 0x80, 0xbf, 0],
  [2, 0x80, 0xbf, 1],
  [3, 0xa0, 0xbf, 1],
  [4, 0x80, 0x9f, 1],
  [5, 0x80, 0xbf, 2],
  [6, 0x90, 0xbf, 2],
  [7, 0x80, 0x8f, 2],
];

export class PlainSlices {
  /** Every plain-text token. */
  readonly plain: Uint32Array;
  /** The trie of all the other tokens. */
  readonly others: TokenTrie;
  /** The most characters a plain-text token has. */
  readonly maxChars: number;
  /** Plain tokens ordered by character count; those with at most n characters are byChars[0 .. countUpTo[n]). */
  private readonly byChars: Int32Array;
  private readonly countUpTo: Int32Array;
  private readonly upToCache = new Map<number, Uint32Array>();
  private readonly firstByte: Uint8Array;
  private readonly startingCache = new Map<number, Uint32Array>();

  constructor(vocab: TokenVocabulary) {
    const words = (vocab.size + 31) >>> 5;
    this.plain = new Uint32Array(words);
    const chars = new Int32Array(vocab.size);
    this.firstByte = new Uint8Array(vocab.size);
    const bytes: (Uint8Array | null)[] = [];
    let maxChars = 0;
    let count = 0;
    for (let id = 0; id < vocab.size; id++) {
      const b = vocab.bytesOf(id);
      const n = b && b.length > 0 ? plainChars(b) : -1;
      chars[id] = n;
      if (n > 0) {
        this.plain[id >>> 5] |= 1 << (id & 31);
        this.firstByte[id] = b![0];
        bytes.push(null);
        maxChars = Math.max(maxChars, n);
        count++;
      } else bytes.push(b);
    }
    this.maxChars = maxChars;
    this.others = new TokenTrie({ size: vocab.size, bytesOf: (id) => bytes[id] ?? null, eosIds: vocab.eosIds });
    // Counting sort by character count.
    this.countUpTo = new Int32Array(maxChars + 1);
    for (let id = 0; id < vocab.size; id++) if (chars[id] > 0) this.countUpTo[chars[id]]++;
    for (let n = 1; n <= maxChars; n++) this.countUpTo[n] += this.countUpTo[n - 1];
    const fill = new Int32Array(maxChars + 1);
    for (let n = 1; n <= maxChars; n++) fill[n] = this.countUpTo[n - 1];
    this.byChars = new Int32Array(count);
    for (let id = 0; id < vocab.size; id++) if (chars[id] > 0) this.byChars[fill[chars[id]]++] = id;
  }

  /** The plain tokens of at most n characters (shared: do not modify). */
  upTo(n: number): Uint32Array {
    if (n >= this.maxChars) return this.plain;
    let bits = this.upToCache.get(n);
    if (bits) return bits;
    bits = new Uint32Array(this.plain.length);
    const end = n <= 0 ? 0 : this.countUpTo[n];
    for (let k = 0; k < end; k++) {
      const t = this.byChars[k];
      bits[t >>> 5] |= 1 << (t & 31);
    }
    this.upToCache.set(n, bits);
    return bits;
  }

  /** Sets the bits of the plain tokens of exactly n characters. */
  addExactly(n: number, bits: Uint32Array): void {
    if (n < 1 || n > this.maxChars) return;
    for (let k = this.countUpTo[n - 1]; k < this.countUpTo[n]; k++) {
      const t = this.byChars[k];
      bits[t >>> 5] |= 1 << (t & 31);
    }
  }

  /** The plain tokens whose first byte is b (shared: do not modify). */
  startingWith(b: number): Uint32Array {
    let bits = this.startingCache.get(b);
    if (bits) return bits;
    bits = new Uint32Array(this.plain.length);
    for (let k = 0; k < this.byChars.length; k++) {
      const t = this.byChars[k];
      if (this.firstByte[t] === b) bits[t >>> 5] |= 1 << (t & 31);
    }
    this.startingCache.set(b, bits);
    return bits;
  }
}

const slices = new WeakMap<TokenVocabulary, PlainSlices>();

/** The slices of a vocabulary, built on first use and kept as long as the vocabulary object is. */
export function slicesOf(vocab: TokenVocabulary): PlainSlices {
  let s = slices.get(vocab);
  if (!s) {
    s = new PlainSlices(vocab);
    slices.set(vocab, s);
  }
  return s;
}
