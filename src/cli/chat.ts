// `qwen-ts chat`: an interactive multi-turn conversation. The whole conversation goes through the
// chat template at each turn. Ctrl-C stops an answer (kept, as far as it got, in the history);
// at an empty prompt it prints a hint and a second Ctrl-C quits, as in the node REPL. Without a
// terminal on stdin, each line read is one user turn and the session ends at end of input.
import * as readline from 'node:readline';
import { Writable } from 'node:stream';
import type { LLM } from '../engine/llm.js';
import type { CompletionOutput, RequestMetrics } from '../engine/request.js';
import type { SamplingParams } from '../sampler/params.js';
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
import { dim, loadLLM, note, statsLine } from './common.js';

export const CHAT_USAGE = 'usage: qwen-ts chat [--model DIR] [--system TEXT] [sampling options]';

const COMMANDS = `Commands:
  /reset   forget the conversation (the system message stays)
  /exit    quit (or Ctrl-D)
  /help    this list
Ctrl-C stops an answer; at an empty prompt, Ctrl-C twice quits.`;

export const CHAT_HELP = `${CHAT_USAGE}

Chat with the model in the terminal: each answer streams as it is generated, and the whole
conversation goes through the model's chat template at every turn. When stdin is not a terminal,
each line is one message and the session ends at end of input.

Options:
      --system TEXT          system message
  -h, --help                 this help

${MODEL_HELP}

${SAMPLING_HELP}

${COMMANDS}
`;

/** stdout for readline's echo and prompt, silenced while an answer streams (keys typed then stay in the line). */
class MutableStdout extends Writable {
  muted = false;
  readonly isTTY = true;
  constructor(private target: NodeJS.WriteStream) {
    super();
    target.on('resize', () => this.emit('resize'));
  }
  get columns(): number {
    return this.target.columns;
  }
  get rows(): number {
    return this.target.rows;
  }
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (!this.muted) this.target.write(chunk);
    cb();
  }
}

export async function runChat(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    { ...HELP_OPTION, system: { type: 'string' }, ...MODEL_OPTIONS, ...SAMPLING_OPTIONS },
    CHAT_USAGE,
    false,
  );
  if (values.help) {
    process.stdout.write(CHAT_HELP);
    return 0;
  }
  const params = samplingParamsFrom(values);
  const modelArgs = modelArgsFrom(values);
  const system = values.system as string | undefined;
  const llm = await loadLLM(modelArgs);
  try {
    if (system !== undefined && llm.tokenizer.chatTemplate === null)
      throw new CliError('--system: this model has no chat template, so it cannot take a system message');
    await new ChatSession(llm, params, system).run();
  } finally {
    await llm.close();
  }
  return 0;
}

class ChatSession {
  private readonly tty = process.stdin.isTTY === true;
  private readonly out = new MutableStdout(process.stdout);
  private readonly rl: readline.Interface;
  private messages: ChatMessage[] = [];
  private lines: string[] = [];
  private wake: (() => void) | null = null;
  private closed = false;
  private answering: AbortController | null = null;
  private sigintArmed = false;
  /** No chat template: each line is a text to continue, with no conversation history. */
  private readonly completionOnly: boolean;

  constructor(
    private llm: LLM,
    private params: SamplingParams,
    private system: string | undefined,
  ) {
    this.completionOnly = llm.tokenizer.chatTemplate === null;
    this.reset();
    this.rl = readline.createInterface({
      input: process.stdin,
      output: this.tty ? this.out : undefined,
      terminal: this.tty,
      prompt: '> ',
      historySize: 200,
    });
    this.rl.on('line', (line) => {
      this.lines.push(line);
      this.wake?.();
    });
    this.rl.on('close', () => {
      this.closed = true;
      // Ctrl-D in a terminal quits at once; end of piped input lets the last answer finish.
      if (this.tty) this.answering?.abort();
      this.wake?.();
    });
  }

  private reset(): void {
    this.messages = this.system !== undefined ? [{ role: 'system', content: this.system }] : [];
  }

  private async nextLine(): Promise<string | null> {
    for (;;) {
      if (this.lines.length > 0) return this.lines.shift()!;
      if (this.closed) return null;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = null;
    }
  }

  private prompt(): void {
    if (this.tty && !this.closed) this.rl.prompt();
  }

  /** Ctrl-C: stop the answer; clear a typed line; at an empty prompt, hint, and quit the second time. */
  private onSigint = (): void => {
    if (this.answering) {
      this.answering.abort();
      return;
    }
    if (this.tty && this.rl.line !== '') {
      this.out.muted = true;
      this.rl.write(null, { ctrl: true, name: 'e' });
      this.rl.write(null, { ctrl: true, name: 'u' });
      this.out.muted = false;
      process.stdout.write('\n');
      this.sigintArmed = false;
      this.prompt();
      return;
    }
    if (this.sigintArmed || !this.tty) {
      if (this.tty) process.stdout.write('\n');
      this.rl.close();
      return;
    }
    this.sigintArmed = true;
    process.stdout.write(`\n${dim('(To exit, press Ctrl+C again or Ctrl+D or type /exit)')}\n`);
    this.prompt();
  };

  async run(): Promise<void> {
    this.rl.on('SIGINT', this.onSigint);
    process.on('SIGINT', this.onSigint);
    if (this.completionOnly)
      note(
        'this model has no chat template: each line you type is continued as plain text, without the conversation history (give --model a chat model to chat)',
      );
    if (this.tty)
      process.stderr.write(
        dim('Chat with the model. /help lists the commands; Ctrl-C stops an answer, Ctrl-D quits.') + '\n',
      );
    try {
      this.prompt();
      for (;;) {
        const line = await this.nextLine();
        if (line === null) break;
        this.sigintArmed = false;
        const text = line.trim();
        if (text === '') {
          this.prompt();
          continue;
        }
        if (text.startsWith('/')) {
          if (!this.command(text)) break;
          this.prompt();
          continue;
        }
        await this.answer(line);
        this.prompt();
      }
      if (this.tty && this.closed) process.stdout.write('\n');
    } finally {
      process.off('SIGINT', this.onSigint);
      this.rl.close();
    }
  }

  /** Runs a /command; false to quit. */
  private command(text: string): boolean {
    const name = text.split(/\s+/)[0];
    switch (name) {
      case '/exit':
      case '/quit':
        return false;
      case '/reset':
      case '/clear':
        this.reset();
        process.stderr.write(dim('(conversation cleared)') + '\n');
        return true;
      case '/help':
      case '/?':
        process.stdout.write(COMMANDS + '\n');
        return true;
      default:
        process.stderr.write(`unknown command ${name}; /help lists the commands\n`);
        return true;
    }
  }

  private async answer(userText: string): Promise<void> {
    this.messages.push({ role: 'user', content: userText });
    const controller = new AbortController();
    this.answering = controller;
    this.out.muted = true;
    let text = '';
    let finished: { output: CompletionOutput; metrics: RequestMetrics } | null = null;
    let promptTokens = 0;
    try {
      // A model without a chat template (the stories260K demo) continues each line as plain text.
      const { promptTokenIds } = this.completionOnly
        ? this.llm.encodePrompt(userText)
        : this.llm.encodeChat(this.messages);
      promptTokens = promptTokenIds.length;
      for await (const delta of this.llm.stream({ promptTokenIds }, this.params, {
        signal: controller.signal,
        onFinish: (output, metrics) => (finished = { output, metrics }),
      })) {
        text += delta;
        process.stdout.write(delta);
      }
    } catch (e) {
      if (controller.signal.aborted && finished) {
        // Ctrl-C: the answer so far stays in the history (below).
      } else {
        this.messages.pop(); // the turn did not happen
        if (e instanceof RangeError && /does not fit/.test(e.message)) {
          note(`${e.message}; /reset starts a new conversation`);
          return;
        }
        throw e;
      }
    } finally {
      this.answering = null;
      this.out.muted = false;
    }
    process.stdout.write('\n');
    const f = finished as { output: CompletionOutput; metrics: RequestMetrics } | null;
    if (f) {
      if (f.output.finishReason === 'abort') process.stderr.write(dim('(stopped)') + '\n');
      process.stderr.write(dim(statsLine(promptTokens, f.output, f.metrics)) + '\n');
    }
    this.messages.push({ role: 'assistant', content: f ? f.output.text : text });
    if (this.completionOnly) this.reset();
  }
}
