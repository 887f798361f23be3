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

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  scalar(type: number, v: unknown, key: string): void {
    const b = Buffer.alloc(8);
    switch (type) {
      case GGUF_VALUE.UINT8:
        return this.push(b.subarray(0, b.writeUInt8(v as number)));
      case GGUF_VALUE.INT8:
        return this.push(b.subarray(0, b.writeInt8(v as number)));
      case GGUF_VALUE.UINT16:
        return this.push(b.subarray(0, b.writeUInt16LE(v as number)));
      case GGUF_VALUE.INT16:
        return this.push(b.subarray(0, b.writeInt16LE(v as number)));
      case GGUF_VALUE.UINT32:
        return this.push(b.subarray(0, b.writeUInt32LE(v as number)));
      case GGUF_VALUE.INT32:
        return this.push(b.subarray(0, b.writeInt32LE(v as number)));
      case GGUF_VALUE.FLOAT32:
        return this.push(b.subarray(0, b.writeFloatLE(v as number)));
      case GGUF_VALUE.BOOL:
        return this.push(b.subarray(0, b.writeUInt8(v ? 1 : 0)));
      case GGUF_VALUE.STRING:
        return this.string(v as string);
      case GGUF_VALUE.UINT64:
        return this.push(b.subarray(0, b.writeBigUInt64LE(BigInt(v as number))));
      case GGUF_VALUE.INT64:
        return this.push(b.subarray(0, b.writeBigInt64LE(BigInt(v as number))));
      case GGUF_VALUE.FLOAT64:
        return this.push(b.subarray(0, b.writeDoubleLE(v as number)));
      default:
        throw new GgufError(`metadata key "${key}": cannot write value type ${type}`);
    }
  }
  pad(to: number): void {
    const n = (to - (this.length % to)) % to;
    if (n > 0) this.push(Buffer.alloc(n));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
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
