// Write +Inf into one element of a row of a synthetic model's embedding matrix (in place), so
// exactly the sequences holding that token get non-finite activations.
import * as fs from 'node:fs';
import * as path from 'node:path';

export function poisonEmbeddingRow(dir: string, token: number): void {
  const file = path.join(dir, 'model.safetensors');
  const fd = fs.openSync(file, 'r+');
  try {
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    const header = Buffer.alloc(headerLen);
    fs.readSync(fd, header, 0, headerLen, 8);
    const info = JSON.parse(header.toString('utf8'))['model.embed_tokens.weight'] as {
      dtype: string;
      shape: [number, number];
      data_offsets: [number, number];
    };
    const bytes = info.dtype === 'F32' ? 4 : 2;
    const inf = Buffer.alloc(bytes);
    if (info.dtype === 'F32') inf.writeFloatLE(Infinity, 0);
    else inf.writeUInt16LE(info.dtype === 'BF16' ? 0x7f80 : 0x7c00, 0);
    fs.writeSync(fd, inf, 0, bytes, 8 + headerLen + info.data_offsets[0] + token * info.shape[1] * bytes);
  } finally {
    fs.closeSync(fd);
  }
}
