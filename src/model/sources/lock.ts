// A lock per repository, so that a second download of the same model waits for the first instead of
// writing the same .incomplete file. A lock file made with O_EXCL holds the owner's pid and host; the
// owner touches it every few seconds, so a lock whose owner died (same host: pid gone; else: not
// touched for a minute) is taken over.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const HEARTBEAT_MS = 5_000;
const STALE_MS = 60_000;
const POLL_MS = 200;

interface Owner {
  pid: number;
  host: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readOwner(file: string): { owner: Owner | null; mtimeMs: number } | null {
  try {
    const mtimeMs = fs.statSync(file).mtimeMs;
    let owner: Owner | null = null;
    try {
      owner = JSON.parse(fs.readFileSync(file, 'utf8')) as Owner;
    } catch {
      // being written, or garbage: judged by its age alone
    }
    return { owner, mtimeMs };
  } catch {
    return null; // gone
  }
}

function isStale(info: { owner: Owner | null; mtimeMs: number }): boolean {
  if (Date.now() - info.mtimeMs > STALE_MS) return true;
  const o = info.owner;
  return o !== null && o.host === os.hostname() && typeof o.pid === 'number' && !isAlive(o.pid);
}

export interface Lock {
  release(): void;
}

/**
 * Take the lock file, waiting while another live owner holds it; `onWait` is told once who that is.
 * A signal ends the wait.
 */
export async function acquireLock(
  file: string,
  opts: { onWait?: (owner: Owner | null) => void; signal?: AbortSignal } = {},
): Promise<Lock> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let told = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, JSON.stringify({ pid: process.pid, host: os.hostname() }));
      fs.closeSync(fd);
      const beat = setInterval(() => {
        const now = new Date();
        try {
          fs.utimesSync(file, now, now);
        } catch {
          // removed under us: nothing to keep alive
        }
      }, HEARTBEAT_MS);
      beat.unref();
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          clearInterval(beat);
          fs.rmSync(file, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const info = readOwner(file);
    if (info && isStale(info)) {
      fs.rmSync(file, { force: true });
      continue;
    }
    if (info && !told) {
      told = true;
      opts.onWait?.(info.owner);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
