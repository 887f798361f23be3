// The public matcher: one constraint followed token by token, shaped like XGrammar's
// GrammarMatcher and LLGuidance's LLMatcher. The engine's sampler uses it (ConstraintState), and
// so can anyone without the engine: speculative decoding (forcedTokens + rollback), a server of
// another model, a test.
import type { TokenGuide } from './guide.js';
import { DEAD } from './pda.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class Matcher {
  /** Configuration after each accepted token; history[0] is the start. */
  private readonly history: number[];
  /** Number of accepted tokens when EOS was accepted (the constraint is then terminated), else -1. */
  private endedAt = -1;

  constructor(readonly guide: TokenGuide) {
    this.history = [guide.start];
  }

  private get config(): number {
    return this.history[this.history.length - 1];
  }

  /** Tokens accepted so far (EOS included). */
  get length(): number {
    return this.history.length - 1 + (this.endedAt >= 0 ? 1 : 0);
  }

  /**
   * The tokens allowed next, as a bitset over the vocabulary (bit t of word t >> 5). Only EOS
   * after the constraint completed and EOS was accepted. The array is shared: read it (or copy
   * it) before the next call. `tokensLeft` (optional) makes the value close within that many tokens.
   */
  allowedTokens(tokensLeft = Infinity): Uint32Array {
    if (this.endedAt >= 0) {
      const bits = new Uint32Array(this.guide.words);
      for (const e of this.guide.vocab.eosIds) bits[e >>> 5] |= 1 << (e & 31);
      return bits;
    }
    return this.guide.allowed(this.config, tokensLeft);
  }

  /** Whether `token` may come next (without accepting it). */
  isAllowed(token: number): boolean {
    if (this.guide.isEos(token)) return this.isComplete();
    if (this.endedAt >= 0) return false;
    return this.guide.advance(this.config, token) !== DEAD;
  }

  /** Accepts a token; false (and no change) when it is not allowed. EOS is allowed where the value is complete. */
  accept(token: number): boolean {
    if (this.endedAt >= 0) return false;
    if (this.guide.isEos(token)) {
      if (!this.guide.isAccepting(this.config)) return false;
      this.endedAt = this.history.length - 1;
      return true;
    }
    const next = this.guide.advance(this.config, token);
    if (next === DEAD) return false;
    this.history.push(next);
    return true;
  }

  /** Undoes the last n accepted tokens (EOS included). */
  rollback(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.length)
      throw new RangeError(`rollback(${n}): only ${this.length} tokens were accepted`);
    if (n > 0 && this.endedAt >= 0) {
      this.endedAt = -1;
      n--;
    }
    this.history.length -= n;
  }

  /** Back to the start. */
  reset(): void {
    this.history.length = 1;
    this.endedAt = -1;
  }

  /** Whether the output so far is a complete value (EOS may come now), or EOS was accepted. */
  isComplete(): boolean {
    return this.endedAt >= 0 || this.guide.isAccepting(this.config);
  }

  /** Whether EOS was accepted (nothing more may come). */
  isTerminated(): boolean {
    return this.endedAt >= 0;
  }

  /**
   * The text the constraint forces next (one possible byte at a time, until a choice or a possible
   * end), as tokens: the basis of jump-forward decoding. The last token of the forced text is left
   * out, since the model may write it merged with what follows (`"` then `name` vs `"name`); the
   * tokens are the tokenizer's own encoding when the vocabulary can encode, else the longest
   * tokens of the vocabulary. Accepting them in order is always allowed. Does not change the state.
   */
  forcedTokens(): number[] {
    return this.forcedTokensOf(this.forcedBytes());
  }

  /** forcedTokens() for bytes already known to be forcedBytes() (the walk is not repeated). */
  forcedTokensOf(bytes: Uint8Array): number[] {
    if (bytes.length === 0) return [];
    const tokens = this.tokenize(bytes);
    tokens.pop();
    // Keep only what the constraint accepts from here (a different tokenization could fail a check).
    let s = this.config;
    const out: number[] = [];
    for (const t of tokens) {
      s = this.guide.advance(s, t);
      if (s === DEAD) break;
      out.push(t);
    }
    return out;
  }

  /** The bytes the constraint forces next (one possible byte at a time, until a choice or a possible end). */
  forcedBytes(): Uint8Array {
    if (this.endedAt >= 0) return new Uint8Array(0);
    const pda = this.guide.pda;
    const bytes: number[] = [];
    let c = this.config;
    while (bytes.length < 1024 && !pda.isAccepting(c)) {
      let only = -1;
      let next = DEAD;
      for (let b = 0; b < 256; b++) {
        const t = pda.configNext(c, b);
        if (t === DEAD) continue;
        if (only >= 0) {
          only = -2;
          break;
        }
        only = b;
        next = t;
      }
      if (only < 0) break;
      bytes.push(only);
      c = next;
    }
    return Uint8Array.from(bytes);
  }

  private tokenize(bytes: Uint8Array): number[] {
    const encode = this.guide.vocab.encode;
    if (encode && bytes.every((b) => b < 0xf5)) {
      try {
        const ids = encode(utf8.decode(bytes));
        if (ids.every((t) => this.guide.vocab.bytesOf(t) !== null)) return ids;
      } catch {
        // not whole UTF-8 characters: fall through to the trie
      }
    }
    // Longest match over the trie.
    const { byte, depth, subtreeEnd, firstToken, nodeCount } = this.guide.trie;
    const out: number[] = [];
    let at = 0;
    while (at < bytes.length) {
      let best = -1;
      let bestLen = 0;
      let i = 0;
      let d = 0;
      while (i < nodeCount && at + d < bytes.length) {
        // Find the child of the current node with byte bytes[at + d] (children are in byte order).
        if (depth[i] !== d + 1) break;
        if (byte[i] === bytes[at + d]) {
          d++;
          if (firstToken[i] >= 0) {
            best = firstToken[i];
            bestLen = d;
          }
          i++;
        } else i = subtreeEnd[i];
      }
      if (best < 0) break;
      out.push(best);
      at += bestLen;
    }
    return out;
  }
}

/** The constraint of one sequence in the engine: follows its output tokens, gives the mask for the next one. */
export class ConstraintState {
  readonly matcher: Matcher;
  private consumed = 0;

  constructor(readonly guide: TokenGuide) {
    this.matcher = new Matcher(guide);
  }

  /** Advances over output tokens not seen yet; throws if one broke the constraint. */
  sync(outputIds: ArrayLike<number>): void {
    for (; this.consumed < outputIds.length; this.consumed++) {
      const t = outputIds[this.consumed];
      if (this.matcher.isTerminated()) continue;
      if (!this.matcher.accept(t))
        throw new Error(`structured output: token ${t} at output position ${this.consumed} breaks the constraint`);
    }
  }

  /** Allowed next tokens as a bitset over the vocabulary (only EOS after the value ended). */
  mask(tokensLeft: number): Uint32Array {
    return this.matcher.allowedTokens(tokensLeft);
  }

  get complete(): boolean {
    return this.matcher.isComplete();
  }

  /** Forgets the output tokens from `length` on (synced ahead to look at what they would allow). */
  rewind(length: number): void {
    if (length >= this.consumed) return;
    this.matcher.rollback(Math.min(this.consumed - length, this.matcher.length));
    this.consumed = length;
  }
}
