// The platform seam, browser side of runtime.ts (same exports). The engine runs in a dedicated Web
// Worker (engine-thread.ts, as in Node), which is thread 0 of a kernel pool of Web Workers sharing
// the weights and a control block through SharedArrayBuffers. SharedArrayBuffer exists only in a
// cross-origin isolated page (COOP/COEP headers); without it, everything runs on the engine worker.
import type { LoadProgress } from './progress.js';
import type { ResolveOptions } from '../model/sources/index.js';
import type { TokenizerFiles } from '../tokenizer/index.js';
import type { GenerationConfig, ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import type { WeightFormat } from '../tensor/matrix.js';
import { mountedFiles, mountFile, pathKind, unmountFile } from './files.browser.js';

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
  const files = mountedFiles(start.dir);
  const moved: ArrayBuffer[] = [];
  for (const [path, bytes] of files) if (path.endsWith('.safetensors')) moved.push(bytes.buffer as ArrayBuffer);
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
            for (const [path] of mountedFiles((m.init as { dir: string }).dir))
              if (path.endsWith('.safetensors')) unmountFile(path);
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

/**
 * The URL of an HF-style model folder: config.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json (optional) and model.safetensors or its shards with
 * model.safetensors.index.json. Each file comes from the Cache API when a load stored it there,
 * else from the network (then stored); `onProgress` gets stage "download" with the bytes.
 */
export async function resolveModel(
  model: string,
  source?: ResolveOptions,
  onProgress?: (p: LoadProgress) => void,
): Promise<string> {
  if (source !== undefined)
    throw new TypeError(
      'LLM.load: option source (model names, caches, hub token) is for Node; in the browser give the URL of a model folder',
    );
  if (typeof model !== 'string' || model === '')
    throw new TypeError('LLM.load: expected the URL of a model folder (config.json, tokenizer.json, *.safetensors)');
  const dir = new URL(model, globalThis.location?.href).href.replace(/[?#].*$/, '').replace(/\/+$/, '');
  // The engine worker was sent the files with its start: nothing to fetch there.
  if (pathKind(`${dir}/config.json`) === 'file') return dir;
  warnIfNotIsolated();
  if (dir.toLowerCase().endsWith('.gguf'))
    throw new Error(`${dir}: GGUF files do not load in the browser yet; give the URL of a safetensors model folder`);
  const cache = await openCache();
  const t0 = performance.now();
  const fetchFile = async (name: string, optional = false): Promise<Response | null> => {
    const url = `${dir}/${name}`;
    const hit = await cache?.match(url);
    if (hit) return hit;
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new Error(`${url}: cannot fetch (${(e as Error).message}): is the model folder served from this URL?`);
    }
    if (res.status === 404 && optional) return null;
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText} (expected the model folder's ${name})`);
    return res;
  };
  const store = async (name: string, res: Response, bytes: Uint8Array) => {
    if (!cache || res.headers.get('x-qwen-ts-cached') === '1') return;
    const headers = {
      'content-type': 'application/octet-stream',
      'content-length': String(bytes.length),
      'x-qwen-ts-cached': '1',
    };
    try {
      await cache.put(`${dir}/${name}`, new Response(bytes as Uint8Array<ArrayBuffer>, { headers }));
    } catch (e) {
      console.warn(`qwen-ts: could not cache ${dir}/${name} (${(e as Error).message}); it will be downloaded again`);
    }
  };
  const readAll = async (name: string, res: Response, onBytes: (n: number) => void): Promise<Uint8Array> => {
    const length = Number(res.headers.get('content-length') ?? NaN);
    if (length > MAX_FILE_BYTES)
      throw new RangeError(
        `${dir}/${name} is ${(length / 2 ** 30).toFixed(1)} GiB: more than the ${MAX_FILE_BYTES} bytes a browser holds in one ArrayBuffer. ` +
          'Use a smaller model, or a checkpoint in shards of at most 2 GB (model.safetensors.index.json)',
      );
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body === null) return new Uint8Array(0);
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      onBytes(value.length);
      if (size > MAX_FILE_BYTES)
        throw new RangeError(
          `${dir}/${name} is more than the ${MAX_FILE_BYTES} bytes a browser holds in one ArrayBuffer`,
        );
    }
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(size);
    } catch {
      throw new RangeError(
        `${dir}/${name}: the browser could not allocate ${size} bytes for it (out of memory, or over its ArrayBuffer limit)`,
      );
    }
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.length;
    }
    await store(name, res, bytes);
    return bytes;
  };
  const text = async (name: string, optional = false) => {
    const res = await fetchFile(name, optional);
    if (res === null) return;
    mountFile(`${dir}/${name}`, await readAll(name, res, () => {}));
  };
  await Promise.all([
    text('config.json'),
    text('generation_config.json', true),
    text('tokenizer.json'),
    text('tokenizer_config.json'),
  ]);
  const index = await fetchFile('model.safetensors.index.json', true);
  let weightFiles = ['model.safetensors'];
  if (index !== null) {
    const bytes = await readAll('model.safetensors.index.json', index, () => {});
    mountFile(`${dir}/model.safetensors.index.json`, bytes);
    let map: unknown;
    try {
      map = (JSON.parse(new TextDecoder().decode(bytes)) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw new Error(`${dir}/model.safetensors.index.json: invalid JSON (${(e as Error).message})`);
    }
    if (typeof map !== 'object' || map === null)
      throw new Error(`${dir}/model.safetensors.index.json: missing "weight_map" object`);
    weightFiles = [...new Set(Object.values(map as Record<string, string>))].filter(
      (f) => typeof f === 'string' && /^[^/\\]+$/.test(f),
    );
  }
  const responses = await Promise.all(weightFiles.map((f) => fetchFile(f)));
  let totalBytes = 0;
  for (const r of responses) totalBytes += Number(r!.headers.get('content-length') ?? 0);
  let doneBytes = 0;
  let reported = 0;
  const report = () =>
    onProgress?.({ stage: 'download', doneBytes, totalBytes, seconds: (performance.now() - t0) / 1000 });
  report();
  for (let i = 0; i < weightFiles.length; i++) {
    const bytes = await readAll(weightFiles[i], responses[i]!, (n) => {
      doneBytes += n;
      if (performance.now() - reported < 100) return;
      reported = performance.now();
      report();
    });
    mountFile(`${dir}/${weightFiles[i]}`, bytes);
  }
  totalBytes = Math.max(totalBytes, doneBytes);
  report();
  return dir;
}

export function isGgufPath(p: string): boolean {
  return p.toLowerCase().endsWith('.gguf');
}

export function openGgufModel(file: string): {
  config: ModelConfig;
  generationConfig: GenerationConfig;
  loadWeights: (options: { weights?: WeightFormat; checkTensors?: boolean }) => ModelWeights;
} {
  throw new Error(`${file}: GGUF files do not load in the browser yet; give the URL of a safetensors model folder`);
}

export function readGgufTokenizerFiles(file: string): TokenizerFiles {
  throw new Error(`${file}: GGUF files do not load in the browser yet; give the URL of a safetensors model folder`);
}
