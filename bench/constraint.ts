// Constrained decoding: the per-step cost of the structured-output mask on the real Qwen2.5
// vocabulary (151,665 tokens, logits padded to 151,936), without a model. A seeded random walk
// stands in for the model: each step runs the logits processors (advance the automaton over the
// last token, fetch or compute the allowed-token mask, apply it to 151,936 logits), then picks a
// random allowed token. The first pass meets every automaton state for the first time (cold: a
// trie walk per new state); the second pass replays the same tokens (warm: memoised masks).
// Run alone: node dist/bench/constraint.js [--quick]
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LogitsProcessors } from '../src/sampler/processors.js';
import { trieOf, vocabularyFromTokenizer, type StructuredOutput } from '../src/sampler/structured/index.js';
import { slicesOf } from '../src/sampler/structured/slices.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';
import { log, num, out, repoRoot, StreamTable } from './common.js';

export interface ConstraintResult {
  name: string;
  steps: number;
  compileMs: number;
  coldMeanMs: number;
  coldMaxMs: number;
  warmMeanMs: number;
  text: string;
}

const LOGITS = 151936;
const EOS = [151645, 151643];

const SPECS: { name: string; spec: StructuredOutput }[] = [
  { name: 'json_object', spec: { type: 'json' } },
  {
    name: 'json_schema',
    spec: {
      type: 'json',
      schema: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          age: { type: 'integer' },
          address: {
            type: 'object',
            properties: { city: { type: 'string' }, zip: { type: 'string' } },
            required: ['city'],
          },
          tags: { type: 'array', items: { type: 'string' } },
          role: { enum: ['admin', 'user'] },
        },
        required: ['name', 'age', 'address', 'tags', 'role'],
      },
    },
  },
  { name: 'regex', spec: { type: 'regex', pattern: '[a-z]{3,12}(\\.[a-z]{2,8})?@[a-z]{2,10}\\.(com|org|net)' } },
  {
    name: 'tool_call',
    spec: {
      type: 'toolCall',
      multiple: true,
      functions: [
        {
          name: 'get_weather',
          parameters: {
            type: 'object',
            properties: { location: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] } },
            required: ['location', 'unit'],
          },
        },
        {
          name: 'send_email',
          parameters: { type: 'object', properties: { to: { type: 'string' } }, required: ['to'] },
        },
      ],
    },
  },
];

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runConstraintBench(opts: { quick: boolean }): Promise<{
  vocabMs: number;
  trieMs: number;
  slicesMs: number;
  results: ConstraintResult[];
}> {
  const tok = await QwenTokenizer.fromDir(path.join(repoRoot(), 'assets', 'qwen2.5-tokenizer'));
  let t0 = performance.now();
  const vocab = vocabularyFromTokenizer(tok, LOGITS, EOS);
  const vocabMs = performance.now() - t0;
  t0 = performance.now();
  trieOf(vocab);
  const trieMs = performance.now() - t0;
  t0 = performance.now();
  slicesOf(vocab);
  const slicesMs = performance.now() - t0;
  const steps = opts.quick ? 24 : 96;
  const rand = mulberry32(1);
  const logits = new Float32Array(LOGITS);
  for (let i = 0; i < LOGITS; i++) logits[i] = rand() * 4;
  const results: ConstraintResult[] = [];
  for (const { name, spec } of SPECS) {
    t0 = performance.now();
    const cold = LogitsProcessors.create({ structuredOutput: spec, maxTokens: steps }, LOGITS, vocab)!;
    const compileMs = performance.now() - t0;
    const output: number[] = [];
    const coldTimes: number[] = [];
    const pick = mulberry32(7);
    for (let s = 0; s < steps; s++) {
      const t = performance.now();
      const x = cold.apply(logits, [], output);
      coldTimes.push(performance.now() - t);
      const allowed: number[] = [];
      for (let i = 0; i < LOGITS; i++) if (x[i]! > -Infinity) allowed.push(i);
      const token = allowed[Math.floor(pick() * allowed.length)]!;
      if (EOS.includes(token)) break;
      output.push(token);
    }
    // Replay the same tokens with a new sequence: the masks are memoised per automaton state.
    const warm = LogitsProcessors.create({ structuredOutput: spec, maxTokens: steps }, LOGITS, vocab)!;
    const warmTimes: number[] = [];
    for (let s = 0; s <= output.length && s < steps; s++) {
      const t = performance.now();
      warm.apply(logits, [], output.slice(0, s));
      warmTimes.push(performance.now() - t);
    }
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    results.push({
      name,
      steps: coldTimes.length,
      compileMs,
      coldMeanMs: mean(coldTimes),
      coldMaxMs: Math.max(...coldTimes),
      warmMeanMs: mean(warmTimes),
      text: tok.decode(output),
    });
  }
  return { vocabMs, trieMs, slicesMs, results };
}

export function printConstraintBench(r: Awaited<ReturnType<typeof runConstraintBench>>): void {
  const table = new StreamTable(
    `Constrained decoding on the Qwen2.5 vocabulary (per step: advance the automaton, get the mask, apply it to 151936 logits; ` +
      `one-time: token bytes ${num(r.vocabMs)} ms, trie ${num(r.trieMs)} ms, slices ${num(r.slicesMs)} ms; a 0.5B decode step is 124-173 ms here)`,
    [
      { title: 'constraint', width: 11, align: 'left' },
      { title: 'steps', width: 5 },
      { title: 'compile ms', width: 10 },
      { title: 'cold ms/step', width: 12 },
      { title: 'cold max ms', width: 11 },
      { title: 'warm ms/step', width: 12 },
    ],
  );
  for (const x of r.results)
    table.row([x.name, String(x.steps), num(x.compileMs), num(x.coldMeanMs), num(x.coldMaxMs), num(x.warmMeanMs)]);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const quick = process.argv.includes('--quick');
  log('constrained decoding...');
  const r = await runConstraintBench({ quick });
  printConstraintBench(r);
  for (const x of r.results) log(`  ${x.name}: ${JSON.stringify(x.text.slice(0, 120))}`);
}
