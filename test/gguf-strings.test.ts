// The GGUF reader's strings (it reads through the platform seam with DataView and TextDecoder, so
// that a browser tab parses the same way): short ASCII, long ASCII, UTF-8, a leading U+FEFF (kept,
// as a vocabulary may hold it) and invalid UTF-8 (U+FFFD, exactly as Node's Buffer decodes it).
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { readGgufHeader } from '../src/model/gguf/file.js';
import { gguf, writeGguf } from '../src/model/gguf/writer.js';

const dir = fs.mkdtempSync(join(tmpdir(), 'qwen-ts-gguf-strings-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

it('reads strings as Node’s Buffer does: ASCII, UTF-8, a leading BOM, invalid bytes', () => {
  const file = join(dir, 'strings.gguf');
  const tokens = ['a', 'x'.repeat(100), '你好', '\ufeffstart', 'Ġthe', '', 'é'.repeat(40), 'ZZZZ'];
  writeGguf(
    file,
    [
      ['tokenizer.ggml.tokens', gguf.strings(tokens)],
      ['general.name', gguf.str('ünïcode name')],
    ],
    [],
  );
  expect(readGgufHeader(file).metadata.get('tokenizer.ggml.tokens')!.value).toEqual(tokens);
  expect(readGgufHeader(file).metadata.get('general.name')!.value).toBe('ünïcode name');
  // Invalid UTF-8 in place of "ZZZZ": a lone continuation byte, a truncated sequence, 0xff.
  const bytes = fs.readFileSync(file);
  const at = bytes.indexOf('ZZZZ');
  const bad = Buffer.from([0x80, 0xc3, 0x41, 0xff]);
  bad.copy(bytes, at);
  fs.writeFileSync(file, bytes);
  const read = readGgufHeader(file).metadata.get('tokenizer.ggml.tokens')!.value as string[];
  expect(read[7]).toBe(bad.toString('utf8'));
  expect(read[7]).toBe('\ufffd\ufffdA\ufffd');
});
