// A constraint whose lazily built automaton outgrows its per-request limit while it is matched:
// the matcher throws a BudgetError naming the limit and stays usable at the tokens before it; in
// the engine only that request fails, naming the limit, and the others are served. Also the
// MaskBench schemas that used to end in that error (many counted strings) now fit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { BudgetError, DEFAULT_BUDGET } from '../src/sampler/structured/nfa.js';
import {
  compileStructuredOutput,
  createMatcher,
  setAutomatonLimits,
  setCompileBudget,
  StructuredOutputError,
} from '../src/sampler/structured/index.js';
import { DEFAULT_PDA_LIMITS } from '../src/sampler/structured/pda.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const TOKENIZER_DIR = new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname;
let tok: QwenTokenizer;

beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
});

const ids = (text: string) => tok.encode(text, { addSpecialTokens: false });

describe('the per-request automaton limit in the matcher', () => {
  afterAll(() => setAutomatonLimits(DEFAULT_PDA_LIMITS));

  it('throws a BudgetError naming the limit; the tokens before it still match', () => {
    setAutomatonLimits({ maxFrameStates: 300 });
    // Constraints are cached by spec: this one is only used here, with the lowered limit.
    const m = createMatcher({ type: 'json', schema: { type: 'string', maxLength: 499 } }, tok);
    const text = '"' + 'The quick brown fox jumps over the lazy dog. '.repeat(10).slice(0, 440) + '"';
    let error: unknown;
    let accepted = 0;
    for (const t of ids(text)) {
      try {
        m.allowedTokens();
        expect(m.accept(t)).toBe(true);
        accepted++;
      } catch (e) {
        error = e;
        break;
      }
    }
    expect(error).toBeInstanceOf(BudgetError);
    expect((error as Error).message).toMatch(/grew past 300 states \(the limit per request\)/);
    // The state before the failing step is intact: back two tokens, the same mask as before.
    m.rollback(Math.min(2, accepted));
    expect(() => m.allowedTokens()).not.toThrow();
    expect(m.isComplete()).toBe(false);
  });
});

describe('the compile time limit', () => {
  afterAll(() => setCompileBudget(DEFAULT_BUDGET));

  it('holds while allOf/anyOf branches are merged, before any automaton state is built', () => {
    // 3^12 merged branches. Before, the limit was checked only as NFA states were made: this ran
    // for minutes (Github_hard o64819: 34 s and 2.3 GB with a 1 s limit) before being refused.
    setCompileBudget({ maxMillis: 200 });
    const part = (i: number) => ({
      anyOf: ['string', 'integer', 'boolean'].map((type, k) => ({ properties: { [`p${i}_${k}`]: { type } } })),
    });
    const schema = { type: 'object', allOf: Array.from({ length: 12 }, (_, i) => part(i)) };
    let error: unknown;
    try {
      compileStructuredOutput({ type: 'json', schema });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(StructuredOutputError);
    expect((error as Error).message).toBe('compiling the constraint took more than 200 ms (the limit per request)');
  });
});

describe('MaskBench schemas of many counted strings (they reached the 40,000-state limit)', () => {
  it('an array of 100 objects of counted and patterned strings matches a valid instance of 100 items', () => {
    setCompileBudget({ maxMillis: 60_000 });
    // Github_easy o9925's shape: maxItems copies of an item with two 255-character strings.
    const schema = {
      type: 'object',
      properties: {
        deviceTags: {
          type: 'array',
          maxItems: 100,
          items: {
            type: 'object',
            properties: {
              key: { type: 'string', pattern: '^[0-9a-zA-Z_-]{1,255}$' },
              value: { type: 'string', minLength: 1, maxLength: 255 },
            },
            additionalProperties: false,
          },
        },
      },
      additionalProperties: false,
    };
    const m = createMatcher({ type: 'json', schema }, tok);
    const items = Array.from({ length: 100 }, (_, i) => `{"key": "key-${i}", "value": "value number ${i}"}`);
    for (const t of ids(`{"deviceTags": [${items.join(', ')}]}`)) {
      const bits = m.allowedTokens();
      expect((bits[t >>> 5]! >>> (t & 31)) & 1).toBe(1);
      expect(m.accept(t)).toBe(true);
    }
    expect(m.isComplete()).toBe(true);
    expect(m.guide.pda.stats.frameStates).toBeLessThan(DEFAULT_PDA_LIMITS.maxFrameStates);
  });
});

describe('the limit tripping mid-generation in the engine', () => {
  let dir: string;
  let llm: LLM;
  beforeAll(async () => {
    dir = makeTempModel({ preset: 'tiny', seed: 0 });
    // Test hook: the engine thread's constraints may build only 40 automaton states.
    process.env.QWEN_TS_DEBUG_AUTOMATON_STATES = '40';
    try {
      llm = await LLM.load(dir, { threads: 1, contextLength: 1024 });
    } finally {
      delete process.env.QWEN_TS_DEBUG_AUTOMATON_STATES;
    }
  });
  afterAll(async () => {
    await llm?.close();
    removeDir(dir);
  });

  it('fails only that request, naming the limit; the one beside it and the next are served', async () => {
    const bad = llm.generate('Answer:', {
      // Every character a state of its own (a regex's count is not a JSON string's chain).
      structuredOutput: { type: 'regex', pattern: '[a-z ]{300}' },
      maxTokens: 300,
      seed: 1,
      temperature: 1,
    });
    const good = llm.generate('Answer:', {
      structuredOutput: { type: 'choice', choices: ['yes', 'no'] },
      maxTokens: 8,
      seed: 2,
    });
    const [b, g] = await Promise.allSettled([bad, good]);
    if (b.status === 'fulfilled') expect.fail(`not rejected: ${JSON.stringify(b.value[0]!.outputs[0]!.text)}`);
    expect(String((b as PromiseRejectedResult).reason)).toMatch(/grew past 40 states \(the limit per request\)/);
    expect(g.status).toBe('fulfilled');
    expect(['yes', 'no']).toContain((g as PromiseFulfilledResult<Awaited<typeof good>>).value[0]!.outputs[0]!.text);
    const [next] = await llm.generate('Answer:', { maxTokens: 4, seed: 3 });
    expect(next!.outputs[0]!.tokenIds.length).toBeGreaterThan(0);
  });
});
