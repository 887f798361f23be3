// Reading a model's files with a bound on what a bad folder can do (the Node side of the platform
// seam: files.browser.ts reads the same calls from the files a page fetched into memory). A named pipe in place of
// config.json blocks a plain open() until some writer appears, and /dev/zero (or a huge file) read
// whole never ends or fills memory: only regular files are read, each up to a stated size.

import * as fs from 'node:fs';
import * as path from 'node:path';

// Opening without blocking lets us look at what the path is before reading it: for a FIFO,
// open(O_RDONLY) would wait for a writer; with O_NONBLOCK it returns at once. (Windows has neither.)
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a named pipe (FIFO)';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Open `file` for reading if it is a regular file (symbolic links followed); returns its descriptor
 * and size. `fail` receives what is wrong ("is a named pipe (FIFO), expected a JSON file", with
 * `expected` saying what the file should be) and throws the caller's error, naming the file its way.
 */
export function openRegularFile(
  file: string,
  expected: string,
  fail: (problem: string) => never,
): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') fail(`is a directory, expected ${expected}`);
    fail(`cannot read (${code ?? (e as Error).message})`);
  }
  let stat: fs.Stats;
  try {
    stat = fs.fstatSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fail(`cannot read its status (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!stat.isFile()) {
    fs.closeSync(fd);
    fail(`is ${kindOf(stat)}, expected ${expected}`);
  }
  return { fd, size: stat.size };
}

/** The text of a regular file of at most `maxBytes` bytes (see openRegularFile for `fail`). */
export function readTextFile(
  file: string,
  expected: string,
  maxBytes: number,
  fail: (problem: string) => never,
): string {
  const { fd, size } = openRegularFile(file, expected, fail);
  try {
    if (size > maxBytes)
      fail(`is ${size} bytes, more than the ${maxBytes} bytes ${expected} may have here: is it the right file?`);
    const bytes = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, bytes, done, size - done, done);
      if (n === 0) break; // shrank while being read: parse what is there
      done += n;
    }
    return new TextDecoder().decode(bytes.subarray(0, done));
  } finally {
    fs.closeSync(fd);
  }
}

export { MAX_CONFIG_BYTES, MAX_INDEX_BYTES, MAX_TOKENIZER_BYTES } from './limits.js';

/** Read up to `length` bytes at file position `position` into target[offset..]; returns the count (0 at the end). */
export function readAt(fd: number, target: Uint8Array, offset: number, length: number, position: number): number {
  return fs.readSync(fd, target, offset, length, position);
}

export function closeFile(fd: number): void {
  fs.closeSync(fd);
}

/** What is at `p`: a regular file, a directory, nothing, or something else (a pipe, a device). */
export function pathKind(p: string): 'file' | 'directory' | 'missing' | 'other' {
  try {
    const stat = fs.statSync(p);
    return stat.isFile() ? 'file' : stat.isDirectory() ? 'directory' : 'other';
  } catch {
    return 'missing';
  }
}

export const joinPath = path.join;
export const dirnamePath = path.dirname;
export const basenamePath = path.basename;
export const resolvePath = path.resolve;
