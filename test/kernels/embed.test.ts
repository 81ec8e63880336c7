// timestep_embedding, embedding, masked_mean vs the float64 reference.
// timestep_embedding computes in float32 like diffusers: the angle t*exp(e) carries a relative error of a few u
// (exp and the product), i.e. up to ~1000 * 4 * 6e-8 = 2.4e-4 rad for t <= 1000, and sin/cos pass that on
// as an absolute error -> atol 2e-6 + 5e-7 * max|scale * t| (5e-4 at an angle of 1000).
// embedding is an exact gather (tolerance 0); masked_mean sums S <= 13 rows in float32 -> atol 2e-6.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { expectClose, randn, sentinel, uniform } from './harness.ts';

describe('timestep_embedding', () => {
  for (const [C, flip, shift, scale] of [[37, 0, 1, 1], [128, 1, 0, 1], [129, 1, 1, 1000], [3, 0, 0, 1]] as const) {
    it(`C=${C} flipSinToCos=${flip} freqShift=${shift} scale=${scale}`, () => {
      const B = 3;
      const t = scale === 1 ? uniform(B, C, 0, 1000) : uniform(B, C, 0, 1);
      const maxArg = Math.max(...t) * scale;
      const y = sentinel(B * C);
      native.runKernel('timestep_embedding', [t, y], [B, C, flip], [scale, shift, 10000]);
      expectClose(y, ref.timestepEmbedding(t, B, C, flip === 1, scale, shift, 10000), 2e-6 + 5e-7 * maxArg);
      if (C % 2) for (let b = 0; b < B; b++) expect(y[b * C + C - 1]).toBe(0);
    });
  }
});

describe('embedding', () => {
  it('M=13 C=37 V=29, out-of-range ids give zero rows', () => {
    const M = 13, C = 37, V = 29;
    const ids = Float32Array.from({ length: M }, (_, k) => (k * 7) % V);
    ids[3] = V; // out of range
    ids[5] = -1;
    const table = randn(V * C, 1), y = sentinel(M * C);
    native.runKernel('embedding', [ids, table, y], [M, C, V], []);
    expectClose(y, ref.embedding(ids, table, M, C, V), 0);
  });
});

describe('masked_mean', () => {
  it('B=3 S=13 C=37 with partial, full and empty masks', () => {
    const B = 3, S = 13, C = 37;
    const x = randn(B * S * C, 2), mask = new Float32Array(B * S);
    for (let s = 0; s < S; s++) {
      mask[s] = s % 3 === 0 ? 1 : 0;
      mask[S + s] = 1;
      mask[2 * S + s] = 0;
    }
    const y = sentinel(B * C);
    native.runKernel('masked_mean', [x, mask, y], [B, S, C], []);
    expectClose(y, ref.maskedMean(x, mask, B, S, C), 2e-6);
  });
});
