// QwenTokenizer: a thin, typed wrapper around @huggingface/tokenizers for Hugging Face model folders.
//
// Qwen2.5 is a byte-level BPE (GPT-2 style) with an NFC normalizer, a custom pre-tokenizer
// regex (digits are split one by one) and 22 "added tokens" (<|endoftext|>, <|im_start|>, ...).
// Llama-family models (stories260K, TinyLlama, ...) use a SentencePiece-style BPE with byte
// fallback and put a BOS token in front of every text. @huggingface/tokenizers handles the
// vocabularies from tokenizer.json; this file adds what the engine needs on top: loading from a
// directory with errors naming the file, the special tokens from tokenizer_config.json, BOS/EOS
// added the way transformers adds them, an empty-safe decode, and the chat template.
// The Qwen ids are checked against an independent Python implementation in test/tokenizer.test.ts.

import { Tokenizer } from '@huggingface/tokenizers';
import { dirnamePath, joinPath, MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES, readTextFile } from '../platform/files.js';
import { applyChatTemplate, ChatTemplateError, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';

export interface EncodeOptions {
  /** Add the tokenizer's BOS/EOS (`prefixIds` / `suffixIds`; none for Qwen). Default true, as in HF.
   *  A rendered chat template already holds them: encode it with false, as vLLM and HF do.
   *  Special tokens written in the text are always recognised. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop tokens marked `special` (e.g. <|im_end|>). Non-special added tokens such as
   *  <tool_call> are kept, as in HF transformers. */
  skipSpecialTokens?: boolean;
}

/** The subset of tokenizer_config.json we read. */
interface TokenizerConfig {
  chat_template?: unknown;
  add_bos_token?: unknown;
  add_eos_token?: unknown;
  eos_token?: unknown;
  bos_token?: unknown;
  pad_token?: unknown;
  unk_token?: unknown;
  [key: string]: unknown;
}

// The part of @huggingface/tokenizers' Tokenizer we use. Its bundled .d.ts files use
// extension-less relative imports that NodeNext cannot resolve, so the imported class types
// as `any`; this interface puts the type checking back.
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], options: { skip_special_tokens?: boolean }): string;
  id_to_token(id: number): string | undefined;
  token_to_id(token: string): number | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

function readJsonSync(path: string): unknown {
  const maxBytes = path.endsWith('tokenizer.json') ? MAX_TOKENIZER_BYTES : MAX_CONFIG_BYTES;
  const text = readTextFile(path, 'a JSON file', maxBytes, (problem) => {
    throw new Error(
      problem.startsWith('cannot ')
        ? `QwenTokenizer: cannot read ${path}: ${problem}`
        : `QwenTokenizer: ${path} ${problem}`,
    );
  });
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`QwenTokenizer: invalid JSON in ${path}: ${(err as Error).message}`);
  }
}

// tokenizer_config.json stores special tokens either as a string or as an AddedToken object.
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

/**
 * chat_template is a string, or (newer transformers) a list of named templates of which "default"
 * is the one apply_chat_template uses.
 */
function chatTemplateOf(value: unknown, bad: (expected: string, v: unknown) => never): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.find(
      (t) => t !== null && typeof t === 'object' && (t as { name?: unknown }).name === 'default',
    );
    const template = (named as { template?: unknown } | undefined)?.template;
    if (typeof template === 'string') return template;
  }
  return bad('a string (or a list of {name, template} with a "default")', value);
}

interface TemplatePiece {
  SpecialToken?: { id: string };
  Sequence?: { id: string };
}

/**
 * The special tokens a TemplateProcessing post-processor (possibly inside a Sequence) puts around
 * a single text: `<s> $A` gives prefix ["<s>"]. Other post-processors (ByteLevel: Qwen) add none.
 */
function templateSpecialTokens(postProcessor: unknown): { prefix: string[]; suffix: string[] } {
  const none = { prefix: [], suffix: [] };
  if (postProcessor === null || typeof postProcessor !== 'object') return none;
  const pp = postProcessor as { type?: string; processors?: unknown[]; single?: TemplatePiece[] };
  if (pp.type === 'Sequence' && Array.isArray(pp.processors)) {
    for (const p of pp.processors) {
      const found = templateSpecialTokens(p);
      if (found.prefix.length + found.suffix.length > 0) return found;
    }
    return none;
  }
  if (pp.type !== 'TemplateProcessing' || !Array.isArray(pp.single)) return none;
  const at = pp.single.findIndex((piece) => piece.Sequence !== undefined);
  if (at < 0) return none;
  const specials = (pieces: TemplatePiece[]) => pieces.flatMap((p) => (p.SpecialToken ? [p.SpecialToken.id] : []));
  return { prefix: specials(pp.single.slice(0, at)), suffix: specials(pp.single.slice(at + 1)) };
}

/** A model folder's tokenizer files, parsed. */
export interface TokenizerFiles {
  tokenizerJson: object;
  tokenizerConfig: object;
  /** The tokenizer.json path, for errors. */
  source: string;
}

/** How a vocabulary entry spells its bytes: GPT-2's one printable character per byte (Qwen), or
 *  SentencePiece's text with U+2581 for a space and `<0xNN>` byte tokens (Llama, llama2.c). */
export type PieceSpelling = 'byte-level' | 'sentencepiece';

/** SentencePiece-style when the decoder turns U+2581 into spaces or has byte fallback; byte-level otherwise. */
function pieceSpellingOf(decoder: unknown): PieceSpelling {
  const d = decoder as { type?: string; decoders?: unknown[]; pattern?: { String?: string } } | null | undefined;
  if (!d || typeof d !== 'object') return 'byte-level';
  if (d.type === 'ByteFallback' || d.type === 'Metaspace') return 'sentencepiece';
  if (d.type === 'Replace' && d.pattern?.String === '\u2581') return 'sentencepiece';
  if (d.type === 'Sequence' && Array.isArray(d.decoders))
    return d.decoders.some((x) => pieceSpellingOf(x) === 'sentencepiece') ? 'sentencepiece' : 'byte-level';
  return 'byte-level';
}

export class QwenTokenizer {
  /** Number of ids the tokenizer knows (BPE vocab + added tokens): 151665 for Qwen2.5.
   *  The model's embedding/logits are padded to 151936; ids in between decode to "". */
  readonly vocabSize: number;
  readonly chatTemplate: string | null;
  readonly eosToken: string | null;
  readonly eosTokenId: number | null;
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly padToken: string | null;
  readonly padTokenId: number | null;
  /** Ids of added tokens flagged special (dropped by skipSpecialTokens). */
  readonly specialTokenIds: ReadonlySet<number>;
  /** All added tokens (special or not), content -> id. */
  readonly addedTokens: ReadonlyMap<string, number>;
  /** How vocabulary entries spell bytes, from tokenizer.json's decoder (constrained decoding needs it). */
  readonly pieceSpelling: PieceSpelling;
  /** Ids encode() puts in front of a text with addSpecialTokens (e.g. [bos]); [] for Qwen. */
  readonly prefixIds: readonly number[];
  /** Ids encode() appends with addSpecialTokens (e.g. [eos] with add_eos_token); usually []. */
  readonly suffixIds: readonly number[];

  private readonly tok: HfTokenizer;
  private readonly config: TokenizerConfig;
  /** Built without the BPE merges (forDecoding): encode() then builds the whole tokenizer once. */
  private readonly decodingOnly: boolean;
  private whole: QwenTokenizer | null = null;

  /**
   * From the parsed tokenizer.json and tokenizer_config.json. `source` is the tokenizer.json path,
   * for errors (fromDir passes it; tokenizer_config.json is assumed beside it).
   */
  constructor(
    tokenizerJson: object,
    tokenizerConfig: object,
    private readonly source = 'tokenizer.json',
    decodingOnly = false,
  ) {
    this.decodingOnly = decodingOnly;
    try {
      this.tok = new Tokenizer(tokenizerJson, tokenizerConfig) as HfTokenizer;
    } catch (err) {
      throw new Error(`QwenTokenizer: ${source} is not a tokenizer the library can build: ${(err as Error).message}`);
    }
    this.config = tokenizerConfig as TokenizerConfig;
    const configFile = source.endsWith('tokenizer.json')
      ? source.replace(/tokenizer\.json$/, 'tokenizer_config.json')
      : 'tokenizer_config.json';
    const bad = (field: string, expected: string, v: unknown): never => {
      throw new Error(`QwenTokenizer: ${configFile}: field "${field}" must be ${expected}, got ${JSON.stringify(v)}`);
    };
    for (const field of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
      const v = this.config[field];
      if (v !== undefined && v !== null && tokenContent(v) === null) bad(field, 'a token string', v);
    }
    for (const field of ['add_bos_token', 'add_eos_token']) {
      const v = this.config[field];
      if (v !== undefined && v !== null && typeof v !== 'boolean') bad(field, 'true or false', v);
    }

    const added = (tokenizerJson as { added_tokens?: AddedTokenJson[] }).added_tokens ?? [];
    const addedMap = new Map<string, number>();
    const special = new Set<number>();
    for (const [i, t] of added.entries()) {
      if (!Number.isInteger(t.id) || t.id < 0)
        throw new Error(
          `QwenTokenizer: ${source}: field "added_tokens[${i}].id" of ${JSON.stringify(t.content)} must be a token id (an integer from 0), got ${JSON.stringify(t.id)}`,
        );
      addedMap.set(t.content, t.id);
      if (t.special) special.add(t.id);
    }
    this.addedTokens = addedMap;
    this.pieceSpelling = pieceSpellingOf((tokenizerJson as { decoder?: unknown }).decoder);
    this.specialTokenIds = special;

    let maxId = -1;
    for (const [token, id] of this.tok.get_vocab(true)) {
      if (!Number.isInteger(id) || id < 0)
        throw new Error(
          `QwenTokenizer: ${source}: token ${JSON.stringify(token)} has id ${id}; ids are integers from 0`,
        );
      if (id > maxId) maxId = id;
    }
    if (maxId < 0) throw new Error(`QwenTokenizer: ${source}: the vocabulary (field "model.vocab") is empty`);
    this.vocabSize = maxId + 1;

    this.chatTemplate = chatTemplateOf(this.config.chat_template, (expected, v) => bad('chat_template', expected, v));

    const idOf = (tok: string | null): number | null => (tok === null ? null : (this.tokenToId(tok) ?? null));
    this.eosToken = tokenContent(this.config.eos_token);
    this.eosTokenId = idOf(this.eosToken);
    this.bosToken = tokenContent(this.config.bos_token);
    this.bosTokenId = idOf(this.bosToken);
    this.padToken = tokenContent(this.config.pad_token);
    this.padTokenId = idOf(this.padToken);

    // BOS/EOS as transformers adds them: Llama-style tokenizers say so with add_bos_token /
    // add_eos_token in tokenizer_config.json (and transformers rebuilds the post-processor from
    // them); otherwise tokenizer.json's TemplateProcessing post-processor decides (Llama 3).
    const fromTemplate = templateSpecialTokens((tokenizerJson as { post_processor?: unknown }).post_processor);
    const idsOf = (tokens: string[], what: string): number[] =>
      tokens.map((t) => {
        const id = this.tokenToId(t);
        if (id === undefined)
          throw new Error(`QwenTokenizer: ${source}: the ${what} token ${JSON.stringify(t)} is not in the vocabulary`);
        return id;
      });
    const addBos = this.config.add_bos_token;
    const addEos = this.config.add_eos_token;
    this.prefixIds =
      typeof addBos === 'boolean'
        ? addBos
          ? idsOf([this.bosToken ?? bad('bos_token', 'set when add_bos_token is true', null)], 'bos')
          : []
        : idsOf(fromTemplate.prefix, 'post-processor');
    this.suffixIds =
      typeof addEos === 'boolean'
        ? addEos
          ? idsOf([this.eosToken ?? bad('eos_token', 'set when add_eos_token is true', null)], 'eos')
          : []
        : idsOf(fromTemplate.suffix, 'post-processor');
    if (this.chatTemplate !== null) this.probeChatTemplate(configFile);
  }

  /**
   * Render a one-message conversation now, at load: a template that does not parse, fails or leaves
   * the message out (an undefined variable renders as nothing) is found here, naming the file,
   * rather than at the first chat with Jinja's internal message. Also bounds what the template
   * does on its own (a loop over range(1000000000) is stopped here).
   */
  private probeChatTemplate(configFile: string): void {
    const probe = 'Hello from qwen-ts';
    let text: string;
    try {
      text = this.applyChatTemplate([{ role: 'user', content: probe }], { addGenerationPrompt: true });
    } catch (err) {
      throw new Error(
        `QwenTokenizer: ${configFile}: field "chat_template" fails on a one-message conversation: ${(err as Error).message}`,
      );
    }
    if (!text.includes(probe))
      throw new Error(
        `QwenTokenizer: ${configFile}: field "chat_template" leaves the message out of a one-message conversation (it renders ${JSON.stringify(text.slice(0, 80))}): does it read a variable that is not set? Templates get messages, add_generation_prompt, tools and the special tokens`,
      );
  }

  /**
   * Check the tokenizer against the model's vocab_size (from `configFile`): a token id past it
   * would index past the embedding matrix at the first generate.
   */
  checkModelVocab(vocabSize: number, configFile: string): void {
    if (this.vocabSize <= vocabSize) return;
    const id = this.vocabSize - 1;
    const token = this.idToToken(id);
    throw new Error(
      `QwenTokenizer: ${this.source}: token ${JSON.stringify(token)} has id ${id}, past field "vocab_size" ${vocabSize} of ${configFile}: the tokenizer and the weights are not of the same model`,
    );
  }

  /** Loads tokenizer.json and tokenizer_config.json from a model directory. */
  static async fromDir(dir: string): Promise<QwenTokenizer> {
    const files = QwenTokenizer.readFiles(dir);
    return new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source);
  }

  /** tokenizer.json and tokenizer_config.json of a model directory, parsed and checked. */
  static readFiles(dir: string): TokenizerFiles {
    const tokenizerPath = joinPath(dir, 'tokenizer.json');
    const configPath = joinPath(dir, 'tokenizer_config.json');
    const tokenizerJson = readJsonSync(tokenizerPath);
    const config = readJsonSync(configPath);
    if (tokenizerJson === null || typeof tokenizerJson !== 'object' || !('model' in tokenizerJson)) {
      throw new Error(`QwenTokenizer: ${tokenizerPath} is not a tokenizer.json (no "model" key)`);
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new Error(`QwenTokenizer: ${configPath} must contain a JSON object`);
    }
    return { tokenizerJson, tokenizerConfig: config, source: tokenizerPath };
  }

  /**
   * What a tokenizer that only decodes needs, as JSON text (for another thread): the files without
   * the BPE merges, which only encoding uses and which are most of the cost of building one.
   */
  static decodingFiles(files: TokenizerFiles): string {
    const model = (files.tokenizerJson as { model?: { type?: unknown; merges?: unknown } }).model;
    const slim =
      model?.type === 'BPE' && Array.isArray(model.merges)
        ? { ...files.tokenizerJson, model: { ...model, merges: [] } }
        : files.tokenizerJson;
    return JSON.stringify({ tokenizerJson: slim, tokenizerConfig: files.tokenizerConfig, source: files.source });
  }

  /**
   * A tokenizer from decodingFiles(): decode, ids and special tokens as the whole one; its first
   * encode() (bad_words) reads and builds the whole tokenizer from the source folder.
   */
  static forDecoding(decodingFiles: string): QwenTokenizer {
    const files = JSON.parse(decodingFiles) as TokenizerFiles;
    return new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source, true);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError('QwenTokenizer.encode: text must be a string');
    if (this.decodingOnly) return this.wholeTokenizer().encode(text, opts);
    // The post-processor's own special tokens are replaced by prefixIds/suffixIds (the same ones,
    // unless tokenizer_config.json's add_bos_token / add_eos_token say otherwise).
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    if (opts.addSpecialTokens === false) return ids;
    // A text that already starts with the BOS (written out, e.g. "<s>Once") does not get a second one.
    const hasPrefix = this.prefixIds.length > 0 && this.prefixIds.every((id, i) => ids[i] === id);
    return [...(hasPrefix ? [] : this.prefixIds), ...ids, ...this.suffixIds];
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    // Unknown ids (e.g. the padding rows 151665..151935 of the logits) are skipped, as the
    // Rust tokenizers library does; the JS library would otherwise emit "null".
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0) {
        throw new RangeError(`QwenTokenizer.decode: ids[${i}] = ${id} is not a valid token id`);
      }
      if (id < this.vocabSize) known.push(id);
    }
    if (known.length === 0) return ''; // the library throws on an empty array
    return this.tok.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  private wholeTokenizer(): QwenTokenizer {
    if (this.whole) return this.whole;
    const files = QwenTokenizer.readFiles(dirnamePath(this.source));
    return (this.whole = new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source));
  }

  /** Token string as stored in the vocab (byte-level form, e.g. "Ġworld"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id) ?? undefined;
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token) ?? undefined;
  }

  isSpecialToken(id: number): boolean {
    return this.specialTokenIds.has(id);
  }

  /** Renders the model's chat template. The special-token strings from the config
   *  (bos_token, eos_token, ...) are available to the template, as in transformers. */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === null)
      throw new ChatTemplateError(
        'chat_template',
        // No folder in the message: the HTTP server passes it on to clients.
        'this model has no chat template (no chat_template in its tokenizer_config.json): it only continues text; give it a plain prompt',
      );
    const extra: Record<string, unknown> = {
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
      pad_token: this.padToken ?? '',
      unk_token: tokenContent(this.config.unk_token) ?? '',
      ...opts.extra,
    };
    return applyChatTemplate(this.chatTemplate, messages, { source: 'tokenizer_config.json', ...opts, extra });
  }
}
