// `qwen-ts perplexity --model M FILE [--ctx 512]`: perplexity of a text file, as llama.cpp's
// llama-perplexity computes and prints it (windows of ctx tokens, the second half of each scored).
import * as fs from 'node:fs';
import { perplexity, PerplexityInputError } from '../engine/perplexity.js';
import { ProgressLine } from '../platform/progress.js';
import {
  CliError,
  HELP_OPTION,
  MODEL_HELP,
  MODEL_OPTIONS,
  modelArgsFrom,
  parseCommandArgs,
  parseNumber,
} from './args.js';
import { loadLLM } from './common.js';

export const PERPLEXITY_USAGE = 'usage: qwen-ts perplexity [--model NAME] [--ctx N] [--weights FORMAT] FILE';

export const PERPLEXITY_HELP = `${PERPLEXITY_USAGE}

Perplexity of the model on a text file, as llama.cpp's llama-perplexity computes it: the file's
tokens cut into windows of --ctx tokens (BOS first in each when the model adds BOS), each read
from an empty cache, the second half of each scored. Prints the running estimate after each window
("[3]12.3456,") and "Final estimate: PPL = x +/- y" (the standard error). The file needs at least
2 * ctx tokens. Compare weight formats with --weights q8_0, q4_k, ...

Options:
      --ctx N     tokens per window (default 512; at most the model's context length)
  -h, --help      this help

${MODEL_HELP}

Example:
  qwen-ts perplexity --ctx 128 test/fixtures/stories260K/perplexity-stories.txt   (the demo model)
`;

export async function runPerplexity(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { ...HELP_OPTION, ctx: { type: 'string', short: 'c' }, ...MODEL_OPTIONS },
    PERPLEXITY_USAGE,
    true,
  );
  if (values.help) {
    process.stdout.write(PERPLEXITY_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new CliError('perplexity: give one text file', 2, PERPLEXITY_USAGE);
  const file = positionals[0];
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new CliError(`perplexity: ${file} does not exist`);
  }
  if (!stat.isFile()) throw new CliError(`perplexity: ${file} is not a file`);
  let ctx = 512;
  if (typeof values.ctx === 'string') {
    ctx = parseNumber(values.ctx);
    if (!Number.isInteger(ctx) || ctx < 4)
      throw new CliError(`--ctx must be an integer of at least 4, got ${JSON.stringify(values.ctx)}`);
  }
  const text = fs.readFileSync(file, 'utf8');
  const llm = await loadLLM(modelArgsFrom(values));
  const line = new ProgressLine('perplexity', { prefix: 'qwen-ts: ' });
  const t0 = performance.now();
  try {
    const tokens = await llm.tokenize(text);
    process.stderr.write(
      `qwen-ts: ${file}: ${tokens.length} tokens, ${Math.floor(tokens.length / ctx)} windows of ${ctx}\n`,
    );
    const r = await perplexity(
      llm,
      tokens,
      {
        ctx,
        onChunk: (c) => {
          line.end();
          process.stdout.write(
            `[${c.chunk}]${c.ppl.toFixed(4)} +/- ${c.error.toFixed(5)}${c.chunk === c.chunks ? '\n' : ', '}`,
          );
          const s = (performance.now() - t0) / 1000;
          line.update(
            0,
            0,
            `perplexity ${c.chunk}/${c.chunks} windows, ${((s / c.chunk) * (c.chunks - c.chunk)).toFixed(0)} s left`,
          );
        },
      },
      file,
    );
    line.end();
    process.stdout.write(`Final estimate: PPL = ${r.ppl.toFixed(4)} +/- ${r.error.toFixed(5)}\n`);
    process.stderr.write(
      `qwen-ts: ${r.chunks} windows of ${r.ctx} tokens, ${r.scoredTokens} scored, in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
    );
    return 0;
  } catch (e) {
    if (e instanceof PerplexityInputError) throw new CliError(`perplexity: ${e.message}`);
    throw e;
  } finally {
    line.end();
    await llm.close();
  }
}
