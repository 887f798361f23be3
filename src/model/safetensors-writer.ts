// Writes a .safetensors file: 8-byte little-endian header length, JSON header, raw tensor bytes.
// Tensors are produced one at a time by `fill`, so a multi-GB model never sits in memory whole.
import * as fs from 'node:fs';

export type WritableDType = 'BF16' | 'F16' | 'F32';

export interface TensorSpec {
  name: string;
  dtype: WritableDType;
  shape: number[];
}

const BYTES: Record<WritableDType, number> = { BF16: 2, F16: 2, F32: 4 };

export function tensorByteLength(spec: TensorSpec): number {
  return spec.shape.reduce((a, b) => a * b, 1) * BYTES[spec.dtype];
}

/** Write `specs` in order; `fill(spec, bytes)` writes each tensor's little-endian data into `bytes`. */
export function writeSafetensors(
  path: string,
  specs: TensorSpec[],
  fill: (spec: TensorSpec, bytes: Uint8Array) => void,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    const n = tensorByteLength(s);
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the format pads the header with spaces to 8 bytes
  const jsonBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(jsonBytes.length));
  const fd = fs.openSync(path, 'w');
  try {
    fs.writeSync(fd, prefix);
    fs.writeSync(fd, jsonBytes);
    for (const s of specs) {
      const bytes = new Uint8Array(tensorByteLength(s));
      fill(s, bytes);
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
    }
  } finally {
    fs.closeSync(fd);
  }
}
