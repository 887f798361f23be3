// Shared helpers of the benchmark: progress logging, streaming tables, number formatting, a
// seeded RNG. Tables go to stdout (unless --json); progress always goes to stderr.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

let jsonMode = false;

export function setJsonMode(on: boolean): void {
  jsonMode = on;
}

/** Progress and notes: stderr, so that stdout stays one JSON object under --json. */
export function log(msg: string): void {
  process.stderr.write(msg + '\n');
}

/** Human-readable output: stdout, or nothing under --json. */
export function out(msg: string): void {
  if (!jsonMode) process.stdout.write(msg + '\n');
}

export interface Column {
  title: string;
  width: number;
  align?: 'left' | 'right';
}

/** A table printed row by row as results arrive (fixed column widths). */
export class StreamTable {
  private started = false;

  constructor(
    private title: string,
    private columns: Column[],
  ) {}

  private line(cells: string[]): string {
    return cells
      .map((c, i) => {
        const col = this.columns[i];
        return (col.align ?? 'right') === 'left' ? c.padEnd(col.width) : c.padStart(col.width);
      })
      .join('  ')
      .trimEnd();
  }

  row(cells: string[]): void {
    if (!this.started) {
      this.started = true;
      out('');
      out(this.title);
      out(this.line(this.columns.map((c) => c.title)));
      out(this.line(this.columns.map((c) => '-'.repeat(c.width))));
    }
    out(this.line(cells));
  }
}

/** A number with about 3 significant digits; '-' for null/NaN. */
export function num(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10 ** digits) return Math.round(v).toString();
  return Number(v.toPrecision(digits)).toString();
}

/** A duration given in milliseconds, in a readable unit. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms < 1) return `${num(ms * 1000)} us`;
  if (ms < 1000) return `${num(ms)} ms`;
  return `${num(ms / 1000)} s`;
}

export function mb(bytes: number): string {
  return num(bytes / 2 ** 20);
}

/** mulberry32: small, fast, seeded (the synthetic models' generator). */
export { mulberry32 as rng } from '../src/model/synthetic.js';

/** Fill with uniform values in [-halfWidth, halfWidth) (xorshift32: fast enough for 10^8 values). */
export function fillUniform(a: Float32Array, halfWidth: number, seed: number): void {
  let s = (seed * 2654435761 + 1) >>> 0 || 1;
  const k = (2 * halfWidth) / 4294967296;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s >>> 0) * k - halfWidth;
  }
}

export function argmax(v: Float32Array, off: number, n: number): number {
  let best = off;
  for (let i = off + 1; i < off + n; i++) if (v[i] > v[best]) best = i;
  return best - off;
}

/** The repository root (the folder holding package.json), found from this file in dist/bench/. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error(
        'bench: cannot find the repository root (no package.json above ' + fileURLToPath(import.meta.url) + ')',
      );
    dir = up;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
