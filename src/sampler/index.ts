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
