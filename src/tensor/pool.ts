// Threads for the kernels. Piscina (a Web Worker each in the browser: platform/runtime.ts) owns the
// worker threads' lifecycle (start, errors, shutdown);
// each worker runs one long task: a loop that waits on a shared control block for the next
// operation. Dispatching an operation is then a few Atomics stores (well under a microsecond when
// the workers are spinning) instead of a postMessage round trip (20-90 us) per matrix multiply.
//
// Thread 0 is the calling (main) thread: it does its share of every operation too, so N threads
// means N-1 workers and never more busy threads than cores.
import { envVar, importRunner, runnableUrl, startTaskThreads, type TaskThreads } from '../platform/runtime.js';

/**
 * Runs part `part` of `parts` of operation `op` with integer arguments `args`. `work` holds
 * WORK_COUNTERS counters, zero at the start of every operation and shared by all its parts: a
 * runner that claims its work through them (Atomics) balances the threads whatever their speed.
 */
export type OpRunner = (op: number, args: Int32Array, part: number, parts: number, work: Int32Array) => void;

// Control block layout (Int32 slots).
const SEQ = 0; // bumped once per operation; workers watch it
const OP = 1;
const ARGS = 2; // 16 argument slots
export const MAX_ARGS = 16;
const ERROR = 20; // set by a worker whose operation threw
const DONE = 32; // DONE + w: the last SEQ worker w finished
const READY = 96; // READY + w: worker w has loaded its runner
const MAX_WORKERS = 64;
const WORK = 160; // WORK_COUNTERS work counters, on their own cache line (claimed by every thread)
export const WORK_COUNTERS = 8;
const CONTROL_SLOTS = WORK + 16;
export const OP_EXIT = -1;

// How long a worker polls before it sleeps in Atomics.wait: long enough to cover the gaps between
// the operations of one token, short enough not to burn a core between requests.
const SPIN_ITERATIONS = 200_000;
// How long the main thread polls for a worker to finish before it sleeps (see run()).
const MAIN_SPIN_ITERATIONS = 20_000;

export interface WorkerTask {
  control: Int32Array;
  index: number; // 1-based: part index of this worker
  parts: number;
  runnerUrl: string;
  runnerState: unknown;
}

export class ThreadPool {
  readonly threads: number;
  private control: Int32Array;
  private args: Int32Array;
  private work: Int32Array;
  /** Milliseconds the calling thread waited for workers after its own part (while profiling). */
  waitMs = 0;
  profiling = false;
  private piscina: TaskThreads | null;
  private tasks: Promise<unknown>[] = [];
  private seq = 0;
  private closed = false;

  private constructor(
    threads: number,
    private mainRunner: OpRunner,
    piscina: TaskThreads | null,
    control: Int32Array,
  ) {
    this.threads = threads;
    this.piscina = piscina;
    this.control = control;
    this.args = control.subarray(ARGS, ARGS + MAX_ARGS);
    this.work = control.subarray(WORK, WORK + WORK_COUNTERS);
  }

  /**
   * `runnerModule` exports `createRunner(state): OpRunner`; each worker imports it and builds its
   * own runner over `state` (typed arrays over SharedArrayBuffers are shared, not copied).
   */
  static async create(
    threads: number,
    runnerModule: URL,
    runnerState: unknown,
    mainRunner: OpRunner,
  ): Promise<ThreadPool> {
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_WORKERS) {
      throw new RangeError(`threads must be an integer from 1 to ${MAX_WORKERS}, got ${threads}`);
    }
    const control = new Int32Array(new SharedArrayBuffer(4 * CONTROL_SLOTS));
    const workers = threads - 1;
    if (workers === 0) return new ThreadPool(1, mainRunner, null, control);
    const piscina = startTaskThreads(new URL('./worker.js', import.meta.url), workers);
    if (piscina === null) throw new Error('qwen-ts: this runtime cannot start the kernel worker threads');
    const pool = new ThreadPool(threads, mainRunner, piscina, control);
    const runnerUrl = runnableUrl(runnerModule).href;
    let failure: unknown = null;
    for (let w = 0; w < workers; w++) {
      const task: WorkerTask = { control, index: w + 1, parts: threads, runnerUrl, runnerState };
      pool.tasks.push(
        piscina.run(task).catch((e) => {
          failure = e;
        }),
      );
    }
    // Wait (asynchronously) until every worker has imported its runner, or one failed.
    const t0 = Date.now();
    while (failure === null) {
      let ready = 0;
      for (let w = 0; w < workers; w++) ready += Atomics.load(control, READY + w);
      if (ready === workers) break;
      if (Date.now() - t0 > 60_000) failure = new Error('worker threads did not start within 60 s');
      await new Promise((r) => setTimeout(r, 2));
    }
    if (failure !== null) {
      await pool.close();
      throw new Error(`qwen-ts: a worker thread failed to start: ${(failure as Error).message ?? failure}`);
    }
    return pool;
  }

  /** Run `op` on all threads with the given integer arguments; returns when every part is done. */
  run(op: number, ...args: number[]): void {
    if (this.closed) throw new Error('qwen-ts: the model was closed');
    const a = this.args;
    for (let i = 0; i < args.length; i++) a[i] = args[i];
    // Every worker finished the previous operation: nobody reads the counters while they are reset.
    this.work.fill(0);
    if (this.piscina === null) {
      this.mainRunner(op, a, 0, 1, this.work);
      return;
    }
    const c = this.control;
    Atomics.store(c, OP, op);
    const seq = ++this.seq;
    Atomics.store(c, SEQ, seq);
    Atomics.notify(c, SEQ);
    this.mainRunner(op, a, 0, this.threads, this.work);
    const waitStart = this.profiling ? performance.now() : 0;
    const t0 = Date.now();
    for (let w = 0; w < this.threads - 1; w++) {
      // Spin briefly (the worker is usually a few microseconds behind), then sleep in
      // Atomics.wait: if another process holds the other core, spinning here would only keep the
      // worker from being scheduled.
      for (let spins = 0; Atomics.load(c, DONE + w) !== seq; spins++) {
        if (spins < MAIN_SPIN_ITERATIONS) continue;
        Atomics.wait(c, DONE + w, seq - 1, 1); // the worker finished every earlier op: its slot holds seq - 1
        if (Date.now() - t0 > 120_000) {
          throw new Error(`qwen-ts: worker thread ${w + 1} did not finish operation ${op} within 120 s`);
        }
      }
    }
    if (this.profiling) this.waitMs += performance.now() - waitStart;
    if (Atomics.load(c, ERROR) !== 0) {
      Atomics.store(c, ERROR, 0);
      throw new Error(`qwen-ts: operation ${op} failed in a worker thread (see the error printed above)`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.piscina === null) return;
    Atomics.store(this.control, OP, OP_EXIT);
    Atomics.store(this.control, SEQ, ++this.seq);
    Atomics.notify(this.control, SEQ);
    await Promise.all(this.tasks);
    await this.piscina.destroy();
  }
}

/** The worker's side: called by worker.ts with the task it was given. */
export async function workerLoop(task: WorkerTask): Promise<void> {
  const { control: c, index, parts } = task;
  const mod = (await importRunner(task.runnerUrl)) as { createRunner: (state: unknown) => OpRunner };
  const run = mod.createRunner(task.runnerState);
  const args = c.subarray(ARGS, ARGS + MAX_ARGS);
  const work = c.subarray(WORK, WORK + WORK_COUNTERS);
  Atomics.store(c, READY + index - 1, 1);
  let seen = 0;
  for (;;) {
    let seq = Atomics.load(c, SEQ);
    for (let spins = 0; seq === seen; seq = Atomics.load(c, SEQ)) {
      if (++spins > SPIN_ITERATIONS) {
        Atomics.wait(c, SEQ, seen);
        spins = 0;
      }
    }
    seen = seq;
    const op = Atomics.load(c, OP);
    if (op === OP_EXIT) return;
    try {
      run(op, args, index, parts, work);
    } catch (e) {
      console.error(`qwen-ts worker ${index}:`, e);
      Atomics.store(c, ERROR, 1);
    }
    Atomics.store(c, DONE + index - 1, seq);
    Atomics.notify(c, DONE + index - 1);
  }
}

/** Rows [start, end) of part `part` of `parts`, boundaries aligned to `align` rows. */
export function splitRange(n: number, part: number, parts: number, align: number): [number, number] {
  const units = Math.ceil(n / align);
  const start = Math.min(n, Math.floor((units * part) / parts) * align);
  const end = Math.min(n, Math.floor((units * (part + 1)) / parts) * align);
  return [start, end];
}

// End of the chunk the last claimRows() call of this thread claimed (module state is per thread).
let claimEnd = 0;
// QWEN_TS_SCHEDULE=static: each thread takes its fixed share (splitRange), as before the claims,
// for measuring one against the other in the same build.
const STATIC_SCHEDULE = envVar('QWEN_TS_SCHEDULE') === 'static';

/**
 * Guided self-scheduling of rows [0, total) over counter work[counter]: claims this thread's next
 * chunk and returns its first row (total when nothing is left); claimedEnd() is its end. A chunk
 * is 1/(2*parts) of the rows left, at least minRows, rounded up to `align`: big chunks while much
 * is left, small ones at the end, so the threads finish together even when one started late or
 * was switched out by another process, for a few dozen atomic operations per matrix. `part` is
 * the calling thread's part index (used only by QWEN_TS_SCHEDULE=static).
 */
export function claimRows(
  work: Int32Array,
  counter: number,
  total: number,
  minRows: number,
  align: number,
  parts: number,
  part: number,
): number {
  if (STATIC_SCHEDULE && parts <= 30) {
    // The counter holds a bit per part that took its share.
    if ((Atomics.or(work, counter, 1 << part) & (1 << part)) !== 0) return total;
    const units = Math.ceil(total / align);
    const start = Math.min(total, Math.floor((units * part) / parts) * align);
    claimEnd = Math.min(total, Math.floor((units * (part + 1)) / parts) * align);
    return start < claimEnd ? start : total;
  }
  for (;;) {
    const start = Atomics.load(work, counter);
    if (start >= total) return total;
    let rows = Math.ceil((total - start) / (2 * parts * align)) * align;
    if (rows < minRows) rows = minRows;
    const end = Math.min(total, start + rows);
    if (Atomics.compareExchange(work, counter, start, end) === start) {
      claimEnd = end;
      return start;
    }
  }
}

export function claimedEnd(): number {
  return claimEnd;
}
