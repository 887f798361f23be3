// QwenTokenizer: a thin, typed wrapper around @huggingface/tokenizers for Qwen2.5.
//
// Qwen2.5 is a byte-level BPE (GPT-2 style) with an NFC normalizer, a custom pre-tokenizer
// regex (digits are split one by one) and 22 "added tokens" (<|endoftext|>, <|im_start|>, ...).
// @huggingface/tokenizers handles all of that from tokenizer.json; this file adds what the
// engine needs on top: loading from a directory with clear errors, the ids of the special
// tokens from tokenizer_config.json, an empty-safe decode, and the chat template.
// The ids are checked against an independent Python implementation in test/tokenizer.test.ts.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { applyChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';

export interface EncodeOptions {
  /** Let the post-processor add BOS/EOS-style tokens. Qwen has none, so this changes nothing;
   *  kept for API parity with HF. Special tokens written in the text are always recognised. */
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

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`QwenTokenizer: cannot read ${path}: ${(err as Error).message}`);
  }
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

  private readonly tok: HfTokenizer;
  private readonly config: TokenizerConfig;

  constructor(tokenizerJson: object, tokenizerConfig: object) {
    this.tok = new Tokenizer(tokenizerJson, tokenizerConfig) as HfTokenizer;
    this.config = tokenizerConfig as TokenizerConfig;

    const added = (tokenizerJson as { added_tokens?: AddedTokenJson[] }).added_tokens ?? [];
    const addedMap = new Map<string, number>();
    const special = new Set<number>();
    for (const t of added) {
      addedMap.set(t.content, t.id);
      if (t.special) special.add(t.id);
    }
    this.addedTokens = addedMap;
    this.specialTokenIds = special;

    let maxId = -1;
    for (const id of this.tok.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const ct = this.config.chat_template;
    this.chatTemplate = typeof ct === 'string' ? ct : null;

    const idOf = (tok: string | null): number | null => (tok === null ? null : (this.tokenToId(tok) ?? null));
    this.eosToken = tokenContent(this.config.eos_token);
    this.eosTokenId = idOf(this.eosToken);
    this.bosToken = tokenContent(this.config.bos_token);
    this.bosTokenId = idOf(this.bosToken);
    this.padToken = tokenContent(this.config.pad_token);
    this.padTokenId = idOf(this.padToken);
  }

  /** Loads tokenizer.json and tokenizer_config.json from a model directory. */
  static async fromDir(dir: string): Promise<QwenTokenizer> {
    const tokenizerPath = join(dir, 'tokenizer.json');
    const configPath = join(dir, 'tokenizer_config.json');
    const [tokenizerJson, config] = await Promise.all([readJson(tokenizerPath), readJson(configPath)]);
    if (tokenizerJson === null || typeof tokenizerJson !== 'object' || !('model' in tokenizerJson)) {
      throw new Error(`QwenTokenizer: ${tokenizerPath} is not a tokenizer.json (no "model" key)`);
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new Error(`QwenTokenizer: ${configPath} must contain a JSON object`);
    }
    return new QwenTokenizer(tokenizerJson, config);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError('QwenTokenizer.encode: text must be a string');
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    // Unknown ids (e.g. the padding rows 151665..151935 of the logits) are skipped, as the
    // Rust tokenizers library does; the JS library would otherwise emit "null".
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0) {
        throw new RangeError(`QwenTokenizer.decode: ids[${i}] = ${id} is not a valid token id`);
      }
      if (id < this.vocabSize) known.push(id);
    }
    if (known.length === 0) return ''; // the library throws on an empty array
    return this.tok.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false });
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
    if (this.chatTemplate === null) throw new Error('QwenTokenizer: tokenizer_config.json has no chat_template');
    const extra: Record<string, unknown> = {
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
      pad_token: this.padToken ?? '',
      unk_token: tokenContent(this.config.unk_token) ?? '',
      ...opts.extra,
    };
    return applyChatTemplate(this.chatTemplate, messages, { ...opts, extra });
  }
}
