// A verification row costs nearly as much as a decode row here (the kernels are bound by
// instructions, not by memory: README, "Speculative decoding"), so proposals that are mostly
// rejected make decoding slower. A gate keeps a running acceptance rate of one source of proposals
// (per proposed token, up to the first rejection); below MIN_ACCEPTANCE it stops that source for a
// while (doubling while the retries keep failing), and it lets through about as many tokens as the
// rate says will be accepted.
const MIN_ACCEPTANCE = 0.7;
const RATE_WEIGHT = 0.25;
const FIRST_PAUSE_STEPS = 4;
const MAX_PAUSE_STEPS = 64;

export class AcceptanceGate {
  /** Running share of proposed tokens accepted (starts hopeful). */
  private rate = 1;
  private pauseSteps = 0;
  private nextPause = FIRST_PAUSE_STEPS;

  /** How many tokens to propose this step, at most `max`: 0 while paused (one call per step). */
  budget(max: number): number {
    if (this.pauseSteps > 0) {
      this.pauseSteps--;
      return 0;
    }
    // A rate r accepts about r / (1 - r) tokens in a row.
    const r = Math.min(this.rate, 0.95);
    return Math.min(max, Math.max(1, Math.round(r / (1 - r))));
  }

  /** What verification made of the last proposal: `accepted` of its `proposed` tokens, in order. */
  record(proposed: number, accepted: number): void {
    for (let i = 0; i < accepted; i++) this.rate += RATE_WEIGHT * (1 - this.rate);
    if (accepted < proposed) this.rate -= RATE_WEIGHT * this.rate;
    if (this.rate >= MIN_ACCEPTANCE) {
      this.nextPause = FIRST_PAUSE_STEPS;
      return;
    }
    this.pauseSteps = this.nextPause;
    this.nextPause = Math.min(2 * this.nextPause, MAX_PAUSE_STEPS);
    this.rate = MIN_ACCEPTANCE; // the retry after the pause decides
  }
}

/** A source of proposed tokens for one sequence: what comes after prompt ++ output, at most `max`. */
export interface Proposer {
  next(prompt: readonly number[], output: readonly number[], max: number): number[];
  record(proposed: number, accepted: number): void;
  /** Whether the last proposal is certain: the sampler picks it from any logits (none are computed for it). */
  readonly certain?: boolean;
}
