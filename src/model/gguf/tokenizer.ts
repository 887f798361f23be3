// The tokenizer of a GGUF file, as the tokenizer.json + tokenizer_config.json that
// @huggingface/tokenizers builds from: tokenizer.ggml.model "gpt2" (byte-level BPE: tokens and
// merges, the pre-tokenizer regex named by tokenizer.ggml.pre) or "llama" (SentencePiece: tokens
// with scores, byte fallback; the merges follow from the scores as transformers' LlamaConverter
// derives them). Plain data only: src/engine hands it to QwenTokenizer.
import { GGUF_VALUE, GgufError, type GgufEntry, type GgufModel } from './file.js';

const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;
const TOKEN_UNUSED = 5;
const TOKEN_BYTE = 6;

// The split regexes of the tokenizer.json files these pre-tokenizer names stand for (llama.cpp's
// llama-vocab.cpp maps the same names to its adapted copies).
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (useRegex: boolean) => ({
  type: 'ByteLevel',
  add_prefix_space: false,
  trim_offsets: false,
  use_regex: useRegex,
});
const split = (regex: string) => ({
  type: 'Sequence',
  pretokenizers: [{ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, byteLevel(false)],
});

/** tokenizer.ggml.pre -> [normalizer, pre_tokenizer]. */
const PRE_TOKENIZERS: Record<string, () => [unknown, unknown]> = {
  qwen2: () => [{ type: 'NFC' }, split(QWEN2_REGEX)],
  'deepseek-r1-qwen': () => [{ type: 'NFC' }, split(QWEN2_REGEX)],
  'llama-bpe': () => [null, split(LLAMA3_REGEX)],
  llama3: () => [null, split(LLAMA3_REGEX)],
  'llama-v3': () => [null, split(LLAMA3_REGEX)],
  'gpt-2': () => [null, byteLevel(true)],
};

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

export function ggufTokenizerFiles(g: GgufModel): TokenizerFiles {
  const model = g.string('tokenizer.ggml.model');
  const tokens = g.array<string>('tokenizer.ggml.tokens', [GGUF_VALUE.STRING], 'an array of strings');
  const types = g.has('tokenizer.ggml.token_type')
    ? g.array<number>('tokenizer.ggml.token_type', [GGUF_VALUE.INT32, GGUF_VALUE.UINT32], 'an array of integers')
    : tokens.map(() => TOKEN_NORMAL);
  if (types.length !== tokens.length)
    throw new GgufError(
      `${g.file}: metadata key "tokenizer.ggml.token_type" has ${types.length} entries for ${tokens.length} tokens`,
    );
  const tokenId = (key: string): number | null => {
    if (!g.has(key)) return null;
    const id = g.uint(key);
    if (id >= tokens.length)
      throw new GgufError(
        `${g.file}: metadata key "${key}" is ${id}, past the ${tokens.length} tokens of tokenizer.ggml.tokens`,
      );
    return id;
  };
  const bos = tokenId('tokenizer.ggml.bos_token_id');
  const eos = tokenId('tokenizer.ggml.eos_token_id');
  const unk = tokenId('tokenizer.ggml.unknown_token_id');
  const pad = tokenId('tokenizer.ggml.padding_token_id');
  const text = (id: number | null) => (id === null ? null : tokens[id]);

  // Control and user-defined tokens are matched in the text before the model runs (HF's added tokens).
  const added: Record<string, unknown>[] = [];
  for (let id = 0; id < tokens.length; id++) {
    const t = types[id];
    if (t === TOKEN_CONTROL || t === TOKEN_USER_DEFINED || (t === TOKEN_UNKNOWN && model === 'llama'))
      added.push({
        id,
        content: tokens[id],
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: t !== TOKEN_USER_DEFINED,
      });
  }

  let tokenizerJson: Record<string, unknown>;
  let addBosDefault: boolean;
  if (model === 'gpt2') {
    const merges = g.array<string>('tokenizer.ggml.merges', [GGUF_VALUE.STRING], 'an array of strings ("left right")');
    const pre = g.string('tokenizer.ggml.pre', 'default');
    const make = PRE_TOKENIZERS[pre];
    if (make === undefined)
      throw new GgufError(
        `${g.file}: metadata key "tokenizer.ggml.pre" is "${pre}"; supported pre-tokenizers: ${Object.keys(PRE_TOKENIZERS).join(', ')}`,
      );
    const [normalizer, preTokenizer] = make();
    const vocab: Record<string, number> = {};
    for (let id = 0; id < tokens.length; id++) {
      const t = types[id];
      if (t === TOKEN_NORMAL || t === TOKEN_BYTE || t === TOKEN_UNKNOWN) vocab[tokens[id]] = id;
    }
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer,
      pre_tokenizer: preTokenizer,
      post_processor: byteLevel(false),
      decoder: byteLevel(false),
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: '',
        end_of_word_suffix: '',
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges,
      },
    };
    addBosDefault = false;
  } else if (model === 'llama') {
    const scores = g.array<number>('tokenizer.ggml.scores', [GGUF_VALUE.FLOAT32], 'an array of float32');
    if (scores.length !== tokens.length)
      throw new GgufError(
        `${g.file}: metadata key "tokenizer.ggml.scores" has ${scores.length} entries for ${tokens.length} tokens`,
      );
    const vocab: Record<string, number> = {};
    for (let id = 0; id < tokens.length; id++) if (types[id] !== TOKEN_UNUSED) vocab[tokens[id]] = id;
    const addSpacePrefix = g.bool('tokenizer.ggml.add_space_prefix', true);
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: {
        type: 'Sequence',
        normalizers: [
          ...(addSpacePrefix ? [{ type: 'Prepend', prepend: '\u2581' }] : []),
          { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
        ],
      },
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: text(unk) ?? '<unk>',
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: sentencePieceMerges(tokens, scores, types),
      },
    };
    addBosDefault = true;
  } else {
    throw new GgufError(
      `${g.file}: metadata key "tokenizer.ggml.model" is "${model}"; supported: gpt2 (byte-level BPE), llama (SentencePiece)`,
    );
  }
  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: g.bool('tokenizer.ggml.add_bos_token', addBosDefault && bos !== null),
    add_eos_token: g.bool('tokenizer.ggml.add_eos_token', false),
    bos_token: text(bos),
    eos_token: text(eos),
    pad_token: text(pad),
    unk_token: text(unk),
  };
  if (g.has('tokenizer.chat_template')) tokenizerConfig.chat_template = g.string('tokenizer.chat_template');
  return { tokenizerJson, tokenizerConfig };
}

/**
 * BPE merges of a SentencePiece vocabulary (transformers' SentencePieceExtractor): every split of a
 * piece into two pieces of the vocabulary, ordered by the merged piece's score, best first.
 */
function sentencePieceMerges(tokens: string[], scores: number[], types: number[]): [string, string][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (types[id] === TOKEN_NORMAL || types[id] === TOKEN_USER_DEFINED) ids.set(t, id);
  });
  const merges: { left: string; right: string; score: number; l: number; r: number; lLen: number; rLen: number }[] = [];
  for (const [piece, id] of ids) {
    const chars = Array.from(piece);
    const local: typeof merges = [];
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      const l = ids.get(left);
      const r = ids.get(right);
      if (l !== undefined && r !== undefined)
        local.push({ left, right, score: scores[id], l, r, lLen: k, rLen: chars.length - k });
    }
    local.sort((a, b) => a.l - b.l || a.r - b.r);
    merges.push(...local);
  }
  // Python's stable sort on (score, len(left), len(right)), reverse=True.
  const order = merges.map((m, i) => ({ m, i }));
  order.sort((a, b) => b.m.score - a.m.score || b.m.lLen - a.m.lLen || b.m.rLen - a.m.rLen || a.i - b.i);
  return order.map(({ m }) => [m.left, m.right]);
}

/**
 * The inverse, for `convert`: tokenizer.json + tokenizer_config.json -> the tokenizer.ggml.* keys
 * convert_hf_to_gguf writes. Byte-fallback BPE (SentencePiece-style, Llama 2) becomes "llama" with
 * scores -id (earlier pieces merge first); byte-level BPE becomes "gpt2" with its merges, and the
 * pre-tokenizer named by its split regex. Ids up to `vocabSize` that the tokenizer lacks are [PADn].
 */
export function tokenizerMetadata(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown>,
  vocabSize: number,
  source: string,
): [string, GgufEntry][] {
  const model = tokenizerJson.model as {
    type?: string;
    vocab?: Record<string, number>;
    merges?: unknown[];
    byte_fallback?: boolean;
  };
  if (model?.type !== 'BPE' || model.vocab === undefined)
    throw new GgufError(
      `${source}: only BPE tokenizers convert to GGUF (model.type is ${JSON.stringify(model?.type)})`,
    );
  const added = new Map<number, { content: string; special?: boolean }>();
  for (const a of (tokenizerJson.added_tokens ?? []) as { id: number; content: string; special?: boolean }[])
    added.set(a.id, a);
  const byId = new Map<number, string>();
  for (const [t, id] of Object.entries(model.vocab)) byId.set(id, t);
  for (const [id, a] of added) byId.set(id, a.content);
  let count = vocabSize;
  for (const id of byId.keys()) count = Math.max(count, id + 1);
  const tokens: string[] = [];
  const types: number[] = [];
  const scores: number[] = [];
  const spm = model.byte_fallback === true;
  for (let id = 0; id < count; id++) {
    const t = byId.get(id);
    const a = added.get(id);
    if (t === undefined) {
      tokens.push(`[PAD${id}]`);
      types.push(TOKEN_UNUSED);
      scores.push(-1e9);
    } else if (a !== undefined) {
      tokens.push(t);
      const looksSpecial = t.startsWith('<|') && t.endsWith('|>');
      types.push(a.special || (!spm && looksSpecial) ? TOKEN_CONTROL : TOKEN_USER_DEFINED);
      scores.push(0);
    } else if (spm && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) {
      tokens.push(t);
      types.push(TOKEN_BYTE);
      scores.push(0);
    } else {
      tokens.push(t);
      types.push(TOKEN_NORMAL);
      scores.push(-id);
    }
  }
  const content = (v: unknown) =>
    typeof v === 'string'
      ? v
      : v !== null && typeof v === 'object'
        ? ((v as { content?: string }).content ?? null)
        : null;
  const idOf = (field: string): number | null => {
    const c = content(tokenizerConfig[field]);
    if (c === null) return null;
    const i = tokens.indexOf(c);
    return i >= 0 ? i : null;
  };
  const meta: [string, GgufEntry][] = [];
  if (spm) {
    meta.push(['tokenizer.ggml.model', { type: GGUF_VALUE.STRING, value: 'llama' }]);
    meta.push(['tokenizer.ggml.pre', { type: GGUF_VALUE.STRING, value: 'default' }]);
  } else {
    const pre = JSON.stringify(tokenizerJson.pre_tokenizer ?? null);
    const name = pre.includes(JSON.stringify(QWEN2_REGEX).slice(1, -1))
      ? 'qwen2'
      : pre.includes(JSON.stringify(LLAMA3_REGEX).slice(1, -1))
        ? 'llama-bpe'
        : pre.includes('"use_regex":true')
          ? 'gpt-2'
          : null;
    if (name === null)
      throw new GgufError(
        `${source}: its pre_tokenizer is none that GGUF names (qwen2, llama-bpe, gpt-2); cannot convert`,
      );
    meta.push(['tokenizer.ggml.model', { type: GGUF_VALUE.STRING, value: 'gpt2' }]);
    meta.push(['tokenizer.ggml.pre', { type: GGUF_VALUE.STRING, value: name }]);
  }
  meta.push(['tokenizer.ggml.tokens', { type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.STRING, value: tokens }]);
  if (spm)
    meta.push(['tokenizer.ggml.scores', { type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.FLOAT32, value: scores }]);
  meta.push(['tokenizer.ggml.token_type', { type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.INT32, value: types }]);
  if (!spm) {
    const merges = (model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
    meta.push(['tokenizer.ggml.merges', { type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.STRING, value: merges }]);
  }
  for (const [field, key] of [
    ['bos_token', 'bos_token_id'],
    ['eos_token', 'eos_token_id'],
    ['unk_token', 'unknown_token_id'],
    ['pad_token', 'padding_token_id'],
  ]) {
    const id = idOf(field);
    if (id !== null) meta.push([`tokenizer.ggml.${key}`, { type: GGUF_VALUE.UINT32, value: id }]);
  }
  if (spm) meta.push(['tokenizer.ggml.add_space_prefix', { type: GGUF_VALUE.BOOL, value: true }]);
  for (const field of ['add_bos_token', 'add_eos_token'])
    if (typeof tokenizerConfig[field] === 'boolean')
      meta.push([`tokenizer.ggml.${field}`, { type: GGUF_VALUE.BOOL, value: tokenizerConfig[field] as boolean }]);
  const template = tokenizerConfig.chat_template;
  if (typeof template === 'string')
    meta.push(['tokenizer.chat_template', { type: GGUF_VALUE.STRING, value: template }]);
  return meta;
}
