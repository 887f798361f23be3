// `qwen-ts generate`: complete one prompt (or answer it as a chat message), streaming to stdout.
import type { ChatMessage } from '../tokenizer/index.js';
import {
  CliError,
  HELP_OPTION,
  MODEL_HELP,
  MODEL_OPTIONS,
  SAMPLING_HELP,
  SAMPLING_OPTIONS,
  modelArgsFrom,
  parseCommandArgs,
  samplingParamsFrom,
} from './args.js';
import { checkDemoPrompt, dim, loadLLM, note, statsLine } from './common.js';

export const GENERATE_USAGE =
  'usage: qwen-ts generate [--model NAME] [--chat] [--system TEXT] [--json] [sampling options] "prompt"';

export const GENERATE_HELP = `${GENERATE_USAGE}

Complete the prompt and stream the text to stdout; a stats line (tokens, finish reason, time to
first token, prefill and decode speed) goes to stderr. With --chat, the model's chat template is
applied to the prompt as a user message. Without a prompt argument (or with "-"), the prompt is
read from stdin. Ctrl-C stops the generation.

Options:
      --chat                 answer the prompt as a user message (chat template)
      --system TEXT          system message (implies --chat)
      --json                 print the whole result (RequestOutput) as JSON when done, instead of streaming
  -h, --help                 this help

${MODEL_HELP}

${SAMPLING_HELP}

Examples:
  qwen-ts generate --temperature 0 "Once upon a time"        (the bundled stories260K demo model)
  qwen-ts generate --model ./Qwen2.5-0.5B-Instruct --chat --temperature 0 "What is 2+2?"
  qwen-ts generate --model ./Qwen3-0.6B --chat "跟我讲讲股市运行的逻辑"
  qwen-ts generate --preset qwen2.5-0.5b --max-tokens 32 --seed 1 "Hello"   (synthetic, for speed)
`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export async function runGenerate(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      ...HELP_OPTION,
      chat: { type: 'boolean' },
      system: { type: 'string' },
      json: { type: 'boolean' },
      ...MODEL_OPTIONS,
      ...SAMPLING_OPTIONS,
    },
    GENERATE_USAGE,
    true,
  );
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  const params = samplingParamsFrom(values);
  const modelArgs = modelArgsFrom(values);
  const system = values.system as string | undefined;
  const chat = values.chat === true || system !== undefined;

  let prompt: string;
  if (positionals.length === 0 || (positionals.length === 1 && positionals[0] === '-')) {
    if (positionals.length === 0 && process.stdin.isTTY)
      throw new CliError('a prompt is needed, e.g. qwen-ts generate "Once upon a time"', 2, GENERATE_USAGE);
    prompt = await readStdin();
  } else {
    prompt = positionals.join(' ');
  }
  if (prompt === '' && !chat) throw new CliError('the prompt is empty', 2, GENERATE_USAGE);

  checkDemoPrompt(modelArgs, `${system ?? ''}${prompt}`);
  const llm = await loadLLM(modelArgs);
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    controller.abort();
    process.stderr.write(`\n${dim('(stopping; Ctrl-C again to quit at once)')}\n`);
  };
  const onStdoutError = (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    controller.abort(); // the reader went away (e.g. | head): stop quietly
  };
  process.on('SIGINT', onSigint);
  process.stdout.on('error', onStdoutError);
  try {
    const messages: ChatMessage[] = [];
    if (system !== undefined) messages.push({ role: 'system', content: system });
    messages.push({ role: 'user', content: prompt });
    if (chat && llm.tokenizer.chatTemplate === null)
      throw new CliError(
        `--chat: this model has no chat template (${modelArgs.model ?? 'the bundled stories260K demo model'} only continues text); leave out --chat/--system, or give --model a chat model`,
      );
    const input = chat ? llm.encodeChat(messages) : llm.encodePrompt(prompt);
    const { promptTokenIds } = input;

    if (values.json || params.promptLogprobs !== undefined) {
      const [result] = await llm.generate(input, params, { signal: controller.signal, progressBar: false });
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      process.stderr.write(dim(statsLine(result.promptTokenIds.length, result.outputs[0], result.metrics)) + '\n');
      return controller.signal.aborted ? 130 : 0;
    }

    let stats = '';
    try {
      for await (const delta of llm.stream({ promptTokenIds }, params, {
        signal: controller.signal,
        onFinish: (output, metrics) => (stats = statsLine(promptTokenIds.length, output, metrics)),
      })) {
        if (!process.stdout.writableEnded) process.stdout.write(delta);
      }
    } catch (e) {
      if (!controller.signal.aborted) throw e; // Ctrl-C: the text so far and the stats, exit 130
    }
    if (process.stdout.isTTY) process.stdout.write('\n');
    process.stderr.write(dim(stats) + '\n');
    return interrupts > 0 ? 130 : 0;
  } catch (e) {
    // A prompt longer than the context: a user error, not a crash.
    if (e instanceof RangeError && /does not fit/.test(e.message)) {
      note(e.message);
      return 2;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
    await llm.close();
  }
}
