// Writes GGUF files: the header (metadata with its value types, tensor infos with offsets) first,
// then each tensor's bytes, produced one at a time so that a conversion never holds the model twice.
import * as fs from 'node:fs';
import { GGML_TYPE_INFO, GGUF_VALUE, GgufError, type GgufEntry } from './file.js';

const ALIGNMENT = 32;

export interface TensorToWrite {
  name: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  /** ggml type code. */
  type: number;
  /** Called once, in order, when the tensor's bytes are written. */
  data: () => Uint8Array;
}

/** Metadata helpers: the value types llama.cpp expects for each kind of key. */
export const gguf = {
  u32: (value: number): GgufEntry => ({ type: GGUF_VALUE.UINT32, value }),
  i32: (value: number): GgufEntry => ({ type: GGUF_VALUE.INT32, value }),
  f32: (value: number): GgufEntry => ({ type: GGUF_VALUE.FLOAT32, value }),
  bool: (value: boolean): GgufEntry => ({ type: GGUF_VALUE.BOOL, value }),
  str: (value: string): GgufEntry => ({ type: GGUF_VALUE.STRING, value }),
  strings: (value: string[]): GgufEntry => ({ type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.STRING, value }),
  f32s: (value: number[]): GgufEntry => ({ type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.FLOAT32, value }),
  i32s: (value: number[]): GgufEntry => ({ type: GGUF_VALUE.ARRAY, itemType: GGUF_VALUE.INT32, value }),
};

/** Bytes of a tensor of `type` with these ggml dims. */
export function tensorBytes(type: number, dims: number[]): number {
  const info = GGML_TYPE_INFO[type];
  const n = dims.reduce((a, b) => a * b, 1);
  if (dims[0] % info.blockSize !== 0)
    throw new GgufError(`row length ${dims[0]} is not a multiple of ${info.name}'s block of ${info.blockSize}`);
  return (n / info.blockSize) * info.blockBytes;
}

/** The header, written into one growing buffer (a 150k-token vocabulary is 300k small values). */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = Buffer.alloc(Math.max(2 * this.buf.length, this.length + n));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  /** Room for n bytes, then write them: room() may replace the buffer, so it is read after. */
  private put(n: number, write: (b: Buffer, at: number) => unknown): void {
    const at = this.room(n);
    write(this.buf, at);
  }
  u32(v: number): void {
    this.put(4, (b, at) => b.writeUInt32LE(v, at));
  }
  u64(v: number): void {
    this.put(8, (b, at) => b.writeBigUInt64LE(BigInt(v), at));
  }
  string(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.put(n, (b, at) => b.write(s, at, n, 'utf8'));
  }
  scalar(type: number, v: unknown, key: string): void {
    switch (type) {
      case GGUF_VALUE.UINT8:
        return void this.put(1, (b, at) => b.writeUInt8(v as number, at));
      case GGUF_VALUE.INT8:
        return void this.put(1, (b, at) => b.writeInt8(v as number, at));
      case GGUF_VALUE.UINT16:
        return void this.put(2, (b, at) => b.writeUInt16LE(v as number, at));
      case GGUF_VALUE.INT16:
        return void this.put(2, (b, at) => b.writeInt16LE(v as number, at));
      case GGUF_VALUE.UINT32:
        return void this.put(4, (b, at) => b.writeUInt32LE(v as number, at));
      case GGUF_VALUE.INT32:
        return void this.put(4, (b, at) => b.writeInt32LE(v as number, at));
      case GGUF_VALUE.FLOAT32:
        return void this.put(4, (b, at) => b.writeFloatLE(v as number, at));
      case GGUF_VALUE.BOOL:
        return void this.put(1, (b, at) => b.writeUInt8(v ? 1 : 0, at));
      case GGUF_VALUE.STRING:
        return this.string(v as string);
      case GGUF_VALUE.UINT64:
        return void this.put(8, (b, at) => b.writeBigUInt64LE(BigInt(v as number), at));
      case GGUF_VALUE.INT64:
        return void this.put(8, (b, at) => b.writeBigInt64LE(BigInt(v as number), at));
      case GGUF_VALUE.FLOAT64:
        return void this.put(8, (b, at) => b.writeDoubleLE(v as number, at));
      default:
        throw new GgufError(`metadata key "${key}": cannot write value type ${type}`);
    }
  }
  pad(to: number): void {
    const n = (to - (this.length % to)) % to;
    this.room(n); // Buffer.alloc zero-fills
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** Write a GGUF v3 file. */
export function writeGguf(file: string, metadata: [string, GgufEntry][], tensors: TensorToWrite[]): void {
  const h = new ByteSink();
  h.u32(0x46554747);
  h.u32(3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [key, e] of metadata) {
    h.string(key);
    h.u32(e.type);
    if (e.type === GGUF_VALUE.ARRAY) {
      const items = e.value as unknown[];
      h.u32(e.itemType!);
      h.u64(items.length);
      for (const item of items) h.scalar(e.itemType!, item, key);
    } else h.scalar(e.type, e.value, key);
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    h.string(t.name);
    h.u32(t.dims.length);
    for (const d of t.dims) h.u64(d);
    h.u32(t.type);
    h.u64(offset);
    const size = tensorBytes(t.type, t.dims);
    sizes.push(size);
    offset += Math.ceil(size / ALIGNMENT) * ALIGNMENT;
  }
  h.pad(ALIGNMENT);
  const tmp = `${file}.partial`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, h.bytes());
    const zeros = new Uint8Array(ALIGNMENT);
    tensors.forEach((t, i) => {
      const data = t.data();
      if (data.length !== sizes[i])
        throw new GgufError(`${file}: tensor "${t.name}": ${data.length} bytes produced, ${sizes[i]} expected`);
      fs.writeSync(fd, data);
      const pad = (ALIGNMENT - (data.length % ALIGNMENT)) % ALIGNMENT;
      if (pad > 0) fs.writeSync(fd, zeros, 0, pad);
    });
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
