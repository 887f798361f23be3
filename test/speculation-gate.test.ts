// How many tokens a sequence proposes: from its acceptance rate and the measured cost of a step by
// row count (step-cost.ts, gate.ts). Step times here are given, not measured.
import { describe, expect, it } from 'vitest';
import { AcceptanceGate, type StepPlan } from '../src/engine/speculation/gate.js';
import { StepCost } from '../src/engine/speculation/step-cost.js';

/** A StepCost that measured `ms[R - 1]` for a step of R rows. */
function costs(ms: number[]): StepCost {
  const c = new StepCost();
  for (let k = 0; k < 2; k++) ms.forEach((m, i) => c.record(i + 1, m));
  return c;
}

const plan = (cost: StepCost, decoding = 1): StepPlan => ({ cost, decoding, rows: decoding });

describe('StepCost', () => {
  it('estimates a row count by the least of its recent steps, the others from their neighbours', () => {
    const c = costs([1, 0, 3]); // no 2-row step measured
    expect(c.estimate(1)).toBe(1);
    expect(c.estimate(2)).toBe(2); // between 1 and 3
    expect(c.estimate(5)).toBe(4); // past the last: half a one-row step per row
    c.record(1, 100); // a step switched out
    expect(c.estimate(1)).toBe(1);
    c.record(4, 50); // a row count's first step (the code for it compiles) is not trusted alone
    expect(c.estimate(4)).toBe(3.5); // from 3 at three rows
    c.record(4, 4.5);
    expect(c.estimate(4)).toBe(4.5);
    for (let i = 0; i < 5; i++) c.record(1, 2); // the context grew: only recent steps count
    expect(c.estimate(1)).toBe(2);
    for (let i = 0; i < 128; i++) {
      // 4 rows not seen for 256 steps: estimated again
      c.record(3, 3.5);
      c.record(1, 2);
    }
    expect(c.estimate(4)).toBe(3.5 + 1);
    const one = costs([2]);
    expect(one.estimate(3)).toBe(2 + 2 * 0.5 * 2); // before any multi-row step: the prior
    expect(new StepCost().estimate(1)).toBe(0);
    expect(new StepCost(true).estimate(7)).toBe(1);
  });
});

describe('AcceptanceGate', () => {
  it('proposes the most tokens where extra rows are cheap (few-token kernels)', () => {
    const cheap = costs([1, 1.2, 1.4, 1.6, 1.8]);
    expect(new AcceptanceGate().budget(4, plan(cheap))).toBe(4);
  });

  it('proposes nothing and pauses where an extra row costs a whole step; tries again after the pause', () => {
    const linear = costs([1, 2, 3, 4, 5]);
    const gate = new AcceptanceGate();
    expect(gate.budget(4, plan(linear))).toBe(0);
    // Paused for 4 steps; then the costs are measured cheaper (another context): it proposes again.
    const cheap = costs([1, 1.2, 1.4, 1.6, 1.8]);
    for (let i = 0; i < 4; i++) expect(gate.budget(4, plan(cheap))).toBe(0);
    expect(gate.budget(4, plan(cheap))).toBe(4);
  });

  it('after a pause, one token is proposed whatever the costs (a probe), then a pause twice as long', () => {
    const linear = costs([1, 2, 3, 4, 5]);
    const gate = new AcceptanceGate();
    const steps = Array.from({ length: 20 }, () => gate.budget(4, plan(linear)));
    expect(steps).toEqual([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
  });

  it('prefers the row count the kernels run best (stories260K f32: 4 rows, not 5)', () => {
    // Measured shape of an f32 stories260K step by rows (plus the step's fixed cost): odd row
    // counts pad the kernels.
    const f32 = costs([1, 1.5, 2.3, 2.6, 3.5, 3.9]);
    expect(new AcceptanceGate().budget(4, plan(f32))).toBe(3);
  });

  it('proposes fewer tokens as proposals are rejected', () => {
    const cost = costs([1, 1.3, 1.6, 1.9, 2.2]);
    const gate = new AcceptanceGate();
    const first = gate.budget(4, plan(cost));
    expect(first).toBe(4);
    for (let i = 0; i < 3; i++) gate.record(4, 0);
    const later = gate.budget(4, plan(cost));
    expect(later).toBeLessThan(first);
  });

  it('with 8 sequences decoding, a row that costs as much as a decode row is not worth a doubtful token', () => {
    const batch = costs(Array.from({ length: 16 }, (_, i) => 1 + 0.9 * i));
    const gate = new AcceptanceGate();
    gate.record(4, 1); // one of four accepted
    expect(gate.budget(4, plan(batch, 8))).toBe(0);
  });

  it('proposes one token before any step was measured', () => {
    expect(new AcceptanceGate().budget(4, plan(new StepCost()))).toBe(1);
  });
});
