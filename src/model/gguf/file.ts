// Reads GGUF files (llama.cpp's model format): "GGUF", version, tensor count, metadata key/value
// pairs, tensor infos (name, dims, ggml type, offset), padding to the alignment, tensor data.
// Only the header is read here; tensor bytes are read on demand by offset, as for safetensors.
// A split model (`name-00001-of-00003.gguf`) is opened by its first file: the others are found
// beside it and their tensors join one table.
//
// Our own reader rather than @huggingface/gguf (0.4.6, which does read local files with
// allowLocalFile and has typedMetadata): the load path is synchronous per file descriptor like
// safetensors.ts, errors must name the file and key or tensor, the writer (convert) shares the
// value types, and on the 5.9 MB header of Qwen2.5's 151,936-token vocabulary the library took
// 4.3-4.8 s against 0.5-0.7 s here (same run, shared machine).
// Files are read through the platform seam (platform/files.ts): in a browser tab the same code reads
// the fetched file's bytes.
import { closeFile, openRegularFile, pathKind, readAt, resolvePath } from '../../platform/files.js';

export class GgufError extends Error {
  override name = 'GgufError';
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT = 32;
const MAX_HEADER_BYTES = 1 << 30;

/** Metadata value types of the GGUF spec. */
export const GGUF_VALUE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

const VALUE_NAMES = Object.fromEntries(Object.entries(GGUF_VALUE).map(([k, v]) => [v, k.toLowerCase()]));

/** A metadata value: numbers (64-bit integers as numbers when safe, else bigint), strings, booleans, arrays of them. */
export type GgufScalar = number | bigint | boolean | string;
export type GgufValue = GgufScalar | GgufScalar[];

export interface GgufEntry {
  /** GGUF_VALUE code; for arrays, ARRAY, with the item type in `itemType`. */
  type: number;
  itemType?: number;
  value: GgufValue;
}

/** ggml tensor types: name, elements per block, bytes per block (ggml.c's type_traits). */
export const GGML_TYPE_INFO: Record<number, { name: string; blockSize: number; blockBytes: number }> = {
  0: { name: 'F32', blockSize: 1, blockBytes: 4 },
  1: { name: 'F16', blockSize: 1, blockBytes: 2 },
  2: { name: 'Q4_0', blockSize: 32, blockBytes: 18 },
  3: { name: 'Q4_1', blockSize: 32, blockBytes: 20 },
  6: { name: 'Q5_0', blockSize: 32, blockBytes: 22 },
  7: { name: 'Q5_1', blockSize: 32, blockBytes: 24 },
  8: { name: 'Q8_0', blockSize: 32, blockBytes: 34 },
  9: { name: 'Q8_1', blockSize: 32, blockBytes: 36 },
  10: { name: 'Q2_K', blockSize: 256, blockBytes: 84 },
  11: { name: 'Q3_K', blockSize: 256, blockBytes: 110 },
  12: { name: 'Q4_K', blockSize: 256, blockBytes: 144 },
  13: { name: 'Q5_K', blockSize: 256, blockBytes: 176 },
  14: { name: 'Q6_K', blockSize: 256, blockBytes: 210 },
  15: { name: 'Q8_K', blockSize: 256, blockBytes: 292 },
  16: { name: 'IQ2_XXS', blockSize: 256, blockBytes: 66 },
  17: { name: 'IQ2_XS', blockSize: 256, blockBytes: 74 },
  18: { name: 'IQ3_XXS', blockSize: 256, blockBytes: 98 },
  19: { name: 'IQ1_S', blockSize: 256, blockBytes: 50 },
  20: { name: 'IQ4_NL', blockSize: 32, blockBytes: 18 },
  21: { name: 'IQ3_S', blockSize: 256, blockBytes: 110 },
  22: { name: 'IQ2_S', blockSize: 256, blockBytes: 82 },
  23: { name: 'IQ4_XS', blockSize: 256, blockBytes: 136 },
  24: { name: 'I8', blockSize: 1, blockBytes: 1 },
  25: { name: 'I16', blockSize: 1, blockBytes: 2 },
  26: { name: 'I32', blockSize: 1, blockBytes: 4 },
  27: { name: 'I64', blockSize: 1, blockBytes: 8 },
  28: { name: 'F64', blockSize: 1, blockBytes: 8 },
  29: { name: 'IQ1_M', blockSize: 256, blockBytes: 56 },
  30: { name: 'BF16', blockSize: 1, blockBytes: 2 },
  34: { name: 'TQ1_0', blockSize: 256, blockBytes: 54 },
  35: { name: 'TQ2_0', blockSize: 256, blockBytes: 66 },
  39: { name: 'MXFP4', blockSize: 32, blockBytes: 17 },
};

export const ggmlTypeName = (type: number): string => GGML_TYPE_INFO[type]?.name ?? `unknown type ${type}`;

export interface GgufTensorInfo {
  name: string;
  /** ggml order: dims[0] is the row length (contiguous), dims[1] the number of rows. */
  dims: number[];
  /** ggml type code (GGML_TYPE_INFO). */
  type: number;
  /** The file holding it (absolute), the absolute offset of its first byte and its byte length. */
  file: string;
  dataStart: number;
  byteLength: number;
}

export interface GgufHeader {
  file: string;
  version: number;
  metadata: Map<string, GgufEntry>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataStart: number;
}

/** A cursor over the header, reading more of the file as the parse needs it. */
class HeaderCursor {
  buf: Uint8Array;
  view: DataView;
  pos = 0; // in the file
  private bufStart = 0; // file offset of buf[0]
  private bufEnd = 0;

  constructor(
    private fd: number,
    readonly file: string,
    readonly size: number,
  ) {
    this.buf = new Uint8Array(1 << 20);
    this.view = new DataView(this.buf.buffer);
  }

  need(n: number, what: () => string): number {
    if (this.pos + n > this.size)
      throw new GgufError(
        `${this.file}: unexpected end of file at byte ${this.pos} reading ${what()} (file truncated?)`,
      );
    if (this.pos + n > this.bufEnd) {
      if (this.pos + n > MAX_HEADER_BYTES)
        throw new GgufError(`${this.file}: header larger than ${MAX_HEADER_BYTES} bytes reading ${what()}`);
      const keep = this.bufEnd - this.pos;
      const want = Math.max(this.buf.length, 2 * n);
      const next = new Uint8Array(Math.min(Math.max(want, 4 * keep), this.size - this.pos));
      next.set(this.buf.subarray(this.pos - this.bufStart, this.bufEnd - this.bufStart));
      let filled = keep;
      while (filled < next.length) {
        const r = readAt(this.fd, next, filled, next.length - filled, this.pos + filled);
        if (r === 0) break;
        filled += r;
      }
      this.buf = next;
      this.view = new DataView(next.buffer);
      this.bufStart = this.pos;
      this.bufEnd = this.pos + filled;
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }

  u32(what: () => string): number {
    const at = this.need(4, what);
    return this.view.getUint32(at, true);
  }

  u64(what: () => string): number {
    const at = this.need(8, what);
    const v = this.view.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`${this.file}: ${what()} is ${v}, too large`);
    return Number(v);
  }

  string(what: () => string): string {
    const n = this.u64(what);
    if (n > this.size) throw new GgufError(`${this.file}: ${what()}: string length ${n} runs past the end of the file`);
    const at = this.need(n, what);
    return utf8(this.buf, at, at + n);
  }
}

// ignoreBOM keeps a leading U+FEFF (a vocabulary may hold it as a token), as Buffer's toString did.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** UTF-8 text of bytes[start..end]; most GGUF strings (keys, tensor names, tokens) are short ASCII. */
function utf8(bytes: Uint8Array, start: number, end: number): string {
  if (end - start > 64) return decoder.decode(bytes.subarray(start, end));
  let s = '';
  for (let i = start; i < end; i++) {
    if (bytes[i] >= 0x80) return decoder.decode(bytes.subarray(start, end));
    s += String.fromCharCode(bytes[i]);
  }
  return s;
}

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readScalar(c: HeaderCursor, type: number, what: () => string): GgufScalar {
  if (type === GGUF_VALUE.STRING) return c.string(what);
  const n = SCALAR_BYTES[type];
  if (n === undefined)
    throw new GgufError(`${c.file}: ${what()} has unknown value type ${type} (file corrupt or from a newer GGUF)`);
  const at = c.need(n, what); // may replace c.view: read it after
  const v = c.view;
  switch (type) {
    case GGUF_VALUE.UINT8:
      return v.getUint8(at);
    case GGUF_VALUE.INT8:
      return v.getInt8(at);
    case GGUF_VALUE.UINT16:
      return v.getUint16(at, true);
    case GGUF_VALUE.INT16:
      return v.getInt16(at, true);
    case GGUF_VALUE.UINT32:
      return v.getUint32(at, true);
    case GGUF_VALUE.INT32:
      return v.getInt32(at, true);
    case GGUF_VALUE.FLOAT32:
      return v.getFloat32(at, true);
    case GGUF_VALUE.BOOL:
      return v.getUint8(at) !== 0;
    case GGUF_VALUE.UINT64: {
      const big = v.getBigUint64(at, true);
      return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    case GGUF_VALUE.INT64: {
      const big = v.getBigInt64(at, true);
      return big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : big;
    }
    default:
      return v.getFloat64(at, true);
  }
}

function readEntry(c: HeaderCursor, key: string): GgufEntry {
  const what = () => `metadata key "${key}"`;
  const type = c.u32(what);
  if (type !== GGUF_VALUE.ARRAY) return { type, value: readScalar(c, type, what) };
  const itemType = c.u32(what);
  const count = c.u64(what);
  if (itemType === GGUF_VALUE.ARRAY)
    throw new GgufError(`${c.file}: metadata key "${key}" is an array of arrays, which no model uses`);
  if (count > c.size) throw new GgufError(`${c.file}: metadata key "${key}": array length ${count} is impossible`);
  const items: GgufScalar[] = new Array(count);
  for (let i = 0; i < count; i++) items[i] = readScalar(c, itemType, what);
  return { type, itemType, value: items };
}

/** Parse and check one file's header. */
export function readGgufHeader(file: string): GgufHeader {
  file = resolvePath(file);
  const { fd, size } = openRegularFile(file, 'a GGUF file', (problem) => {
    throw new GgufError(`${file}: ${problem}`);
  });
  try {
    const c = new HeaderCursor(fd, file, size);
    if (size < 24) throw new GgufError(`${file}: only ${size} bytes, too short for a GGUF header`);
    const magic = c.u32(() => 'the magic');
    if (magic !== MAGIC)
      throw new GgufError(
        `${file}: not a GGUF file (it starts with ${JSON.stringify(String.fromCharCode(...c.buf.subarray(0, 4)).replace(/[^ -~]/g, '?'))}, expected "GGUF")`,
      );
    const version = c.u32(() => 'the version');
    if (version !== 2 && version !== 3)
      throw new GgufError(`${file}: GGUF version ${version} is not supported (versions 2 and 3 are)`);
    const tensorCount = c.u64(() => 'the tensor count');
    const kvCount = c.u64(() => 'the metadata count');
    const metadata = new Map<string, GgufEntry>();
    for (let i = 0; i < kvCount; i++) {
      const key = c.string(() => `metadata key ${i}`);
      if (metadata.has(key)) throw new GgufError(`${file}: metadata key "${key}" appears twice`);
      metadata.set(key, readEntry(c, key));
    }
    const align = metadata.get('general.alignment');
    const alignment = align === undefined ? DEFAULT_ALIGNMENT : (align.value as number);
    if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0)
      throw new GgufError(
        `${file}: metadata key "general.alignment" must be a power of two, got ${String(align?.value)}`,
      );
    const raw: { name: string; dims: number[]; type: number; offset: number }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = c.string(() => `tensor info ${i}`);
      const what = () => `tensor "${name}"`;
      const nDims = c.u32(what);
      if (nDims < 1 || nDims > 4)
        throw new GgufError(`${file}: tensor "${name}" has ${nDims} dimensions (1 to 4 allowed)`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(c.u64(what));
      const type = c.u32(what);
      const offset = c.u64(what);
      raw.push({ name, dims, type, offset });
    }
    const dataStart = Math.ceil(c.pos / alignment) * alignment;
    const tensors: GgufTensorInfo[] = raw.map(({ name, dims, type, offset }) => {
      const where = `${file}: tensor "${name}"`;
      const info = GGML_TYPE_INFO[type];
      if (info === undefined) throw new GgufError(`${where} has unknown ggml type ${type}`);
      const elements = dims.reduce((a, b) => a * b, 1);
      if (dims[0] % info.blockSize !== 0)
        throw new GgufError(
          `${where}: row length ${dims[0]} is not a multiple of ${info.name}'s block of ${info.blockSize}`,
        );
      if (offset % alignment !== 0) throw new GgufError(`${where}: offset ${offset} is not aligned to ${alignment}`);
      const byteLength = (elements / info.blockSize) * info.blockBytes;
      if (dataStart + offset + byteLength > size)
        throw new GgufError(
          `${where}: its ${byteLength} bytes at offset ${offset} run past the end of the file (${size} bytes; truncated download?)`,
        );
      return { name, dims, type, file, dataStart: dataStart + offset, byteLength };
    });
    return { file, version, metadata, tensors, alignment, dataStart };
  } finally {
    closeFile(fd);
  }
}

const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/;

/** A GGUF model: the first file's metadata and the tensors of all its split files, by name. */
export class GgufModel {
  private constructor(
    /** The path the user gave (the first file of a split model). */
    readonly file: string,
    readonly metadata: Map<string, GgufEntry>,
    readonly tensors: Map<string, GgufTensorInfo>,
    readonly files: string[],
  ) {}

  static open(file: string): GgufModel {
    file = resolvePath(file);
    const first = readGgufHeader(file);
    const files = [file];
    const headers = [first];
    const m = SPLIT.exec(file);
    const countEntry = first.metadata.get('split.count');
    if (m !== null || countEntry !== undefined) {
      const count = countEntry === undefined ? Number(m![2]) : Number(countEntry.value);
      if (m === null || Number(m[1]) !== 1)
        throw new GgufError(
          `${file}: is part of a split model; open its first file (...-00001-of-${String(count).padStart(5, '0')}.gguf)`,
        );
      if (Number(m[2]) !== count)
        throw new GgufError(`${file}: the name says ${Number(m[2])} files but "split.count" says ${count}`);
      for (let i = 2; i <= count; i++) {
        const part = file.replace(SPLIT, `-${String(i).padStart(5, '0')}-of-${m[2]}.gguf`);
        if (pathKind(part) === 'missing')
          throw new GgufError(`${file}: split file ${i} of ${count} is missing: ${part} (download every part)`);
        files.push(part);
        headers.push(readGgufHeader(part));
      }
    }
    const tensors = new Map<string, GgufTensorInfo>();
    for (const h of headers) {
      for (const t of h.tensors) {
        if (tensors.has(t.name)) throw new GgufError(`${h.file}: tensor "${t.name}" appears twice`);
        tensors.set(t.name, t);
      }
    }
    return new GgufModel(file, first.metadata, tensors, files);
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** The value of `key`, or undefined. */
  value(key: string): GgufValue | undefined {
    return this.metadata.get(key)?.value;
  }

  private bad(key: string, expected: string): never {
    const e = this.metadata.get(key);
    const got =
      e === undefined
        ? 'it is missing'
        : `got ${e.itemType === undefined ? VALUE_NAMES[e.type] : `array of ${VALUE_NAMES[e.itemType]}`} ${JSON.stringify(Array.isArray(e.value) ? `[${e.value.length} items]` : String(e.value))}`;
    throw new GgufError(`${this.file}: metadata key "${key}" must be ${expected}; ${got}`);
  }

  uint(key: string, fallback?: number): number {
    const v = this.value(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.bad(key, 'a non-negative integer');
    return v;
  }

  float(key: string, fallback?: number): number {
    const v = this.value(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'a number');
    return v;
  }

  string(key: string, fallback?: string): string {
    const v = this.value(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'string') this.bad(key, 'a string');
    return v;
  }

  bool(key: string, fallback?: boolean): boolean {
    const v = this.value(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'boolean') this.bad(key, 'true or false');
    return v;
  }

  /** An array whose items are all of `itemType` (a GGUF_VALUE code). */
  array<T extends GgufScalar>(key: string, itemTypes: readonly number[], expected: string): T[] {
    const e = this.metadata.get(key);
    if (e === undefined || e.itemType === undefined || !itemTypes.includes(e.itemType)) this.bad(key, expected);
    return e.value as T[];
  }

  tensor(name: string): GgufTensorInfo | undefined {
    return this.tensors.get(name);
  }
}

/** True if `p` names a GGUF file (by extension, or by its magic when it is a regular file). */
export function isGgufPath(p: string): boolean {
  if (p.toLowerCase().endsWith('.gguf')) return true;
  if (pathKind(p) !== 'file') return false;
  try {
    const { fd } = openRegularFile(p, 'a file', (problem) => {
      throw new Error(problem);
    });
    try {
      const b = new Uint8Array(4);
      return readAt(fd, b, 0, 4, 0) === 4 && new DataView(b.buffer).getUint32(0, true) === MAGIC;
    } finally {
      closeFile(fd);
    }
  } catch {
    return false;
  }
}

/** Read exactly target.length bytes of a file at `pos`. */
export function readFileRange(fd: number, target: Uint8Array, pos: number, where: string): void {
  let done = 0;
  while (done < target.length) {
    const n = readAt(fd, target, done, Math.min(target.length - done, 1 << 30), pos + done);
    if (n === 0) throw new GgufError(`${where}: unexpected end of file at byte ${pos + done} (file truncated?)`);
    done += n;
  }
}
