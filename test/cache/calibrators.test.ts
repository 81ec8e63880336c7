import { describe, expect, it } from 'vitest';
import {
  DMDCalibrator,
  FoCaCalibrator,
  TaylorSeerCalibrator,
  dmdUniformTail,
  evalTerms,
  taylorTerms,
  newTaylorState,
  taylorUpdate,
} from '../../runtime/cache/index.ts';

const vec = (...x: number[]) => Float32Array.from(x);

/** drive a calibrator like the context: mark_step_begin every step, update on compute steps */
function drive(cal: { markStepBegin(): void; update(y: Float32Array, n: string, b?: number): void }, ys: Float32Array[]) {
  for (const y of ys) {
    cal.markStepBegin();
    cal.update(y, 'h');
  }
}

describe('TaylorSeer (reference §1.8)', () => {
  const lin = (t: number) => vec(1 + 2 * t, -3 + 0.5 * t);
  it('lag quirk: 3 updates of a linear sequence -> approximate() returns the last value', () => {
    const c = new TaylorSeerCalibrator(1);
    drive(c, [lin(0), lin(1), lin(2)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual(Array.from(lin(2)));
  });
  it('4 updates -> linear extrapolation', () => {
    const c = new TaylorSeerCalibrator(1);
    drive(c, [lin(0), lin(1), lin(2), lin(3)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual(Array.from(lin(4)));
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual(Array.from(lin(5)));
  });
  it('divided differences use the real step gap', () => {
    const c = new TaylorSeerCalibrator(1);
    // computes at steps 0,1,2,3, then cached 4,5, compute 6
    drive(c, [lin(0), lin(1), lin(2), lin(3)]);
    c.markStepBegin();
    c.markStepBegin();
    c.markStepBegin();
    c.update(lin(6), 'h'); // gap 3 -> slope (Y6 - Y3) / 3
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual(Array.from(lin(7)));
  });
  it('order 2: Y + d1 + d2/2 with backward divided differences (Cache-DiT formula)', () => {
    const q = (t: number) => vec(t * t + 1, 2 * t * t - t);
    const c = new TaylorSeerCalibrator(2);
    drive(c, [q(0), q(1), q(2), q(3), q(4)]);
    c.markStepBegin();
    // Y4 + d1 + d2/2 with d1 = Y4 - Y3, d2 = d1 - (Y3 - Y2): (17 + 7 + 1, 28 + 13 + 2); truth q(5) = (26, 45)
    expect(Array.from(c.approximate('h'))).toEqual([25, 43]);
    expect(newTaylorState(2).currentStep).toBe(-1);
  });
  it('reset at a new request (context step 0) restarts the lag', () => {
    const c = new TaylorSeerCalibrator(1);
    drive(c, [lin(0), lin(1), lin(2), lin(3)]);
    c.resetCache();
    drive(c, [lin(10), lin(11)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual(Array.from(lin(11)));
  });
  it('forecast terms are a pure function of the state', () => {
    const s = newTaylorState(1);
    for (let t = 0; t < 4; t++) {
      s.currentStep = t - 1;
      taylorUpdate(s, lin(t));
    }
    s.currentStep = 4;
    const terms = taylorTerms(s);
    expect(terms.terms[0].coefs).toEqual([1, 2]);
    // last compute at state step 2 (Y3), elapsed 2 -> Y3 + 2 * slope = Y5
    expect(Array.from(evalTerms(terms, 2))).toEqual(Array.from(lin(5)));
  });
});

describe('FoCa', () => {
  it('y=x anchors (0,1) predict 2 then 3', () => {
    const c = new FoCaCalibrator();
    drive(c, [vec(0), vec(1)]);
    c.markStepBegin();
    expect(c.approximate('h')[0]).toBe(2);
    c.markStepBegin();
    expect(c.approximate('h')[0]).toBe(3);
  });
  it('single anchor -> copy', () => {
    const c = new FoCaCalibrator();
    drive(c, [vec(5, 6)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual([5, 6]);
  });
  it('QUIRK: anchors several steps apart are not normalised by the gap (overshoot)', () => {
    const c = new FoCaCalibrator();
    c.markStepBegin();
    c.update(vec(0), 'h');
    for (let i = 0; i < 4; i++) c.markStepBegin();
    c.update(vec(4), 'h'); // y = x at steps 0 and 4
    c.markStepBegin(); // step 5: truth 5; FoCa: 4 + (1/2)(4 + 4) = 8
    expect(c.approximate('h')[0]).toBe(8);
  });
});

describe('DMD', () => {
  it('falls back to Taylor with < 4 uniformly spaced snapshots', () => {
    const c = new DMDCalibrator(6);
    drive(c, [vec(1, 2), vec(2, 3), vec(3, 4)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual([3, 4]); // Taylor lag: reuse
  });
  it('Y_t = 0.9^t Y0: after 5 updates forecasts steps 5..9 to ~1e-7 (float32 output)', () => {
    const Y0 = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) + 2);
    const Y = (t: number) => Y0.map((x) => Math.fround(x * Math.pow(0.9, t)));
    const c = new DMDCalibrator(6);
    drive(c, [0, 1, 2, 3, 4].map(Y));
    for (let t = 5; t < 10; t++) {
      c.markStepBegin();
      const p = c.approximate('h');
      const truth = Y0.map((x) => x * Math.pow(0.9, t));
      const rel = p.reduce((a, v, i) => a + Math.abs(v - truth[i]), 0) / truth.reduce((a, v) => a + Math.abs(v), 0);
      expect(rel).toBeLessThan(1e-6);
    }
  });
  it('oscillating two-mode trajectory is extrapolated (complex eigenvalues)', () => {
    const d = 32;
    const a = Float64Array.from({ length: d }, (_, i) => Math.cos(i));
    const b = Float64Array.from({ length: d }, (_, i) => Math.sin(0.3 * i) + 0.5);
    const Y = (t: number) => Float32Array.from({ length: d }, (_, i) => 0.95 ** t * (Math.cos(0.4 * t) * a[i] + Math.sin(0.4 * t) * b[i]));
    const c = new DMDCalibrator(6);
    drive(c, [0, 1, 2, 3, 4, 5].map(Y));
    c.markStepBegin();
    c.markStepBegin(); // step 7
    const p = c.approximate('h');
    const truth = Y(7);
    const err = p.reduce((acc, v, i) => acc + Math.abs(v - truth[i]), 0) / truth.reduce((acc, v) => acc + Math.abs(v), 0);
    expect(err).toBeLessThan(1e-4);
  });
  it('fits each batch item independently', () => {
    const Y0 = Float32Array.from({ length: 16 }, (_, i) => 1 + i / 16);
    const Y = (t: number) => Y0.map((x, i) => Math.fround(x * Math.pow(i < 8 ? 0.9 : 0.5, t)));
    const c = new DMDCalibrator(6);
    for (const t of [0, 1, 2, 3, 4]) {
      c.markStepBegin();
      c.update(Y(t), 'h', 2);
    }
    c.markStepBegin();
    const p = c.approximate('h');
    const truth = Y0.map((x, i) => x * Math.pow(i < 8 ? 0.9 : 0.5, 5));
    p.forEach((v, i) => expect(v).toBeCloseTo(truth[i], 5));
  });
  it('degenerate (all zeros) -> reuse newest snapshot; uniform tail breaks at a gap change', () => {
    const c = new DMDCalibrator(6);
    drive(c, [vec(0, 0), vec(0, 0), vec(0, 0), vec(0, 0), vec(0, 0)]);
    c.markStepBegin();
    expect(Array.from(c.approximate('h'))).toEqual([0, 0]);
    const s = c.states.get('h')!;
    s.snapshots[0].step = -3;
    expect(dmdUniformTail(s).tail.length).toBe(4);
  });
});
