// Which files of a hub repository a model needs: the config, tokenizer and safetensors weights of a
// transformers repository, or the one GGUF named by its quantization tag (all parts of a split file).
import { ModelSourceError } from './errors.js';

/** The small files of a transformers repository that the engine (or its tokenizer) may read. */
export const SMALL_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
];

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const SAFETENSORS_SINGLE = 'model.safetensors';

/** llama.cpp's `-hf` takes this quantization when the name gives none. */
export const DEFAULT_GGUF_TAG = 'Q4_K_M';

const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/i;

export interface GgufChoice {
  /** The file to load: the GGUF, or the first part of a split one. */
  main: string;
  /** Every file to fetch (the parts of a split file, in order). */
  files: string[];
}

/** A quantization tag as it appears in a file name: `Q4_K_M` in `qwen2.5-0.5b-instruct-q4_k_m.gguf`. */
function tagOf(file: string): string {
  const base = file
    .split('/')
    .pop()!
    .replace(SPLIT, '.gguf')
    .replace(/\.gguf$/i, '');
  const m = /(?:^|[-_.])((?:I?Q\d[\w]*|BF16|F16|F32|FP16|FP32))$/i.exec(base);
  return m ? m[1].toUpperCase() : base;
}

function isProjector(file: string): boolean {
  return /(^|\/)mmproj/i.test(file);
}

/**
 * The GGUF of `tag` among a repository's files (case-insensitive, as a whole word of the file name
 * or folder); without a tag, Q4_K_M if present, else (unless `strict`) the only model. Split files
 * (`-00001-of-00003`) are fetched whole and loaded from their first part.
 */
export function chooseGguf(repo: string, files: string[], tag: string | undefined, strict = false): GgufChoice {
  const ggufs = files.filter((f) => f.toLowerCase().endsWith('.gguf') && !isProjector(f)).sort();
  if (ggufs.length === 0) throw new ModelSourceError(`${repo} has no .gguf file`);
  const wanted = (tag ?? DEFAULT_GGUF_TAG).toLowerCase();
  const word = new RegExp(`(^|[-_./])${wanted.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}([-_./]|$)`);
  let matches = ggufs.filter((f) => word.test(f.toLowerCase()));
  if (matches.length === 0 && tag === undefined && !strict) {
    const models = new Set(ggufs.map((f) => f.replace(SPLIT, '.gguf')));
    if (models.size === 1) matches = ggufs;
  }
  const tags = [...new Set(ggufs.map(tagOf))].sort();
  if (matches.length === 0) {
    throw new ModelSourceError(
      tag === undefined
        ? `${repo} holds several GGUF files and none is ${DEFAULT_GGUF_TAG}; name one: ${tags.map((t) => `${repo}:${t}`).join(', ')}`
        : `${repo} has no GGUF file for ${JSON.stringify(tag)}; it has: ${tags.join(', ')} (e.g. ${repo}:${tags[0]})`,
    );
  }
  // One model: a single file, or the parts of one split file. Prefer the shortest name among
  // several (q4_k_m.gguf over q4_k_m-imat.gguf), as the plainest build of the tag.
  const models = new Map<string, string[]>();
  for (const f of matches) {
    const key = f.replace(SPLIT, '.gguf');
    models.set(key, [...(models.get(key) ?? []), f]);
  }
  const key = [...models.keys()].sort((a, b) => a.length - b.length || a.localeCompare(b))[0];
  const parts = models.get(key)!.sort();
  const m = SPLIT.exec(parts[0]);
  if (m) {
    const count = Number(m[2]);
    if (parts.length !== count)
      throw new ModelSourceError(`${repo}: ${key} is split in ${count} parts but the repository has ${parts.length}`);
  }
  return { main: parts[0], files: parts };
}
