// How an embedding model turns the final-norm hidden states of a text into one vector: the
// sentence-transformers files of the model folder (modules.json, 1_Pooling/config.json,
// 2_Normalize, config_sentence_transformers.json), or, without them, the last token's hidden state
// L2-normalised (what Qwen3-Embedding and most decoder embedders use).
import { joinPath, MAX_CONFIG_BYTES, pathKind, readTextFile } from '../platform/files.js';
import { ConfigError, readJsonFile } from './config.js';

/** Which positions make the vector: the last token's, the mean of all, or the first (CLS). */
export type PoolingMode = 'last' | 'mean' | 'cls';

export interface PoolingConfig {
  mode: PoolingMode;
  /** L2-normalise the pooled vector (a 2_Normalize module). */
  normalize: boolean;
  /** Named prompts put before a text (config_sentence_transformers.json `prompts`: query, document). */
  prompts: Record<string, string>;
  /** The prompt used when a request names none (`default_prompt_name`), null: none. */
  defaultPromptName: string | null;
  /** 'sentence-transformers' when read from the folder's files, 'default' otherwise. */
  source: 'sentence-transformers' | 'default';
}

/** What the engine computes for a pooling request instead of sampling a token. */
export type PoolingRequest =
  /** The pooled final-norm hidden state of the prompt [hiddenSize]. */
  | { kind: 'hidden'; mode: PoolingMode }
  /** The logits of `tokenIds` at the prompt's last position (a yes/no reranker). */
  | { kind: 'logits'; tokenIds: number[] };

export const DEFAULT_POOLING: PoolingConfig = {
  mode: 'last',
  normalize: true,
  prompts: {},
  defaultPromptName: null,
  source: 'default',
};

const POOLING_FLAGS: Record<string, PoolingMode | null> = {
  pooling_mode_lasttoken: 'last',
  pooling_mode_mean_tokens: 'mean',
  pooling_mode_cls_token: 'cls',
  pooling_mode_max_tokens: null,
  pooling_mode_mean_sqrt_len_tokens: null,
  pooling_mode_weightedmean_tokens: null,
};

/** The pooling of the model folder `dir`: its sentence-transformers files, else DEFAULT_POOLING. */
export function loadPoolingConfig(dir: string): PoolingConfig {
  const modulesFile = joinPath(dir, 'modules.json');
  const stFile = joinPath(dir, 'config_sentence_transformers.json');
  const config: PoolingConfig = { ...DEFAULT_POOLING, prompts: {} };
  if (pathKind(modulesFile) !== 'missing') {
    config.source = 'sentence-transformers';
    config.normalize = false;
    const modules = readJsonArray(modulesFile);
    modules.forEach((m, i) => {
      const type = typeof m.type === 'string' ? m.type : '';
      const kind = type.split('.').pop();
      if (kind === 'Transformer') return;
      if (kind === 'Normalize') {
        config.normalize = true;
        return;
      }
      if (kind === 'Pooling') {
        const file = joinPath(dir, typeof m.path === 'string' ? m.path : '1_Pooling', 'config.json');
        config.mode = poolingMode(file);
        return;
      }
      throw new ConfigError(
        `${modulesFile}: module [${i}] has type ${JSON.stringify(m.type)}: only Transformer, Pooling and Normalize modules are supported`,
      );
    });
  }
  if (pathKind(stFile) !== 'missing') {
    const json = readJsonFile(stFile);
    const prompts = json.prompts ?? {};
    if (typeof prompts !== 'object' || prompts === null || Array.isArray(prompts))
      throw new ConfigError(
        `${stFile}: field "prompts" must be an object of name: text, got ${JSON.stringify(prompts)}`,
      );
    for (const [name, text] of Object.entries(prompts)) {
      if (typeof text !== 'string')
        throw new ConfigError(`${stFile}: field "prompts.${name}" must be a string, got ${JSON.stringify(text)}`);
      config.prompts[name] = text;
    }
    const def = json.default_prompt_name ?? null;
    if (def !== null && (typeof def !== 'string' || !(def in config.prompts)))
      throw new ConfigError(
        `${stFile}: field "default_prompt_name" is ${JSON.stringify(def)}, which is not one of the prompts (${Object.keys(config.prompts).join(', ') || 'none'})`,
      );
    config.defaultPromptName = def;
  }
  return config;
}

function readJsonArray(file: string): Record<string, unknown>[] {
  let json: unknown;
  try {
    json = JSON.parse(
      readTextFile(file, 'a sentence-transformers modules.json', MAX_CONFIG_BYTES, (problem) => {
        throw new ConfigError(`${file}: ${problem}`);
      }),
    );
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(json) || json.some((m) => typeof m !== 'object' || m === null))
    throw new ConfigError(`${file}: expected a list of modules ({"type": ..., "path": ...})`);
  return json as Record<string, unknown>[];
}

function poolingMode(file: string): PoolingMode {
  if (pathKind(file) === 'missing')
    throw new ConfigError(`${file}: missing; modules.json lists a Pooling module whose config.json is this file`);
  const json = readJsonFile(file);
  const on = Object.keys(POOLING_FLAGS).filter((k) => json[k] === true);
  if (on.length !== 1)
    throw new ConfigError(
      `${file}: exactly one pooling_mode_* field must be true, got ${on.length === 0 ? 'none' : on.join(', ')}`,
    );
  const mode = POOLING_FLAGS[on[0]];
  if (mode === null)
    throw new ConfigError(
      `${file}: field "${on[0]}" is true: supported poolings are pooling_mode_lasttoken, pooling_mode_mean_tokens and pooling_mode_cls_token`,
    );
  if (json.include_prompt === false)
    throw new ConfigError(
      `${file}: field "include_prompt" is false: pooling over the prompt's tokens too is the only one supported`,
    );
  return mode;
}

/**
 * Fold the hidden state of the prompt's position `pos` (of `length`) at hidden[off..off+size) into
 * `acc`: the last or first position is kept, every position is summed for the mean.
 */
export function poolRow(
  acc: Float64Array,
  mode: PoolingMode,
  hidden: Float32Array,
  off: number,
  pos: number,
  length: number,
): void {
  const size = acc.length;
  if (mode === 'mean') {
    for (let i = 0; i < size; i++) acc[i] += hidden[off + i];
  } else if ((mode === 'last' && pos === length - 1) || (mode === 'cls' && pos === 0)) {
    for (let i = 0; i < size; i++) acc[i] = hidden[off + i];
  }
}

/** The pooled vector once every position was folded in: the mean divides by the length. */
export function finishPooling(acc: Float64Array, mode: PoolingMode, length: number): Float64Array {
  if (mode === 'mean') for (let i = 0; i < acc.length; i++) acc[i] /= length;
  return acc;
}

/** The first `dimensions` values (Matryoshka truncation), L2-normalised when `normalize`. */
export function finishEmbedding(pooled: ArrayLike<number>, dimensions: number, normalize: boolean): number[] {
  const out = Array.from({ length: dimensions }, (_, i) => pooled[i]);
  if (!normalize) return out;
  let sum = 0;
  for (const v of out) sum += v * v;
  // As torch.nn.functional.normalize: a zero vector stays zero.
  const scale = 1 / Math.max(Math.sqrt(sum), 1e-12);
  return out.map((v) => v * scale);
}
