// How many tokens a sequence proposes this step. A gate keeps a running acceptance rate of one
// source of proposals (per proposed token, up to the first rejection: the chance that the next
// proposed token is accepted once those before it were), and with the measured cost of a step by
// row count (step-cost.ts) it proposes the number of tokens that makes the sequence's tokens
// cheapest: (its share of a decode step + the extra rows' cost) / (1 + the expected acceptances).
// Its share is a step's time over its decoding sequences: alone, a token accepted saves a whole
// step; among eight, the step is still taken for the others and saves little more than a row.
// Where extra rows cost nearly as much as a decode step (a tiny f32 model), only a run of
// near-certain tokens pays; where they are cheap (q4_0/q8_0 few-token kernels), a doubtful one too. When proposing does not pay, the source pauses (4, 8, ... 64
// steps while it keeps not paying) and then proposes one token whatever the costs (a probe): a
// text that starts repeating raises the rate probe by probe until proposing pays again, and the
// cost of a two-row step is measured again.
import type { StepCost } from './step-cost.js';

const RATE_WEIGHT = 0.25;
/** The rate is never trusted beyond this: a run of acceptances does not make the next one certain. */
const MAX_RATE = 0.95;
const START_RATE = 0.9;
/**
 * A proposal must promise this much less time per token than none: the step times are measured on
 * a machine that may be shared (step-cost.ts), and a wrong yes costs rows while a wrong no costs nothing.
 */
const MIN_GAIN = 0.1;
const FIRST_PAUSE_STEPS = 4;
const MAX_PAUSE_STEPS = 64;

/** The step being assembled: its decoding sequences and the rows it has so far (theirs and earlier proposals). */
export interface StepPlan {
  cost: StepCost;
  decoding: number;
  rows: number;
}

export class AcceptanceGate {
  /** Running share of proposed tokens accepted (starts hopeful). */
  private rate = START_RATE;
  private pauseSteps = 0;
  private nextPause = FIRST_PAUSE_STEPS;
  private probe = false;

  /** How many tokens to propose this step, at most `max` (0 while paused; one call per step). */
  budget(max: number, plan: StepPlan): number {
    if (this.pauseSteps > 0) {
      this.pauseSteps--;
      if (this.pauseSteps === 0) this.probe = true;
      return 0;
    }
    const r = Math.min(this.rate, MAX_RATE);
    const share = plan.cost.estimate(plan.decoding) / plan.decoding;
    const before = plan.cost.estimate(plan.rows);
    let best = 0,
      bestMsPerToken = share * (1 - MIN_GAIN);
    let gain = 0,
      p = 1;
    for (let n = 1; n <= max; n++) {
      p *= r;
      gain += p; // expected acceptances of n proposed tokens: r + r^2 + ... + r^n
      const msPerToken = (share + plan.cost.estimate(plan.rows + n) - before) / (1 + gain);
      // Nothing measured yet (all estimates 0): propose one (the steps measured then decide).
      if (msPerToken < bestMsPerToken || (share === 0 && n === 1)) {
        best = n;
        bestMsPerToken = msPerToken;
      }
    }
    if (best > 0) {
      this.nextPause = FIRST_PAUSE_STEPS;
      this.probe = false;
      return best;
    }
    if (this.probe && max > 0) {
      this.probe = false;
      return 1;
    }
    this.pauseSteps = this.nextPause;
    this.nextPause = Math.min(2 * this.nextPause, MAX_PAUSE_STEPS);
    return 0;
  }

  /** What verification made of the last proposal: `accepted` of its `proposed` tokens, in order. */
  record(proposed: number, accepted: number): void {
    for (let i = 0; i < accepted; i++) this.rate += RATE_WEIGHT * (1 - this.rate);
    if (accepted < proposed) this.rate -= RATE_WEIGHT * this.rate;
  }
}

/** A source of proposed tokens for one sequence: what comes after prompt ++ output, at most `max`. */
export interface Proposer {
  next(prompt: readonly number[], output: readonly number[], max: number, plan: StepPlan): number[];
  record(proposed: number, accepted: number): void;
  /** Whether the last proposal is certain: the sampler picks it from any logits (none are computed for it). */
  readonly certain?: boolean;
}
