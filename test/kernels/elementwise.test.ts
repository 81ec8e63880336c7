// add, mul, silu, gelu_tanh and a generated fused chain (ew_selftest) vs the float64 reference.
// add/mul: one rounding -> rtol u = 6e-8 (use 1.2e-7). silu/gelu_tanh use a vectorised exp polynomial
// (~2 ulp) and one division: relative error < 1e-6 on |x| <= 8 -> rtol 2e-6, atol 1e-7 near the zero of
// the function. The fused chain composes a few of these -> atol 1e-6 + rtol 4e-6.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { ewKernelName } from '../../compiler/passes/fusion.ts';
import { geluErf } from '../helpers/ref-math.ts';
import { expectClose, randn, sentinel, uniform } from './harness.ts';

const N = 16384 * 3 + 37; // spans several parallel chunks and a vector tail

describe('binary', () => {
  for (const [name, fn] of [['add', (a: number, b: number) => a + b], ['mul', (a: number, b: number) => a * b]] as const)
    it(`${name} n=${N}, and in place`, () => {
      const a = randn(N, 1, 3), b = randn(N, 2, 3), y = sentinel(N);
      native.runKernel(name, [a, b, y], [N], []);
      const want = ref.elementwise(N, [a, b], fn);
      expectClose(y, want, 0, 1.2e-7);
      native.runKernel(name, [a, b, a], [N], []);
      expectClose(a, want, 0, 1.2e-7);
    });
});

describe('activations', () => {
  for (const [name, fn] of [['silu', ref.silu], ['gelu_tanh', ref.geluTanh]] as const)
    it(`${name} on [-8, 8], extremes and in place`, () => {
      const x = uniform(N, 3, -8, 8);
      x.set([0, -0, 1e-8, -1e-8, 30, -30, 100, -100, 1e-3, -1e-3], 0);
      const y = sentinel(N);
      native.runKernel(name, [x, y], [N], []);
      expectClose(y, ref.elementwise(N, [x], fn), 1e-7, 2e-6);
      native.runKernel(name, [x, x], [N], []);
      expectClose(x, y, 0);
    });
});

describe('exact GELU (gelu_erf, a generated one-op chain)', () => {
  // std::erf in float32 (~1 ulp) and 1 + erf cancelling for x << 0: |error| <= 3e-7 absolute + 2e-6 relative
  it('on [-8, 8] and extremes vs float64 x/2 (1 + erf(x / sqrt 2))', () => {
    const name = ewKernelName(1, 'gelu_erf(a0)');
    expect(native.kernels(), 'the shipped plans (Wan I2V) use it: npm run compile:shipped').toContain(name);
    const x = uniform(N, 7, -8, 8);
    x.set([0, -0, 1e-8, -1e-8, 30, -30, 1e-3, -1e-3, 3, -3], 0);
    const y = sentinel(N);
    native.runKernel(name, [x, y], [N], []);
    expectClose(y, ref.elementwise(N, [x], geluErf), 3e-7, 2e-6);
  });
});

describe('generated elementwise chain', () => {
  it('ew_selftest is registered with arity 3 and matches its expression', () => {
    expect(native.kernels()).toContain('ew_selftest');
    const a0 = randn(N, 4, 2), a1 = randn(N, 5), a2 = randn(N, 6, 3), y = sentinel(N);
    native.runKernel('ew_selftest', [a0, a1, a2, y], [N], [0.75, -1.25]);
    expectClose(y, ref.elementwise(N, [a0, a1, a2], ref.ewSelftest(0.75, -1.25)), 1e-6, 4e-6);
  });
  it('argument counts are checked', () => {
    const a = randn(8, 1);
    expect(() => native.runKernel('ew_selftest', [a, a, a], [8], [])).toThrow(/tensor t\[3\] \(y\) is required/);
    expect(() => native.runKernel('ew_selftest', [a, a, a, a, a], [8], [])).toThrow(/at most 4 tensors/);
    expect(() => native.runKernel('silu', [a, a], [8, 1], [])).toThrow(/at most 1 ints/);
    expect(() => native.runKernel('nope', [a], [8], [])).toThrow(/unknown kernel 'nope'/);
    expect(() => native.runKernel('silu', [new Float64Array(8) as unknown as Float32Array, a], [8], [])).toThrow(/Float32Array/);
  });
});
