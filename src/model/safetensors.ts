// Reads .safetensors files: 8-byte little-endian header length N, N bytes of JSON header, raw data.
// Only the header is parsed up front; tensor bytes are read on demand straight into caller buffers
// (typically SharedArrayBuffers shared with worker threads), so a model is never held twice.
// Every malformed input becomes a SafetensorsError naming the file and the tensor/field, because
// the usual failure is a half-downloaded or hand-edited checkpoint and a RangeError says nothing.
import { prefixedHfNames } from './tensor-names.js';
import {
  basenamePath,
  closeFile,
  joinPath,
  MAX_INDEX_BYTES,
  openRegularFile,
  pathKind,
  readAt,
  readTextFile,
  resolvePath,
} from '../platform/files.js';

export type SafetensorsDType = 'BF16' | 'F16' | 'F32';

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  file: string; // absolute path of the .safetensors file holding it
  dataStart: number; // absolute byte offset of its first byte in that file
  byteLength: number;
}

const DTYPE_BYTES: Record<SafetensorsDType, number> = { BF16: 2, F16: 2, F32: 4 };
const SUPPORTED = Object.keys(DTYPE_BYTES).join(', ');
const MAX_HEADER = 100 * 1024 * 1024; // real headers are well under 10 MB; more means garbage
const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

function fail(where: string, msg: string): never {
  throw new SafetensorsError(`${where}: ${msg}`);
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

const isUint = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Read exactly target.length bytes at `pos`; readSync may return short counts and caps length at 2 GB. */
function readFully(fd: number, target: Uint8Array, pos: number, where: string): void {
  let done = 0;
  while (done < target.length) {
    const n = readAt(fd, target, done, Math.min(target.length - done, 1 << 30), pos + done);
    if (n === 0) fail(where, `unexpected end of file at byte ${pos + done} (file truncated?)`);
    done += n;
  }
}

/** Parse and validate one file's header. */
export function readSafetensorsHeader(file: string): {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
} {
  file = resolvePath(file);
  const { fd, size } = openRegularFile(file, 'a .safetensors file', (problem) => fail(file, problem));
  let json: string;
  let n: number;
  try {
    if (size < 8) fail(file, `file is only ${size} bytes, too short for the 8-byte header length`);
    const prefix = new Uint8Array(8);
    readFully(fd, prefix, 0, file);
    const big = new DataView(prefix.buffer).getBigUint64(0, true);
    if (big > BigInt(MAX_HEADER)) fail(file, `header length ${big} is absurdly large (limit ${MAX_HEADER} bytes)`);
    n = Number(big);
    if (n > size - 8) fail(file, `header length ${n} runs past the end of the file (${size} bytes)`);
    const bytes = new Uint8Array(n);
    readFully(fd, bytes, 8, file);
    try {
      json = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      fail(file, 'header is not valid UTF-8');
    }
  } finally {
    closeFile(fd);
  }
  return parseHeader(file, json, 8 + n, size);
}

/** `base` is where the data section starts: offsets are relative to the byte after the header. */
function parseHeader(file: string, json: string, base: number, size: number) {
  const dataSize = size - base;
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(header)) fail(file, 'header is not a JSON object');

  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry)) fail(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') fail(file, `__metadata__ value "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (!isObject(entry)) fail(where, 'entry is not an object');
    const { dtype, shape, data_offsets: offsets } = entry;
    if (dtype === undefined) fail(where, 'missing "dtype"');
    if (shape === undefined) fail(where, 'missing "shape"');
    if (offsets === undefined) fail(where, 'missing "data_offsets"');
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES))
      fail(where, `unsupported dtype ${JSON.stringify(dtype)} (supported: ${SUPPORTED})`);
    if (!Array.isArray(shape) || !shape.every(isUint))
      fail(where, `shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isUint))
      fail(where, `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(where, `data_offsets [${begin}, ${end}] begin after end`);
    if (end > dataSize)
      fail(
        where,
        `data_offsets end ${end} is past the data section (${dataSize} bytes): file truncated or offsets out of range`,
      );
    const dt = dtype as SafetensorsDType;
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dt];
    if (end - begin !== expected)
      fail(where, `byte size ${end - begin} does not match ${dt} x shape ${fmtShape(shape)} = ${expected} bytes`);
    spans.push({ name, begin, end });
    tensors.set(name, {
      name,
      dtype: dt,
      shape: shape as number[],
      file,
      dataStart: base + begin,
      byteLength: expected,
    });
  }

  // The tensors must tile the data section exactly (the format forbids holes and trailing bytes):
  // a gap or an overlap means the header does not describe this data, e.g. a header length off
  // by one, which would otherwise load every tensor shifted and give NaN logits.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let last = '';
  for (const span of spans) {
    if (span.begin < covered)
      fail(file, `tensors "${last}" and "${span.name}" overlap (bytes ${span.begin}..${covered} of the data section)`);
    if (span.begin > covered)
      fail(
        file,
        `bytes ${covered}..${span.begin} of the data section belong to no tensor (a hole before "${span.name}"): the header does not describe this data`,
      );
    covered = span.end;
    last = span.name;
  }
  if (covered !== dataSize)
    fail(
      file,
      `${dataSize - covered} trailing bytes after the last tensor (the tensors cover ${covered} of the data section's ${dataSize} bytes): the header does not describe this data`,
    );
  return { tensors, metadata };
}

/** A model directory's tensors: model.safetensors, or the shards listed in model.safetensors.index.json. */
export class TensorStore {
  private reader = new TensorReader();
  /** Names looked up with get(): after loading, every other tensor is one the config did not ask for. */
  private used = new Set<string>();

  readonly tensors: Map<string, TensorInfo>;

  private constructor(
    readonly dir: string,
    tensors: Map<string, TensorInfo>,
  ) {
    // Looked up by the prefixed names; each TensorInfo keeps its name in the file, for errors.
    const renamed = prefixedHfNames(tensors.keys());
    this.tensors = renamed ? new Map([...tensors].map(([n, info]) => [renamed.get(n)!, info])) : tensors;
  }

  static open(dir: string): TensorStore {
    dir = resolvePath(dir);
    const indexPath = joinPath(dir, INDEX);
    // Prefer the index: a directory can hold a stale single file next to a newer sharded export.
    if (pathKind(indexPath) !== 'missing') return new TensorStore(dir, openSharded(dir, indexPath));
    const single = joinPath(dir, SINGLE);
    if (pathKind(single) !== 'missing') return new TensorStore(dir, readSafetensorsHeader(single).tensors);
    fail(dir, `no ${SINGLE} or ${INDEX} found`);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Look a tensor up, optionally checking its shape; throws SafetensorsError if missing or mis-shaped. */
  get(name: string, shape?: readonly number[]): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) fail(this.dir, `tensor "${name}" not found`);
    this.used.add(name);
    if (shape && (shape.length !== info.shape.length || shape.some((d, i) => d !== info.shape[i])))
      fail(info.file, `tensor "${name}" has shape ${fmtShape(info.shape)}, expected ${fmtShape(shape)}`);
    return info;
  }

  /**
   * Throws naming the tensors that no get() asked for (except those `ignorable` accepts): weights
   * in the file that the config does not use, e.g. layers beyond num_hidden_layers, mean the
   * config and the checkpoint disagree, and running anyway would silently compute something else.
   */
  checkAllUsed(ignorable: (name: string) => boolean = () => false): void {
    const unused = [...this.tensors.keys()].filter((n) => !this.used.has(n) && !ignorable(n)).sort();
    if (unused.length === 0) return;
    const shown = unused.slice(0, 8).map((n) => `"${n}"`);
    if (unused.length > 8) shown.push(`and ${unused.length - 8} more`);
    fail(
      this.dir,
      `${unused.length} tensor${unused.length === 1 ? '' : 's'} in the checkpoint ${unused.length === 1 ? 'is' : 'are'} not used by config.json (${shown.join(', ')}): does num_hidden_layers (or attention_bias, tie_word_embeddings) match the weights?`,
    );
  }

  /**
   * Scans every tensor (or those `only` accepts) for NaN and infinities (as llama.cpp's
   * --check-tensors): a damaged checkpoint then fails at load, naming the tensor and the element,
   * instead of giving NaN logits.
   */
  checkValues(only: (info: TensorInfo) => boolean = () => true): void {
    const chunk = new Uint8Array(1 << 20);
    for (const info of this.tensors.values()) {
      if (!only(info)) continue;
      const elemBytes = DTYPE_BYTES[info.dtype];
      for (let offset = 0; offset < info.byteLength; offset += chunk.length) {
        const bytes = chunk.subarray(0, Math.min(chunk.length, info.byteLength - offset));
        this.readRange(info, offset, bytes);
        const at = firstNonFinite(bytes, info.dtype);
        if (at >= 0) {
          const index = offset / elemBytes + at;
          const view = new DataView(bytes.buffer, bytes.byteOffset + at * elemBytes, elemBytes);
          const bits = elemBytes === 4 ? view.getUint32(0, true) : view.getUint16(0, true);
          const mantissa = elemBytes === 4 ? bits & 0x7fffff : info.dtype === 'F16' ? bits & 0x3ff : bits & 0x7f;
          const what = mantissa !== 0 ? 'NaN' : bits >>> (elemBytes * 8 - 1) ? '-Inf' : 'Inf';
          fail(info.file, `tensor "${info.name}" holds ${what} at element ${index} (shape ${fmtShape(info.shape)})`);
        }
      }
    }
  }

  /** Read the tensor's raw bytes straight from disk into `target` (no intermediate copy). */
  readInto(info: TensorInfo, target: Uint8Array): void {
    if (target.byteLength !== info.byteLength)
      fail(info.file, `tensor "${info.name}" is ${info.byteLength} bytes but target is ${target.byteLength}`);
    this.readRange(info, 0, target);
  }

  /** Read target.length bytes of the tensor starting `offset` bytes into it (for chunked conversion). */
  readRange(info: TensorInfo, offset: number, target: Uint8Array): void {
    this.reader.readRange(info, offset, target);
  }

  /** Read into a new SharedArrayBuffer; the typed array views assume a little-endian host (x86, arm). */
  readShared(info: TensorInfo): Float32Array | Uint16Array {
    const sab = new SharedArrayBuffer(info.byteLength);
    this.readInto(info, new Uint8Array(sab));
    return info.dtype === 'F32' ? new Float32Array(sab) : new Uint16Array(sab);
  }

  close(): void {
    this.reader.close();
  }
}

/**
 * Reads tensor bytes at any offset, keeping each .safetensors file open. TensorInfo is plain data,
 * so a worker thread given the infos reads its own row ranges through its own TensorReader.
 */
export class TensorReader {
  private fds = new Map<string, number>();

  /** Read target.length bytes of the tensor starting `offset` bytes into it. */
  readRange(info: TensorInfo, offset: number, target: Uint8Array): void {
    if (offset < 0 || offset + target.byteLength > info.byteLength)
      fail(
        info.file,
        `tensor "${info.name}": range [${offset}, ${offset + target.byteLength}) is outside its ${info.byteLength} bytes`,
      );
    let fd = this.fds.get(info.file);
    if (fd === undefined) {
      fd = openRegularFile(info.file, 'a .safetensors file', (problem) => fail(info.file, problem)).fd;
      this.fds.set(info.file, fd);
    }
    readFully(fd, target, info.dataStart + offset, `${info.file}: tensor "${info.name}"`);
  }

  close(): void {
    for (const fd of this.fds.values()) closeFile(fd);
    this.fds.clear();
  }
}

/** Index of the first NaN or infinity among little-endian values of `dtype` in `bytes`, or -1. */
function firstNonFinite(bytes: Uint8Array, dtype: SafetensorsDType): number {
  // All exponent bits set means Inf or NaN, in every IEEE format; test the bits, not the value.
  if (dtype === 'F32') {
    const n = bytes.length >>> 2;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let i = 0; i < n; i++) if ((view.getUint32(i * 4, true) & 0x7f800000) === 0x7f800000) return i;
    return -1;
  }
  const exponent = dtype === 'F16' ? 0x7c00 : 0x7f80;
  const n = bytes.length >>> 1;
  for (let i = 0; i < n; i++) if (((bytes[2 * i] | (bytes[2 * i + 1] << 8)) & exponent) === exponent) return i;
  return -1;
}

function openSharded(dir: string, indexPath: string): Map<string, TensorInfo> {
  const text = readTextFile(indexPath, 'the JSON index of the shards', MAX_INDEX_BYTES, (problem) =>
    fail(indexPath, problem),
  );
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (e) {
    fail(indexPath, `index is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(index) || !isObject(index.weight_map)) fail(indexPath, 'missing "weight_map" object');
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(index.weight_map)) {
    // Plain file names only: the index must not point outside the model directory.
    if (typeof shard !== 'string' || shard !== basenamePath(shard) || shard === '..')
      fail(indexPath, `weight_map entry "${name}" has invalid shard file name ${JSON.stringify(shard)}`);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }

  const tensors = new Map<string, TensorInfo>();
  for (const [shard, names] of byShard) {
    const file = joinPath(dir, shard);
    if (pathKind(file) === 'missing')
      fail(indexPath, `shard ${shard} (listed for tensor "${names[0]}") is missing on disk`);
    const header = readSafetensorsHeader(file).tensors;
    for (const name of names)
      if (!header.has(name)) fail(file, `tensor "${name}" is listed in weight_map but absent from shard ${shard}`);
    for (const [name, info] of header) {
      const prev = tensors.get(name);
      if (prev) fail(indexPath, `tensor "${name}" appears in two shards: ${basenamePath(prev.file)} and ${shard}`);
      tensors.set(name, info);
    }
  }
  return tensors;
}
