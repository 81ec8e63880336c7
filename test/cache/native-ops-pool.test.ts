// NativeTensorOps buffer recycling (runtime/cache/native-ops.ts + the calibrators' release sweep): forecasts
// stay bit-identical to hostOps step by step (also across a resetCache, a size change and DMD's history
// eviction), a steady run stops allocating, and release ignores foreign and repeated handles.
import { describe, expect, it } from 'vitest';
import { type Calibrator, DMDCalibrator, FoCaCalibrator, NativeTensorOps, TaylorSeerCalibrator, hostOps } from '../../runtime/cache/index.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');

/** the step-s tensor of a smooth trajectory (n floats, 2 batch segments) */
function traj(n: number, s: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) + s * 0.05 * Math.cos(i * 0.11) + 0.002 * s * s);
}

/** ops whose launches record every tensor-sized output buffer they write (t[0], or taylor_diff's t[2]) */
function recordingOps(n: number): { ops: NativeTensorOps; outputs: Set<Float32Array> } {
  const outputs = new Set<Float32Array>();
  const ops = new NativeTensorOps({
    runKernel: (name, t, i, f) => {
      const y = name === 'taylor_diff' ? t[2] : name === 'foca_forecast' ? t[4] : t[0];
      if (y && y.length === n) outputs.add(y);
      native.runKernel(name, t, i, f);
    },
  });
  return { ops, outputs };
}

describe.skipIf(!nativeAvailable())('NativeTensorOps buffer recycling', () => {
  const n = 8200; // 2 segments of 4100 (> the 4096 reduction chunk)
  for (const [tag, make] of [
    ['TaylorSeer O2', () => new TaylorSeerCalibrator(2)],
    ['TaylorSeer O7 (chained forecast)', () => new TaylorSeerCalibrator(7)],
    ['FoCa', () => new FoCaCalibrator()],
    ['DMD H5', () => new DMDCalibrator(5)],
    ['DMD H9 (chained forecast_f64: the accumulator is recycled too)', () => new DMDCalibrator(9)],
  ] as [string, () => Calibrator][]) {
    it(`${tag}: forecasts == hostOps bit for bit; no new buffers after the first 48 steps`, () => {
      const host = make();
      const nat = make();
      const { ops, outputs } = recordingOps(n);
      let grown = -1;
      const run = (steps: number, s0: number, size: number) => {
        for (let s = s0; s < s0 + steps; s++) {
          host.markStepBegin();
          nat.markStepBegin();
          if (s < 10 || s % 3 === 0) {
            const y = traj(size, s);
            host.update(y, 'h', 2, hostOps);
            nat.update(y, 'h', 2, ops);
          } else {
            const want = host.approximate('h', hostOps);
            const got = nat.approximate('h', ops);
            expect(bits(got), `step ${s}`).toBe(bits(want));
          }
        }
      };
      // 10 computes in a row, then every 3rd step: the live set peaks once DMD holds a uniform tail of the latter
      run(48, 0, n);
      grown = outputs.size;
      run(48, 48, n);
      expect(outputs.size, 'steady state allocates nothing tensor-sized').toBe(grown);
      // resetCache releases every state tensor; the run starts over with the same bits
      host.resetCache();
      nat.resetCache();
      expect(ops.pooledFloats).toBeGreaterThan(0);
      run(16, 0, n);
      expect(outputs.size).toBe(grown);
      // another tensor size: TaylorSeer / DMD reset their state (QUIRK), the old buffers are released
      run(16, 16, n / 2);
      ops.clear();
      expect(ops.pooledFloats).toBe(0);
      run(8, 32, n / 2); // the states' live buffers survive clear()
    });
  }

  it('release ignores tensors the ops did not make and repeated releases', () => {
    const ops = new NativeTensorOps(native);
    const x = traj(64, 1);
    ops.release(x); // not an output of these ops
    expect(ops.pooledFloats).toBe(0);
    const a = ops.copy(x);
    ops.release(a);
    ops.release(a); // twice: still handed out once
    expect(ops.pooledFloats).toBe(64);
    const b = ops.copy(x);
    const c = ops.copy(x);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(bits(b)).toBe(bits(x));
    expect(bits(c)).toBe(bits(x));
  });
});
