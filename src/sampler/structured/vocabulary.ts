// What constrained decoding needs to know about a tokenizer, and the token trie built from it.
//
// The sampler may run on another thread than the tokenizer, so it only sees TokenVocabulary:
// each token id's byte string (null for tokens a constraint never allows: special tokens, the
// padding rows of the logits, byte sequences that are never valid UTF-8) and the EOS ids. The
// trie over those byte strings is built once per vocabulary object (WeakMap) on first use.
//
// The two tool-call tags are single added tokens. They are spelled as one reserved byte each
// (0xF8, 0xF9: bytes that never occur in UTF-8), so a grammar that asks for "<tool_call>" gets
// that one token, not the same text spelled with "<", "tool", "_call", ">".

import type { PieceSpelling } from '../../tokenizer/tokenizer.js';

export interface TokenVocabulary {
  /** Number of token ids (rows of the logits; may exceed the tokenizer's vocabulary). */
  readonly size: number;
  /** UTF-8 bytes the token stands for, or null when no constraint may choose it. */
  bytesOf(id: number): Uint8Array | null;
  /** Token ids that end generation (allowed where a constrained value is complete). */
  readonly eosIds: readonly number[];
  /** Tokenizes text without special tokens (for bad_words). */
  encode?(text: string): number[];
}

export const TOOL_CALL_START_BYTE = 0xf8;
export const TOOL_CALL_END_BYTE = 0xf9;
export const TOOL_CALL_START = '<tool_call>';
export const TOOL_CALL_END = '</tool_call>';

/** The part of QwenTokenizer this file needs (kept structural, so tests can fake it). */
export interface VocabularySource {
  readonly vocabSize: number;
  readonly addedTokens: ReadonlyMap<string, number>;
  readonly specialTokenIds: ReadonlySet<number>;
  idToToken(id: number): string | undefined;
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** How a vocabulary entry spells its bytes (absent: 'byte-level'). */
  readonly pieceSpelling?: PieceSpelling;
}

// GPT-2 byte-level BPE writes each byte as one printable character.
function byteDecoder(): Map<number, number> {
  const m = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    m.set(printable ? b : 256 + extra++, b);
  }
  return m;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
const utf8 = new TextEncoder();

function sentencePieceBytes(piece: string): number[] | null {
  const byte = BYTE_PIECE.exec(piece);
  if (byte) return [parseInt(byte[1]!, 16)];
  return [...utf8.encode(piece.replaceAll('\u2581', ' '))];
}

function byteLevelBytes(piece: string, map: Map<number, number>): number[] | null {
  const out: number[] = [];
  for (const ch of piece) {
    const b = map.get(ch.codePointAt(0)!);
    if (b === undefined) return null;
    out.push(b);
  }
  return out;
}

/** Makes the vocabulary of a BPE tokenizer (Qwen's byte-level or a SentencePiece one) for `size` logits rows. */
export function vocabularyFromTokenizer(
  tok: VocabularySource,
  size: number,
  eosIds: readonly number[],
): TokenVocabulary {
  const bytes: (Uint8Array | null)[] = new Array(size).fill(null);
  const map = byteDecoder();
  const addedIds = new Set(tok.addedTokens.values());
  for (let id = 0; id < Math.min(size, tok.vocabSize); id++) {
    if (addedIds.has(id)) continue;
    const piece = tok.idToToken(id);
    if (piece === undefined) continue;
    const out = tok.pieceSpelling === 'sentencepiece' ? sentencePieceBytes(piece) : byteLevelBytes(piece, map);
    // 0xC0, 0xC1 and 0xF5..0xFF never occur in UTF-8; 0xF8/0xF9 are the tool-call tags here.
    if (out === null || out.length === 0 || out.some((b) => b === 0xc0 || b === 0xc1 || b >= 0xf5)) continue;
    bytes[id] = Uint8Array.from(out);
  }
  for (const [content, id] of tok.addedTokens) {
    if (id >= size || tok.specialTokenIds.has(id)) continue;
    if (content === TOOL_CALL_START) bytes[id] = Uint8Array.of(TOOL_CALL_START_BYTE);
    else if (content === TOOL_CALL_END) bytes[id] = Uint8Array.of(TOOL_CALL_END_BYTE);
    else bytes[id] = null; // other added tokens (fill-in-the-middle markers) are not text
  }
  return {
    size,
    bytesOf: (id) => bytes[id] ?? null,
    eosIds: [...eosIds],
    encode: (text) => tok.encode(text, { addSpecialTokens: false }),
  };
}

/**
 * All token byte strings in one trie, stored in preorder in flat arrays so a walk is a linear
 * scan that skips whole subtrees: node i reads byte[i] at depth[i] (1-based); subtreeEnd[i] is
 * the index after its subtree; firstToken[i] is a token whose bytes end at node i (-1 if none),
 * and nextToken[t] chains further tokens with the same bytes.
 */
export class TokenTrie {
  readonly byte: Uint8Array;
  readonly depth: Uint16Array;
  readonly subtreeEnd: Int32Array;
  readonly firstToken: Int32Array;
  readonly nextToken: Int32Array;
  readonly maxDepth: number;
  readonly nodeCount: number;
  /** Bytes of each token, flat: tokenBytes[tokenStart[t] .. tokenStart[t + 1]). */
  readonly tokenBytes: Uint8Array;
  readonly tokenStart: Int32Array;
  /** The node of each first byte (-1 when no token starts with it). */
  readonly rootChild: Int32Array;

  constructor(vocab: TokenVocabulary) {
    const ids: number[] = [];
    const all: (Uint8Array | null)[] = [];
    let totalBytes = 0;
    for (let id = 0; id < vocab.size; id++) {
      const b = vocab.bytesOf(id);
      all.push(b);
      if (b && b.length > 0) {
        ids.push(id);
        totalBytes += b.length;
      }
    }
    this.tokenStart = new Int32Array(vocab.size + 1);
    this.tokenBytes = new Uint8Array(totalBytes);
    let at = 0;
    for (let id = 0; id < vocab.size; id++) {
      this.tokenStart[id] = at;
      const b = all[id];
      if (b) {
        this.tokenBytes.set(b, at);
        at += b.length;
      }
    }
    this.tokenStart[vocab.size] = at;
    ids.sort((a, c) => compareBytes(all[a]!, all[c]!) || a - c);

    // Preorder from the sorted list: each token adds the nodes beyond its common prefix with the previous.
    const byte: number[] = [];
    const depth: number[] = [];
    const firstToken: number[] = [];
    this.nextToken = new Int32Array(vocab.size).fill(-1);
    const pathNode: number[] = []; // node index at each depth along the current path
    let prev: Uint8Array | null = null;
    let maxDepth = 0;
    for (const id of ids) {
      const b = all[id]!;
      let common = 0;
      if (prev) while (common < prev.length && common < b.length && prev[common] === b[common]) common++;
      if (prev && common === b.length && prev.length === b.length) {
        // Same bytes as the previous token: chain it.
        let t = firstToken[pathNode[b.length - 1]!]!;
        while (this.nextToken[t]! >= 0) t = this.nextToken[t]!;
        this.nextToken[t] = id;
        continue;
      }
      for (let d = common; d < b.length; d++) {
        pathNode[d] = byte.length;
        byte.push(b[d]!);
        depth.push(d + 1);
        firstToken.push(-1);
      }
      firstToken[pathNode[b.length - 1]!] = id;
      maxDepth = Math.max(maxDepth, b.length);
      prev = b;
    }
    const n = byte.length;
    this.nodeCount = n;
    this.maxDepth = maxDepth;
    this.byte = Uint8Array.from(byte);
    this.depth = Uint16Array.from(depth);
    this.firstToken = Int32Array.from(firstToken);
    // A node's subtree ends at the next node whose depth is not greater.
    this.subtreeEnd = new Int32Array(n);
    const open: number[] = [];
    for (let i = 0; i < n; i++) {
      while (open.length > 0 && this.depth[open[open.length - 1]!]! >= this.depth[i]!) this.subtreeEnd[open.pop()!] = i;
      open.push(i);
    }
    for (const i of open) this.subtreeEnd[i] = n;
    this.rootChild = new Int32Array(256).fill(-1);
    for (let i = 0; i < n; i = this.subtreeEnd[i]) this.rootChild[this.byte[i]] = i;
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

const tries = new WeakMap<TokenVocabulary, TokenTrie>();

/** The trie of a vocabulary, built on first use and kept as long as the vocabulary object is. */
export function trieOf(vocab: TokenVocabulary): TokenTrie {
  let t = tries.get(vocab);
  if (!t) {
    t = new TokenTrie(vocab);
    tries.set(vocab, t);
  }
  return t;
}
