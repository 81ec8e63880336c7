// layer_norm, ln_modulate, rms_norm, rms_sumsq + rms_norm_apply (distributed RMSNorm), group_norm vs the float64
// reference.
// Tolerance: the kernels accumulate in float32 (unit roundoff u = 6e-8). For a row of C <= 129 values the
// mean/variance carry a relative error of at most ~C*u = 8e-6 (worst case; typically sqrt(C)*u), and the
// outputs are O(5) in magnitude, so atol 1e-5 + rtol 2e-5 is a safe bound that still catches any formula error
// (a biased/unbiased variance mix-up alone is 1/C ~ 1e-2). group_norm mixes float partial sums per channel with
// a double total, same bound.
import { describe, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { expectClose, randn, sentinel } from './harness.ts';

const ATOL = 1e-5, RTOL = 2e-5;

describe('layer_norm', () => {
  for (const [M, C] of [[13, 37], [5, 129], [1, 1], [3, 1024]] as const) {
    it(`M=${M} C=${C} with weight and bias, weight only, neither`, () => {
      const x = randn(M * C, 1 + C, 1.3, 0.5), w = randn(C, 2 + C, 0.5, 1), b = randn(C, 3 + C, 0.5);
      for (const [ww, bb] of [[w, b], [w, null], [null, null], [null, b]] as const) {
        const y = sentinel(M * C);
        native.runKernel('layer_norm', [x, ww, bb, y], [M, C], [1e-6]);
        expectClose(y, ref.layerNorm(x, ww, bb, M, C, 1e-6), ATOL, RTOL, undefined, 'layer_norm');
      }
    });
  }
  it('in place (y aliases x)', () => {
    const M = 13, C = 37;
    const x = randn(M * C, 7, 2, -1), w = randn(C, 8), b = randn(C, 9);
    const want = ref.layerNorm(x, w, b, M, C, 1e-5);
    native.runKernel('layer_norm', [x, w, b, x], [M, C], [1e-5]);
    expectClose(x, want, ATOL, RTOL);
  });
});

describe('ln_modulate', () => {
  it('B=2 S=7 C=37, shift/scale chunks of a [B, 6C] adaLN tensor', () => {
    const B = 2, S = 7, C = 37, M = B * S;
    const x = randn(M * C, 11, 1, 0.2), mod = randn(B * 6 * C, 12, 0.3);
    const shift = mod.subarray(0), scale = mod.subarray(C);
    const y = sentinel(M * C);
    native.runKernel('ln_modulate', [x, shift, scale, y], [M, C, S, 6 * C, 6 * C], [1e-6]);
    expectClose(y, ref.lnModulate(x, shift, scale, M, C, S, 6 * C, 6 * C, 1e-6), ATOL, RTOL);
  });
  it('M=13 C=129 one batch row (S=M), in place', () => {
    const M = 13, C = 129;
    const x = randn(M * C, 13), shift = randn(C, 14), scale = randn(C, 15, 0.2);
    const want = ref.lnModulate(x, shift, scale, M, C, M, 0, 0, 1e-6);
    native.runKernel('ln_modulate', [x, shift, scale, x], [M, C, M, 0, 0], [1e-6]);
    expectClose(x, want, ATOL, RTOL);
  });
});

describe('rms_norm', () => {
  for (const [M, C] of [[13, 37], [4, 129], [2, 3]] as const) {
    it(`M=${M} C=${C}, with and without weight`, () => {
      const x = randn(M * C, 21 + C, 1.5, 0.3), w = randn(C, 22, 0.4, 1);
      for (const ww of [w, null]) {
        const y = sentinel(M * C);
        native.runKernel('rms_norm', [x, ww, y], [M, C], [1e-6]);
        expectClose(y, ref.rmsNorm(x, ww, M, C, 1e-6), ATOL, RTOL);
      }
    });
  }
  it('in place', () => {
    const x = randn(13 * 37, 23), w = randn(37, 24);
    const want = ref.rmsNorm(x, w, 13, 37, 1e-6);
    native.runKernel('rms_norm', [x, w, x], [13, 37], [1e-6]);
    expectClose(x, want, ATOL, RTOL);
  });
});

// Distributed RMSNorm (tensor parallel): rms_sumsq accumulates float32 squares in float64 (each product of two
// float32 values is exact in double; a row of C <= 129 terms adds at most C * 2^-53 relative), so 1e-13 relative
// is ample and still rejects a float32 accumulation (~1e-7). rms_norm_apply computes the scale in double and
// rounds once to float32, then two float32 products: 3 roundings of u = 6e-8 on outputs of magnitude <= ~10,
// hence the rms_norm bounds (atol 1e-5 + rtol 2e-5) hold with a wide margin.
describe('rms_sumsq + rms_norm_apply (distributed RMSNorm)', () => {
  const f64 = (ss: Float32Array) => new Float64Array(ss.buffer, ss.byteOffset, ss.length / 2);
  for (const [M, C] of [[13, 37], [5, 129], [1, 1], [3, 2]] as const) {
    it(`M=${M} C=${C}: sums of squares, then normalise with and without weight`, () => {
      const x = randn(M * C, 41 + C, 1.7, 0.4), w = randn(C, 42 + C, 0.4, 1);
      const ss = new Float32Array(2 * M).fill(Number.NaN);
      native.runKernel('rms_sumsq', [x, ss], [M, C], []);
      expectClose(f64(ss), ref.rmsSumsq(x, M, C), 0, 1e-13, undefined, 'rms_sumsq');
      for (const ww of [w, null]) {
        const y = sentinel(M * C);
        native.runKernel('rms_norm_apply', [x, ss, ww, y], [M, C, C], [1e-6]);
        expectClose(y, ref.rmsNorm(x, ww, M, C, 1e-6), ATOL, RTOL, undefined, 'rms_norm_apply');
      }
    });
  }
  it('channels split over 3 "ranks" (13, 12, 12 of 37): summed sums + per-rank weight slices == rms_norm of the row; in place', () => {
    const M = 7, C = 37, parts = [13, 12, 12];
    const x = randn(M * C, 51, 1.3, -0.2), w = randn(C, 52, 0.5, 1);
    const want = ref.rmsNorm(x, w, M, C, 1e-5);
    const slice = (a: Float32Array, c0: number, n: number, rows: number, stride: number) => {
      const out = new Float32Array(rows * n);
      for (let m = 0; m < rows; m++) out.set(a.subarray(m * stride + c0, m * stride + c0 + n), m * n);
      return out;
    };
    const total = new Float64Array(M);
    const xs: Float32Array[] = [];
    let c0 = 0;
    for (const n of parts) {
      const xr = slice(x, c0, n, M, C);
      const ss = new Float32Array(2 * M);
      native.runKernel('rms_sumsq', [xr, ss], [M, n], []);
      f64(ss).forEach((v, m) => (total[m] += v)); // the all-reduce
      xs.push(xr);
      c0 += n;
    }
    const ssAll = new Float32Array(total.buffer);
    c0 = 0;
    parts.forEach((n, r) => {
      const xr = xs[r]!;
      native.runKernel('rms_norm_apply', [xr, ssAll, w.subarray(c0, c0 + n), xr], [M, n, C], [1e-5]);
      expectClose(xr, slice(Float32Array.from(want), c0, n, M, C), ATOL, RTOL, undefined, `rank ${r}`);
      c0 += n;
    });
  });
  it('rejects Cfull < C', () => {
    let msg = '';
    try {
      native.runKernel('rms_norm_apply', [randn(6, 1), new Float32Array(4), null, sentinel(6)], [2, 3, 2], [1e-6]);
    } catch (e) {
      msg = String(e);
    }
    if (!/Cfull \(channels over all ranks\) must be >= C/.test(msg)) throw new Error(`expected a Cfull error, got '${msg}'`);
  });
});

describe('group_norm', () => {
  for (const [N, C, HW, G] of [[2, 12, 35, 4], [1, 9, 13, 3], [3, 8, 1, 8], [1, 6, 129, 1]] as const) {
    it(`N=${N} C=${C} HW=${HW} G=${G}, affine or not, fused SiLU or not`, () => {
      const x = randn(N * C * HW, 31 + C + HW, 2, 0.7), w = randn(C, 32, 0.5, 1), b = randn(C, 33, 0.5);
      for (const [ww, bb] of [[w, b], [null, null]] as const)
        for (const fuse of [0, 1]) {
          const y = sentinel(N * C * HW);
          native.runKernel('group_norm', [x, ww, bb, y], [N, C, HW, G, fuse], [1e-6]);
          expectClose(y, ref.groupNorm(x, ww, bb, N, C, HW, G, fuse === 1, 1e-6), ATOL, RTOL);
        }
    });
  }
  it('rejects G that does not divide C', () => {
    const x = randn(10, 1), y = sentinel(10);
    let msg = '';
    try {
      native.runKernel('group_norm', [x, null, null, y], [1, 5, 2, 2, 0], [1e-6]);
    } catch (e) {
      msg = String(e);
    }
    if (!/G must be >= 1 and divide C/.test(msg)) throw new Error(`expected a G error, got '${msg}'`);
  });
});
