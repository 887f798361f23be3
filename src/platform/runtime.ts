// The platform seam, Node side: threads, the engine thread, the environment and where model names
// lead. The browser build (scripts/build-browser.mjs) puts runtime.browser.ts in place of this file
// (and files.browser.ts in place of files.ts); kernels, model, sampler and scheduler are the same
// files in both.
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { LoadProgress } from './progress.js';
import { resolveModel as resolveModelName, type ResolveOptions } from '../model/sources/index.js';

export { isGgufPath } from '../model/gguf/file.js';
export { openGgufModel, readGgufTokenizerFiles } from '../model/gguf/open.js';

/**
 * Worker threads load plain JS. When this module runs from TypeScript sources (tests, through
 * vitest), point them at the built copy under dist/ instead (`npm test` builds first).
 */
export function runnableUrl(url: URL): URL {
  if (!import.meta.url.endsWith('.ts')) return url;
  const file = fileURLToPath(url);
  const marker = `${path.sep}src${path.sep}`;
  const root = file.slice(0, file.lastIndexOf(marker));
  const rel = path.relative(root, file).replace(/\.ts$/, '.js');
  return pathToFileURL(path.join(root, 'dist', rel));
}

/** Threads that each run the default export of one module on the tasks given to them. */
export interface TaskThreads {
  run(task: unknown): Promise<unknown>;
  destroy(): Promise<void>;
}

/**
 * `threads` threads running `module`'s default export; null where this runtime cannot start
 * them for that module (the browser, for the weight-loading threads: the caller works alone).
 */
export function startTaskThreads(
  module: URL,
  threads: number,
  opts: { idleTimeoutMs?: number; minThreads?: number } = {},
): TaskThreads | null {
  const piscina = new Piscina({
    filename: runnableUrl(module).href,
    minThreads: opts.minThreads ?? threads,
    maxThreads: threads,
    concurrentTasksPerWorker: 1,
    idleTimeout: opts.idleTimeoutMs ?? Number.MAX_SAFE_INTEGER,
  });
  return { run: (task) => piscina.run(task), destroy: () => piscina.destroy() };
}

/** The kernel runner module a pool worker builds its runner from. */
export function importRunner(url: string): Promise<unknown> {
  return import(url);
}

/** Threads the kernels use by default: every core. */
export function defaultThreads(): number {
  return os.availableParallelism();
}

export function envVar(name: string): string | undefined {
  return typeof process === 'undefined' ? undefined : process.env[name];
}

export function stderrIsTerminal(): boolean {
  return process.stderr.isTTY === true;
}

export function writeStderr(text: string): void {
  process.stderr.write(text);
}

/** The engine thread as its starter sees it (a Node Worker here, a Web Worker in the browser). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (arg: any) => void;

export interface EngineThread {
  post(message: unknown): void;
  /** 'message' (a message), 'error' (an Error it threw), 'exit' (its exit code). */
  on(event: 'message' | 'error' | 'exit', fn: Listener): void;
  off(event: 'message' | 'error' | 'exit', fn: Listener): void;
  /** Whether it keeps the process alive (nothing in a browser). */
  ref(): void;
  unref(): void;
  terminate(): Promise<unknown>;
}

export function startEngineThread(module: URL, init: unknown): EngineThread {
  const worker = new Worker(runnableUrl(module), { workerData: init });
  return {
    post: (m) => worker.postMessage(m),
    on: (event, fn) => void worker.on(event, fn),
    off: (event, fn) => void worker.off(event, fn),
    ref: () => worker.ref(),
    unref: () => worker.unref(),
    terminate: () => worker.terminate(),
  };
}

/** The engine thread's side: what it was started with, and its messages to and from the starter. */
export interface EnginePort {
  init: unknown;
  post(message: unknown): void;
  on(fn: Listener): void;
  once(fn: Listener): void;
  close(): void;
}

export async function enginePort(): Promise<EnginePort> {
  const port = parentPort!;
  return {
    init: workerData,
    post: (m) => port.postMessage(m),
    on: (fn) => void port.on('message', fn),
    once: (fn) => void port.once('message', fn),
    // Deno's worker port has no close(); the main thread ends the thread on 'closed' anyway.
    close: () => (typeof port.close === 'function' ? port.close() : undefined),
  };
}

/**
 * A model name to a path: a folder, a .gguf file, or a name found or fetched (see model/sources).
 * `onProgress` is the browser's download progress; here downloads report through `source`.
 */
export async function resolveModel(
  model: string,
  source?: ResolveOptions,
  _onProgress?: (p: LoadProgress) => void,
): Promise<string> {
  return (await resolveModelName(model, source)).path;
}
