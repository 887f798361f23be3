// Worker thread of the multi-threaded bandwidth probe: sums its part of the shared buffer each
// time the main thread bumps the sequence number, writes the sum, reports done.
import { workerData } from 'node:worker_threads';
import { BW_DONE, BW_OP, BW_READY, BW_SEQ, partRange, sumRange } from './sum.js';

const { data, control, sums, index, parts } = workerData as {
  data: Float64Array;
  control: Int32Array;
  sums: Float64Array;
  index: number;
  parts: number;
};
const [start, end] = partRange(data.length, index, parts);
let seen = 0;
Atomics.store(control, BW_READY + index - 1, 1);
for (;;) {
  Atomics.wait(control, BW_SEQ, seen);
  const seq = Atomics.load(control, BW_SEQ);
  if (seq === seen) continue;
  seen = seq;
  if (Atomics.load(control, BW_OP) === -1) break;
  sums[index] = sumRange(data, start, end);
  Atomics.store(control, BW_DONE + index - 1, seq);
}
