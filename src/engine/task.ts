// What a loaded model is for, as vLLM's --task / runner: 'generate' (text), 'embed' (vectors,
// LLM.embed, /v1/embeddings) or 'score' (a yes/no reranker, LLM.score, /v1/rerank). Given as the
// load option `task`, or read from the folder: a checkpoint without an output head, a bare
// decoder (architectures ["Qwen3Model"]) or a sentence-transformers folder (modules.json) embeds;
// a folder whose name says Reranker (Qwen3-Reranker-0.6B) scores; anything else generates.
import { joinPath, pathKind } from '../platform/files.js';
import type { ModelConfig } from '../model/config.js';

export type ModelTask = 'generate' | 'embed' | 'score';

export const MODEL_TASKS: readonly ModelTask[] = ['generate', 'embed', 'score'];

export class TaskError extends Error {
  override name = 'TaskError';
}

/** The model's task and why: the option when given (checked against what the weights can do), else the folder's. */
export function resolveTask(
  option: unknown,
  name: string,
  source: string,
  config: ModelConfig,
  headless: boolean,
): { task: ModelTask; reason: string } {
  if (option !== undefined) {
    if (!MODEL_TASKS.includes(option as ModelTask))
      throw new TaskError(
        `LLM.load: option task must be one of ${MODEL_TASKS.join(', ')}, got ${JSON.stringify(option)}`,
      );
    if (headless && option !== 'embed')
      throw new TaskError(
        `LLM.load: option task is "${option}", but ${source} has no output head (no lm_head.weight, architectures ${JSON.stringify(config.architectures)}): it can only embed; use task "embed"`,
      );
    return { task: option as ModelTask, reason: 'the task option' };
  }
  if (headless) return { task: 'embed', reason: 'the checkpoint has no output head (lm_head.weight)' };
  const arch = config.architectures ?? [];
  if (arch.length > 0 && arch.every((a) => /Model$/.test(a)))
    return { task: 'embed', reason: `config.json's architectures is ${JSON.stringify(arch)} (a bare decoder)` };
  const isDir = pathKind(source) === 'directory';
  if (isDir && pathKind(joinPath(source, 'modules.json')) !== 'missing')
    return { task: 'embed', reason: 'the folder holds sentence-transformers modules.json' };
  // The name as given (Qwen/Qwen3-Reranker-0.6B) or the folder's (a hub cache's snapshot is a hash).
  const named = [name, ...source.split(/[\\/]/).slice(-3)].find((n) => /reranker/i.test(n));
  if (named !== undefined) return { task: 'score', reason: `the model's name (${named}) says Reranker` };
  return { task: 'generate', reason: 'a causal language model' };
}
