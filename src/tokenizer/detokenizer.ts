// Incremental detokenizer for streaming output.
//
// Byte-level BPE tokens are byte strings, not characters: "你" may be one token, but a rare
// character or an emoji is often split across two or three tokens, and decoding the first
// token alone gives U+FFFD. Streaming must not emit that. This is vLLM's
// detokenize_incrementally (itself from HF text-generation-inference):
//
//   tokens:  ... | prefixOffset ........ readOffset ........ end
//                 `-- already emitted --'`-- not emitted yet --'
//
//   prefixText = decode(tokens[prefixOffset:readOffset])
//   newText    = decode(tokens[prefixOffset:])
//   if newText is longer and does not end in U+FFFD: emit newText.slice(prefixText.length)
//   and slide the window (prefixOffset = readOffset, readOffset = end).
//
// Decoding a little already-emitted context (the prefix) instead of the new tokens alone is
// what keeps tokenizers whose decoding depends on neighbours (SentencePiece's leading space)
// right; for Qwen's byte-level BPE it is simply harmless. The window starts at a character
// boundary (we only slide after complete text), so the deltas concatenate to exactly
// decode(allIds). Each push decodes a window of a few tokens: O(1) per token, not O(n).

/** What the decoder needs from a tokenizer (QwenTokenizer satisfies it). */
export interface Decoder {
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
}

export interface StreamDecoderOptions {
  skipSpecialTokens?: boolean;
  /**
   * The prompt's token ids: its last few are decoded as context (never emitted), so the first
   * generated token's text is its text after the prompt. Without them a SentencePiece "▁time"
   * decodes to "time" (the decoder strips a text's leading space), losing the space after
   * "Once upon a".
   */
  prompt?: ArrayLike<number>;
}

/** Prompt tokens kept as context (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET). */
const PROMPT_CONTEXT = 5;

const REPLACEMENT_CHAR = '\uFFFD';

export class StreamDecoder {
  private readonly tokenizer: Decoder;
  private readonly skipSpecialTokens: boolean;
  // Only the window is kept: window[0] is at prefixOffset, window[readOffset] is the first
  // token whose text has not been emitted yet.
  private window: number[] = [];
  private readOffset = 0;
  private prefixText = '';

  constructor(tokenizer: Decoder, opts: StreamDecoderOptions = {}) {
    this.tokenizer = tokenizer;
    this.skipSpecialTokens = opts.skipSpecialTokens ?? false;
    const prompt = opts.prompt ?? [];
    for (let i = Math.max(0, prompt.length - PROMPT_CONTEXT); i < prompt.length; i++) this.window.push(prompt[i]);
    this.readOffset = this.window.length;
    this.prefixText = this.decode(this.window);
  }

  /** Adds one generated token; returns the newly completed text (often "", never a broken character). */
  push(id: number): string {
    this.window.push(id);
    const newText = this.decode(this.window);
    if (newText.length <= this.prefixText.length || newText.endsWith(REPLACEMENT_CHAR)) {
      // Incomplete UTF-8 sequence (or a skipped special token): hold back until more arrives.
      return '';
    }
    const delta = newText.slice(this.prefixText.length);
    this.window = this.window.slice(this.readOffset);
    this.readOffset = this.window.length;
    this.prefixText = this.decode(this.window);
    return delta;
  }

  /** Emits whatever is held back (an unfinished character becomes U+FFFD, as decode() would). */
  flush(): string {
    if (this.readOffset === this.window.length) return '';
    const delta = this.decode(this.window).slice(this.prefixText.length);
    this.window = [];
    this.readOffset = 0;
    this.prefixText = '';
    return delta;
  }

  /** True while some pushed tokens have not produced text yet. */
  get pending(): boolean {
    return this.readOffset < this.window.length;
  }

  private decode(ids: number[]): string {
    if (ids.length === 0) return '';
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens });
  }
}
