#!/usr/bin/env node
// qwen-ts: the command-line entry point. `qwen-ts <command> [options]`; see `qwen-ts --help`.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { packageRoot } from '../package-root.js';
import { CliError, didYouMean } from './args.js';
import { CHAT_HELP, runChat } from './chat.js';
import { CONVERT_HELP, runConvert } from './convert.js';
import { EMBED_HELP, RERANK_HELP, runEmbed, runRerank } from './embed.js';
import { GENERATE_HELP, runGenerate } from './generate.js';
import { LIST_HELP, runList } from './list.js';
import { PULL_HELP, runPull } from './pull.js';
import { PERPLEXITY_HELP, runPerplexity } from './perplexity.js';
import { runServe } from './serve.js';

const COMMANDS = [
  'generate',
  'chat',
  'embed',
  'rerank',
  'serve',
  'bench',
  'pull',
  'list',
  'make-model',
  'convert',
  'perplexity',
  'help',
];

const USAGE = 'usage: qwen-ts <command> [options]   (qwen-ts --help for the commands)';

const HELP = `qwen-ts: Qwen2 / Qwen2.5, Qwen3 and Llama-family language models on the CPU, in pure TypeScript.

usage: qwen-ts <command> [options]

Commands:
  generate     complete a prompt (or answer it with --chat), streaming to stdout
  chat         interactive multi-turn chat in the terminal
  embed        embed texts with an embedding model (one JSON line each)
  rerank       score documents against a query with a reranker
  serve        OpenAI-compatible HTTP server
  bench        benchmarks
  pull NAME    download a model from the Hugging Face hub into its cache (Org/Name)
  list         the models in the Hugging Face cache and Ollama's store
  make-model   write a synthetic Qwen2.5-shaped model (random weights) to a folder
  convert      write a model folder as a GGUF file (f16, q8_0, q4_k_m, ...)
  perplexity   perplexity of a text file, as llama-perplexity (windows of --ctx tokens)
  help [CMD]   this help, or a command's

Options:
  -h, --help      this help
  -v, --version   the version

Without --model, generate and chat run the bundled stories260K demo model (a tiny trained story
model, MIT, llama2.c). --model takes a folder, a hub name (Qwen/Qwen2.5-0.5B-Instruct: from the
Hugging Face cache, else downloaded into it) or an Ollama name (qwen2.5:0.5b). --preset
tiny|qwen2.5-0.5b|qwen2.5-1.5b runs a synthetic Qwen2.5-shaped model with random weights instead
(for speed), made once in $QWEN_TS_CACHE (else $XDG_CACHE_HOME/qwen-ts, else ~/.cache/qwen-ts).
Exit codes: 0 done, 1 an internal error, 2 a mistake in what was given (flags, model files,
prompt), 130 stopped by Ctrl-C. QWEN_TS_DEBUG=1 prints stack traces of errors.

Run 'qwen-ts <command> --help' for a command's options.
`;

const MAKE_MODEL = fileURLToPath(new URL('./make-model.js', import.meta.url));

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Run `node <script> ...args` with the terminal handed over; resolves with its exit code. */
function runNode(script: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: 'inherit' });
    // Ctrl-C reaches the child too (same process group); let it decide, then exit with it.
    const ignore = () => {};
    process.on('SIGINT', ignore);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', ignore);
      resolve(code ?? (signal === 'SIGINT' ? 130 : 1));
    });
  });
}

async function runBench(args: string[]): Promise<number> {
  const script = path.join(packageRoot(), 'dist', 'bench', 'bench.js');
  if (!fs.existsSync(script)) {
    process.stderr.write(
      `qwen-ts: bench runs from a clone of the repository (npm run bench); it is not in the installed package (${script} is missing)\n`,
    );
    return args.includes('--help') || args.includes('-h') ? 0 : 1;
  }
  return runNode(script, args);
}

function commandHelp(cmd: string): Promise<number> | number {
  switch (cmd) {
    case 'generate':
      process.stdout.write(GENERATE_HELP);
      return 0;
    case 'chat':
      process.stdout.write(CHAT_HELP);
      return 0;
    case 'embed':
      process.stdout.write(EMBED_HELP);
      return 0;
    case 'rerank':
      process.stdout.write(RERANK_HELP);
      return 0;
    case 'make-model':
      return runNode(MAKE_MODEL, ['--help']);
    case 'convert':
      process.stdout.write(CONVERT_HELP);
      return 0;
    case 'perplexity':
      process.stdout.write(PERPLEXITY_HELP);
      return 0;
    case 'serve':
      return runServe(['--help']);
    case 'bench':
      return runBench(['--help']);
    case 'pull':
      process.stdout.write(PULL_HELP);
      return 0;
    case 'list':
      process.stdout.write(LIST_HELP);
      return 0;
    default:
      throw new CliError(`unknown command ${JSON.stringify(cmd)}${didYouMean(cmd, COMMANDS)}`, 2, USAGE);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
      process.stderr.write(HELP);
      return 2;
    case '-h':
    case '--help':
      process.stdout.write(HELP);
      return 0;
    case 'help':
      if (rest.length === 0) {
        process.stdout.write(HELP);
        return 0;
      }
      return commandHelp(rest[0]);
    case '-v':
    case '--version':
      process.stdout.write(`qwen-ts ${version()}\n`);
      return 0;
    case 'generate':
      return runGenerate(rest);
    case 'chat':
      return runChat(rest);
    case 'embed':
      return runEmbed(rest);
    case 'rerank':
      return runRerank(rest);
    case 'make-model':
      return runNode(MAKE_MODEL, rest);
    case 'convert':
      return runConvert(rest);
    case 'perplexity':
      return runPerplexity(rest);
    case 'serve':
      return runServe(rest);
    case 'bench':
      return runBench(rest);
    case 'pull':
      return runPull(rest);
    case 'list':
      return runList(rest);
    default:
      if (cmd.startsWith('-')) throw new CliError(`unknown option ${cmd} (the command comes first)`, 2, USAGE);
      throw new CliError(`unknown command ${JSON.stringify(cmd)}${didYouMean(cmd, COMMANDS)}`, 2, USAGE);
  }
}

// Errors in what the user gave (flags, model files, prompts), by name: errors from the engine thread
// arrive as Errors that keep their name. The library's checks of its arguments and of model folders
// say so with these prefixes.
const USER_ERRORS = new Set([
  'CliError',
  'TaskError',
  'EmbedInputError',
  'SamplingParamsError',
  'ConfigError',
  'SafetensorsError',
  'GgufError',
  'ChatTemplateError',
  'StructuredOutputError',
  'SchemaError',
  'RegexSyntaxError',
]);
const USER_ERROR_PREFIX = /^(loadModel|QwenTokenizer|LLM\.load): /;

/** A mistake in the input (exit code 2, no stack hint) rather than a failure of qwen-ts (1). */
export function isUserError(e: unknown): boolean {
  return e instanceof Error && (USER_ERRORS.has(e.name) || USER_ERROR_PREFIX.test(e.message));
}

function reportError(e: unknown): number {
  const debug = process.env.QWEN_TS_DEBUG === '1';
  if (e instanceof CliError) {
    process.stderr.write(`qwen-ts: ${e.message}\n`);
    if (e.usage) process.stderr.write(`${e.usage}\n`);
    if (debug) process.stderr.write(`${e.stack}\n`);
    return e.exitCode;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`qwen-ts: ${err.message}\n`);
  if (isUserError(err)) {
    if (debug) process.stderr.write(`${err.stack}\n`);
    return 2;
  }
  if (debug) process.stderr.write(`${err.stack}\n`);
  else process.stderr.write('(QWEN_TS_DEBUG=1 shows where it happened)\n');
  return 1;
}

/** Runs the command line and sets process.exitCode; the entry point of bin/qwen-ts.js. */
export function run(argv: string[]): void {
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.exitCode = reportError(e);
    },
  );
}

// Run when executed (`node dist/src/cli/main.js`), not when imported.
function invokedDirectly(): boolean {
  try {
    return pathToFileURL(fs.realpathSync(process.argv[1])).href === import.meta.url;
  } catch {
    return false;
  }
}
if (invokedDirectly()) run(process.argv.slice(2));
