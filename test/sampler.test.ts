import { describe, expect, it } from 'vitest';
import {
  Sampler,
  SamplingParamsError,
  SplitMix64,
  Xoshiro128,
  argmax,
  computeDistribution,
  topN,
  validateSamplingParams,
  type SamplingParams,
} from '../src/sampler/index.js';

const f32 = (xs: number[]): Float32Array => Float32Array.from(xs);

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Expands a distribution over `ids` into a full-vocabulary array. */
function over(n: number, ids: number[], probs: number[]): number[] {
  const out = new Array<number>(n).fill(0);
  ids.forEach((id, j) => (out[id] = probs[j]!));
  return out;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, eps = 1e-12): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (Math.abs(actual[i]! - expected[i]!) > eps) {
      throw new Error(`index ${i}: got ${actual[i]}, expected ${expected[i]} (eps ${eps})`);
    }
  }
}

/** Straightforward full-sort implementation of the same vLLM pipeline, to check the fast one. */
function referenceDistribution(logits: Float32Array, p: SamplingParams, prompt: number[], output: number[]): number[] {
  const n = logits.length;
  const x = Array.from(logits);
  const rp = p.repetitionPenalty ?? 1;
  for (const t of new Set([...prompt, ...output])) x[t] = x[t]! > 0 ? x[t]! / rp : x[t]! * rp;
  const counts = new Map<number, number>();
  for (const t of output) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, c] of counts) x[t] = x[t]! - (p.frequencyPenalty ?? 0) * c - (p.presencePenalty ?? 0);
  const temp = p.temperature ?? 1;
  if (temp < 1e-5) return over(n, [argmax(x)], [1]);
  for (let i = 0; i < n; i++) x[i] = x[i]! / temp;
  const order = [...x.keys()].sort((a, b) => x[b]! - x[a]! || a - b);
  let keep = new Array<boolean>(n).fill(true);
  const k = p.topK ?? -1;
  if (k > 0 && k < n) {
    const kth = x[order[k - 1]!]!;
    keep = x.map((v) => v >= kth);
  }
  const topP = p.topP ?? 1;
  if (topP < 1) {
    const kept = order.filter((i) => keep[i]);
    const probs = softmax(kept.map((i) => x[i]!));
    let above = 0;
    kept.forEach((i, j) => {
      if (above >= topP) keep[i] = false;
      above += probs[j]!;
    });
  }
  const minP = p.minP ?? 0;
  const max = x[order[0]!]!;
  const ids = [...x.keys()].filter((i) => keep[i] && Math.exp(x[i]! - max) >= minP);
  return over(n, ids, softmax(ids.map((i) => x[i]!)));
}

/** Deterministic test logits: roughly normal, scaled. */
function randomLogits(n: number, seed: number, scale = 3): Float32Array {
  const rng = Xoshiro128.fromSeed(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = rng.nextFloat() || 1e-12;
    const u2 = rng.nextFloat();
    out[i] = scale * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return out;
}

describe('rng', () => {
  it('xoshiro128** matches the reference implementation for state {1,2,3,4}', () => {
    // Expected values: Vigna's xoshiro128starstar.c, as quoted in Rust rand_xoshiro's tests.
    const r = new Xoshiro128(1, 2, 3, 4);
    const got = Array.from({ length: 10 }, () => r.nextUint32());
    expect(got).toEqual([
      11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804,
    ]);
  });

  it('splitmix64 matches the reference outputs for seed 1234567', () => {
    const s = new SplitMix64(1234567n);
    const got = Array.from({ length: 5 }, () => s.next());
    expect(got).toEqual([
      6457827717110365317n,
      3203168211198807973n,
      9817491932198370423n,
      4593380528125082431n,
      16408922859458223821n,
    ]);
  });

  it('nextFloat is in [0, 1) and seeded generators repeat', () => {
    const a = Xoshiro128.fromSeed(7);
    const b = Xoshiro128.fromSeed(7);
    const c = Xoshiro128.fromSeed(-7);
    let differs = false;
    for (let i = 0; i < 1000; i++) {
      const v = a.nextFloat();
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
      expect(b.nextFloat()).toBe(v);
      if (c.nextFloat() !== v) differs = true;
    }
    expect(differs).toBe(true);
  });
});

describe('argmax / topN', () => {
  it('argmax takes the lowest index on ties and ignores NaN', () => {
    expect(argmax(f32([1, 5, 5, 2]))).toBe(1);
    expect(argmax([NaN, -1, NaN, 3, 3])).toBe(3);
    expect(argmax([-Infinity, -Infinity])).toBe(0);
  });

  it('topN returns the largest values best first, lower id on ties', () => {
    expect(topN([1, 9, 3, 9, 7, 0], 3)).toEqual([1, 3, 4]);
    expect(topN([1, 2], 5)).toEqual([1, 0]);
    expect(topN([1, 2], 0)).toEqual([]);
  });
});

describe('computeDistribution: each stage alone', () => {
  const L = f32([1, 2, 3, 4]);

  it('no parameters: plain softmax', () => {
    expectClose(computeDistribution(L, {}), softmax([1, 2, 3, 4]));
  });

  it('temperature divides the logits', () => {
    expectClose(computeDistribution(L, { temperature: 0.5 }), softmax([2, 4, 6, 8]));
    expectClose(computeDistribution(L, { temperature: 2 }), softmax([0.5, 1, 1.5, 2]));
  });

  it('temperature 0 (and < 1e-5) is greedy, lowest index on ties', () => {
    expect(Array.from(computeDistribution(L, { temperature: 0 }))).toEqual([0, 0, 0, 1]);
    expect(Array.from(computeDistribution(f32([0, 7, 7, 1]), { temperature: 5e-6, topK: 3 }))).toEqual([0, 1, 0, 0]);
  });

  it('top_k 2 keeps exactly softmax([3, 4]) over the two best', () => {
    expectClose(computeDistribution(L, { topK: 2 }), over(4, [2, 3], softmax([3, 4])));
    expectClose(computeDistribution(L, { topK: 1 }), [0, 0, 0, 1]);
    expectClose(computeDistribution(L, { topK: 4 }), softmax([1, 2, 3, 4]));
    expectClose(computeDistribution(L, { topK: 100 }), softmax([1, 2, 3, 4]));
  });

  it('top_k keeps every token tied with the k-th (vLLM masks logits < k-th value)', () => {
    expectClose(computeDistribution(f32([1, 3, 3, 2]), { topK: 1 }), [0, 0.5, 0.5, 0]);
  });

  it('top_p keeps the smallest prefix whose mass reaches p', () => {
    // softmax([1,2,3,4]) = [0.032, 0.087, 0.237, 0.644]; cumulative from the top: 0.644, 0.881, 0.968, 1
    expectClose(computeDistribution(L, { topP: 0.5 }), [0, 0, 0, 1]);
    expectClose(computeDistribution(L, { topP: 0.7 }), over(4, [2, 3], softmax([3, 4])));
    expectClose(computeDistribution(L, { topP: 0.9 }), over(4, [1, 2, 3], softmax([2, 3, 4])));
    expectClose(computeDistribution(L, { topP: 0.99 }), softmax([1, 2, 3, 4]));
    expectClose(computeDistribution(L, { topP: 1e-9 }), [0, 0, 0, 1]); // always at least one token
  });

  it('min_p drops tokens below min_p * max prob', () => {
    // prob / max prob = exp(l - 4) = [0.050, 0.135, 0.368, 1]
    expectClose(computeDistribution(L, { minP: 0.2 }), over(4, [2, 3], softmax([3, 4])));
    expectClose(computeDistribution(L, { minP: 0.1 }), over(4, [1, 2, 3], softmax([2, 3, 4])));
    expectClose(computeDistribution(L, { minP: 1 }), [0, 0, 0, 1]);
    expectClose(computeDistribution(L, { minP: 0 }), softmax([1, 2, 3, 4]));
  });

  it('stages compose in vLLM order: temperature, top_k, top_p (renormalised), min_p', () => {
    const logits = f32([0, 1, 2, 3, 4, 5]);
    // T=2 -> [0, .5, 1, 1.5, 2, 2.5]; top_k 4 -> ids 2..5; top_p .8 over those:
    // softmax([1,1.5,2,2.5]) = [.109, .180, .297, .413]: cumulative .413, .710, 1.007 -> ids 3,4,5;
    // min_p .5: exp(1.5-2.5) = .368 < .5 -> id 3 dropped.
    expectClose(
      computeDistribution(logits, { temperature: 2, topK: 4, topP: 0.8, minP: 0.5 }),
      over(6, [4, 5], softmax([2, 2.5])),
    );
  });
});

describe('penalties', () => {
  it("repetition, frequency and presence penalties follow vLLM's formulas exactly", () => {
    const logits = f32([2, -1, 0.5, 3, -2]);
    const prompt = [0, 1, 0];
    const output = [1, 3, 3];
    const p: SamplingParams = { repetitionPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25 };
    // 0: prompt only          -> 2/2 = 1 (no freq/presence: not in the output)
    // 1: prompt+output, once  -> -1*2 = -2, then -2 - 0.5*1 - 0.25 = -2.75
    // 2: untouched            -> 0.5
    // 3: output twice         -> 3/2 = 1.5, then 1.5 - 0.5*2 - 0.25 = 0.25
    // 4: untouched            -> -2
    expectClose(computeDistribution(logits, p, prompt, output), softmax([1, -2.75, 0.5, 0.25, -2]));
  });

  it('repetition penalty < 1 encourages repeats; presence ignores the prompt', () => {
    const logits = f32([1, -1, 0]);
    expectClose(computeDistribution(logits, { repetitionPenalty: 0.5 }, [0, 1], []), softmax([2, -0.5, 0]));
    expectClose(computeDistribution(logits, { presencePenalty: 1 }, [0, 1, 2], []), softmax([1, -1, 0]));
    expectClose(computeDistribution(logits, { presencePenalty: -1.5 }, [], [2, 2]), softmax([1, -1, 1.5]));
    expectClose(computeDistribution(logits, { frequencyPenalty: 0.5 }, [], [0, 0, 0]), softmax([-0.5, -1, 0]));
  });

  it('greedy decoding sees the penalised logits', () => {
    const s = new Sampler({ temperature: 0, repetitionPenalty: 10 }, 3);
    expect(s.sample(f32([5, 4, -9]), [0], []).token).toBe(1);
    expect(s.sample(f32([5, 4, -9]), [], []).token).toBe(0);
  });

  it("does not modify the caller's logits and out-of-range ids throw", () => {
    const logits = f32([1, 2, 3]);
    const s = new Sampler({ repetitionPenalty: 2, frequencyPenalty: 1, seed: 1 }, 3);
    s.sample(logits, [0, 1], [2, 2]);
    expect(Array.from(logits)).toEqual([1, 2, 3]);
    expect(() => s.sample(logits, [3], [])).toThrow(RangeError);
    expect(() => s.sample(logits, [0], [1, 7])).toThrow(RangeError);
    // A rejected call leaves no state behind.
    expectClose(
      s.distribution(logits, [], []),
      computeDistribution(logits, { repetitionPenalty: 2, frequencyPenalty: 1 }),
    );
    expect(() => s.sample(f32([1, 2]), [], [])).toThrow(/expected 3 logits/);
  });
});

describe('fast path equals a full-sort reference', () => {
  const cases: SamplingParams[] = [
    { topK: 50 },
    { topP: 0.9 },
    { topP: 0.5, temperature: 0.7 },
    { topK: 200, topP: 0.95, minP: 0.01 },
    { topK: 1 },
    { topK: 999 },
    { minP: 0.05, temperature: 1.3 },
    { topP: 0.999, temperature: 5 },
    { topK: 40, topP: 0.8, temperature: 0.6, repetitionPenalty: 1.3, frequencyPenalty: 0.4, presencePenalty: 0.3 },
  ];
  for (const [j, params] of cases.entries()) {
    it(`random logits, ${JSON.stringify(params)}`, () => {
      for (const scale of [0.05, 1, 4]) {
        const logits = randomLogits(1000, 100 + j, scale);
        const prompt = [1, 5, 9, 5, 700];
        const output = [9, 9, 42, 999];
        expectClose(
          computeDistribution(logits, params, prompt, output),
          referenceDistribution(logits, params, prompt, output),
          1e-12,
        );
      }
    });
  }

  it('quantised logits with many exact ties', () => {
    const logits = randomLogits(2000, 5).map((v) => Math.round(v * 2) / 2);
    for (const params of [{ topK: 37 }, { topP: 0.6 }, { topK: 300, topP: 0.9 }] as SamplingParams[]) {
      expectClose(computeDistribution(logits, params), referenceDistribution(logits, params, [], []), 1e-12);
    }
  });

  it('-inf logits (masked tokens) are never kept', () => {
    const logits = f32([-Infinity, 1, -Infinity, 2, 0]);
    expectClose(computeDistribution(logits, { topK: 4 }), over(5, [1, 3, 4], softmax([1, 2, 0])));
    expectClose(computeDistribution(logits, {}), over(5, [1, 3, 4], softmax([1, 2, 0])));
  });

  // Speed is the bench's to measure (npm run bench), not a timed unit test's.
  it('full Qwen vocabulary (151936): exact', () => {
    const V = 151936;
    const logits = randomLogits(V, 77, 2.5);
    const params: SamplingParams = { temperature: 0.7, topK: 50, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1 };
    const prompt = Array.from({ length: 500 }, (_, i) => (i * 7919) % V);
    expectClose(
      computeDistribution(logits, params, prompt, []),
      referenceDistribution(logits, params, prompt, []),
      1e-12,
    );
  });
});

describe('sampling', () => {
  it('same seed gives the same 50 tokens; different seeds differ', () => {
    const V = 1000;
    const run = (seed: number): number[] => {
      const s = new Sampler({ seed, temperature: 1.2, topP: 0.95, frequencyPenalty: 0.2 }, V);
      const out: number[] = [];
      for (let step = 0; step < 50; step++) out.push(s.sample(randomLogits(V, step, 1), [1, 2, 3], out).token);
      return out;
    };
    const a = run(42);
    expect(run(42)).toEqual(a);
    expect(run(43)).not.toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(10); // it really samples
  });

  it('without a seed, samplers draw from fresh entropy', () => {
    const logits = new Float32Array(1000); // uniform
    const a = Array.from(
      { length: 20 },
      (
        (s) => () =>
          s.sample(logits).token
      )(new Sampler({}, 1000)),
    );
    const b = Array.from(
      { length: 20 },
      (
        (s) => () =>
          s.sample(logits).token
      )(new Sampler({}, 1000)),
    );
    expect(a).not.toEqual(b);
  });

  it('greedy equals argmax', () => {
    const s = new Sampler({ temperature: 0, topK: 5, topP: 0.1 }, 500);
    for (let step = 0; step < 20; step++) {
      const logits = randomLogits(500, 1000 + step);
      expect(s.sample(logits).token).toBe(argmax(logits));
    }
  });

  it('sampling frequencies match the distribution (20000 draws, seed 1234, tolerance 0.01)', () => {
    const logits = f32([0.5, 1.2, -0.3, 2.0, 0.0, 1.5, -1.0, 0.8]);
    const params: SamplingParams = { temperature: 0.8, topK: 6, topP: 0.95, seed: 1234 };
    const dist = computeDistribution(logits, params);
    const s = new Sampler(params, logits.length);
    const counts = new Array<number>(logits.length).fill(0);
    const N = 20000;
    for (let i = 0; i < N; i++) counts[s.sample(logits).token]!++;
    for (let i = 0; i < logits.length; i++) {
      expect(Math.abs(counts[i]! / N - dist[i]!)).toBeLessThan(0.01);
      if (dist[i] === 0) expect(counts[i]).toBe(0);
    }
    expect(dist.filter((p) => p > 0).length).toBe(5); // top_k kept 6, top_p then dropped one
  });
});

describe('logprobs', () => {
  it('are log_softmax of the raw logits, before penalties and temperature', () => {
    const logits = f32([1, 2, 3, 4]);
    const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3) + Math.exp(4));
    const s = new Sampler({ temperature: 0.3, repetitionPenalty: 2, logprobs: 2, seed: 3 }, 4);
    for (let i = 0; i < 20; i++) {
      const r = s.sample(logits, [3], []);
      expect(r.logprob).toBeCloseTo(logits[r.token]! - lse, 12);
      expect(r.topLogprobs!.map((t) => t.token)).toEqual([3, 2]);
      expect(r.topLogprobs![0]!.logprob).toBeCloseTo(4 - lse, 12);
      expect(r.topLogprobs![1]!.logprob).toBeCloseTo(3 - lse, 12);
    }
  });

  it('logprobs 0 gives only the chosen token; unset gives nothing', () => {
    const logits = f32([0, 0]);
    const r0 = new Sampler({ logprobs: 0, seed: 1 }, 2).sample(logits);
    expect(r0.logprob).toBeCloseTo(Math.log(0.5), 12);
    expect(r0.topLogprobs).toEqual([]);
    const r = new Sampler({ seed: 1 }, 2).sample(logits);
    expect(r.logprob).toBeUndefined();
    expect(r.topLogprobs).toBeUndefined();
  });
});

describe('validateSamplingParams', () => {
  const bad: [SamplingParams, string, RegExp][] = [
    [{ temperature: -0.1 }, 'temperature', /temperature must be non-negative, got -0.1/],
    [{ temperature: Infinity }, 'temperature', /temperature/],
    [{ temperature: NaN }, 'temperature', /temperature/],
    [{ topP: 0 }, 'topP', /top_p must be in \(0, 1\], got 0/],
    [{ topP: 1.01 }, 'topP', /top_p/],
    [{ topK: 0 }, 'topK', /top_k must be -1 \(disable\), or at least 1, got 0/],
    [{ topK: -2 }, 'topK', /top_k/],
    [{ topK: 2.5 }, 'topK', /top_k/],
    [{ minP: -0.01 }, 'minP', /min_p must be in \[0, 1\]/],
    [{ minP: 1.5 }, 'minP', /min_p/],
    [{ repetitionPenalty: 0 }, 'repetitionPenalty', /repetition_penalty must be greater than zero, got 0/],
    [{ repetitionPenalty: -1 }, 'repetitionPenalty', /repetition_penalty/],
    [{ presencePenalty: 2.5 }, 'presencePenalty', /presence_penalty must be in \[-2, 2\], got 2.5/],
    [{ presencePenalty: -3 }, 'presencePenalty', /presence_penalty/],
    [{ frequencyPenalty: -2.01 }, 'frequencyPenalty', /frequency_penalty must be in \[-2, 2\]/],
    [{ maxTokens: 0 }, 'maxTokens', /max_tokens must be an integer of at least 1, got 0/],
    [{ maxTokens: 1.5 }, 'maxTokens', /max_tokens/],
    [{ seed: 1.5 }, 'seed', /seed must be an integer/],
    [{ logprobs: -1 }, 'logprobs', /logprobs must be an integer from 0 to 20, got -1/],
    [{ logprobs: 1e6 }, 'logprobs', /logprobs must be an integer from 0 to 20, got 1000000/],
    [{ logprobs: 0.5 }, 'logprobs', /logprobs/],
    [{ stop: '' }, 'stop', /stop cannot contain an empty string/],
    [{ stop: ['ok', ''] }, 'stop', /stop cannot contain an empty string/],
    [{ stop: [1 as unknown as string] }, 'stop', /stop must be a string or an array of strings/],
    [{ stopTokenIds: [-1] }, 'stopTokenIds', /stop_token_ids/],
    [{ temperature: '1' as unknown as number }, 'temperature', /temperature/],
    [{ ignoreEos: 1 as unknown as boolean }, 'ignoreEos', /ignore_eos/],
  ];
  for (const [params, param, message] of bad) {
    it(`rejects ${JSON.stringify(params)} naming ${param}`, () => {
      let err: unknown;
      try {
        validateSamplingParams(params);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SamplingParamsError);
      expect((err as SamplingParamsError).param).toBe(param);
      expect((err as Error).message).toMatch(message);
      expect(() => new Sampler(params, 10)).toThrow(SamplingParamsError);
    });
  }

  it('names the API spelling too', () => {
    try {
      validateSamplingParams({ topP: 2 });
    } catch (e) {
      expect((e as SamplingParamsError).apiParam).toBe('top_p');
    }
  });

  it('accepts the edges of every range', () => {
    const ok: SamplingParams[] = [
      {},
      { temperature: 0, topP: 1, topK: -1, minP: 0 },
      { temperature: 2, topP: 1e-6, topK: 1, minP: 1 },
      { repetitionPenalty: 1e-3, presencePenalty: -2, frequencyPenalty: 2 },
      { presencePenalty: 2, frequencyPenalty: -2, seed: -5, maxTokens: 1, logprobs: 0 },
      { stop: 'x', stopTokenIds: [151645], ignoreEos: true },
      { stop: [], stopTokenIds: [] },
    ];
    for (const p of ok) expect(() => validateSamplingParams(p)).not.toThrow();
  });
});
