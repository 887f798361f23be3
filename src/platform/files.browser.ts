// The platform seam, browser side of files.ts: a page has no file system, so the model files it
// fetched (runtime.browser.ts) are held in memory under their URLs and read through the same calls.
export { MAX_CONFIG_BYTES, MAX_INDEX_BYTES, MAX_TOKENIZER_BYTES } from './limits.js';

const mounted = new Map<string, Uint8Array>();
const openFiles = new Map<number, Uint8Array>();
let nextFd = 3;

/** Make `bytes` readable as the file `path` (a URL). */
export function mountFile(path: string, bytes: Uint8Array): void {
  mounted.set(path, bytes);
}

/** The files under `dir`, as [path, bytes]. */
export function mountedFiles(dir: string): [string, Uint8Array][] {
  const prefix = dir.replace(/\/+$/, '') + '/';
  return [...mounted].filter(([p]) => p.startsWith(prefix));
}

/** The bytes mounted as `path`, if any. */
export function mountedFile(path: string): Uint8Array | undefined {
  return mounted.get(path);
}

export function unmountFile(path: string): void {
  mounted.delete(path);
}

export function pathKind(p: string): 'file' | 'directory' | 'missing' | 'other' {
  if (mounted.has(p)) return 'file';
  const prefix = p.replace(/\/+$/, '') + '/';
  for (const key of mounted.keys()) if (key.startsWith(prefix)) return 'directory';
  return 'missing';
}

export function openRegularFile(
  file: string,
  expected: string,
  fail: (problem: string) => never,
): { fd: number; size: number } {
  const bytes = mounted.get(file);
  if (bytes === undefined) {
    if (pathKind(file) === 'directory') fail(`is a directory, expected ${expected}`);
    fail('cannot read (it was not fetched with the model folder)');
  }
  const fd = nextFd++;
  openFiles.set(fd, bytes);
  return { fd, size: bytes.length };
}

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
    return new TextDecoder().decode(openFiles.get(fd));
  } finally {
    closeFile(fd);
  }
}

export function readAt(fd: number, target: Uint8Array, offset: number, length: number, position: number): number {
  const bytes = openFiles.get(fd);
  if (bytes === undefined) throw new Error(`qwen-ts: file descriptor ${fd} is not open`);
  const n = Math.max(0, Math.min(length, bytes.length - position));
  target.set(bytes.subarray(position, position + n), offset);
  return n;
}

export function closeFile(fd: number): void {
  openFiles.delete(fd);
}

// Paths are URLs: "/" separated, already absolute.
export function joinPath(...parts: string[]): string {
  return parts
    .filter((p) => p !== '')
    .map((p, i) => (i === 0 ? p.replace(/\/+$/, '') : p.replace(/^\/+|\/+$/g, '')))
    .join('/');
}

export function dirnamePath(p: string): string {
  const at = p.replace(/\/+$/, '').lastIndexOf('/');
  return at <= 0 ? '/' : p.slice(0, at);
}

export function basenamePath(p: string): string {
  return p.replace(/\/+$/, '').slice(p.replace(/\/+$/, '').lastIndexOf('/') + 1);
}

export function resolvePath(p: string): string {
  return p;
}
