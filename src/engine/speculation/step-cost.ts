// What an engine step costs with R rows, measured as the engine runs. Whether a proposal pays
// depends on it: on a 0.5B q4_0 model an extra verification row costs 0.2-0.6 of a one-row step,
// on the tiny f32 stories260K 0.6-1.1 (odd row counts pad the f32 kernels and cost more than the
// next even one), and the part of a step that does not grow with its rows (scheduling, sampling,
// messages to the caller's thread) differs again. So the scheduler times every step and the
// proposers choose their length from these times instead of from a fixed rule.
//
// Each row count keeps the least of its last SAMPLES steps (the whole engine step: the pass over
// the weights, sampling, the state message, the pause for incoming messages), over the steps whose
// rows all decode or verify (a prompt row costs less: no logits, a shorter context). Both ways a
// step is measured wrong make it longer: cold (the first steps of a row count compile code for it
// and take up to 5x the next ones) or interrupted (the thread switched out by another process);
// and the model's speed changes with the context length, so only the last STALE_STEPS steps
// count. A row count with fewer than MIN_SAMPLES of them is estimated from its neighbours, and
// past the largest one measured, an extra row is assumed to cost PRIOR_ROW_COST of a one-row step:
// a guess low enough that larger steps are tried, measured, and kept only if they pay.
const MAX_TRACKED_ROWS = 64;
const SAMPLES = 5;
const MIN_SAMPLES = 2;
const STALE_STEPS = 256;
const PRIOR_ROW_COST = 0.5;

export class StepCost {
  /** The last SAMPLES times of each row count (a ring), the step each was taken at, how many were taken. */
  private readonly samples = new Float64Array((MAX_TRACKED_ROWS + 1) * SAMPLES);
  private readonly takenAt = new Float64Array((MAX_TRACKED_ROWS + 1) * SAMPLES);
  private readonly taken = new Int32Array(MAX_TRACKED_ROWS + 1);
  /** Per row count: the least of its recent times, and how many recent times there are (set by refresh). */
  private readonly least = new Float64Array(MAX_TRACKED_ROWS + 1);
  private readonly recent = new Int32Array(MAX_TRACKED_ROWS + 1);
  private steps = 0;
  private refreshedAt = -1;

  /** free: every step is estimated at 1 ms whatever its rows (testing: proposals always pay). */
  constructor(private readonly free = false) {}

  /** A step of `rows` rows took `ms`. */
  record(rows: number, ms: number): void {
    if (rows < 1 || rows > MAX_TRACKED_ROWS || !(ms > 0)) return;
    const i = rows * SAMPLES + (this.taken[rows] % SAMPLES);
    this.samples[i] = ms;
    this.takenAt[i] = this.steps++;
    this.taken[rows]++;
  }

  /** least and recent for the current step (once per step, however many estimates it asks). */
  private refresh(): void {
    if (this.refreshedAt === this.steps) return;
    this.refreshedAt = this.steps;
    for (let r = 1; r <= MAX_TRACKED_ROWS; r++) {
      let least = Infinity,
        recent = 0;
      for (let i = r * SAMPLES; i < r * SAMPLES + Math.min(this.taken[r], SAMPLES); i++) {
        if (this.steps - this.takenAt[i] > STALE_STEPS) continue;
        least = Math.min(least, this.samples[i]);
        recent++;
      }
      this.least[r] = least;
      this.recent[r] = recent;
    }
  }

  /** Estimated milliseconds of a step with `rows` rows (0 before any step was measured). */
  estimate(rows: number): number {
    if (rows < 1) return 0;
    if (this.free) return 1;
    this.refresh();
    const r = Math.min(rows, MAX_TRACKED_ROWS);
    if (this.recent[r] >= MIN_SAMPLES) return this.least[r] * (rows / r);
    let lo = r - 1;
    while (lo >= 1 && this.recent[lo] < MIN_SAMPLES) lo--;
    let hi = r + 1;
    while (hi <= MAX_TRACKED_ROWS && this.recent[hi] < MIN_SAMPLES) hi++;
    if (lo >= 1 && hi <= MAX_TRACKED_ROWS)
      return this.least[lo] + ((this.least[hi] - this.least[lo]) * (r - lo)) / (hi - lo);
    if (lo >= 1) {
      // Beyond the largest row count measured: each extra row at the prior, so that larger steps
      // are tried (and measured) again from time to time.
      const perRow = PRIOR_ROW_COST * (this.recent[1] >= MIN_SAMPLES ? this.least[1] : this.least[lo] / lo);
      return this.least[lo] + perRow * (rows - lo);
    }
    if (hi <= MAX_TRACKED_ROWS) return (this.least[hi] * rows) / hi;
    return 0;
  }
}
