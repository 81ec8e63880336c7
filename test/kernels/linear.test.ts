// `linear` (GEMM + fused epilogues) vs the float64 reference in reference-gemm.ts.
// Tolerance: elementwise, from the float32 dot-product error bound |err| <= gamma_K * sum_k |x_k w_k|
// (gamma_K ~ (K+2) * 2^-24), which holds for every summation order (packed K blocks, FMA, the
// small-M dot-product path) - plus a few ulps for gelu/silu and the gated-residual update; see
// linearRef. A wrong index, a missing bias or a wrong epilogue is off by O(1) relative, far above it.
// Sizes are odd on purpose: M crosses the 14-row register tile and the small-M (<= 48) path, K crosses
// the 16-wide vectors and the 512-deep K blocks, N crosses the 32-wide panels and the 1024-wide blocks.
import { describe, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import { expectClose, randn, sentinel } from './harness.ts';
import { linearRef } from './reference-gemm.ts';

const EPI = ['plain', 'gelu_tanh', 'silu', 'gate_residual'] as const;

function runCase(M: number, N: number, K: number, epilogue: number, opts: { bias?: boolean; alias?: boolean; S?: number; seed?: number } = {}) {
  const seed = opts.seed ?? M * 7919 + N * 104729 + K * 13 + epilogue;
  const x = randn(M * K, seed + 1), W = randn(N * K, seed + 2, 0.5), bias = opts.bias === false ? null : randn(N, seed + 3);
  const S = opts.S ?? M;
  const groups = Math.ceil(M / S), gateStride = N + 5; // gate chunk inside a wider [B, k*C] row
  const gate = epilogue === 3 ? randn(groups * gateStride, seed + 4) : null;
  const residual = epilogue === 3 ? randn(M * N, seed + 5) : null;
  const { y: want, tol } = linearRef({ x, W, bias, gate, residual, M, N, K, epilogue, S, gateStride });
  let y: Float32Array;
  if (epilogue === 3 && opts.alias) {
    y = residual!.slice(); // y aliases residual: the kernel reads and writes the same buffer
    native.runKernel('linear', [x, W, bias, y, gate, y], [M, N, K, epilogue, S, gateStride], []);
  } else {
    y = sentinel(M * N);
    native.runKernel('linear', [x, W, bias, y, gate, residual], [M, N, K, epilogue, S, gateStride], []);
  }
  expectClose(y, want, 0, 0, tol, `linear M=${M} N=${N} K=${K} ${EPI[epilogue]}`);
}

describe('linear', () => {
  for (const M of [1, 13, 37, 129]) {
    it(`M=${M}: K in {1,17,33,260} x N in {1,31,65} x every epilogue`, () => {
      for (const K of [1, 17, 33, 260])
        for (const N of [1, 31, 65])
          for (let e = 0; e < 4; e++) runCase(M, N, K, e, { bias: (K + N + e) % 2 === 0, S: e === 3 ? Math.max(1, Math.ceil(M / 3)) : M });
    });
  }
  it('gate_residual with y aliasing residual (several K blocks, per-batch gates)', () => {
    runCase(129, 65, 600, 3, { alias: true, S: 43 });
    runCase(37, 65, 600, 3, { alias: true, S: 5 });
    runCase(13, 31, 17, 3, { alias: true, S: 13 });
  });
  it('no bias, every epilogue, K > 2 blocks', () => {
    for (let e = 0; e < 4; e++) runCase(97, 70, 1100, e, { bias: false, S: 50 });
  });
  it('wide N (> two 1024-column blocks) and a multi-thread split over M', () => {
    runCase(45, 2100, 40, 1);
    runCase(300, 17, 300, 0);
    runCase(41, 100, 64, 2);
  });
  it('DiT-like shape 1152 x 96 x 1024 (spot check of the fast path)', () => {
    runCase(1152, 96, 1024, 3, { alias: true, S: 576 });
  });
});
