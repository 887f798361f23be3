// A download's progress: a bar per file on a terminal (bytes, speed, ETA), a quiet line per file
// otherwise, or the library's onProgress callback alone.
import { formatBytes } from './errors.js';

export interface DownloadProgress {
  repo: string;
  file: string;
  /** Bytes of this file on disk so far (a resumed transfer starts above 0). */
  bytes: number;
  totalBytes: number;
  /** Over this transfer, not counting resumed bytes. */
  bytesPerSec: number;
  /** Seconds left at that speed; NaN before any byte arrived. */
  etaSeconds: number;
  done: boolean;
}

export type ProgressSink = (p: DownloadProgress) => void;

const BAR = 24;
const REDRAW_MS = 100;

function clock(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const mm = String(Math.floor((t % 3600) / 60)).padStart(2, '0');
  const ss = String(t % 60).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** `model.safetensors  [#######.......]  45%  123.4 MB/274.0 MB  12.3 MB/s  ETA 00:12` */
export function progressLine(p: DownloadProgress): string {
  const frac = p.totalBytes > 0 ? Math.min(1, p.bytes / p.totalBytes) : 1;
  const filled = Math.round(frac * BAR);
  const bar = '#'.repeat(filled) + '.'.repeat(BAR - filled);
  const pct = `${Math.floor(frac * 100)}%`.padStart(4);
  const speed = `${formatBytes(Math.round(p.bytesPerSec))}/s`;
  const tail = p.done ? `in ${clock(p.bytes / Math.max(p.bytesPerSec, 1))}` : `ETA ${clock(p.etaSeconds)}`;
  return `${p.file}  [${bar}] ${pct}  ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}  ${speed}  ${tail}`;
}

export interface ConsoleProgress extends ProgressSink {
  /** End a bar left half-drawn by a failed download, so that the error starts on its own line. */
  interrupt(): void;
}

/** The default sink: a redrawn bar when `stream` is a TTY, else one line when a file starts and one when it ends. */
export function consoleProgress(stream: NodeJS.WriteStream = process.stderr): ConsoleProgress {
  const tty = stream.isTTY === true;
  let lastDraw = 0;
  let current = '';
  let open = false;
  const sink = (p: DownloadProgress) => {
    if (!tty) {
      if (p.file !== current) {
        current = p.file;
        const resumed = p.bytes > 0 && !p.done ? ` (resuming at ${formatBytes(p.bytes)})` : '';
        stream.write(`qwen-ts: downloading ${p.repo} ${p.file} (${formatBytes(p.totalBytes)})${resumed}\n`);
      }
      if (p.done) {
        const secs = p.bytesPerSec > 0 ? p.bytes / p.bytesPerSec : 0;
        stream.write(
          `qwen-ts: downloaded ${p.file} (${formatBytes(p.bytes)}) in ${secs.toFixed(1)} s, ${formatBytes(Math.round(p.bytesPerSec))}/s\n`,
        );
      }
      return;
    }
    const now = performance.now();
    if (!p.done && p.file === current && now - lastDraw < REDRAW_MS) return;
    current = p.file;
    lastDraw = now;
    open = !p.done;
    stream.write(`\r${progressLine(p)}\x1b[K${p.done ? '\n' : ''}`);
  };
  return Object.assign(sink, {
    interrupt() {
      if (open) stream.write('\n');
      open = false;
    },
  });
}
