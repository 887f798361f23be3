// Logits processors that run before the sampler's penalties, in vLLM's order: logit_bias,
// bad_words, min_tokens, then the structured-output mask. They write into a scratch copy; the
// raw logits stay untouched for logprobs.
import { SamplingParamsError, type SamplingParams } from './params.js';
import { constraintFor, type ConstraintState, type TokenVocabulary } from './structured/index.js';

export class LogitsProcessors {
  private readonly out: Float32Array;
  private readonly bias: [number, number][];
  /** Token sequences of the bad words: the last token is banned after the others. */
  private readonly badWords: number[][];
  private readonly minTokens: number;
  private readonly endIds: number[];
  private readonly constraint: ConstraintState | null;
  private readonly maxTokens: number;
  /** Tokens left with a finite logit by the last apply() (the vocabulary size when not counted). */
  finiteCount: number;

  private constructor(params: SamplingParams, vocabSize: number, vocab: TokenVocabulary | undefined) {
    this.out = new Float32Array(vocabSize);
    this.bias = Object.entries(params.logitBias ?? {}).map(([id, b]) => [Number(id), b]);
    for (const [id] of this.bias)
      if (id >= vocabSize)
        throw new SamplingParamsError(
          'logitBias',
          `logit_bias has token id ${id}, beyond the vocabulary (${vocabSize}).`,
        );
    const needVocab = (what: keyof SamplingParams) => {
      if (!vocab) throw new SamplingParamsError(what, `the sampler needs a vocabulary for ${what}.`);
      if (vocab.size !== vocabSize)
        throw new RangeError(`Sampler: the vocabulary has ${vocab.size} tokens but the logits ${vocabSize}`);
      return vocab;
    };
    this.badWords = [];
    if (params.badWords && params.badWords.length > 0) {
      const v = needVocab('badWords');
      if (!v.encode) throw new SamplingParamsError('badWords', 'the vocabulary cannot tokenize bad_words.');
      for (const word of params.badWords) {
        const plain = v.encode(word.trimStart());
        this.badWords.push(plain);
        // With a leading space it is another token sequence mid-text; kept when it is a new first token of the same length, as vLLM does.
        const spaced = v.encode(' ' + word.trimStart());
        if (spaced.length > 0 && spaced[0] !== plain[0] && spaced.length === plain.length) this.badWords.push(spaced);
      }
    }
    this.minTokens = params.minTokens ?? 0;
    this.endIds = this.minTokens > 0 ? [...needVocab('minTokens').eosIds, ...(params.stopTokenIds ?? [])] : [];
    this.constraint = params.structuredOutput
      ? constraintFor(params.structuredOutput, needVocab('structuredOutput'))
      : null;
    this.maxTokens = params.maxTokens ?? Infinity;
    this.finiteCount = vocabSize;
  }

  static create(params: SamplingParams, vocabSize: number, vocab?: TokenVocabulary): LogitsProcessors | null {
    const any =
      (params.logitBias && Object.keys(params.logitBias).length > 0) ||
      (params.badWords && params.badWords.length > 0) ||
      (params.minTokens ?? 0) > 0 ||
      params.structuredOutput !== undefined;
    return any ? new LogitsProcessors(params, vocabSize, vocab) : null;
  }

  /** The processed logits (a scratch buffer, valid until the next call). */
  apply(logits: Float32Array, _prompt: ArrayLike<number>, output: ArrayLike<number>): Float32Array {
    const x = this.out;
    x.set(logits);
    this.finiteCount = x.length;
    for (const [id, b] of this.bias) x[id] = x[id] + b;
    for (const ids of this.badWords) {
      const k = ids.length - 1;
      let match = output.length >= k;
      for (let j = 0; match && j < k; j++) match = output[output.length - k + j] === ids[j];
      if (match) x[ids[k]] = -Infinity;
    }
    if (output.length < this.minTokens) for (const id of this.endIds) x[id] = -Infinity;
    if (this.constraint) {
      this.constraint.sync(output);
      const bits = this.constraint.mask(this.maxTokens - output.length);
      let finite = 0;
      // Word by word: most words of a mask are all zeros (between JSON values) or all ones (in a string).
      const V = x.length;
      for (let w = 0, i = 0; i < V; w++, i += 32) {
        const word = bits[w];
        const end = Math.min(i + 32, V);
        if (word === 0) {
          for (let j = i; j < end; j++) x[j] = -Infinity;
        } else {
          for (let j = i; j < end; j++) {
            if (((word >>> (j - i)) & 1) === 0) x[j] = -Infinity;
            else if (x[j] > -Infinity) finite++;
          }
        }
      }
      // bad_words or min_tokens removed every token the constraint allows: the constraint wins.
      if (finite === 0) {
        for (let i = 0; i < x.length; i++) {
          if ((bits[i >>> 5] >>> (i & 31)) & 1) {
            x[i] = logits[i];
            finite++;
          }
        }
      }
      if (finite > 1) finite = this.canonical(x, finite);
      this.finiteCount = finite;
    }
    return x;
  }

  /**
   * Text only the constraint can write is written in the tokenizer's own tokens (the model saw such
   * text tokenized that way in training): its first canonical token is the only one kept, or, for
   * the last token of the text (which may merge with what follows: `":"` or `":"[`), the tokens that
   * split it are removed. This makes most forced tokens certain: jump-forward appends them at once.
   * Returns the number of finite logits left.
   */
  private canonical(x: Float32Array, finite: number): number {
    const matcher = this.constraint!.matcher;
    const text = matcher.forcedBytes();
    if (text.length === 0) return finite;
    const forced = matcher.forcedTokensOf(text);
    if (forced.length > 0) {
      if (!(x[forced[0]] > -Infinity)) return finite;
      const keep = x[forced[0]];
      x.fill(-Infinity);
      x[forced[0]] = keep;
      return 1;
    }
    // Every allowed token is a prefix of the text or starts with all of it: drop the prefixes.
    const vocab = matcher.guide.vocab;
    const split: number[] = [];
    for (let t = 0; t < x.length; t++) {
      if (!(x[t] > -Infinity)) continue;
      const bytes = vocab.bytesOf(t);
      if (bytes !== null && bytes.length < text.length) split.push(t);
    }
    if (split.length === finite) return finite;
    for (const t of split) x[t] = -Infinity;
    return finite - split.length;
  }

  /** Whether a structured-output constraint is set (jump-forward has something to propose). */
  get constrained(): boolean {
    return this.constraint !== null;
  }

  /** Forgets output tokens from `length` on that apply() or forcedTokens() were shown ahead of time. */
  rewind(length: number): void {
    this.constraint?.rewind(length);
  }

  /** The tokens the constraint alone would write after `output` (Matcher.forcedTokens); none without one. */
  forcedTokens(output: ArrayLike<number>): number[] {
    if (!this.constraint) return [];
    this.constraint.sync(output);
    return this.constraint.matcher.forcedTokens();
  }

  /** Whether the constraint forces any text after `output` (something may be certain). */
  forcesText(output: ArrayLike<number>): boolean {
    if (!this.constraint) return false;
    this.constraint.sync(output);
    return this.constraint.matcher.forcedBytes().length > 0;
  }
}
