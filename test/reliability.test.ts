// Reliability (issue 16): what fuzzing found. Bad model folders fail fast with an error naming the
// file and field; template rendering is bounded; closing, callbacks and long prefills do not lose or
// stall work. Model-level cases run on copies of the bundled stories260K or a synthetic Qwen model.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/model/load.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { removeDir } from './helpers/models.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-reliability-'));
});
afterAll(() => removeDir(tmp));

/** A copy of stories260K in a fresh folder, with `edit` applied to it. */
function modelCopy(name: string, edit: (dir: string) => void = () => {}): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(MODEL)) fs.copyFileSync(path.join(MODEL, f), path.join(dir, f));
  edit(dir);
  return dir;
}

function mkfifo(file: string): void {
  fs.rmSync(file, { force: true });
  const r = spawnSync('mkfifo', [file]);
  if (r.status !== 0) throw new Error(`mkfifo ${file} failed: ${r.stderr}`);
}

describe('only regular files of bounded size are read', () => {
  it('a named pipe as model.safetensors fails at once, naming the file', async () => {
    const dir = modelCopy('fifo-weights', (d) => mkfifo(path.join(d, 'model.safetensors')));
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      `${path.join(dir, 'model.safetensors')}: is a named pipe (FIFO), expected a .safetensors file`,
    );
  });

  it('a named pipe as config.json, or config.json linked to /dev/zero, fails at once', async () => {
    const fifo = modelCopy('fifo-config', (d) => mkfifo(path.join(d, 'config.json')));
    await expect(loadModel(fifo, { threads: 1 })).rejects.toThrow(
      `${path.join(fifo, 'config.json')}: is a named pipe (FIFO), expected a JSON file`,
    );
    const zero = modelCopy('zero-config', (d) => {
      fs.rmSync(path.join(d, 'config.json'));
      fs.symlinkSync('/dev/zero', path.join(d, 'config.json'));
    });
    await expect(loadModel(zero, { threads: 1 })).rejects.toThrow(
      `${path.join(zero, 'config.json')}: is a character device, expected a JSON file`,
    );
  });

  it('a named pipe as a shard of a sharded checkpoint fails at once, naming the shard', async () => {
    const dir = modelCopy('fifo-shard', (d) => {
      const header = JSON.parse(
        (() => {
          const buf = fs.readFileSync(path.join(d, 'model.safetensors'));
          return buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8');
        })(),
      ) as Record<string, unknown>;
      const weightMap = Object.fromEntries(
        Object.keys(header)
          .filter((k) => k !== '__metadata__')
          .map((k) => [k, 'model-00001-of-00001.safetensors']),
      );
      fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
      fs.rmSync(path.join(d, 'model.safetensors'));
      mkfifo(path.join(d, 'model-00001-of-00001.safetensors'));
    });
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      `${path.join(dir, 'model-00001-of-00001.safetensors')}: is a named pipe (FIFO), expected a .safetensors file`,
    );
  });

  it('a named pipe as tokenizer.json fails at once; an oversized config.json is refused unread', async () => {
    const fifo = modelCopy('fifo-tokenizer', (d) => mkfifo(path.join(d, 'tokenizer.json')));
    await expect(QwenTokenizer.fromDir(fifo)).rejects.toThrow(
      `QwenTokenizer: ${path.join(fifo, 'tokenizer.json')} is a named pipe (FIFO), expected a JSON file`,
    );
    const big = modelCopy('big-config', (d) => fs.truncateSync(path.join(d, 'config.json'), 17 * 2 ** 20));
    await expect(loadModel(big, { threads: 1 })).rejects.toThrow(
      `${path.join(big, 'config.json')}: is 17825792 bytes, more than the 16777216 bytes a JSON file may have here`,
    );
  });
});
