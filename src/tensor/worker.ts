// Entry point of a piscina worker thread: one task that serves operations until told to exit.
import { workerLoop, type WorkerTask } from './pool.js';

export default function serve(task: WorkerTask): Promise<void> {
  return workerLoop(task);
}
