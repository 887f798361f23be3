// The bundled stories260K (llama2.c's trained Llama model, MIT; assets/stories260K) against llama2.c's
// own run.c: greedy f32 output must equal run.c's text exactly, through the library and the CLI. And
// its SentencePiece-style tokenizer: BOS exactly once, and prompt text + output text == the decode
// of prompt ids + output ids (the first generated token keeps its leading space).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { vocabularyFromTokenizer } from '../src/sampler/structured/index.js';
import { QwenTokenizer, StreamDecoder } from '../src/tokenizer/index.js';
import { removeDir } from './helpers/models.js';

const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const BOS = 1;

// run.c prints the prompt, the greedy continuation and a final newline; it stops after 256
// positions counted from BOS (or at <s>): the prompt's P tokens (BOS included) take positions
// 0..P-1 and every position from P-1 to 255 samples one token, 257 - P in all.
const RUN_C = [
  { prompt: 'Once upon a time', file: 'once-upon-a-time.txt' },
  { prompt: 'Tom and his dog', file: 'tom-and-his-dog.txt' },
].map((c) => ({
  ...c,
  expected: fs.readFileSync(fileURLToPath(new URL(`./fixtures/stories260K/${c.file}`, import.meta.url)), 'utf8'),
}));
const RUN_C_POSITIONS = 256;

let llm: LLM;
beforeAll(async () => {
  llm = await LLM.load(MODEL, { threads: 1 });
});
afterAll(async () => {
  await llm?.close();
});

describe('stories260K greedy, f32, equals llama2.c run.c', () => {
  for (const c of RUN_C) {
    it(`library: "${c.prompt}"`, async () => {
      const promptIds = llm.tokenizer.encode(c.prompt);
      const maxTokens = RUN_C_POSITIONS + 1 - promptIds.length;
      const [r] = await llm.generate(c.prompt, { temperature: 0, maxTokens });
      expect(r.outputs[0].tokenIds).toHaveLength(maxTokens);
      expect(c.prompt + r.outputs[0].text + '\n').toBe(c.expected);
    });

    it(`CLI: qwen-ts generate --temperature 0 "${c.prompt}"`, () => {
      const maxTokens = RUN_C_POSITIONS + 1 - llm.tokenizer.encode(c.prompt).length;
      // No --model: the bundled demo model is the default.
      const r = spawnSync(
        process.execPath,
        [MAIN, 'generate', '--temperature', '0', '--threads', '1', '--max-tokens', String(maxTokens), c.prompt],
        { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NO_COLOR: '1', QWEN_TS_DEBUG: '' } },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('qwen-ts: no --model given: using the bundled stories260K demo model');
      expect(c.prompt + r.stdout + '\n').toBe(c.expected);
    });
  }
});

describe('stories260K tokenizer (SentencePiece-style BPE with byte fallback)', () => {
  it('adds BOS exactly once, also when the text already starts with it', () => {
    const tok = llm.tokenizer;
    expect(tok.prefixIds).toEqual([BOS]);
    expect(tok.encode('Once upon a time')).toEqual([BOS, 403, 407, 261, 378]);
    expect(tok.encode('Once upon a time', { addSpecialTokens: false })).toEqual([403, 407, 261, 378]);
    expect(tok.encode('<s>Once upon a time')).toEqual([BOS, 403, 407, 261, 378]);
    expect(tok.encode('')).toEqual([BOS]);
  });

  it('byte fallback: characters outside the 512-token vocabulary round-trip through bytes', () => {
    const text = 'Lily saw 🐶 and 你好.';
    const ids = llm.tokenizer.encode(text, { addSpecialTokens: false });
    expect(ids.some((id) => id >= 3 && id < 3 + 256)).toBe(true); // <0xNN> byte tokens
    expect(llm.tokenizer.decode(ids)).toBe(text);
  });

  it('prompt text + output text == decode(prompt ids + output ids), greedy and sampled', async () => {
    for (const prompt of ['Once upon a', 'Tom and his', 'The cat sat', 'Lily']) {
      for (const params of [{ temperature: 0 }, { temperature: 1, seed: 7 }]) {
        const deltas: string[] = [];
        let promptIds: number[] = [];
        let outputIds: number[] = [];
        for await (const d of llm.stream(
          prompt,
          { ...params, maxTokens: 24 },
          {
            onFinish: (o) => (outputIds = o.tokenIds),
          },
        ))
          deltas.push(d);
        const [r] = await llm.generate(prompt, { ...params, maxTokens: 24 });
        promptIds = r.promptTokenIds;
        expect(r.outputs[0].tokenIds).toEqual(outputIds);
        const full = llm.tokenizer.decode([...promptIds, ...outputIds], { skipSpecialTokens: true });
        expect(prompt + r.outputs[0].text).toBe(full);
        expect(prompt + deltas.join('')).toBe(full);
      }
    }
    // The case that used to fail: the first generated token is "▁time", whose space was lost.
    const [r] = await llm.generate('Once upon a', { temperature: 0, maxTokens: 2 });
    expect(r.outputs[0].text).toBe(' time,');
  });

  it('StreamDecoder without the prompt as context would lose the space; with it, it does not', () => {
    const tok = llm.tokenizer;
    const promptIds = tok.encode('Once upon a');
    const time = tok.encode('Once upon a time', { addSpecialTokens: false }).at(-1)!;
    expect(new StreamDecoder(tok, { skipSpecialTokens: true }).push(time)).toBe('time');
    expect(new StreamDecoder(tok, { skipSpecialTokens: true, prompt: promptIds }).push(time)).toBe(' time');
  });
});

describe('structured output on a SentencePiece vocabulary (U+2581 for spaces, <0xNN> byte tokens)', () => {
  it('each token stands for its text: "\u2581the" is " the", <0x0A> is a newline, special tokens none', () => {
    const tok = llm.tokenizer;
    const vocab = vocabularyFromTokenizer(tok, tok.vocabSize, [tok.eosTokenId!]);
    const text = (id: number) => Buffer.from(vocab.bytesOf(id) ?? []).toString('latin1');
    expect(tok.pieceSpelling).toBe('sentencepiece');
    expect(text(tok.tokenToId('\u2581the')!)).toBe(' the');
    expect([...vocab.bytesOf(tok.tokenToId('<0x0A>')!)!]).toEqual([0x0a]);
    expect(vocab.bytesOf(tok.tokenToId('<0xFF>')!)).toBeNull(); // never in UTF-8
    for (const id of [0, 1, 2]) expect(vocab.bytesOf(id)).toBeNull();
  });

  it('a json schema and a regex constrain greedy decoding (exact ids; the texts validate)', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] };
    const [json] = await llm.generate('Once upon a time', {
      maxTokens: 40,
      temperature: 0,
      structuredOutput: { type: 'json', schema },
    });
    const jsonOut = json!.outputs[0]!;
    expect(jsonOut.finishReason).toBe('stop');
    expect(Object.keys(JSON.parse(jsonOut.text))).toEqual(['name']);
    expect(jsonOut.tokenIds.slice(0, 8)).toEqual([126, 410, 13, 436, 416, 412, 423, 411]);
    const [regex] = await llm.generate('Once upon a time', {
      maxTokens: 20,
      temperature: 0,
      structuredOutput: { type: 'regex', pattern: '[a-z ]+' },
    });
    expect(regex!.outputs[0]!.text).toBe(' there was a little girl named outside her grandm');
  });
});

describe('a chat template that writes bos_token', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-llama-chat-'));
    for (const f of fs.readdirSync(MODEL)) fs.copyFileSync(path.join(MODEL, f), path.join(dir, f));
    const config = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer_config.json'), 'utf8'));
    config.chat_template =
      "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  });
  afterAll(() => removeDir(dir));

  it('gets its BOS once: chat prompts are encoded without adding special tokens (as vLLM and HF)', async () => {
    const tok = await QwenTokenizer.fromDir(dir);
    const messages = [{ role: 'user', content: 'Tell me a story.' }];
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(
      '<s>user: Tell me a story.\nassistant:',
    );
    const chatLlm = await LLM.load(dir, { threads: 1 });
    try {
      const { promptTokenIds } = chatLlm.encodeChat(messages);
      expect(promptTokenIds[0]).toBe(BOS);
      expect(promptTokenIds.filter((id) => id === BOS)).toHaveLength(1);
      const [r] = await chatLlm.chat(messages, { temperature: 0, maxTokens: 4 });
      expect(r.promptTokenIds).toEqual(promptTokenIds);
      expect(r.prompt).toBe('<s>user: Tell me a story.\nassistant:');
    } finally {
      await chatLlm.close();
    }
  });
});

describe('a model without a chat template', () => {
  it('llm.chat says so instead of guessing a template (as vLLM)', async () => {
    await expect(llm.chat([{ role: 'user', content: 'hi' }])).rejects.toThrow(
      'this model has no chat template (no chat_template in its tokenizer_config.json): it only continues text',
    );
  });

  it('qwen-ts generate --chat is a named CLI error; qwen-ts chat continues each line as text', () => {
    const env = { ...process.env, NO_COLOR: '1', QWEN_TS_DEBUG: '' };
    const gen = spawnSync(process.execPath, [MAIN, 'generate', '--chat', '--threads', '1', 'hi'], {
      encoding: 'utf8',
      timeout: 60_000,
      env,
    });
    expect(gen.status).toBe(2);
    expect(gen.stderr).toContain('qwen-ts: --chat: this model has no chat template');
    const chat = spawnSync(
      process.execPath,
      [MAIN, 'chat', '--threads', '1', '--temperature', '0', '--max-tokens', '3'],
      { encoding: 'utf8', timeout: 60_000, env, input: 'Once upon a\n' },
    );
    expect(chat.status, chat.stderr).toBe(0);
    expect(chat.stderr).toContain('each line you type is continued as plain text');
    expect(chat.stdout).toBe(' time, there\n');
  });
});
