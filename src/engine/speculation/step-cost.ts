// What an engine step costs with R rows, measured as the engine runs (CPU time: stepClock). Whether a proposal pays
// depends on it: on a 0.5B q4_0 model an extra verification row costs 0.2-0.6 of a one-row step,
// on the tiny f32 stories260K 0.4-1.0, and the part of a step that does not grow with its rows
// (scheduling, sampling, the state message to the caller's thread) differs again. So the
// scheduler times every step whose rows all decode or verify (a prompt row costs less: no logits,
// a shorter context) and the proposers choose their length from these times instead of a rule.
//
// The model is a line, ms = fixed + perRow * rows, fitted by least squares over the recent steps
// (each weighs DECAY times the one after it: about the last 100 count, as the context grows and
// the machine's load changes). Per row count estimates were tried first: wall-clock steps on a
// shared machine vary by +-20% from one to the next, and a row count measured rarely kept a lucky
// or a cold value for long, so that proposals looked free or hopeless by chance; a line through
// every step is steadier. The first COLD_STEPS steps of each row count are not counted (they
// compile code for it: the first 5-row step of stories260K took 15 ms, the next ones 2; and steps
// of a rarely used row count stay slow for a while, which would keep it rare), a step of R rows
// counts as at most R one-row steps, and one more than MAX_OUTLIER times the line (the thread
// switched out) as that. Until steps of more than one row count are
// seen, a row is assumed to cost PRIOR_ROW_COST of a one-row step, a guess low enough that
// proposals are tried, measured, and kept only if they pay.
const DECAY = 0.99;
const MAX_OUTLIER = 3;
const COLD_STEPS = 8;
const MAX_TRACKED_ROWS = 64;
const PRIOR_ROW_COST = 0.5;
/** The rows' variance below which the steps do not tell the cost of a row apart from the fixed part. */
const MIN_VARIANCE = 0.05;

/**
 * Milliseconds of CPU time of the process where the runtime tells it (Node, Bun, Deno), else of
 * wall time: the machine may be shared, and a step's wall time then counts the time its thread
 * waited for a core (+-20% from one step to the next at a load of 5 on 2 cores, enough to make
 * proposals look free or hopeless by chance), its CPU time not.
 */
export function stepClock(): number {
  const p = (globalThis as { process?: { cpuUsage?: () => { user: number; system: number } } }).process;
  if (p?.cpuUsage) {
    const u = p.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  return performance.now();
}

export class StepCost {
  // Decayed sums of the weights, rows, ms, rows² and rows·ms of the measured steps.
  private w = 0;
  private x = 0;
  private y = 0;
  private xx = 0;
  private xy = 0;
  /** Steps seen of each row count, up to COLD_STEPS. */
  private readonly seen = new Uint8Array(MAX_TRACKED_ROWS + 1);
  /** The last cost of a row the steps told apart (NaN before). */
  private perRow = NaN;

  /** free: every step is estimated at 1 ms whatever its rows (testing: proposals always pay). */
  constructor(private readonly free = false) {}

  /** A step of `rows` rows took `ms`. */
  record(rows: number, ms: number): void {
    if (rows < 1 || !(ms > 0)) return;
    const r = Math.min(rows, MAX_TRACKED_ROWS);
    if (this.seen[r] < COLD_STEPS) {
      this.seen[r]++;
      return;
    }
    const expected = this.estimate(rows);
    if (expected > 0) ms = Math.min(ms, MAX_OUTLIER * expected);
    // R rows cost at most R one-row steps (their work is independent): more is a cold step.
    const one = this.estimate(1);
    if (rows > 1 && one > 0) ms = Math.min(ms, rows * one);
    this.w = DECAY * this.w + 1;
    this.x = DECAY * this.x + rows;
    this.y = DECAY * this.y + ms;
    this.xx = DECAY * this.xx + rows * rows;
    this.xy = DECAY * this.xy + rows * ms;
  }

  /** Estimated milliseconds of a step with `rows` rows (0 before any step was measured). */
  estimate(rows: number): number {
    if (this.free) return 1;
    if (this.w === 0) return 0;
    const mx = this.x / this.w,
      my = this.y / this.w;
    const variance = this.xx / this.w - mx * mx;
    if (variance >= MIN_VARIANCE) this.perRow = Math.max(0, (this.xy / this.w - mx * my) / variance);
    // One row count lately: the last cost of a row measured, or the prior.
    const perRow = Number.isNaN(this.perRow) ? (PRIOR_ROW_COST * my) / mx : this.perRow;
    const ms = my + perRow * (rows - mx);
    return ms > 0 ? ms : (my * rows) / mx;
  }
}
