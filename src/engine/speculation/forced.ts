// Jump-forward for structured output: where the constraint leaves only one way to write the next
// bytes (a key, punctuation, the tool-call wrapper), its canonical tokens are proposed and checked
// in the same step as the next token, instead of one step each. They are proposals, not forced
// outputs: with a BPE vocabulary the same text can be written in other tokens the mask also allows
// (`"` then `name`, or `"name`), and verification samples every position as plain decoding would,
// so the output is exactly what it would be without jump-forward.
import type { Sampler } from '../../sampler/sampler.js';
import { AcceptanceGate, type Proposer } from './gate.js';

export class ForcedProposer implements Proposer {
  private readonly gate = new AcceptanceGate();

  constructor(private readonly sampler: Sampler) {}

  next(_prompt: readonly number[], output: readonly number[], max: number): number[] {
    const forced = this.sampler.forcedTokens(output);
    if (forced.length === 0) return forced;
    const n = this.gate.budget(Math.min(max, forced.length));
    return forced.slice(0, n);
  }

  record(proposed: number, accepted: number): void {
    this.gate.record(proposed, accepted);
  }
}
