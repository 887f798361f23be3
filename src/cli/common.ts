// What `generate` and `chat` share: finding and loading the model, and the stats line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LLM } from '../engine/llm.js';
import { ModelSourceError, resolveModel, type ResolvedModel } from '../model/sources/index.js';
import { ProgressLine } from '../platform/progress.js';
import type { CompletionOutput, RequestMetrics } from '../engine/request.js';
import { CliError, type ModelArgs } from './args.js';
import { DEMO_MODEL_DIR } from '../package-root.js';
import { ensureSyntheticModel, presetTitle } from './synthetic-cache.js';
import { isGgufPath } from '../model/gguf/file.js';

/** Diagnostics go to stderr, prefixed like every CLI message. */
export function note(message: string): void {
  process.stderr.write(`qwen-ts: ${message}\n`);
}

/** Dim on a terminal (unless NO_COLOR), plain otherwise. */
export function dim(text: string): string {
  return process.stderr.isTTY && !process.env.NO_COLOR ? `\x1b[2m${text}\x1b[0m` : text;
}

const seconds = (s: number) => `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;

/** The demo model shipped in the package: llama2.c's stories260K (MIT), a tiny trained story model. */
export const DEMO_MODEL = 'stories260K';

/**
 * --model NAME as a local folder or .gguf file: a path, the Hugging Face cache, Ollama's store, or
 * a hub download (with a progress bar on stderr). Errors become one-line CLI errors.
 */
export async function resolveModelArg(model: string, revision?: string): Promise<ResolvedModel> {
  let found: ResolvedModel;
  try {
    found = await resolveModel(model, { revision });
  } catch (e) {
    if (e instanceof ModelSourceError) throw new CliError(`--model: ${e.message}`, e.userError ? 2 : 1);
    throw e;
  }
  if (found.source === 'hub' || found.source === 'hf-cache' || found.source === 'ollama')
    note(
      `${model}: ${found.path}${found.source === 'hub' ? '' : ` (from ${found.source === 'ollama' ? "Ollama's store" : 'the Hugging Face cache'})`}`,
    );
  return found;
}

/** The model folder: --model, a synthetic model for --preset (made on first use), else the bundled demo model. */
export async function resolveModelDir(args: ModelArgs): Promise<string> {
  return (await resolveModelSource(args)).dir;
}

/** The model folder (or .gguf file) and its name: a hub or Ollama name as given, else the folder's name. */
export async function resolveModelSource(args: ModelArgs): Promise<{ dir: string; name: string }> {
  if (args.model !== undefined) {
    const found = await resolveModelArg(args.model, args.revision);
    if (found.format === 'safetensors' && !isFile(path.join(found.path, 'config.json'))) {
      throw new CliError(
        `--model: ${args.model} has no config.json (expected a Hugging Face Qwen2/Qwen2.5 model folder)`,
      );
    }
    return { dir: found.path, name: found.name };
  }
  return { dir: builtInModelDir(args), name: '' };
}

function builtInModelDir(args: ModelArgs): string {
  if (args.preset === undefined) {
    const dir = DEMO_MODEL_DIR;
    note(`no --model given: using the bundled ${DEMO_MODEL} demo model (a 260K-parameter story model, MIT, llama2.c)`);
    return dir;
  }
  const preset = args.preset;
  let announced = false;
  const announce = (dir: string) => {
    if (announced) return;
    announced = true;
    note(
      `--preset ${preset}: using a synthetic ${presetTitle(preset)} with random weights (its text is meaningless) at ${dir}`,
    );
  };
  const line = new ProgressLine('making the model', { prefix: 'qwen-ts: ' });
  const r = ensureSyntheticModel(preset, {
    onMaking: (dir) => {
      announce(dir);
      note('making it now (first use; later runs reuse it) ...');
    },
    onProgress: (done, total) => (done < total ? line.update(done, total) : line.end()),
  });
  announce(r.dir);
  if (r.made) note(`made the synthetic model in ${seconds(r.seconds)}`);
  return r.dir;
}

/**
 * The demo model knows only English children's stories (a 512-token vocabulary): say so when a
 * prompt is written in another script, rather than let it answer with meaningless text.
 */
export function checkDemoPrompt(args: ModelArgs, text: string): void {
  if (
    args.model !== undefined ||
    args.preset !== undefined ||
    !/[^\p{Script=Latin}\p{Script=Common}\p{Script=Inherited}]/u.test(text)
  )
    return;
  note(
    `the ${DEMO_MODEL} demo model knows only English (tiny children's stories): its answer to this prompt will be meaningless; give --model a Qwen2.5 or Qwen3 folder for other languages`,
  );
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export async function loadLLM(args: ModelArgs): Promise<LLM> {
  const dir = await resolveModelDir(args);
  const t0 = performance.now();
  // On a terminal, a line with the bytes, rate and time left; elsewhere one quiet line after a second.
  const line = new ProgressLine('loading', { prefix: 'qwen-ts: ' });
  let llm: LLM;
  try {
    llm = await LLM.load(dir, {
      ...args.load,
      onProgress: (p) => line.update(p.doneBytes, p.totalBytes, `loading ${p.stage}`, p.stage === 'tokenizer'),
    });
  } catch (e) {
    // A load option out of the model's range (e.g. --context-length above max_position_embeddings).
    const m = e instanceof RangeError ? /option contextLength (must .*)$/.exec(e.message) : null;
    if (m) throw new CliError(`--context-length ${m[1]}`);
    throw e;
  } finally {
    line.end();
  }
  note(
    `loaded ${dir} (${llm.model.weights.format}, ${llm.model.threads} thread${llm.model.threads === 1 ? '' : 's'}) in ${seconds((performance.now() - t0) / 1000)}`,
  );
  return llm;
}

/** `[62 prompt tokens, 64 generated (length) | TTFT 1.23 s | prefill 55.1 tok/s | decode 6.2 tok/s]` */
export function statsLine(promptTokens: number, output: CompletionOutput, metrics: RequestMetrics): string {
  const n = output.tokenIds.length;
  const parts = [
    `${promptTokens} prompt token${promptTokens === 1 ? '' : 's'}, ${n} generated (${output.finishReason})`,
    `TTFT ${n > 0 ? seconds(metrics.timeToFirstToken) : '-'}`,
    `prefill ${n > 0 ? metrics.prefillTokensPerSec.toFixed(1) : '-'} tok/s`,
    `decode ${n > 1 ? metrics.decodeTokensPerSec.toFixed(1) : '-'} tok/s`,
  ];
  if (metrics.specDraftTokens > 0)
    parts.push(
      `accepted ${metrics.specAcceptedTokens}/${metrics.specDraftTokens} proposed (${((100 * metrics.specAcceptedTokens) / metrics.specDraftTokens).toFixed(0)}%)`,
    );
  return `[${parts.join(' | ')}]`;
}
