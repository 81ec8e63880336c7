// conv2d and the frame-major conv3d vs float64 references. Tolerance = the classical float32 dot-product bound: for K = Ci*kh*kw
// products, |fl(sum) - sum| <= gamma_K * sum|w x| with gamma_K = K u / (1 - K u), u = 2^-24. The per-element
// bound is computed by running the reference on |x|, |w|, |b| (that yields sum|terms|), times 2 for margin.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { absArr, expectClose, randn, sentinel } from './harness.ts';

const U = 2 ** -24;

function check(N: number, Ci: number, H: number, W: number, Co: number, kh: number, kw: number, stride: number, pad: number, withBias: boolean, seed: number, padEnd = pad) {
  const [Ho, Wo] = ref.conv2dOutSize(H, W, kh, kw, stride, pad, padEnd);
  const x = randn(N * Ci * H * W, seed), w = randn(Co * Ci * kh * kw, seed + 1, 0.3), b = withBias ? randn(Co, seed + 2) : null;
  const y = sentinel(N * Co * Ho * Wo);
  native.runKernel('conv2d', [x, w, b, y], [N, Ci, H, W, Co, kh, kw, stride, pad, padEnd], []);
  const K = Ci * kh * kw, gamma = (K * U) / (1 - K * U);
  const absSum = ref.conv2d(absArr(x), absArr(w), b ? absArr(b) : null, N, Ci, H, W, Co, kh, kw, stride, pad, padEnd);
  expectClose(y, ref.conv2d(x, w, b, N, Ci, H, W, Co, kh, kw, stride, pad, padEnd), 1e-7, 0, absSum.map((s) => 2 * gamma * s));
}

describe('conv2d', () => {
  it('3x3 pad 1 stride 1, odd sizes (N=2 Ci=5 H=13 W=11 Co=7)', () => check(2, 5, 13, 11, 7, 3, 3, 1, 1, true, 1));
  it('3x3 stride 2 pad 1 (downsample), no bias', () => check(1, 3, 15, 9, 6, 3, 3, 2, 1, false, 2));
  it('1x1 (direct GEMM path), Co=37', () => check(2, 13, 7, 5, 37, 1, 1, 1, 0, true, 3));
  it('non-square kernel 2x3 pad 0', () => check(1, 4, 6, 8, 5, 2, 3, 1, 0, true, 4));
  it('VAE-sized 3x3: Ci=32 Co=32 at 32x32 (full tiles and tails)', () => check(1, 32, 32, 32, 32, 3, 3, 1, 1, true, 5));
  it("zeros after each axis only, stride 2 (diffusers' Downsample2D), odd and even sizes", () => {
    check(2, 5, 12, 10, 7, 3, 3, 2, 0, true, 6, 1);
    check(1, 3, 9, 7, 4, 3, 3, 2, 0, false, 7, 1);
  });
  it('rejects a kernel larger than the padded input, and negative padding', () => {
    expect(() => native.runKernel('conv2d', [randn(4, 1), randn(9, 1), null, sentinel(4)], [1, 1, 2, 2, 1, 3, 3, 1, 0, 0], [])).toThrow(/kernel larger/);
    expect(() => native.runKernel('conv2d', [randn(16, 1), randn(9, 1), null, sentinel(4)], [1, 1, 4, 4, 1, 3, 3, 1, 0, -1], [])).toThrow(/int parameter 9 must be >= 0/);
  });
});

/** [A, B, R] -> [B, A, R] (frame-major <-> channel-first for one video) */
function swap01(x: ArrayLike<number>, A: number, B: number, R: number): Float64Array {
  const y = new Float64Array(A * B * R);
  for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) for (let r = 0; r < R; r++) y[(b * A + a) * R + r] = x[(a * B + b) * R + r]!;
  return y;
}

function check3d(Ci: number, T: number, H: number, W: number, Co: number, kt: number, k: number, pad: number, withBias: boolean, seed: number) {
  const [Ho, Wo] = ref.conv2dOutSize(H, W, k, k, 1, pad);
  const To = T - kt + 1;
  const x = randn(T * Ci * H * W, seed), w = randn(Co * Ci * kt * k * k, seed + 1, 0.3), b = withBias ? randn(Co, seed + 2) : null;
  const y = sentinel(To * Co * Ho * Wo);
  native.runKernel('conv3d', [x, w, b, y], [To, Ci, H, W, Co, kt, k, k, 1, pad], []);
  // the reference runs in PyTorch's [C, T, H, W]: the kernel's frame-major layout is part of what is checked
  const xc = swap01(x, T, Ci, H * W);
  const want = swap01(ref.conv3dChannelFirst(xc, w, b, Ci, T, H, W, Co, kt, k, k, 1, pad), Co, To, Ho * Wo);
  const absSum = swap01(ref.conv3dChannelFirst(absArr(xc), absArr(w), b ? absArr(b) : null, Ci, T, H, W, Co, kt, k, k, 1, pad), Co, To, Ho * Wo);
  const K = Ci * kt * k * k, gamma = (K * U) / (1 - K * U);
  expectClose(y, want, 1e-7, 0, absSum.map((s) => 2 * gamma * s));
}

describe('conv3d (frame-major, no temporal padding)', () => {
  it('3x3x3 pad 1 (the Wan VAE causal conv), odd sizes: T=5 Ci=5 13x11 Co=7', () => check3d(5, 5, 13, 11, 7, 3, 3, 1, true, 11));
  it('3x1x1 (the Wan time_conv), T=4 Ci=6 Co=12, no bias', () => check3d(6, 4, 5, 7, 12, 3, 1, 0, false, 12));
  it('kt = T (one output frame), Ci=3 Co=37', () => check3d(3, 3, 9, 6, 37, 3, 3, 1, true, 13));
  it('kt = 1 is conv2d per frame', () => check3d(4, 3, 6, 5, 5, 1, 3, 1, true, 14));
  it('rejects a short input', () => {
    expect(() => native.runKernel('conv3d', [randn(10, 1), randn(27, 1), null, sentinel(9)], [1, 1, 3, 3, 1, 3, 3, 3, 1, 1], [])).toThrow(/holds 10 floats/);
  });
});
