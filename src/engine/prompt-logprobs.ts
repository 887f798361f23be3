// Prompt log-probabilities (vLLM's prompt_logprobs): the log-probability of each prompt token
// under the logits of the position before it, its rank, and the k most likely tokens there.
// Computed row by row as each prefill chunk's logits come out of the head, so only k + 1 numbers
// per position are kept, never [promptLength, vocab] floats.
import { topN, type TokenLogprob } from '../sampler/index.js';

/** One prompt token's log-probability; `rank` 1 is the most likely token at its position. */
export interface PromptLogprob {
  token: number;
  logprob: number;
  rank: number;
  /** The request's promptLogprobs most likely tokens at this position, best first. */
  topLogprobs: TokenLogprob[];
}

/**
 * log_softmax(row)[token] in float64, its rank and the top `k` (as vLLM: the log-probabilities
 * of the raw logits, before any sampling processor). Throws on NaN or infinite logits.
 */
export function promptLogprobOf(row: Float32Array, token: number, k: number): PromptLogprob {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const x = row[i];
    if (x !== x || x === Infinity || x === -Infinity)
      throw new RangeError(`the model produced ${x} logits (token ${i}) while scoring the prompt`);
    if (x > max) max = x;
  }
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const logSumExp = max + Math.log(sum);
  const x = row[token];
  let rank = 1;
  for (let i = 0; i < row.length; i++) if (row[i] > x) rank++;
  const topLogprobs = k > 0 ? topN(row, k).map((t) => ({ token: t, logprob: row[t] - logSumExp })) : [];
  return { token, logprob: x - logSumExp, rank, topLogprobs };
}
