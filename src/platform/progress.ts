// Progress of a wait (loading weights, making a synthetic model) on stderr. Nothing for a wait under
// a second. On a terminal: one line redrawn at most every 100 ms (a load has thousands of pieces)
// with bytes, rate and time left, erased at the end. Elsewhere (a log file, CI): a single quiet line
// once the wait passes a second, so a log shows what the process was doing without a wall of
// carriage returns.

/**
 * Where a load is: `download` (in the browser) counts the weight files' bytes fetched; `tokenizer`
 * has no byte count; `weights` counts the weight files' bytes read.
 */
export interface LoadProgress {
  stage: 'download' | 'tokenizer' | 'weights';
  /** Bytes done and in all (0 and 0 for the tokenizer). */
  doneBytes: number;
  totalBytes: number;
  /** Seconds since the load started. */
  seconds: number;
}

export interface ProgressLineOptions {
  /** Default process.stderr. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Redraw in place (a terminal) or print one quiet line; default: whether the stream is a TTY. */
  tty?: boolean;
  /** Put in front of the quiet line, e.g. "qwen-ts: ". */
  prefix?: string;
  /** Milliseconds; default performance.now (tests pass their own). */
  clock?: () => number;
}

const MiB = 2 ** 20;
const mb = (bytes: number) => (bytes / MiB).toFixed(0);

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** `loading weights: 45% 850 / 1884 MB, 212 MB/s, 4.9 s left` */
export function progressText(label: string, done: number, total: number, seconds: number): string {
  if (total <= 0) return `${label}: ${duration(seconds)}`;
  const fraction = Math.min(1, done / total);
  const rate = done / Math.max(seconds, 1e-3);
  const left = rate > 0 ? (total - done) / rate : Infinity;
  return `${label}: ${(100 * fraction).toFixed(0)}% ${mb(done)} / ${mb(total)} MB, ${mb(rate)} MB/s, ${duration(left)} left`;
}

export class ProgressLine {
  private readonly stream: NodeJS.WritableStream;
  private readonly tty: boolean;
  private readonly prefix: string;
  private readonly clock: () => number;
  private readonly start: number;
  private drawn = 0;
  private shown = false;
  private quietDone = false;

  constructor(
    private label: string,
    opts: ProgressLineOptions = {},
  ) {
    // (A browser has no stderr: the console then.)
    const stream =
      opts.stream ??
      (typeof process !== 'undefined'
        ? process.stderr
        : ({ write: (text: string) => (console.log(text), true) } as unknown as NodeJS.WritableStream));
    this.stream = stream;
    this.tty = opts.tty ?? (stream as { isTTY?: boolean }).isTTY === true;
    this.prefix = opts.prefix ?? '';
    this.clock = opts.clock ?? (() => performance.now());
    this.start = this.clock();
  }

  /**
   * Report `done` of `total` bytes (total 0: no count, only the time); `label` renames the stage.
   * `now` draws on a terminal before the first second: for a stage that will block this thread.
   */
  update(done: number, total: number, label = this.label, now = false): void {
    this.label = label;
    const time = this.clock();
    const seconds = (time - this.start) / 1000;
    if (now && this.tty) {
      this.drawn = time;
      this.stream.write(`\r\x1b[K${label} ...`);
      this.shown = true;
      return;
    }
    if (seconds < 1) return;
    if (!this.tty) {
      if (this.quietDone) return;
      this.quietDone = true;
      const size = total > 0 ? ` (${mb(total)} MB)` : '';
      this.stream.write(`${this.prefix}${label}${size} ...\n`);
      return;
    }
    if (time - this.drawn < 100) return;
    this.drawn = time;
    this.stream.write(`\r\x1b[K${progressText(label, done, total, seconds)}`);
    this.shown = true;
  }

  /** Erase the line (on a terminal). */
  end(): void {
    if (this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
  }
}
