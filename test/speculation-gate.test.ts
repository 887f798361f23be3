// How many tokens a sequence proposes: from its acceptance rate and the measured cost of a step by
// row count (step-cost.ts, gate.ts). Step times here are given, not measured.
import { describe, expect, it } from 'vitest';
import { AcceptanceGate, type StepPlan } from '../src/engine/speculation/gate.js';
import { StepCost } from '../src/engine/speculation/step-cost.js';

/** A StepCost that measured `ms[R - 1]` for a step of R rows. */
function costs(ms: number[]): StepCost {
  const c = new StepCost();
  for (let k = 0; k < 11; k++) ms.forEach((m, i) => c.record(i + 1, m));
  return c;
}

const plan = (cost: StepCost, decoding = 1): StepPlan => ({ cost, decoding, rows: decoding });

describe('StepCost', () => {
  it('fits a line through the recent steps: a fixed part and a cost per row', () => {
    const c = costs([1.5, 2, 2.5]);
    expect(c.estimate(1)).toBeCloseTo(1.5, 12);
    expect(c.estimate(5)).toBeCloseTo(3.5, 12);
    c.record(1, 100); // a step switched out counts as 3x the line
    expect(c.estimate(1)).toBeLessThan(2.5);
    const one = new StepCost();
    for (let i = 0; i < 8; i++) one.record(1, 50); // a row count's first steps compile code: not counted
    expect(one.estimate(1)).toBe(0);
    for (let i = 0; i < 5; i++) one.record(1, 2);
    expect(one.estimate(3)).toBeCloseTo(2 + 2 * 0.5 * 2, 12); // only one-row steps: the prior
    for (let i = 0; i < 11; i++) one.record(2, 3);
    for (let i = 0; i < 500; i++) one.record(1, 2); // the cost of a row stays known
    expect(one.estimate(2)).toBeCloseTo(3, 6);
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
