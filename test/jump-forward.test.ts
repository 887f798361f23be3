// Jump-forward for structured output: the text only the constraint can write (keys, punctuation)
// is written in the tokenizer's own tokens, proposed as extra rows of the next step and verified
// like speculation. On a synthetic tiny Qwen2.5 with its tokenizer: the token ids are identical with
// and without jump-forward (greedy and seeded sampling, compact and free whitespace), every forced
// proposal is accepted, and the output starts with the canonical tokens of the forced text.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelArgsFrom } from '../src/cli/args.js';
import { LLM } from '../src/engine/llm.js';
import { createMatcher } from '../src/sampler/structured/index.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 6 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    city: { enum: ['Paris', 'London', 'Tokyo'] },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'city', 'active'],
  additionalProperties: false,
};

let dir: string;
let on: LLM;
let off: LLM;

beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  on = await LLM.load(dir, { threads: 2 });
  off = await LLM.load(dir, { threads: 2, jumpForward: false });
}, 120_000);

afterAll(async () => {
  await on?.close();
  await off?.close();
  removeDir(dir);
});

describe('jump-forward', () => {
  it('gives the same tokens as without, and every forced proposal is accepted', async () => {
    let proposed = 0;
    for (const whitespace of ['compact', 'any'] as const) {
      for (const p of [{ temperature: 0 }, { temperature: 1, seed: 7 }, { temperature: 0.8, seed: 3, topK: 20 }]) {
        const params = { ...p, maxTokens: 60, structuredOutput: { type: 'json', schema: SCHEMA, whitespace } } as const;
        const [a] = await off.generate('A person:', params);
        const [b] = await on.generate('A person:', params);
        expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
        expect(a.metrics.specDraftTokens).toBe(0);
        expect(b.metrics.specAcceptedTokens).toBe(b.metrics.specDraftTokens);
        proposed += b.metrics.specDraftTokens;
        if (a.outputs[0].finishReason === 'stop') {
          const value = JSON.parse(a.outputs[0].text) as Record<string, unknown>;
          expect(Object.keys(value)).toEqual(['name', 'age', 'city', 'active']);
        }
      }
    }
    expect(proposed).toBeGreaterThan(20);
  }, 120_000);

  it('with logprobs (the model logits are needed at every position): the same tokens and logprobs', async () => {
    const params = {
      temperature: 0.7,
      seed: 11,
      logprobs: 2,
      maxTokens: 40,
      structuredOutput: { type: 'json', schema: SCHEMA, whitespace: 'compact' },
    } as const;
    const [a] = await off.generate('A person:', params);
    const [b] = await on.generate('A person:', params);
    expect(b.outputs[0].tokenIds).toEqual(a.outputs[0].tokenIds);
    expect(b.outputs[0].logprobs).toEqual(a.outputs[0].logprobs);
    expect(b.metrics.specDraftTokens).toBeGreaterThan(0);
  }, 60_000);

  it('writes forced text in its canonical tokens', async () => {
    const tok = await QwenTokenizer.fromDir(dir);
    const spec = { type: 'json', schema: SCHEMA, whitespace: 'compact' } as const;
    const forced = createMatcher(spec, tok).forcedTokens();
    expect(tok.decode(forced)).toBe('{"name'); // `{"name":"` less its last token, which may merge with what follows
    for (const seed of [1, 2, 3]) {
      const [o] = await on.generate('A person:', { temperature: 1.5, seed, maxTokens: 8, structuredOutput: spec });
      expect(o.outputs[0].tokenIds.slice(0, forced.length)).toEqual(forced);
    }
  }, 60_000);

  it('is on by default, off with jumpForward: false or --no-jump-forward', () => {
    expect(on.model.jumpForward).toBe(true);
    expect(off.model.jumpForward).toBe(false);
    expect(modelArgsFrom({ 'no-jump-forward': true }).load.jumpForward).toBe(false);
    expect(modelArgsFrom({}).load.jumpForward).toBeUndefined();
  });
});
