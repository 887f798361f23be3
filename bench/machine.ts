// The machine section: CPU, cores, memory, Node; memory bandwidth as plain JS code can use it;
// the cost of dispatching one parallel operation through the ThreadPool; the cost of first-touching
// fresh memory (the floor of a load).
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { ThreadPool } from '../src/tensor/pool.js';
import { log, sleep } from './common.js';
import { BW_DONE, BW_OP, BW_READY, BW_SEQ, BW_SLOTS, partRange, sumRange } from './sum.js';

export interface MachineBasics {
  cpu: string;
  /** os.loadavg() when the benchmark started: other work on the machine skews every number. */
  loadAverage: number[];
  cores: number;
  memoryBytes: number;
  node: string;
}

export function machineBasics(): MachineBasics {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
    cores: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    node: process.version,
  };
}

/**
 * Read bandwidth in GB/s (1e9 bytes/s) for each thread count: a `bytes`-sized SharedArrayBuffer,
 * summed through a Float64Array by `threads` threads (the main thread and threads-1 workers, each
 * summing its part). Best of `runs` passes after one warm-up pass.
 */
export async function measureBandwidth(
  threadCounts: number[],
  bytes: number,
  runs: number,
): Promise<Record<number, number>> {
  const n = Math.floor(bytes / 8);
  const data = new Float64Array(new SharedArrayBuffer(n * 8));
  data.fill(1); // touches every page before timing
  const result: Record<number, number> = {};
  for (const threads of threadCounts) {
    result[threads] = threads === 1 ? bandwidth1(data, runs) : await bandwidthN(data, threads, runs);
    log(`  bandwidth, ${threads} thread${threads > 1 ? 's' : ''}: ${result[threads].toFixed(2)} GB/s`);
  }
  return result;
}

function bandwidth1(data: Float64Array, runs: number): number {
  let best = Infinity;
  for (let r = 0; r <= runs; r++) {
    const t0 = performance.now();
    const s = sumRange(data, 0, data.length);
    const dt = performance.now() - t0;
    if (s !== data.length) throw new Error(`bandwidth probe: wrong sum ${s}`);
    if (r > 0) best = Math.min(best, dt); // run 0 warms the JIT up
  }
  return data.byteLength / (best / 1000) / 1e9;
}

async function bandwidthN(data: Float64Array, threads: number, runs: number): Promise<number> {
  const control = new Int32Array(new SharedArrayBuffer(BW_SLOTS * 4));
  const sums = new Float64Array(new SharedArrayBuffer(threads * 8));
  const workers: Worker[] = [];
  const failures: Error[] = [];
  for (let w = 1; w < threads; w++) {
    const worker = new Worker(new URL('./bandwidth-worker.js', import.meta.url), {
      workerData: { data, control, sums, index: w, parts: threads },
    });
    worker.on('error', (e) => failures.push(e));
    workers.push(worker);
  }
  try {
    const t0 = Date.now();
    for (;;) {
      let ready = 0;
      for (let w = 0; w < threads - 1; w++) ready += Atomics.load(control, BW_READY + w);
      if (ready === threads - 1) break;
      if (failures.length > 0) throw failures[0];
      if (Date.now() - t0 > 30_000) throw new Error('bandwidth probe: worker threads did not start within 30 s');
      await sleep(2);
    }
    const [start, end] = partRange(data.length, 0, threads);
    let best = Infinity;
    for (let r = 0; r <= runs; r++) {
      const tStart = performance.now();
      Atomics.store(control, BW_OP, 0);
      const seq = r + 1;
      Atomics.store(control, BW_SEQ, seq);
      Atomics.notify(control, BW_SEQ);
      sums[0] = sumRange(data, start, end);
      for (let w = 0; w < threads - 1; w++) {
        while (Atomics.load(control, BW_DONE + w) !== seq) {
          if (failures.length > 0) throw failures[0];
        }
      }
      const dt = performance.now() - tStart;
      let total = 0;
      for (let w = 0; w < threads; w++) total += sums[w];
      if (total !== data.length) throw new Error(`bandwidth probe: wrong sum ${total}`);
      if (r > 0) best = Math.min(best, dt);
    }
    return data.byteLength / (best / 1000) / 1e9;
  } finally {
    Atomics.store(control, BW_OP, -1);
    Atomics.add(control, BW_SEQ, 1);
    Atomics.notify(control, BW_SEQ);
    await Promise.all(
      workers.map(
        (w) =>
          new Promise((r) => {
            w.once('exit', r);
            setTimeout(() => void w.terminate(), 2000).unref();
          }),
      ),
    );
  }
}

/**
 * Seconds per GiB to write fresh memory for the first time: a new SharedArrayBuffer of `bytes`
 * filled once. Every page is then a page fault (zeroed by the kernel, and on a VM often backed by
 * the host only now); a load writes all of its weights to fresh memory, so this bounds it.
 */
export function measureFirstTouch(bytes: number): number {
  const fresh = new Float64Array(new SharedArrayBuffer(bytes));
  const t0 = performance.now();
  fresh.fill(1);
  return (performance.now() - t0) / 1000 / (bytes / 2 ** 30);
}

export interface DispatchCost {
  threads: number;
  /** pool.run() back to back: the workers are spinning (as between the operations of one token). */
  hotMicros: number;
  /** pool.run() after 20 ms idle: the workers sleep in Atomics.wait and must be woken. */
  wakeMicros: number;
}

/**
 * Microseconds per pool.run() of a no-op operation over `threads` threads: the best of 3 rounds of
 * up to `calls` back-to-back calls, each round bounded to `budgetMs` (on an oversubscribed machine
 * one call can take a whole scheduler time slice), and the median of `wakeSamples` calls made
 * after 20 ms idle.
 */
export async function measureDispatch(
  threads: number,
  calls: number,
  wakeSamples: number,
  budgetMs: number,
): Promise<DispatchCost> {
  const pool = await ThreadPool.create(threads, new URL('./noop-runner.js', import.meta.url), {}, () => {});
  try {
    const round = () => {
      const t0 = performance.now();
      let i = 0;
      for (; i < calls; i++) {
        pool.run(0, i);
        if ((i & 63) === 63 && performance.now() - t0 > budgetMs) {
          i++;
          break;
        }
      }
      return (performance.now() - t0) / i;
    };
    round(); // warm-up
    let best = Infinity;
    for (let rep = 0; rep < 3; rep++) best = Math.min(best, round());
    const wake: number[] = [];
    for (let i = 0; i < wakeSamples; i++) {
      await sleep(20);
      const t0 = performance.now();
      pool.run(0, i);
      wake.push(performance.now() - t0);
    }
    wake.sort((a, b) => a - b);
    return { threads, hotMicros: best * 1000, wakeMicros: wake[wake.length >> 1] * 1000 };
  } finally {
    await pool.close();
  }
}
