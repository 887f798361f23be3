// What `generate` and `chat` share: finding and loading the model, and the stats line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LLM } from '../engine/llm.js';
import type { CompletionOutput, RequestMetrics } from '../engine/request.js';
import { CliError, type ModelArgs } from './args.js';
import { assetPath } from '../package-root.js';
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

/** The model folder: --model, a synthetic model for --preset (made on first use), else the bundled demo model. */
export function resolveModelDir(args: ModelArgs): string {
  if (args.model !== undefined) {
    const dir = path.resolve(args.model);
    if (isGgufPath(dir)) {
      if (!fs.existsSync(dir)) throw new CliError(`--model: ${args.model} does not exist`);
      return dir; // a GGUF file: config, tokenizer and weights inside
    }
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
      throw new CliError(`--model: ${args.model} is not a folder`);
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      throw new CliError(
        `--model: ${args.model} has no config.json (expected a Hugging Face Qwen2/Qwen2.5 model folder)`,
      );
    }
    return dir;
  }
  if (args.preset === undefined) {
    const dir = assetPath(DEMO_MODEL);
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
  const r = ensureSyntheticModel(preset, {
    onMaking: (dir) => {
      announce(dir);
      note('making it now (first use; later runs reuse it) ...');
    },
  });
  announce(r.dir);
  if (r.made) note(`made the synthetic model in ${seconds(r.seconds)}`);
  return r.dir;
}

export async function loadLLM(args: ModelArgs): Promise<LLM> {
  const dir = resolveModelDir(args);
  const t0 = performance.now();
  let llm: LLM;
  try {
    llm = await LLM.load(dir, args.load);
  } catch (e) {
    // A load option out of the model's range (e.g. --context-length above max_position_embeddings).
    const m = e instanceof RangeError ? /option contextLength (must .*)$/.exec(e.message) : null;
    if (m) throw new CliError(`--context-length ${m[1]}`);
    throw e;
  }
  note(
    `loaded ${dir} (${llm.model.weights.description ?? llm.model.weights.format}, ${llm.model.threads} thread${llm.model.threads === 1 ? '' : 's'}) in ${seconds((performance.now() - t0) / 1000)}`,
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
  return `[${parts.join(' | ')}]`;
}
