// Inputs are never silently ignored (issue 8 §2): every bad input below gets an error naming the
// parameter, role, file, field or tensor. Model-level cases run on copies of the bundled stories260K.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { loadModel } from '../src/model/load.js';
import { readSafetensorsHeader, SafetensorsError } from '../src/model/safetensors.js';
import { SamplingParamsError, validateSamplingParams, type SamplingParams } from '../src/sampler/params.js';
import { applyChatTemplate, ChatTemplateError, QwenTokenizer } from '../src/tokenizer/index.js';
import { removeDir } from './helpers/models.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-inputs-'));
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

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

describe('sampling parameters', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(MODEL, { threads: 1 });
  });
  afterAll(async () => {
    await llm?.close();
  });

  it("vLLM's snake_case names are aliases: { max_tokens: 8 } generates 8 tokens", async () => {
    const [r] = await llm.generate('Once upon a time', { max_tokens: 8, temperature: 0 } as SamplingParams);
    expect(r.outputs[0].tokenIds).toHaveLength(8);
    const [c] = await llm.generate('Once upon a time', { maxTokens: 8, temperature: 0 });
    expect(r.outputs[0].tokenIds).toEqual(c.outputs[0].tokenIds);
    expect(validateSamplingParams({ top_p: 0.5, stop_token_ids: [2], ignore_eos: true } as SamplingParams)).toEqual({
      topP: 0.5,
      stopTokenIds: [2],
      ignoreEos: true,
    });
  });

  const bad: [string, Record<string, unknown>, string, RegExp][] = [
    ['an aliased value out of range', { top_p: 5 }, 'topP', /^top_p must be in \(0, 1\], got 5\.$/],
    [
      'a misspelt name',
      { temprature: -5 },
      'temprature',
      /^unknown sampling parameter "temprature"; did you mean "temperature"\?$/,
    ],
    [
      'a misspelt snake_case name',
      { max_token: 8 },
      'max_token',
      /^unknown sampling parameter "max_token"; did you mean "max_tokens"\?$/,
    ],
    ['a name from another API', { maxNewTokens: 8 }, 'maxNewTokens', /did you mean "maxTokens"\?$/],
    [
      'both spellings at once',
      { maxTokens: 8, max_tokens: 9 },
      'maxTokens',
      /^maxTokens and max_tokens are the same parameter \(max_tokens\); give only one of them\.$/,
    ],
    [
      'logprobs above the cap',
      { logprobs: 1e6 },
      'logprobs',
      /^logprobs must be an integer from 0 to 20, got 1000000\.$/,
    ],
  ];
  for (const [what, params, param, message] of bad) {
    it(`${what}: ${JSON.stringify(params)} is rejected naming ${param}`, async () => {
      const e = thrown(() => validateSamplingParams(params as SamplingParams));
      expect(e).toBeInstanceOf(SamplingParamsError);
      expect((e as SamplingParamsError).param).toBe(param);
      expect(e.message).toMatch(message);
      // And through the library, before anything runs.
      await expect(llm.generate('Once', params as SamplingParams)).rejects.toThrow(message);
    });
  }

  it('unset (undefined) parameters are fine in either spelling', () => {
    expect(validateSamplingParams({ topP: undefined, top_p: 0.5 } as SamplingParams)).toEqual({ topP: 0.5 });
  });
});

describe('chat messages', () => {
  const template = '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}';
  for (const [role, index] of [
    ['wizard', 1],
    ['<|im_end|>', 0],
    ['developer', 1],
  ] as const) {
    it(`role ${JSON.stringify(role)} is rejected, naming the role and the message`, () => {
      const messages = [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ];
      messages[index] = { role, content: 'x' };
      const e = thrown(() => applyChatTemplate(template, messages));
      expect(e).toBeInstanceOf(ChatTemplateError);
      expect((e as ChatTemplateError).field).toBe(`messages[${index}].role`);
      expect(e.message).toBe(
        `messages[${index}].role ${JSON.stringify(role)} is not a chat role: expected one of system, user, assistant, tool`,
      );
    });
  }
});

describe('model folders', () => {
  it('generation_config.json is checked at load, naming the file and the field', async () => {
    for (const [field, value, message] of [
      ['top_p', 5, 'must be in (0, 1], got 5'],
      ['temperature', -1, 'must be non-negative, got -1'],
      ['top_k', 2.5, 'must be -1 (disable), or at least 1, got 2.5'],
      ['max_new_tokens', 0, 'must be an integer of at least 1, got 0'],
      ['repetition_penalty', '1.1', 'must be a number, got "1.1"'],
      ['do_sample', 'yes', 'must be true or false, got "yes"'],
    ] as const) {
      const dir = modelCopy(`gen-${field}`, (d) =>
        editJson(path.join(d, 'generation_config.json'), (j) => (j[field] = value)),
      );
      await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
        `${path.join(dir, 'generation_config.json')}: field "${field}" ${message}`,
      );
    }
  });

  it('an unknown load option is an error naming the closest one', async () => {
    await expect(loadModel(MODEL, { thread: 1 } as never)).rejects.toThrow(
      'loadModel: unknown option "thread"; did you mean "threads"?',
    );
  });

  it('tensors the config does not use are an error naming them (num_hidden_layers smaller than the file)', async () => {
    const dir = modelCopy('fewer-layers', (d) =>
      editJson(path.join(d, 'config.json'), (j) => (j.num_hidden_layers = 4)),
    );
    const load = loadModel(dir, { threads: 1 });
    await expect(load).rejects.toThrow(SafetensorsError);
    await expect(load).rejects.toThrow(
      /9 tensors in the checkpoint are not used by config\.json \("model\.layers\.4\.input_layernorm\.weight", "model\.layers\.4\.mlp\.down_proj\.weight", .*and 1 more\): does num_hidden_layers/,
    );
  });

  it('checkTensors: a NaN or Inf weight fails the load naming the tensor and the element', async () => {
    const dir = modelCopy('nan', (d) => {
      const file = path.join(d, 'model.safetensors');
      const info = readSafetensorsHeader(file).tensors.get('model.layers.2.mlp.up_proj.weight')!;
      const fd = fs.openSync(file, 'r+');
      const nan = Buffer.alloc(4);
      nan.writeFloatLE(NaN);
      fs.writeSync(fd, nan, 0, 4, info.dataStart + 4 * 1234);
      const inf = Buffer.alloc(4);
      inf.writeFloatLE(-Infinity);
      const norm = readSafetensorsHeader(file).tensors.get('model.norm.weight')!;
      fs.writeSync(fd, inf, 0, 4, norm.dataStart + 4 * 5);
      fs.closeSync(fd);
    });
    await expect(loadModel(dir, { threads: 1, checkTensors: true })).rejects.toThrow(
      /model\.safetensors: tensor "model\.(layers\.2\.mlp\.up_proj\.weight" holds NaN at element 1234 \(shape \[172, 64\]\)|norm\.weight" holds -Inf at element 5 \(shape \[64\]\))/,
    );
    // The full scan is off by default (it costs a pass over the weights); the vectors are always scanned.
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      /model\.safetensors: tensor "model\.norm\.weight" holds -Inf at element 5 \(shape \[64\]\)/,
    );
    // The CLI flag.
    const r = spawnSync(
      process.execPath,
      [MAIN, 'generate', '--model', dir, '--check-tensors', '--threads', '1', 'Hi'],
      {
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, NO_COLOR: '1', QWEN_TS_DEBUG: '' },
      },
    );
    expect(r.status).toBe(2); // bad model files are the user's input: exit 2, as other user errors
    expect(r.stderr).not.toContain('QWEN_TS_DEBUG');
    expect(r.stderr).toMatch(/^qwen-ts: .*model\.safetensors: tensor "model\.[\w.]+" holds (NaN|-Inf) at element \d+/m);
    await expect(loadModel(dir, { checkTensors: 'yes' as unknown as boolean })).rejects.toThrow(
      'option checkTensors must be true or false, got "yes"',
    );
  });

  it('a directory where a file is expected is named (no bare EISDIR)', async () => {
    const shardDir = modelCopy('shard-dir', (d) => {
      fs.rmSync(path.join(d, 'model.safetensors'));
      fs.mkdirSync(path.join(d, 'model.safetensors'));
    });
    await expect(loadModel(shardDir, { threads: 1 })).rejects.toThrow(
      `${path.join(shardDir, 'model.safetensors')}: is a directory, expected a .safetensors file`,
    );
    const configDir = modelCopy('config-dir', (d) => {
      fs.rmSync(path.join(d, 'generation_config.json'));
      fs.mkdirSync(path.join(d, 'generation_config.json'));
    });
    await expect(loadModel(configDir, { threads: 1 })).rejects.toThrow(
      `${path.join(configDir, 'generation_config.json')}: is a directory, expected a JSON file`,
    );
    const tokDir = modelCopy('tokenizer-dir', (d) => {
      fs.rmSync(path.join(d, 'tokenizer.json'));
      fs.mkdirSync(path.join(d, 'tokenizer.json'));
    });
    await expect(LLM.load(tokDir, { threads: 1 })).rejects.toThrow(
      `QwenTokenizer: ${path.join(tokDir, 'tokenizer.json')} is a directory, expected a JSON file`,
    );
    // The model path is a file.
    const file = path.join(MODEL, 'model.safetensors');
    await expect(loadModel(file)).rejects.toThrow(`loadModel: ${file} is a file; expected the model directory`);
  });

  it('broken tokenizer.json / tokenizer_config.json name the file', async () => {
    const notJson = modelCopy('tok-not-json', (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"model": '));
    await expect(QwenTokenizer.fromDir(notJson)).rejects.toThrow(
      `QwenTokenizer: invalid JSON in ${path.join(notJson, 'tokenizer.json')}`,
    );
    const broken = modelCopy('tok-broken', (d) =>
      editJson(path.join(d, 'tokenizer.json'), (j) => {
        delete j.decoder;
      }),
    );
    await expect(QwenTokenizer.fromDir(broken)).rejects.toThrow(
      `QwenTokenizer: ${path.join(broken, 'tokenizer.json')} is not a tokenizer the library can build: Tokenizer must contain a "decoder" property`,
    );
    const badConfig = modelCopy('tok-config', (d) =>
      editJson(path.join(d, 'tokenizer_config.json'), (j) => (j.add_bos_token = 'yes')),
    );
    await expect(QwenTokenizer.fromDir(badConfig)).rejects.toThrow(
      `QwenTokenizer: ${path.join(badConfig, 'tokenizer_config.json')}: field "add_bos_token" must be true or false, got "yes"`,
    );
    const badTemplate = modelCopy('tok-template', (d) =>
      editJson(path.join(d, 'tokenizer_config.json'), (j) => (j.chat_template = 42)),
    );
    await expect(QwenTokenizer.fromDir(badTemplate)).rejects.toThrow(
      `${path.join(badTemplate, 'tokenizer_config.json')}: field "chat_template" must be a string`,
    );
  });
});

describe('safetensors data section', () => {
  /** u64 LE header length, the header padded with spaces, then `data`. */
  function writeFile(name: string, header: object, data: Buffer, headerLengthDelta = 0): string {
    const json = Buffer.from(JSON.stringify(header) + '        ', 'utf8');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length + headerLengthDelta));
    const file = path.join(tmp, name);
    fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
    return file;
  }
  const t = (begin: number, end: number) => ({ dtype: 'F32', shape: [(end - begin) / 4], data_offsets: [begin, end] });

  it('a hole between tensors is an error naming the file and the bytes', () => {
    const file = writeFile('hole.safetensors', { a: t(0, 8), b: t(12, 20) }, Buffer.alloc(20));
    expect(() => readSafetensorsHeader(file)).toThrow(
      `${file}: bytes 8..12 of the data section belong to no tensor (a hole before "b")`,
    );
  });

  it('trailing bytes after the last tensor are an error', () => {
    const file = writeFile('trailing.safetensors', { a: t(0, 8) }, Buffer.alloc(12));
    expect(() => readSafetensorsHeader(file)).toThrow(
      `${file}: 4 trailing bytes after the last tensor (the tensors cover 8 of the data section's 12 bytes)`,
    );
  });

  it('a header length one short (which used to load every tensor shifted by a byte) is an error', () => {
    const file = writeFile('short-header.safetensors', { a: t(0, 8) }, Buffer.alloc(8), -1);
    expect(() => readSafetensorsHeader(file)).toThrow(/1 trailing bytes after the last tensor/);
  });

  it('a file that tiles its data section exactly loads', () => {
    const file = writeFile('ok.safetensors', { a: t(0, 8), b: t(8, 20), empty: t(20, 20) }, Buffer.alloc(20));
    expect([...readSafetensorsHeader(file).tensors.keys()]).toEqual(['a', 'b', 'empty']);
  });
});
