// The generation engine on the tiny synthetic model: stops, streaming, batching, abort.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { makeTempModel, removeDir } from './helpers/models.js';

let dir: string;
let llm: LLM;
const greedy = { temperature: 0, maxTokens: 24 };

beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  llm = await LLM.load(dir, { threads: 2 });
});
afterAll(async () => {
  await llm?.close();
  removeDir(dir);
});

describe('LLM.generate', () => {
  it('stops at max_tokens with finish reason length, and greedy is deterministic', async () => {
    const [a] = await llm.generate('Hello, world', greedy);
    const [b] = await llm.generate('Hello, world', greedy);
    expect(a.outputs[0].tokenIds).toHaveLength(24);
    expect(a.outputs[0].finishReason).toBe('length');
    expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
    expect(a.outputs[0].text).toBe(llm.tokenizer.decode(a.outputs[0].tokenIds, { skipSpecialTokens: true }));
    expect(a.promptTokenIds).toEqual(llm.tokenizer.encode('Hello, world'));
    expect(a.metrics.timeToFirstToken).toBeGreaterThan(0);
    expect(a.metrics.decodeTokensPerSec).toBeGreaterThan(0);
  });

  it('stops at an eos id from generation_config.json, which is kept in tokenIds but not in the text', async () => {
    const [ref] = await llm.generate('Hello, world', greedy);
    const ids = ref.outputs[0].tokenIds;
    // Make the 6th greedy token an eos token of a copy of the model, via its generation_config.json.
    const eos = ids[5];
    const firstAt = ids.indexOf(eos);
    const copy = fs.mkdtempSync(path.join(path.dirname(dir), 'qwen-ts-eos-'));
    for (const f of fs.readdirSync(dir)) fs.symlinkSync(path.join(dir, f), path.join(copy, f));
    const genConfig = JSON.parse(fs.readFileSync(path.join(dir, 'generation_config.json'), 'utf8'));
    fs.rmSync(path.join(copy, 'generation_config.json'));
    fs.writeFileSync(path.join(copy, 'generation_config.json'), JSON.stringify({ ...genConfig, eos_token_id: [eos] }));
    const other = await LLM.load(copy, { threads: 1 });
    try {
      const [r] = await other.generate('Hello, world', greedy);
      expect(r.outputs[0].finishReason).toBe('stop');
      expect(r.outputs[0].tokenIds).toEqual(ids.slice(0, firstAt + 1));
      expect(r.outputs[0].text).toBe(llm.tokenizer.decode(ids.slice(0, firstAt), { skipSpecialTokens: true }));
      const [ignored] = await other.generate('Hello, world', { ...greedy, ignoreEos: true });
      expect(ignored.outputs[0].tokenIds).toEqual(ids);
    } finally {
      await other.close();
      removeDir(copy);
    }
  });

  it('stops at a stop string, which is not included in the text', async () => {
    const [ref] = await llm.generate('Hello, world', greedy);
    const text = ref.outputs[0].text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    const [r] = await llm.generate('Hello, world', { ...greedy, stop: [stop] });
    expect(r.outputs[0].finishReason).toBe('stop');
    expect(r.outputs[0].stopReason).toBe(stop);
    expect(r.outputs[0].text).toBe(text.slice(0, text.indexOf(stop)));
  });

  it('stops at a stop token id, reported as the stop reason', async () => {
    const [ref] = await llm.generate('Hello, world', greedy);
    const stopId = ref.outputs[0].tokenIds[3];
    const [r] = await llm.generate('Hello, world', { ...greedy, stopTokenIds: [stopId] });
    expect(r.outputs[0].finishReason).toBe('stop');
    expect(r.outputs[0].stopReason).toBe(stopId);
    expect(r.outputs[0].tokenIds).toEqual(
      ref.outputs[0].tokenIds.slice(0, ref.outputs[0].tokenIds.indexOf(stopId) + 1),
    );
  });

  it('several prompts in one call match the same prompts run alone (batched decode)', async () => {
    const prompts = ['Hello, world', '跟我讲讲股市运行的逻辑', 'def f(x):\n    return', '1 2 3'];
    const together = await llm.generate(prompts, greedy);
    expect(together.map((r) => r.prompt)).toEqual(prompts);
    for (let i = 0; i < prompts.length; i++) {
      const [alone] = await llm.generate(prompts[i], greedy);
      expect(together[i].outputs[0].tokenIds).toEqual(alone.outputs[0].tokenIds);
    }
  });

  it('the same seed gives the same sampled text; defaults come from generation_config.json', async () => {
    const params = { temperature: 0.7, topP: 0.8, repetitionPenalty: 1.05, maxTokens: 16, seed: 42 };
    const [a] = await llm.generate('Hello', params);
    const [b] = await llm.generate('Hello', params);
    expect(a.outputs[0].tokenIds).toEqual(b.outputs[0].tokenIds);
    expect(llm.resolveParams({})).toMatchObject({ temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.1 });
    expect(llm.resolveParams({ temperature: 0 })).toMatchObject({ temperature: 0, topK: 20 });
  });

  it('rejects invalid sampling parameters naming the parameter', async () => {
    await expect(llm.generate('x', { topP: 1.5 })).rejects.toThrow(/top_p must be in \(0, 1\]/);
    await expect(llm.generate('x', { temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(llm.generate('x', { maxTokens: 0 })).rejects.toThrow(/max_tokens/);
    await expect(llm.generate({ promptTokenIds: [] })).rejects.toThrow(/prompt is empty/);
  });

  it('a prompt longer than the context is rejected', async () => {
    const small = await LLM.load(dir, { threads: 1, contextLength: 32 });
    try {
      await expect(small.generate({ promptTokenIds: new Array(40).fill(9) })).rejects.toThrow(
        /prompt of 40 tokens does not fit: the context length is 32/,
      );
      const [r] = await small.generate({ promptTokenIds: new Array(20).fill(9) }, { temperature: 0, maxTokens: 100 });
      expect(r.outputs[0].finishReason).toBe('length');
      expect(r.outputs[0].tokenIds).toHaveLength(12); // stops at the context length
    } finally {
      await small.close();
    }
  });
});

describe('KV cache budget', () => {
  it('a sequence that outgrows the shared KV cache ends with length; the others go on', async () => {
    // tiny: 512 bytes per token, so 64 KiB holds 128 tokens (8 blocks of 16) for all sequences.
    const small = await LLM.load(dir, { threads: 1, kvCacheBytes: 64 * 1024 });
    try {
      const prompt = { promptTokenIds: new Array(40).fill(9) };
      const [a, b] = await Promise.all([
        small.generate(prompt, { temperature: 0, maxTokens: 60, ignoreEos: true }),
        small.generate(prompt, { temperature: 0, maxTokens: 60, ignoreEos: true }),
      ]);
      const outs = [a[0].outputs[0], b[0].outputs[0]];
      expect(outs.map((o) => o.finishReason)).toEqual(['length', 'length']);
      // Together they cannot both reach 100 tokens in 128 slots: the first to run out stops early.
      const lengths = outs.map((o) => o.tokenIds.length).sort((x, y) => x - y);
      expect(lengths[0]).toBeLessThan(60);
      expect(lengths[1]).toBe(60);
      expect((await small.stats()).freeTokens).toBe(128);
    } finally {
      await small.close();
    }
  });
});

describe('LLM.chat and LLM.stream', () => {
  const messages = [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: '跟我讲讲股市运行的逻辑' },
  ];

  it('chat applies the chat template', async () => {
    const [r] = await llm.chat(messages, greedy);
    expect(r.prompt).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n跟我讲讲股市运行的逻辑<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(r.promptTokenIds.slice(0, 1)).toEqual([151644]);
  });

  it('streamed deltas concatenate to the generated text', async () => {
    const params = { temperature: 0.9, maxTokens: 48, seed: 7 };
    const [full] = await llm.chat(messages, params);
    const deltas: string[] = [];
    let finish = '';
    for await (const d of llm.stream(messages, params, { onFinish: (o) => (finish = o.finishReason) })) deltas.push(d);
    expect(deltas.join('')).toBe(full.outputs[0].text);
    expect(deltas.length).toBeGreaterThan(1);
    expect(finish).toBe(full.outputs[0].finishReason);
  });

  it('a stop string is never streamed, even in part', async () => {
    const [ref] = await llm.generate('Hello, world', greedy);
    const text = ref.outputs[0].text;
    const stop = text.slice(10, 16);
    let streamed = '';
    for await (const d of llm.stream('Hello, world', { ...greedy, stop })) streamed += d;
    expect(streamed).toBe(text.slice(0, text.indexOf(stop)));
  });

  it('an AbortSignal stops a stream, and breaking out of the loop frees the sequence', async () => {
    const ac = new AbortController();
    let n = 0;
    let reason = '';
    const consume = async () => {
      for await (const _ of llm.stream(
        'Hello',
        { temperature: 0, maxTokens: 200, ignoreEos: true },
        { signal: ac.signal, onFinish: (o) => (reason = o.finishReason) },
      )) {
        if (++n === 3) ac.abort();
      }
    };
    // As fetch: the loop throws the signal's reason, an AbortError.
    await expect(consume()).rejects.toMatchObject({ name: 'AbortError' });
    expect(n).toBeLessThan(10);
    expect(reason).toBe('abort');
    for await (const _ of llm.stream('Hello', { temperature: 0, maxTokens: 200 })) break;
    // The engine thread frees the sequence at its next step: wait for it (a fixed 50 ms failed on
    // a loaded machine), then check that it did.
    const capacity = llm.model.kvCache.capacityTokens;
    for (let i = 0; i < 200; i++) {
      if (llm.load.running + llm.load.waiting === 0 && (await llm.stats()).freeTokens === capacity) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(llm.load).toEqual({ waiting: 0, running: 0 });
    expect((await llm.stats()).freeTokens).toBe(llm.model.kvCache.capacityTokens);
  });
});
