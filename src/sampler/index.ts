// Public API of the sampler: vLLM-compatible sampling parameters and the token sampler.
export {
  type SamplingParams,
  validateSamplingParams,
  SamplingParamsError,
  DEFAULT_SAMPLING_PARAMS,
  SAMPLING_EPS,
  MAX_LOGPROBS,
} from './params.js';
export { Sampler, argmax, topN, computeDistribution, type SampleResult, type TokenLogprob } from './sampler.js';
export { Xoshiro128, SplitMix64 } from './rng.js';
// Structured output (constrained decoding) and the vocabulary it needs (issue 11).
export {
  type StructuredOutput,
  type ToolFunctionSpec,
  type TokenVocabulary,
  type MatcherTokenizer,
  StructuredOutputError,
  compileStructuredOutput,
  createMatcher,
  Matcher,
  vocabularyFromTokenizer,
} from './structured/index.js';
export { type SamplerOptions } from './sampler.js';
