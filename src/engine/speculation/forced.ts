// Jump-forward for structured output: where the constraint leaves only one way to write the next
// bytes (a key, punctuation, the tool-call wrapper), the engine writes them in the tokenizer's own
// tokens (processors.ts) and appends them in the same step as the next token instead of one step
// each. Such a token is certain: the sampler would pick it from any logits, so its position needs no
// logits at all (`certain`), and the output is exactly what it would be without jump-forward.
// Where logprobs are wanted the model's logits are needed: the forced tokens are then proposed and
// verified like any speculation.
import type { Sampler } from '../../sampler/sampler.js';
import { AcceptanceGate, type Proposer, type StepPlan } from './gate.js';

export class ForcedProposer implements Proposer {
  private readonly gate = new AcceptanceGate();
  /** Whether the last proposal is certain (no logits needed at its positions). */
  certain = false;

  constructor(private readonly sampler: Sampler) {}

  next(prompt: readonly number[], output: readonly number[], max: number, plan: StepPlan): number[] {
    const certain = this.sampler.certainTokens(prompt, output, max);
    this.certain = certain.length > 0;
    if (this.certain) return certain;
    const forced = this.sampler.forcedTokens(output);
    if (forced.length === 0) return forced;
    return forced.slice(0, this.gate.budget(Math.min(max, forced.length), plan));
  }

  record(proposed: number, accepted: number): void {
    if (!this.certain) this.gate.record(proposed, accepted);
  }
}
