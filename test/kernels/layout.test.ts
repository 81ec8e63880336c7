// copy3d, transpose, upsample_nearest2x: pure data movement, so the result must be exact (tolerance 0).
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { expectClose, randn, sentinel } from './harness.ts';

describe('copy3d', () => {
  it('concat along channels: two [B, S, C] blocks into [B, S, C1 + C2]', () => {
    const B = 2, S = 13, C1 = 37, C2 = 5, Ct = C1 + C2;
    const a = randn(B * S * C1, 1), b = randn(B * S * C2, 2);
    const y = sentinel(B * S * Ct);
    native.runKernel('copy3d', [a, y], [B, S, C1, S * C1, C1, S * Ct, Ct], []);
    native.runKernel('copy3d', [b, y.subarray(C1)], [B, S, C2, S * C2, C2, S * Ct, Ct], []);
    // reference: first block at channel 0, second block at channel C1 (the subarray offset)
    const want = ref.copy3d(a, new Float64Array(B * S * Ct), B, S, C1, S * C1, C1, S * Ct, Ct);
    const tail = ref.copy3d(b, want.subarray(C1), B, S, C2, S * C2, C2, S * Ct, Ct);
    want.set(tail, C1);
    expectClose(y, want, 0);
  });
  it('slice rows of a strided view, untouched elements keep their value', () => {
    const outer = 3, rows = 4, cols = 7;
    const x = randn(outer * 9 * 11, 3), y0 = randn(outer * 40, 4), y = Float32Array.from(y0);
    native.runKernel('copy3d', [x, y], [outer, rows, cols, 99, 11, 40, 9], []);
    expectClose(y, ref.copy3d(x, y0, outer, rows, cols, 99, 11, 40, 9), 0);
  });
  it('rejects a destination that is too small', () => {
    expect(() => native.runKernel('copy3d', [randn(100, 1), sentinel(10)], [1, 2, 10, 0, 10, 0, 10], [])).toThrow(/t\[1\] \(y\) holds 10 floats, needs 20/);
  });
});

describe('transpose', () => {
  for (const [batch, R, C] of [[2, 37, 13], [1, 129, 65], [3, 1, 7]] as const)
    it(`batch=${batch} R=${R} C=${C}`, () => {
      const x = randn(batch * R * C, R), y = sentinel(batch * R * C);
      native.runKernel('transpose', [x, y], [batch, R, C], []);
      expectClose(y, ref.transpose(x, batch, R, C), 0);
    });
});

describe('upsample_nearest2x', () => {
  it('NC=6 H=5 W=7', () => {
    const x = randn(6 * 35, 5), y = sentinel(6 * 140);
    native.runKernel('upsample_nearest2x', [x, y], [6, 5, 7], []);
    expectClose(y, ref.upsampleNearest2x(x, 6, 5, 7), 0);
  });
});
