// The platform seam, browser side of runtime.ts (same exports). The engine runs in a dedicated Web
// Worker (engine-thread.ts, as in Node), which is thread 0 of a kernel pool of Web Workers sharing
// the weights and a control block through SharedArrayBuffers. SharedArrayBuffer exists only in a
// cross-origin isolated page (COOP/COEP headers); without it, everything runs on the engine worker.
import type { LoadProgress } from './progress.js';
import type { ResolveOptions } from '../model/sources/index.js';
import { mountedFile, mountedFiles, mountFile, pathKind, unmountFile } from './files.browser.js';

// The GGUF reader reads through the files seam, so in the tab it reads the fetched file's bytes.
export { isGgufPath } from '../model/gguf/file.js';
export { openGgufModel, readGgufTokenizerFiles } from '../model/gguf/open.js';

const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;

// Not isolated: no SharedArrayBuffer at all. One thread needs nothing shared, so the engine's
// buffers are plain ArrayBuffers (Atomics work on them; nothing that waits runs with one thread).
if (typeof SharedArrayBuffer === 'undefined')
  (globalThis as { SharedArrayBuffer?: unknown }).SharedArrayBuffer = ArrayBuffer;

// The scheduler yields to the event loop between steps with setImmediate, which browsers lack; a
// MessageChannel message runs as soon as, without setTimeout(0)'s clamp to 4 ms once nested.
if (typeof (globalThis as { setImmediate?: unknown }).setImmediate === 'undefined') {
  const channel = new MessageChannel();
  const queue: (() => void)[] = [];
  channel.port1.onmessage = () => queue.shift()?.();
  (globalThis as { setImmediate?: unknown }).setImmediate = (fn: (...args: unknown[]) => void, ...args: unknown[]) => {
    queue.push(() => fn(...args));
    channel.port2.postMessage(null);
  };
}

export const NOT_ISOLATED_WARNING =
  'qwen-ts: this page is not cross-origin isolated (it needs the headers Cross-Origin-Opener-Policy: same-origin ' +
  'and Cross-Origin-Embedder-Policy: require-corp), so SharedArrayBuffer is unavailable and the model runs on one thread';

let warned = false;
function warnIfNotIsolated(): void {
  if (isolated || warned) return;
  warned = true;
  console.warn(NOT_ISOLATED_WARNING);
}

export function runnableUrl(url: URL): URL {
  return url;
}

export interface TaskThreads {
  run(task: unknown): Promise<unknown>;
  destroy(): Promise<void>;
}

/**
 * Web Workers for the kernel pool (tensor/worker.js); null for other modules: the weight-loading
 * and tokenizing threads would need the fetched files, which live in the engine worker.
 */
export function startTaskThreads(module: URL, threads: number): TaskThreads | null {
  if (!module.pathname.endsWith('/worker.js') || !isolated) return null;
  const idle: Worker[] = [];
  const all: Worker[] = [];
  for (let i = 0; i < threads; i++) {
    const w = new Worker(new URL('./task-thread.js', import.meta.url), {
      type: 'module',
      name: `qwen-ts kernels ${i + 1}`,
    });
    all.push(w);
    idle.push(w);
  }
  return {
    run(task) {
      const w = idle.pop();
      if (w === undefined) return Promise.reject(new Error('qwen-ts: no idle kernel worker'));
      return new Promise((resolve, reject) => {
        w.onmessage = (e: MessageEvent<{ ok: boolean; result?: unknown; error?: string }>) => {
          idle.push(w);
          if (e.data.ok) resolve(e.data.result);
          else reject(new Error(e.data.error));
        };
        w.onerror = (e) => reject(new Error(`qwen-ts: a kernel worker failed: ${e.message}`));
        w.postMessage({ module: module.href, task });
      });
    },
    async destroy() {
      for (const w of all) w.terminate();
    },
  };
}

export function importRunner(url: string): Promise<unknown> {
  return import(/* @vite-ignore */ url);
}

/** Every core when the page is isolated, else one thread. */
export function defaultThreads(): number {
  return isolated ? Math.max(1, Math.min(64, navigator.hardwareConcurrency || 1)) : 1;
}

export function envVar(_name: string): string | undefined {
  return undefined;
}

export function stderrIsTerminal(): boolean {
  return false;
}

export function writeStderr(text: string): void {
  console.log(text);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (arg: any) => void;

export interface EngineThread {
  post(message: unknown): void;
  on(event: 'message' | 'error' | 'exit', fn: Listener): void;
  off(event: 'message' | 'error' | 'exit', fn: Listener): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<unknown>;
}

/**
 * The engine in a dedicated Web Worker (Atomics.wait, which the kernel pool uses, is not allowed
 * on a page's main thread). It is sent the model's fetched files: the weights are moved, not copied.
 */
export function startEngineThread(module: URL, init: unknown): EngineThread {
  const start = init as { dir: string; options: { threads?: number } };
  if (!isolated && (start.options.threads ?? 1) > 1) {
    warnIfNotIsolated();
    start.options = { ...start.options, threads: 1 };
  }
  const worker = new Worker(module, { type: 'module', name: 'qwen-ts engine' });
  const listeners = { message: new Set<Listener>(), error: new Set<Listener>(), exit: new Set<Listener>() };
  worker.onmessage = (e) => listeners.message.forEach((fn) => fn(e.data));
  worker.onerror = (e) => {
    e.preventDefault();
    const error = new Error(e.message || 'the engine worker failed to start (is engine-thread.js served?)');
    listeners.error.forEach((fn) => fn(error));
  };
  const files = modelFiles(start.dir);
  const moved: ArrayBuffer[] = [];
  for (const [path, bytes] of files) if (isWeightFile(path)) moved.push(bytes.buffer as ArrayBuffer);
  worker.postMessage({ type: 'init', init, files }, moved);
  // (A later load of the same folder reads it from the Cache API again.)
  for (const [path] of files) unmountFile(path);
  let exited = false;
  return {
    post: (m) => worker.postMessage(m),
    on: (event, fn) => void listeners[event].add(fn),
    off: (event, fn) => void listeners[event].delete(fn),
    ref: () => {},
    unref: () => {},
    async terminate() {
      worker.terminate();
      if (!exited) {
        exited = true;
        listeners.exit.forEach((fn) => fn(1));
      }
    },
  };
}

export interface EnginePort {
  init: unknown;
  post(message: unknown): void;
  on(fn: Listener): void;
  once(fn: Listener): void;
  close(): void;
}

/** The engine worker's side: waits for its init message (with the model's files) and mounts them. */
export function enginePort(): Promise<EnginePort> {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    postMessage(message: unknown): void;
    close(): void;
  };
  const queue: unknown[] = [];
  const handlers: { fn: Listener; once: boolean }[] = [];
  const deliver = () => {
    while (queue.length > 0 && handlers.length > 0) {
      const m = queue.shift();
      for (const h of [...handlers]) {
        if (h.once) handlers.splice(handlers.indexOf(h), 1);
        h.fn(m);
      }
    }
  };
  return new Promise((resolve) => {
    scope.onmessage = (e: MessageEvent) => {
      const m = e.data as { type?: string; init?: unknown; files?: [string, Uint8Array][] };
      if (m.type !== 'init') {
        queue.push(m);
        deliver();
        return;
      }
      for (const [path, bytes] of m.files ?? []) mountFile(path, bytes);
      resolve({
        init: m.init,
        post: (message) => {
          // Loaded: the weights are in their final buffers, so the fetched copies can go.
          const type = (message as { type?: string }).type;
          if (type === 'ready' || type === 'load-error')
            for (const [path] of modelFiles((m.init as { dir: string }).dir)) if (isWeightFile(path)) unmountFile(path);
          scope.postMessage(message);
        },
        on: (fn) => {
          handlers.push({ fn, once: false });
          deliver();
        },
        once: (fn) => {
          handlers.push({ fn, once: true });
          deliver();
        },
        close: () => scope.close(),
      });
    };
  });
}

const isWeightFile = (path: string) => /\.(safetensors|gguf)$/i.test(path);

const GGUF_URL = /\.gguf$/i;
const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/i;

/** The URLs of a GGUF model's files: itself, or all parts of a split model named by its first. */
function ggufPartUrls(url: string): string[] {
  const m = SPLIT.exec(url);
  if (m === null) return [url];
  const count = Number(m[2]);
  const parts: string[] = [];
  for (let i = 1; i <= count; i++) parts.push(url.replace(SPLIT, `-${String(i).padStart(5, '0')}-of-${m[2]}.gguf`));
  return parts;
}

/** A model's fetched files: a folder's, or a GGUF file and its split parts. */
function modelFiles(dir: string): [string, Uint8Array][] {
  if (!GGUF_URL.test(dir)) return mountedFiles(dir);
  const files: [string, Uint8Array][] = [];
  for (const url of ggufPartUrls(dir)) {
    const bytes = mountedFile(url);
    if (bytes !== undefined) files.push([url, bytes]);
  }
  return files;
}

/** The most bytes one fetched file may have: browsers cap an ArrayBuffer at 2 to 16 GiB. */
export const MAX_FILE_BYTES = 2 ** 31 - 1;

const CACHE_NAME = 'qwen-ts-models-v1';

async function openCache(): Promise<Cache | null> {
  try {
    return typeof caches === 'undefined' ? null : await caches.open(CACHE_NAME);
  } catch {
    return null; // an opaque origin, or storage turned off: download every time
  }
}

const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"

/**
 * Fetches a model's files through the Cache API: each comes from there when a load stored it, else
 * from the network (then stored, whole and checked, so a reload needs no network).
 */
class Downloader {
  private t0 = performance.now();
  private doneBytes = 0;
  private totalBytes = 0;
  private reported = 0;

  constructor(
    private cache: Cache | null,
    private onProgress: ((p: LoadProgress) => void) | undefined,
  ) {}

  /** The response for `url`: cached or fetched; null for a 404 of an optional file. */
  async open(url: string, expected: string, optional = false): Promise<Response | null> {
    const hit = await this.cache?.match(url);
    if (hit) return hit;
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new Error(
        `${url}: cannot fetch (${(e as Error).message}): is it served at this URL (from another origin, with CORS headers)?`,
      );
    }
    if (res.status === 404 && optional) return null;
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText} (expected ${expected})`);
    return res;
  }

  /**
   * The whole body of `res`, at most MAX_FILE_BYTES (`tooLarge` says what to do instead), stored in
   * the cache once read. `check` sees the first bytes (at least 4, when there are) and may throw.
   */
  async read(
    url: string,
    res: Response,
    tooLarge: string,
    opts: { progress?: boolean; check?: (head: Uint8Array) => void } = {},
  ): Promise<Uint8Array> {
    const length = Number(res.headers.get('content-length') ?? NaN);
    if (length > MAX_FILE_BYTES)
      throw new RangeError(
        `${url} is ${(length / 2 ** 30).toFixed(1)} GiB: more than the ${MAX_FILE_BYTES} bytes a browser holds in one ArrayBuffer. ${tooLarge}`,
      );
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body === null) {
      opts.check?.(new Uint8Array(0));
      return new Uint8Array(0);
    }
    const reader = res.body.getReader();
    let checked = opts.check === undefined;
    try {
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (e) {
          // A connection cut mid-file: nothing of it is kept, so the next load starts over.
          const of = Number.isFinite(length) ? ` of ${length}` : '';
          throw new Error(
            `${url}: the download stopped after ${size}${of} bytes (${(e as Error).message}); load again to retry`,
          );
        }
        const { done, value } = next;
        if (done) break;
        chunks.push(value);
        size += value.length;
        if (opts.progress) this.add(value.length);
        if (size > MAX_FILE_BYTES)
          throw new RangeError(
            `${url} is more than the ${MAX_FILE_BYTES} bytes a browser holds in one ArrayBuffer. ${tooLarge}`,
          );
        if (!checked && size >= 4) {
          checked = true;
          opts.check!(join(chunks, size).subarray(0, 4));
        }
      }
    } catch (e) {
      await reader.cancel().catch(() => {});
      throw e;
    }
    if (!checked) opts.check!(join(chunks, size));
    let bytes: Uint8Array;
    try {
      bytes = join(chunks, size);
    } catch {
      throw new RangeError(
        `${url}: the browser could not allocate ${size} bytes for it (out of memory, or over its ArrayBuffer limit)`,
      );
    }
    await this.store(url, res, bytes);
    return bytes;
  }

  /** Start counting the bytes of these responses for `onProgress` (stage "download"). */
  expect(responses: Response[]): void {
    for (const r of responses) this.totalBytes += Number(r.headers.get('content-length') ?? 0);
    this.report();
  }

  finish(): void {
    this.totalBytes = Math.max(this.totalBytes, this.doneBytes);
    this.report();
  }

  private add(n: number): void {
    this.doneBytes += n;
    if (performance.now() - this.reported < 100) return;
    this.reported = performance.now();
    this.report();
  }

  private report(): void {
    this.onProgress?.({
      stage: 'download',
      doneBytes: this.doneBytes,
      totalBytes: this.totalBytes,
      seconds: (performance.now() - this.t0) / 1000,
    });
  }

  private async store(url: string, res: Response, bytes: Uint8Array): Promise<void> {
    if (!this.cache || res.headers.get('x-qwen-ts-cached') === '1') return;
    const headers = {
      'content-type': 'application/octet-stream',
      'content-length': String(bytes.length),
      'x-qwen-ts-cached': '1',
    };
    try {
      await this.cache.put(url, new Response(bytes as Uint8Array<ArrayBuffer>, { headers }));
    } catch (e) {
      console.warn(`qwen-ts: could not cache ${url} (${(e as Error).message}); it will be downloaded again`);
    }
  }
}

/** The chunks as one array (the first chunk itself when it is all). */
function join(chunks: Uint8Array[], size: number): Uint8Array {
  const first = chunks[0];
  if (chunks.length === 1 && first.byteOffset === 0 && first.buffer.byteLength === size) return first;
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  chunks.splice(0, chunks.length, bytes);
  return bytes;
}

/**
 * The URL of an HF-style model folder (config.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json (optional) and model.safetensors or its shards with
 * model.safetensors.index.json), or of a GGUF file (a split one by its first part,
 * `name-00001-of-0000N.gguf`), fetched into memory under their URLs. `onProgress` gets stage
 * "download" with the bytes of the weights.
 */
export async function resolveModel(
  model: string,
  source?: ResolveOptions,
  onProgress?: (p: LoadProgress) => void,
): Promise<string> {
  if (source !== undefined)
    throw new TypeError(
      'LLM.load: option source (model names, caches, hub token) is for Node; in the browser give the URL of a model folder or a .gguf file',
    );
  if (typeof model !== 'string' || model === '')
    throw new TypeError(
      'LLM.load: expected the URL of a model folder (config.json, tokenizer.json, *.safetensors) or of a .gguf file',
    );
  const url = new URL(model, globalThis.location?.href).href.replace(/[?#].*$/, '');
  const gguf = GGUF_URL.test(url);
  const dir = gguf ? url : url.replace(/\/+$/, '');
  // The engine worker was sent the files with its start: nothing to fetch there.
  if (pathKind(gguf ? dir : `${dir}/config.json`) === 'file') return dir;
  warnIfNotIsolated();
  const download = new Downloader(await openCache(), onProgress);
  const mounted: string[] = [];
  const mount = (path: string, bytes: Uint8Array) => {
    mountFile(path, bytes);
    mounted.push(path);
  };
  try {
    if (gguf) await fetchGguf(dir, download, mount);
    else await fetchFolder(dir, download, mount);
  } catch (e) {
    for (const path of mounted) unmountFile(path);
    throw e;
  }
  return dir;
}

const TOO_LARGE_SAFETENSORS =
  'Use a smaller model, or a checkpoint in shards of at most 2 GB (model.safetensors.index.json)';
const TOO_LARGE_GGUF =
  "Use a smaller quantization, or split the file into parts of at most 2 GB (llama.cpp's " +
  '`llama-gguf-split --split-max-size 2G`) and give the URL of its first part';

async function fetchFolder(
  dir: string,
  download: Downloader,
  mount: (path: string, bytes: Uint8Array) => void,
): Promise<void> {
  const file = async (name: string, optional = false) => {
    const expected =
      name === 'config.json'
        ? "the model folder's config.json; for a GGUF model give the URL of its .gguf file"
        : `the model folder's ${name}`;
    const res = await download.open(`${dir}/${name}`, expected, optional);
    if (res === null) return;
    mount(`${dir}/${name}`, await download.read(`${dir}/${name}`, res, TOO_LARGE_SAFETENSORS));
  };
  await Promise.all([
    file('config.json'),
    file('generation_config.json', true),
    file('tokenizer.json'),
    file('tokenizer_config.json'),
  ]);
  const indexUrl = `${dir}/model.safetensors.index.json`;
  const index = await download.open(indexUrl, "the model folder's model.safetensors.index.json", true);
  let weightFiles = ['model.safetensors'];
  if (index !== null) {
    const bytes = await download.read(indexUrl, index, TOO_LARGE_SAFETENSORS);
    mount(indexUrl, bytes);
    let map: unknown;
    try {
      map = (JSON.parse(new TextDecoder().decode(bytes)) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw new Error(`${indexUrl}: invalid JSON (${(e as Error).message})`);
    }
    if (typeof map !== 'object' || map === null) throw new Error(`${indexUrl}: missing "weight_map" object`);
    weightFiles = [...new Set(Object.values(map as Record<string, string>))].filter(
      (f) => typeof f === 'string' && /^[^/\\]+$/.test(f),
    );
  }
  const responses = await Promise.all(weightFiles.map((f) => download.open(`${dir}/${f}`, `the model folder's ${f}`)));
  download.expect(responses as Response[]);
  for (let i = 0; i < weightFiles.length; i++) {
    const url = `${dir}/${weightFiles[i]}`;
    mount(url, await download.read(url, responses[i]!, TOO_LARGE_SAFETENSORS, { progress: true }));
  }
  download.finish();
}

/** A GGUF file, or every part of a split one; each checked to start with "GGUF" before it is kept. */
async function fetchGguf(
  url: string,
  download: Downloader,
  mount: (path: string, bytes: Uint8Array) => void,
): Promise<void> {
  const split = SPLIT.exec(url);
  if (split !== null && Number(split[1]) !== 1)
    throw new Error(`${url}: is part of a split model; give the URL of its first file (...-00001-of-${split[2]}.gguf)`);
  const parts = ggufPartUrls(url);
  const responses = await Promise.all(
    parts.map((part, i) =>
      download.open(part, parts.length === 1 ? 'a GGUF file' : `part ${i + 1} of ${parts.length} of a split GGUF`),
    ),
  );
  download.expect(responses as Response[]);
  for (let i = 0; i < parts.length; i++) {
    const check = (head: Uint8Array) => {
      if (head.length < 4 || GGUF_MAGIC.some((b, j) => head[j] !== b)) {
        const start = String.fromCharCode(...head.subarray(0, 4)).replace(/[^ -~]/g, '?');
        throw new Error(
          `${parts[i]}: not a GGUF file (it starts with ${JSON.stringify(start)}, expected "GGUF"): is this the URL of a .gguf file?`,
        );
      }
    };
    mount(parts[i], await download.read(parts[i], responses[i]!, TOO_LARGE_GGUF, { progress: true, check }));
  }
  download.finish();
}
