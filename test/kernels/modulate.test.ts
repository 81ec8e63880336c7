// gate_residual vs the float64 reference. One multiply-add per element in float32: the error is at most
// ~2u * (|r| + |g x|) <= 1e-6 for these O(5) values, so atol 2e-6 + rtol 1e-6.
import { describe, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { expectClose, randn, sentinel } from './harness.ts';

describe('gate_residual', () => {
  it('B=3 S=5 C=37, gate chunk of a [B, 6C] tensor', () => {
    const B = 3, S = 5, C = 37, M = B * S;
    const r = randn(M * C, 1, 2), x = randn(M * C, 2), mod = randn(B * 6 * C, 3);
    const g = mod.subarray(2 * C);
    const y = sentinel(M * C);
    native.runKernel('gate_residual', [r, g, x, y], [M, C, S, 6 * C], []);
    expectClose(y, ref.gateResidual(r, g, x, M, C, S, 6 * C), 2e-6, 1e-6);
  });
  it('M=13 C=129, y aliases r (in-place residual update)', () => {
    const M = 13, C = 129;
    const r = randn(M * C, 4), x = randn(M * C, 5), g = randn(C, 6);
    const want = ref.gateResidual(r, g, x, M, C, M, 0);
    native.runKernel('gate_residual', [r, g, x, r], [M, C, M, 0], []);
    expectClose(r, want, 2e-6, 1e-6);
  });
});
