// The main thread's side of the engine thread: starts it, sends requests, routes text deltas and
// results back to each request's promise. The engine thread keeps the process alive only while a
// request (or the load) is in flight: a script that forgets close() still exits.
import type { LoadProgress } from '../platform/progress.js';
import type { PoolingRequest } from '../model/pooling.js';
import { startEngineThread, type EngineThread } from '../platform/runtime.js';
import type { SamplingParams } from '../sampler/index.js';
import {
  reviveError,
  serializeError,
  type EngineInit,
  type EngineOptions,
  type EngineState,
  type FinishedOutput,
  type FromEngine,
  type ModelInfo,
  type ToEngine,
} from './messages.js';
import type { RequestMetrics } from './request.js';

interface Pending {
  onDelta?: (text: string) => void;
  resolve: (r: { output: FinishedOutput; metrics: RequestMetrics }) => void;
  reject: (e: unknown) => void;
  /** An error raised on this side (a throwing onDelta): the request fails with it. */
  localError?: unknown;
  cleanup: () => void;
}

export class EngineClient {
  private pending = new Map<number, Pending>();
  private stateWaiters: ((s: EngineState) => void)[] = [];
  private nextId = 1;
  private dead: Error | null = null;
  private exited: Promise<void>;
  /** The engine's state after its last step. */
  state: EngineState;

  private constructor(
    private worker: EngineThread,
    readonly info: ModelInfo,
    state: EngineState,
  ) {
    this.state = state;
    this.exited = new Promise((r) => worker.on('exit', () => r()));
    worker.on('message', (m: FromEngine) => this.onMessage(m));
    worker.on('error', (e: Error) => this.die(new Error(`qwen-ts: the engine thread failed: ${e.message}`)));
    worker.on('exit', (code: number) => this.die(new Error(`qwen-ts: the engine thread exited (code ${code})`)));
    worker.unref();
  }

  /**
   * Start the engine thread on `dir`. `tokenizerFiles` (QwenTokenizer.decodingFiles, sent when it
   * resolves) spares the thread from parsing tokenizer.json itself; `onProgress` gets the load's.
   */
  static async start(
    dir: string,
    options: EngineOptions,
    hooks: { tokenizerFiles?: Promise<string>; onProgress?: (p: LoadProgress) => void } = {},
  ): Promise<EngineClient> {
    const { onProgress: _fn, ...cloneable } = options;
    const init: EngineInit = { dir, options: cloneable, progress: hooks.onProgress !== undefined };
    const worker = startEngineThread(new URL('./engine-thread.js', import.meta.url), init);
    let onMessage: (m: FromEngine) => void = () => {};
    let onError: (e: Error) => void = () => {};
    let onExit: (code: number) => void = () => {};
    const ready = await new Promise<Extract<FromEngine, { type: 'ready' }>>((resolve, reject) => {
      (hooks.tokenizerFiles ?? Promise.resolve('')).then(
        (files) => worker.post({ type: 'tokenizer', files } satisfies ToEngine),
        reject,
      );
      onMessage = (m) => {
        if (m.type === 'ready') resolve(m);
        else if (m.type === 'load-error') reject(reviveError(m.error));
        else if (m.type === 'progress') hooks.onProgress?.(m.progress);
      };
      onError = reject;
      onExit = (code) => reject(new Error(`qwen-ts: the engine thread exited while loading (code ${code})`));
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (e) => {
      await worker.terminate();
      throw e;
    });
    // (Not removeAllListeners: the Worker's own listeners route its messages.)
    worker.off('message', onMessage);
    worker.off('error', onError);
    worker.off('exit', onExit);
    return new EngineClient(worker, ready.info, ready.state);
  }

  submit(
    promptIds: number[],
    params: SamplingParams,
    hooks: { onDelta?: (text: string) => void; signal?: AbortSignal; pooling?: PoolingRequest },
  ): Promise<{ output: FinishedOutput; metrics: RequestMetrics }> {
    if (this.dead) return Promise.reject(this.dead);
    const arrivalEpochMs = performance.timeOrigin + performance.now();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.send({ type: 'abort', id });
      const p: Pending = {
        onDelta: hooks.onDelta,
        resolve,
        reject,
        cleanup: () => hooks.signal?.removeEventListener('abort', onAbort),
      };
      this.track(id, p);
      this.send({
        type: 'submit',
        id,
        promptIds,
        params,
        streaming: hooks.onDelta !== undefined,
        arrivalEpochMs,
        ...(hooks.pooling ? { pooling: hooks.pooling } : {}),
      });
      if (hooks.signal?.aborted) onAbort();
      else hooks.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The engine's state now (after the step in progress). */
  fresh(): Promise<EngineState> {
    if (this.dead) return Promise.reject(this.dead);
    this.worker.ref();
    return new Promise((resolve) => {
      this.stateWaiters.push(resolve);
      this.send({ type: 'state' });
    });
  }

  async close(): Promise<void> {
    if (!this.dead) {
      this.worker.ref();
      this.send({ type: 'close' });
      this.dead = new Error('qwen-ts: the LLM was closed');
    }
    for (const [id, p] of this.pending) this.settle(id, p, () => p.reject(this.dead));
    await this.exited;
  }

  private send(m: ToEngine): void {
    this.worker.post(m);
  }

  private track(id: number, p: Pending): void {
    if (this.pending.size === 0) this.worker.ref();
    this.pending.set(id, p);
  }

  private settle(id: number, p: Pending, then: () => void): void {
    this.pending.delete(id);
    p.cleanup();
    // Closing keeps the thread referenced until it exits: close() awaits that exit, and an unreferenced
    // thread would let the process end (exit code 13) with the await still pending.
    if (this.pending.size === 0 && this.stateWaiters.length === 0 && this.dead === null) this.worker.unref();
    then();
  }

  private onMessage(m: FromEngine): void {
    switch (m.type) {
      case 'delta': {
        const p = this.pending.get(m.id);
        if (!p || p.localError !== undefined || !p.onDelta) return;
        try {
          p.onDelta(m.text);
        } catch (e) {
          // The caller's callback threw: fail this request with its error, nothing else.
          p.localError = e;
          this.send({ type: 'abort', id: m.id, error: serializeError(e) });
        }
        return;
      }
      case 'done': {
        this.state = m.state; // the request's end is seen with the state that follows it
        const p = this.pending.get(m.id);
        if (!p) return;
        this.settle(m.id, p, () =>
          p.localError !== undefined ? p.reject(p.localError) : p.resolve({ output: m.output, metrics: m.metrics }),
        );
        return;
      }
      case 'failed': {
        this.state = m.state;
        const p = this.pending.get(m.id);
        if (!p) return;
        this.settle(m.id, p, () => p.reject(p.localError ?? reviveError(m.error)));
        return;
      }
      case 'state': {
        this.state = m.state;
        const waiters = this.stateWaiters;
        this.stateWaiters = [];
        for (const w of waiters) w(m.state);
        if (waiters.length > 0 && this.pending.size === 0 && this.dead === null) this.worker.unref();
        return;
      }
      case 'closed':
        void this.worker.terminate(); // a runtime whose worker port cannot close (Deno)
        return;
      default:
        return;
    }
  }

  private die(e: Error): void {
    if (!this.dead) this.dead = e;
    for (const [id, p] of this.pending) this.settle(id, p, () => p.reject(this.dead));
  }
}
