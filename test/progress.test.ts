// Progress of long waits: the line's text and when it is drawn (with a fake clock and stream), the
// library's onProgress callback of LLM.load, and the CLI under a pseudo-terminal (util-linux
// `script`) against a pipe.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { TensorStore } from '../src/model/safetensors.js';
import { ProgressLine, progressText, type LoadProgress } from '../src/platform/progress.js';
import { makeTempModel, removeDir } from './helpers/models.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, write: (s: string) => writes.push(s) > 0 } as unknown as NodeJS.WritableStream };
}

describe('progress line', () => {
  it('says bytes, percent, rate and time left', () => {
    const MB = 2 ** 20;
    expect(progressText('loading weights', 500 * MB, 2000 * MB, 2)).toBe(
      'loading weights: 25% 500 / 2000 MB, 250 MB/s, 6.0 s left',
    );
    expect(progressText('loading weights', 100 * MB, 20000 * MB, 1)).toBe(
      'loading weights: 1% 100 / 20000 MB, 100 MB/s, 3 min 19 s left',
    );
    expect(progressText('loading tokenizer', 0, 0, 1.5)).toBe('loading tokenizer: 1.5 s');
  });

  it('on a terminal: nothing in the first second, then redrawn at most every 100 ms, erased at the end', () => {
    let now = 0;
    const { writes, stream } = fakeStream(true);
    const line = new ProgressLine('loading weights', { stream, clock: () => now });
    line.update(10, 100);
    now = 999;
    line.update(20, 100);
    expect(writes).toEqual([]);
    now = 1000;
    line.update(50, 100);
    now = 1050;
    line.update(60, 100); // too soon
    now = 1100;
    line.update(100, 100);
    line.end();
    expect(writes).toEqual([
      '\r\x1b[Kloading weights: 50% 0 / 0 MB, 0 MB/s, 1.0 s left',
      '\r\x1b[Kloading weights: 100% 0 / 0 MB, 0 MB/s, 0.0 s left',
      '\r\x1b[K',
    ]);
  });

  it('off a terminal: one quiet line once the wait passes a second, no carriage returns', () => {
    let now = 0;
    const { writes, stream } = fakeStream(false);
    const line = new ProgressLine('loading weights', { stream, clock: () => now, prefix: 'qwen-ts: ' });
    line.update(0, 3 * 2 ** 20, 'loading tokenizer', true); // a blocking stage draws only on a terminal
    now = 1500;
    line.update(2 ** 20, 3 * 2 ** 20, 'loading weights');
    now = 3000;
    line.update(2 * 2 ** 20, 3 * 2 ** 20);
    line.end();
    expect(writes).toEqual(['qwen-ts: loading weights (3 MB) ...\n']);
  });

  it('a blocking stage is drawn at once on a terminal', () => {
    const { writes, stream } = fakeStream(true);
    const line = new ProgressLine('', { stream, clock: () => 0 });
    line.update(0, 0, 'loading tokenizer', true);
    line.end();
    expect(writes).toEqual(['\r\x1b[Kloading tokenizer ...', '\r\x1b[K']);
  });
});

describe('LLM.load progress', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempModel({ preset: 'tiny', seed: 1 });
  });
  afterAll(() => removeDir(dir));

  it('onProgress: the tokenizer, then the weights up to every byte of the files, in order', async () => {
    const seen: LoadProgress[] = [];
    const llm = await LLM.load(dir, { threads: 1, onProgress: (p) => seen.push(p) });
    try {
      const store = TensorStore.open(dir);
      let fileBytes = 0;
      for (const info of store.tensors.values()) fileBytes += info.byteLength;
      store.close();
      expect(seen[0]).toMatchObject({ stage: 'tokenizer', doneBytes: 0, totalBytes: 0 });
      const weights = seen.filter((p) => p.stage === 'weights');
      expect(weights[0]).toMatchObject({ doneBytes: 0, totalBytes: fileBytes });
      expect(weights.at(-1)).toMatchObject({ doneBytes: fileBytes, totalBytes: fileBytes });
      for (let i = 1; i < seen.length; i++) {
        expect(seen[i].seconds).toBeGreaterThanOrEqual(seen[i - 1].seconds);
        if (seen[i].stage === 'weights' && seen[i - 1].stage === 'weights')
          expect(seen[i].doneBytes).toBeGreaterThanOrEqual(seen[i - 1].doneBytes);
      }
      // The engine's tokenizer (built without the merges) decodes as the caller's one encodes.
      const ids = llm.tokenizer.encode('Hello, 世界! 12345');
      const [out] = await llm.generate({ promptTokenIds: ids }, { maxTokens: 3, temperature: 0 });
      expect(out.prompt).toBe('Hello, 世界! 12345');
      expect(out.outputs[0].text).toBe(llm.tokenizer.decode(out.outputs[0].tokenIds, { skipSpecialTokens: true }));
    } finally {
      await llm.close();
    }
  });

  it('a tokenizer for decoding only (no merges) decodes as the whole one, and encodes by building it', () => {
    const files = QwenTokenizer.readFiles(dir);
    const whole = new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source);
    const slim = QwenTokenizer.forDecoding(QwenTokenizer.decodingFiles(files));
    const text = 'Hello, 世界! <|im_start|>user\n  x = 12345;<|im_end|>';
    const ids = whole.encode(text);
    expect(ids.length).toBeGreaterThan(10);
    expect(slim.decode(ids)).toBe(text);
    expect(slim.decode(ids, { skipSpecialTokens: true })).toBe(whole.decode(ids, { skipSpecialTokens: true }));
    expect(slim.vocabSize).toBe(whole.vocabSize);
    expect(slim.eosTokenId).toBe(whole.eosTokenId);
    expect(slim.idToToken(ids[3])).toBe(whole.idToToken(ids[3]));
    expect(slim.encode(text)).toEqual(ids);
  });

  it('rejects an onProgress that is not a function', async () => {
    await expect(LLM.load(dir, { onProgress: 5 as unknown as () => void })).rejects.toThrow(
      'LLM.load: option onProgress must be a function, got number',
    );
  });
});

const hasScript = spawnSync('script', ['--version']).status === 0;
const CLI = path.resolve('dist/src/cli/main.js');

describe.skipIf(!hasScript || !fs.existsSync(CLI))('the CLI under a pseudo-terminal', () => {
  it('draws the load progress and erases it on a terminal; a pipe gets no carriage returns', () => {
    const cmd = `node ${CLI} generate --max-tokens 2 --temperature 0 Once`;
    const tty = execFileSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 120_000 });
    expect(tty).toContain('\r\x1b[Kloading tokenizer ...');
    // Erased before the "loaded" line.
    expect(tty).toMatch(/\r\x1b\[K(loading [^\r]*\r\x1b\[K)*qwen-ts: loaded /);
    const piped = spawnSync('node', [CLI, 'generate', '--max-tokens', '2', '--temperature', '0', 'Once'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(piped.status).toBe(0);
    expect(piped.stderr).toContain('qwen-ts: loaded ');
    expect(piped.stderr).not.toContain('\r');
  });
});
