import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { readSafetensorsHeader, SafetensorsError, TensorStore } from '../src/model/safetensors.js';
import { writeSafetensors, type TensorSpec } from '../src/model/safetensors-writer.js';
import { f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-st-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Hand-built file: u64 LE header length, header (object or raw string), then `dataLen` bytes. */
function writeRaw(name: string, header: unknown, dataLen = 0): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([prefix, json, Buffer.alloc(dataLen)]));
  return file;
}

/** Asserts fn throws a SafetensorsError whose message matches `re`. */
function expectError(fn: () => unknown, re: RegExp): void {
  expect(fn).toThrow(SafetensorsError);
  expect(fn).toThrow(re);
}

// Distinct values per tensor, exactly representable in every dtype so they read back bit-exact.
const specs: TensorSpec[] = [
  { name: 'a.bf16', dtype: 'BF16', shape: [2, 3] },
  { name: 'b.f16', dtype: 'F16', shape: [4] },
  { name: 'c.f32', dtype: 'F32', shape: [3, 1, 2] },
];
const valueOf = (s: TensorSpec, i: number) => (i + 1) * (s.dtype === 'F32' ? -0.1 : 0.25);

function fillSpec(s: TensorSpec, bytes: Uint8Array): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = s.shape.reduce((a, b) => a * b, 1);
  for (let i = 0; i < n; i++) {
    if (s.dtype === 'F32') v.setFloat32(i * 4, valueOf(s, i), true);
    else v.setUint16(i * 2, (s.dtype === 'BF16' ? f32ToBf16 : f32ToF16)(valueOf(s, i)), true);
  }
}

function expectValues(s: TensorSpec, arr: Float32Array | Uint16Array): void {
  const want = Array.from({ length: arr.length }, (_, i) =>
    s.dtype === 'F32' ? Math.fround(valueOf(s, i)) : (s.dtype === 'BF16' ? f32ToBf16 : f32ToF16)(valueOf(s, i)),
  );
  expect(Array.from(arr)).toEqual(want);
}

describe('valid files', () => {
  test('round trip BF16/F16/F32 through writeSafetensors', () => {
    writeSafetensors(path.join(dir, 'model.safetensors'), specs, fillSpec, { format: 'pt', note: 'hi' });
    const { metadata } = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    expect(metadata).toEqual({ format: 'pt', note: 'hi' });

    const store = TensorStore.open(dir);
    try {
      expect([...store.tensors.keys()]).toEqual(specs.map((s) => s.name));
      for (const s of specs) {
        const info = store.get(s.name, s.shape);
        expect(info.dtype).toBe(s.dtype);
        expect(info.file).toBe(path.join(dir, 'model.safetensors'));
        const arr = store.readShared(info);
        expect(arr).toBeInstanceOf(s.dtype === 'F32' ? Float32Array : Uint16Array);
        expect(arr.buffer).toBeInstanceOf(SharedArrayBuffer);
        expectValues(s, arr);
      }
      // Offsets are absolute: the last tensor ends exactly at the end of the file.
      const last = store.get('c.f32');
      expect(last.dataStart + last.byteLength).toBe(fs.statSync(last.file).size);
      expect(store.has('b.f16')).toBe(true);
      expect(store.has('nope')).toBe(false);
    } finally {
      store.close();
    }
  });

  test('readInto fills a SharedArrayBuffer-backed view at an offset', () => {
    writeSafetensors(path.join(dir, 'model.safetensors'), specs, fillSpec);
    const store = TensorStore.open(dir);
    const info = store.get('c.f32');
    const sab = new SharedArrayBuffer(16 + info.byteLength);
    store.readInto(info, new Uint8Array(sab, 16, info.byteLength));
    expectValues(specs[2], new Float32Array(sab, 16, 6));
    expect(new Uint8Array(sab, 0, 16).every((b) => b === 0)).toBe(true);
    expectError(
      () => store.readInto(info, new Uint8Array(info.byteLength + 1)),
      /tensor "c\.f32" is 24 bytes but target is 25/,
    );
    store.close();
  });

  test('sharded directory via model.safetensors.index.json', () => {
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), specs.slice(0, 2), fillSpec);
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), specs.slice(2), fillSpec);
    const weight_map = {
      'a.bf16': 'model-00001-of-00002.safetensors',
      'b.f16': 'model-00001-of-00002.safetensors',
      'c.f32': 'model-00002-of-00002.safetensors',
    };
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map }));
    // A stale single-file export alongside must be ignored in favour of the index.
    writeRaw('model.safetensors', { stale: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4);

    const store = TensorStore.open(dir);
    expect(store.tensors.size).toBe(3);
    expect(store.has('stale')).toBe(false);
    for (const s of specs) {
      const info = store.get(s.name, s.shape);
      expect(path.basename(info.file)).toBe(weight_map[s.name as keyof typeof weight_map]);
      expectValues(s, store.readShared(info));
    }
    store.close();
  });

  test('zero-element tensors and an empty header are fine', () => {
    const file = writeRaw('empty.safetensors', { e: { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] } });
    expect(readSafetensorsHeader(file).tensors.get('e')?.byteLength).toBe(0);
    expect(readSafetensorsHeader(writeRaw('none.safetensors', {})).tensors.size).toBe(0);
  });
});

describe('bad files', () => {
  const t = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

  test('file shorter than 8 bytes', () => {
    const file = path.join(dir, 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectError(() => readSafetensorsHeader(file), /short\.safetensors: file is only 3 bytes, too short/);
  });

  test('truncated data section', () => {
    const file = path.join(dir, 'cut.safetensors');
    writeSafetensors(file, specs, fillSpec);
    fs.truncateSync(file, fs.statSync(file).size - 1);
    expectError(
      () => readSafetensorsHeader(file),
      /cut\.safetensors: tensor "c\.f32".*past the data section.*truncated/,
    );
  });

  test('header length past the end of the file', () => {
    const file = path.join(dir, 'hdr.safetensors');
    const b = Buffer.alloc(20);
    b.writeBigUInt64LE(100n);
    fs.writeFileSync(file, b);
    expectError(
      () => readSafetensorsHeader(file),
      /hdr\.safetensors: header length 100 runs past the end of the file \(20 bytes\)/,
    );
  });

  test('absurdly large header length', () => {
    const file = path.join(dir, 'huge.safetensors');
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(1n << 40n);
    fs.writeFileSync(file, b);
    expectError(() => readSafetensorsHeader(file), /huge\.safetensors: header length \d+ is absurdly large/);
  });

  test('header not valid JSON', () => {
    const file = writeRaw('json.safetensors', '{"a": {"dtype": ');
    expectError(() => readSafetensorsHeader(file), /json\.safetensors: header is not valid JSON/);
  });

  test('header not valid UTF-8', () => {
    const file = path.join(dir, 'utf.safetensors');
    fs.writeFileSync(file, Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0xff, 0xfe])]));
    expectError(() => readSafetensorsHeader(file), /utf\.safetensors: header is not valid UTF-8/);
  });

  test('header not an object', () => {
    const file = writeRaw('arr.safetensors', [1, 2]);
    expectError(() => readSafetensorsHeader(file), /arr\.safetensors: header is not a JSON object/);
  });

  test.each([
    ['dtype', { shape: [1], data_offsets: [0, 4] }],
    ['shape', { dtype: 'F32', data_offsets: [0, 4] }],
    ['data_offsets', { dtype: 'F32', shape: [1] }],
  ])('entry missing %s', (field, entry) => {
    const file = writeRaw('missing.safetensors', { w: entry }, 4);
    expectError(() => readSafetensorsHeader(file), new RegExp(`missing\\.safetensors: tensor "w": missing "${field}"`));
  });

  test.each([[[-1, 2]], [[1.5]], ['3'], [[null]]])('shape %j is not an array of non-negative integers', (shape) => {
    const file = writeRaw('shape.safetensors', { w: t('F32', shape, [0, 4]) }, 4);
    expectError(
      () => readSafetensorsHeader(file),
      /shape\.safetensors: tensor "w": shape .* is not an array of non-negative integers/,
    );
  });

  test.each([[[-4, 0]], [[0, 4.5]], [[0]], ['0,4']])('data_offsets %j malformed', (offs) => {
    const file = writeRaw('offs.safetensors', { w: t('F32', [1], offs) }, 8);
    expectError(
      () => readSafetensorsHeader(file),
      /offs\.safetensors: tensor "w": data_offsets .* is not a pair of non-negative integers/,
    );
  });

  test('data_offsets begin after end', () => {
    const file = writeRaw('order.safetensors', { w: t('F32', [1], [8, 4]) }, 8);
    expectError(
      () => readSafetensorsHeader(file),
      /order\.safetensors: tensor "w": data_offsets \[8, 4\] begin after end/,
    );
  });

  test('data_offsets end past the data section', () => {
    const file = writeRaw('range.safetensors', { w: t('F32', [2], [4, 12]) }, 8);
    expectError(
      () => readSafetensorsHeader(file),
      /range\.safetensors: tensor "w": data_offsets end 12 is past the data section \(8 bytes\)/,
    );
  });

  test('overlapping tensors', () => {
    const file = writeRaw('overlap.safetensors', { a: t('F32', [2], [0, 8]), b: t('F32', [2], [4, 12]) }, 12);
    expectError(() => readSafetensorsHeader(file), /overlap\.safetensors: tensors "a" and "b" overlap/);
  });

  test('byte size not matching dtype x shape', () => {
    const file = writeRaw('size.safetensors', { w: t('BF16', [2, 3], [0, 8]) }, 8);
    expectError(
      () => readSafetensorsHeader(file),
      /size\.safetensors: tensor "w": byte size 8 does not match BF16 x shape \[2, 3\] = 12 bytes/,
    );
  });

  test.each(['I64', 'F8_E4M3'])('unsupported dtype %s', (dtype) => {
    const file = writeRaw('dtype.safetensors', { w: t(dtype, [1], [0, 8]) }, 8);
    expectError(
      () => readSafetensorsHeader(file),
      new RegExp(`dtype\\.safetensors: tensor "w": unsupported dtype "${dtype}" \\(supported: BF16, F16, F32\\)`),
    );
  });

  test('missing tensor and wrong shape via get', () => {
    writeSafetensors(path.join(dir, 'model.safetensors'), specs, fillSpec);
    const store = TensorStore.open(dir);
    expectError(
      () => store.get('lm_head.weight'),
      new RegExp(`${path.basename(dir)}: tensor "lm_head\\.weight" not found`),
    );
    expectError(
      () => store.get('a.bf16', [3, 2]),
      /model\.safetensors: tensor "a\.bf16" has shape \[2, 3\], expected \[3, 2\]/,
    );
    expectError(() => store.get('a.bf16', [2, 3, 1]), /has shape \[2, 3\], expected \[2, 3, 1\]/);
  });

  test('directory with no model files', () => {
    expectError(() => TensorStore.open(dir), /no model\.safetensors or model\.safetensors\.index\.json found/);
  });
});

describe('bad index', () => {
  const writeIndex = (index: unknown) =>
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      typeof index === 'string' ? index : JSON.stringify(index),
    );
  const shard = (name: string, tensors: string[]) =>
    writeRaw(
      name,
      Object.fromEntries(tensors.map((n, i) => [n, { dtype: 'F32', shape: [1], data_offsets: [i * 4, i * 4 + 4] }])),
      tensors.length * 4,
    );

  test('index not valid JSON', () => {
    writeIndex('{"weight_map": ');
    expectError(() => TensorStore.open(dir), /model\.safetensors\.index\.json: index is not valid JSON/);
  });

  test('index missing weight_map', () => {
    writeIndex({ metadata: {} });
    expectError(() => TensorStore.open(dir), /model\.safetensors\.index\.json: missing "weight_map" object/);
  });

  test('shard file listed but missing on disk', () => {
    shard('s1.safetensors', ['a']);
    writeIndex({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } });
    expectError(
      () => TensorStore.open(dir),
      /index\.json: shard s2\.safetensors \(listed for tensor "b"\) is missing on disk/,
    );
  });

  test('shard file name escaping the directory', () => {
    writeIndex({ weight_map: { a: '../elsewhere.safetensors' } });
    expectError(() => TensorStore.open(dir), /index\.json: weight_map entry "a" has invalid shard file name/);
  });

  test('tensor in weight_map absent from its shard', () => {
    shard('s1.safetensors', ['a']);
    writeIndex({ weight_map: { a: 's1.safetensors', b: 's1.safetensors' } });
    expectError(
      () => TensorStore.open(dir),
      /s1\.safetensors: tensor "b" is listed in weight_map but absent from shard/,
    );
  });

  test('tensor present in two shards', () => {
    shard('s1.safetensors', ['a', 'b']);
    shard('s2.safetensors', ['b', 'c']);
    writeIndex({ weight_map: { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' } });
    expectError(
      () => TensorStore.open(dir),
      /index\.json: tensor "b" appears in two shards: s1\.safetensors and s2\.safetensors/,
    );
  });

  test('bad shard header is reported with the shard name', () => {
    writeRaw('s1.safetensors', { a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, 8);
    writeIndex({ weight_map: { a: 's1.safetensors' } });
    expectError(() => TensorStore.open(dir), /s1\.safetensors: tensor "a": unsupported dtype "I64"/);
  });
});
