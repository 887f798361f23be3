// Reliability (issue 16): what fuzzing found. Bad model folders fail fast with an error naming the
// file and field; template rendering is bounded; closing, callbacks and long prefills do not lose or
// stall work. Model-level cases run on copies of the bundled stories260K or a synthetic Qwen model.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Template } from '@huggingface/jinja';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { fairShares } from '../src/engine/scheduler.js';
import { loadModel } from '../src/model/load.js';
import { readSafetensorsHeader } from '../src/model/safetensors.js';
import { createServer } from '../src/server/server.js';
import { applyChatTemplate, ChatTemplateError, QwenTokenizer } from '../src/tokenizer/index.js';
import { removeDir } from './helpers/models.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const INDEX = fileURLToPath(new URL('../dist/src/index.js', import.meta.url));

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

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

/** A copy of stories260K whose tokenizer_config.json has this chat template. */
function withTemplate(name: string, template: string): string {
  return modelCopy(name, (d) => editJson(path.join(d, 'tokenizer_config.json'), (j) => (j.chat_template = template)));
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
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

describe('chat template rendering is bounded', () => {
  const hi = [{ role: 'user', content: 'hi' }];
  const source = { source: 'tokenizer_config.json' };

  it('a loop over range(1000000000) is refused before the list is built, naming the file', () => {
    const e = thrown(() => applyChatTemplate('{% for i in range(1000000000) %}x{% endfor %}', hi, source));
    expect(e).toBeInstanceOf(ChatTemplateError);
    expect(e.message).toMatch(
      /^the chat template of tokenizer_config.json asked range\(\) for 1000000000 numbers, more than the \d+ allowed/,
    );
  });

  it('nested loops, macro recursion and empty loop bodies count steps', () => {
    const budget = { maxSteps: 10_000, maxSize: 1_000_000, timeoutMs: 600_000 };
    for (const template of [
      '{% for i in range(20000) %}{% for j in range(20000) %}{% endfor %}{% endfor %}',
      '{% for i in range(20000) %}{% for j in range(20000) %}{{ j }}{% endfor %}{% endfor %}',
      '{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}',
    ]) {
      const e = thrown(() => applyChatTemplate(template, hi, { ...source, budget }));
      expect(e.message).toBe(
        'the chat template of tokenizer_config.json took more than 10000 steps (a loop or a recursion without end?); it was stopped',
      );
    }
  });

  it('a string or list doubled in a loop is stopped at the size limit', () => {
    const budget = { maxSteps: 100_000, maxSize: 1_000_000, timeoutMs: 600_000 };
    const str = thrown(() =>
      applyChatTemplate(
        '{% set ns = namespace(s="ab") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}',
        hi,
        { ...source, budget },
      ),
    );
    expect(str.message).toBe(
      'the chat template of tokenizer_config.json made a string of 1048576 characters, more than the 1000000 allowed; it was stopped',
    );
    const list = thrown(() =>
      applyChatTemplate(
        '{% set ns = namespace(a=[1]) %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}',
        hi,
        { ...source, budget },
      ),
    );
    expect(list.message).toBe(
      'the chat template of tokenizer_config.json made a list of 1048576 items, more than the 1000000 allowed; it was stopped',
    );
  });

  it('the bounded renderer gives what Template.render gives (globals included)', () => {
    const template =
      '{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content | trim }}{% if not loop.last %}|{% endif %}{% endfor %}' +
      "{{ range(3) | join(',') }}{{ true }}{{ none is none }}{{ strftime_now('%Y') | length }}";
    const out = applyChatTemplate(
      template,
      [
        { role: 'user', content: ' a ' },
        { role: 'assistant', content: 'b' },
      ],
      {
        extra: { bos_token: '<s>' },
      },
    );
    const messages = [
      { role: 'user', content: ' a ' },
      { role: 'assistant', content: 'b' },
    ];
    expect(out).toBe(new Template(template).render({ messages, add_generation_prompt: false, bos_token: '<s>' }));
    expect(out).toMatch(/^<s>user:a\|assistant:b0,1,2truetrue4$/);
  });
});

describe('broken models fail at load, naming the file and field', () => {
  it('a chat template that does not parse, or fails, fails at load (not at the first chat)', async () => {
    for (const [name, template, why] of [
      ['tpl-open', '{{', /fails on a one-message conversation/],
      ['tpl-endfor', 'x{% endfor %}', /fails on a one-message conversation/],
      ['tpl-huge', '{% for i in range(1000000000) %}x{% endfor %}', /asked range\(\) for 1000000000 numbers/],
    ] as const) {
      const dir = withTemplate(name, template);
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(
        `QwenTokenizer: ${path.join(dir, 'tokenizer_config.json')}: field "chat_template"`,
      );
      await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(why);
    }
  });

  it('a chat template that leaves the messages out (an undefined variable) fails at load', async () => {
    const dir = withTemplate('tpl-undefined', '{% for m in messages %}{{ m.contnet }}{% endfor %}');
    await expect(QwenTokenizer.fromDir(dir)).rejects.toThrow(
      `QwenTokenizer: ${path.join(dir, 'tokenizer_config.json')}: field "chat_template" leaves the message out of a one-message conversation`,
    );
    // A template that works loads and renders.
    const good = withTemplate('tpl-good', '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}');
    const tok = await QwenTokenizer.fromDir(good);
    expect(tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<user>hi');
  });

  it('max_position_embeddings of 1 fails at load', async () => {
    const dir = modelCopy('positions-1', (d) =>
      editJson(path.join(d, 'config.json'), (j) => (j.max_position_embeddings = 1)),
    );
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      `${path.join(dir, 'config.json')}: field "max_position_embeddings" is 1: a model needs at least 2 positions`,
    );
  });

  it('an empty vocabulary or a negative token id fails at load, naming tokenizer.json', async () => {
    const empty = modelCopy('vocab-empty', (d) =>
      editJson(path.join(d, 'tokenizer.json'), (j) => {
        (j.model as Record<string, unknown>).vocab = {};
        (j.model as Record<string, unknown>).merges = [];
        j.added_tokens = [];
      }),
    );
    await expect(QwenTokenizer.fromDir(empty)).rejects.toThrow(
      `QwenTokenizer: ${path.join(empty, 'tokenizer.json')}: the vocabulary (field "model.vocab") is empty`,
    );
    const negative = modelCopy('vocab-negative', (d) =>
      editJson(path.join(d, 'tokenizer.json'), (j) => {
        (j.added_tokens as { id: number }[])[2].id = -5;
      }),
    );
    await expect(QwenTokenizer.fromDir(negative)).rejects.toThrow(
      `QwenTokenizer: ${path.join(negative, 'tokenizer.json')}: field "added_tokens[2].id" of "</s>" must be a token id (an integer from 0), got -5`,
    );
  });

  it("an added token id past config.json's vocab_size fails at load", async () => {
    const dir = modelCopy('added-past-vocab', (d) =>
      editJson(path.join(d, 'tokenizer.json'), (j) => {
        (j.added_tokens as object[]).push({ id: 600, content: '<|extra|>', special: true, normalized: false });
      }),
    );
    await expect(LLM.load(dir, { threads: 1 })).rejects.toThrow(
      `QwenTokenizer: ${path.join(dir, 'tokenizer.json')}: token "<|extra|>" has id 600, past field "vocab_size" 512 of ${path.join(dir, 'config.json')}`,
    );
  });
});

describe('no lost work or stalls', () => {
  it('close() with a request still running aborts it and resolves; the script goes on', () => {
    const script = `
      import { LLM } from ${JSON.stringify(INDEX)};
      const llm = await LLM.load(${JSON.stringify(MODEL)}, { threads: 1 });
      const running = llm.generate('Once upon a time', { maxTokens: 400, temperature: 0, ignoreEos: true }).then(
        () => 'finished',
        (e) => 'rejected: ' + e.message,
      );
      await new Promise((r) => setTimeout(r, 20));
      await llm.close();
      console.log('after close:', await running);
    `;
    const file = path.join(tmp, 'close-while-running.mjs');
    fs.writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^after close: (finished|rejected: qwen-ts: the LLM was closed)\n$/);
  });

  describe('with a loaded model', () => {
    let llm: LLM;
    beforeAll(async () => {
      llm = await LLM.load(MODEL, { threads: 1 });
    });
    afterAll(async () => {
      await llm?.close();
    });

    it('an onFinish callback of stream() that throws ends that stream with its error, and nothing else', async () => {
      const pieces: string[] = [];
      const consume = async () => {
        const stream = llm.stream(
          'Once upon a time',
          { maxTokens: 6, temperature: 0 },
          {
            onFinish: () => {
              throw new Error('onFinish failed');
            },
          },
        );
        for await (const piece of stream) pieces.push(piece);
      };
      await expect(consume()).rejects.toThrow('onFinish failed');
      const [again] = await llm.generate('Once upon a time', { maxTokens: 6, temperature: 0 });
      expect(pieces.join('')).toBe(again.outputs[0].text);
    });

    it('large prompts are tokenized off this thread: generate, and /v1/completions prompt arrays together', async () => {
      const encode = llm.tokenizer.encode.bind(llm.tokenizer);
      const here: number[] = [];
      llm.tokenizer.encode = (text, opts) => {
        here.push(text.length);
        return encode(text, opts);
      };
      try {
        // 40,000 characters: about 10,000 tokens, far past this model's 512 (the engine says so).
        const long = 'Once upon a time there was a cat. '.repeat(1200).slice(0, 40_000);
        await expect(llm.generate(long, { maxTokens: 1 })).rejects.toThrow(/^prompt of \d+ tokens does not fit/);
        expect(here).toEqual([]);
        // Four prompts of 9,000 characters: each under LARGE_TEXT_CHARS, together over it.
        const prompts = [0, 1, 2, 3].map((i) => `${i} ${'The dog ran. '.repeat(700)}`.slice(0, 9000));
        const ids = await llm.tokenizeAll(prompts);
        expect(here).toEqual([]);
        expect(ids).toEqual(prompts.map((p) => encode(p)));
        const app = createServer(llm, { modelName: 'stories260K', log: false });
        const { port } = await app.listen(0, '127.0.0.1');
        try {
          const reply = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ model: 'stories260K', prompt: prompts, max_tokens: 1 }),
          });
          const body = (await reply.json()) as { error?: { message: string } };
          // Each prompt is about 2,300 tokens: the context (512) refuses them, after tokenizing.
          expect(body.error?.message).toMatch(/^This model's maximum context length is 512 tokens/);
          expect(here.filter((n) => n >= 9000)).toEqual([]);
        } finally {
          await app.close();
        }
      } finally {
        llm.tokenizer.encode = encode;
      }
    });

    it('GET /v1/models/%ff is a 400, not a 500', async () => {
      const app = createServer(llm, { modelName: 'stories260K', log: false });
      const { port } = await app.listen(0, '127.0.0.1');
      try {
        const bad = await fetch(`http://127.0.0.1:${port}/v1/models/%ff`);
        expect(bad.status).toBe(400);
        expect(((await bad.json()) as { error: { message: string } }).error.message).toBe(
          'The model id in the path is not valid percent-encoded UTF-8.',
        );
        expect((await fetch(`http://127.0.0.1:${port}/v1/models/stories260K`)).status).toBe(200);
      } finally {
        await app.close();
      }
    });
  });
});

describe('prompt chunks are shared among the prompts being read', () => {
  it('fairShares: equal shares, what a short prompt leaves goes to the others', () => {
    expect(fairShares([400], 8)).toEqual([8]);
    expect(fairShares([400, 3], 8)).toEqual([5, 3]);
    expect(fairShares([400, 400], 8)).toEqual([4, 4]);
    expect(fairShares([1, 400, 2], 8)).toEqual([1, 5, 2]);
    expect(fairShares([400, 400, 400], 2)).toEqual([1, 1, 0]);
    expect(fairShares([], 8)).toEqual([]);
  });

  it('a request arriving during a long prefill gets its first token before the long prompt ends', async () => {
    const llm = await LLM.load(MODEL, { threads: 1, maxBatchTokens: 8 });
    try {
      const longPrompt = llm.tokenizer.encode('Once upon a time there was a little cat. '.repeat(40)).slice(0, 400);
      const order: string[] = [];
      const long = llm
        .generate({ promptTokenIds: longPrompt }, { maxTokens: 1, temperature: 0 })
        .then(() => order.push('long'));
      const short = llm.generate('Once', { maxTokens: 1, temperature: 0 }).then(() => order.push('short'));
      await Promise.all([long, short]);
      // Oldest-first chunks read all 400 tokens of the long prompt (50 steps) before the short one.
      expect(order).toEqual(['short', 'long']);
    } finally {
      await llm.close();
    }
  });
});

describe('NaN, Inf and overflowing weights fail at load', () => {
  /** Write `values` into tensor `name` of the copy's model.safetensors (F32), from element `at`. */
  function writeFloats(dir: string, name: string, at: number, values: number[]): void {
    const file = path.join(dir, 'model.safetensors');
    const info = readSafetensorsHeader(file).tensors.get(name)!;
    const bytes = Buffer.alloc(4 * values.length);
    values.forEach((v, i) => bytes.writeFloatLE(v, 4 * i));
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, bytes, 0, bytes.length, info.dataStart + 4 * at);
    fs.closeSync(fd);
  }

  it('a NaN in a norm or bias is found without checkTensors (the vectors are always scanned)', async () => {
    const dir = modelCopy('nan-norm', (d) => writeFloats(d, 'model.layers.1.input_layernorm.weight', 7, [NaN]));
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      `${path.join(dir, 'model.safetensors')}: tensor "model.layers.1.input_layernorm.weight" holds NaN at element 7 (shape [64])`,
    );
  });

  it('finite weights whose products overflow float32 fail the load, naming the layer', async () => {
    // 3e38 is a float32, but the MLP of layer 0 multiplies it into Inf.
    const dir = modelCopy('overflow', (d) =>
      writeFloats(d, 'model.layers.0.post_attention_layernorm.weight', 0, new Array(64).fill(3e38)),
    );
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      new RegExp(
        `^${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the output of layer 0 \\(model\\.layers\\.0\\.\\*\\) holds (NaN|-?Infinity)`,
      ),
    );
  });

  it('a NaN in a matrix that is not scanned still fails the load, at the layer that holds it', async () => {
    const dir = modelCopy('nan-matrix', (d) => writeFloats(d, 'model.layers.3.mlp.up_proj.weight', 1234, [NaN]));
    await expect(loadModel(dir, { threads: 1 })).rejects.toThrow(
      /the output of layer 3 \(model\.layers\.3\.\*\) holds NaN/,
    );
  });
});
