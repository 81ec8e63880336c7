// rope, qk_norm_rope, rope_table vs the float64 reference.
// rope: two products and one add per element in float32 with |cos|,|sin| <= 1: error <= 3u(|x0|+|x1|) ~ 2e-6
// for |x| <= 5 -> atol 3e-6. qk_norm_rope adds an RMS over D <= 129 values (relative ~D*u <= 8e-6 worst case)
// -> atol 2e-5. rope_table: the kernel computes in float64 and rounds once to float32, exactly as the
// reference does; libm and V8 cos/sin may differ by 1 double ulp, which can flip one float32 rounding -> 1e-7.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from './reference.ts';
import { expectClose, randn, sentinel, uniform } from './harness.ts';

function tables(S: number, D: number, seed: number) {
  const ang = uniform(S * D, seed, -4, 4);
  return { cos: Float32Array.from(ang, Math.cos), sin: Float32Array.from(ang, Math.sin) };
}

describe('rope', () => {
  it('B=2 S=13 H=3 D=10, packed rows', () => {
    const B = 2, S = 13, H = 3, D = 10;
    const x = randn(B * S * H * D, 1, 1.5), { cos, sin } = tables(S, D, 2);
    const y = sentinel(B * S * H * D);
    native.runKernel('rope', [x, cos, sin, y], [B, S, H, D, H * D, H * D], []);
    expectClose(y, ref.rope(x, cos, sin, B, S, H, D, H * D, H * D), 3e-6);
  });
  it('strided rows: q inside a fused qkv [B*S, 3*H*D] into a packed output', () => {
    const B = 1, S = 7, H = 5, D = 6, xs = 3 * H * D + 1;
    const x = randn((B * S - 1) * xs + H * D, 3), { cos, sin } = tables(S, D, 4);
    const y = sentinel(B * S * H * D);
    native.runKernel('rope', [x, cos, sin, y], [B, S, H, D, xs, H * D], []);
    expectClose(y, ref.rope(x, cos, sin, B, S, H, D, xs, H * D), 3e-6);
  });
  it('rejects odd D', () => {
    expect(() => native.runKernel('rope', [randn(9, 1), randn(9, 1), randn(9, 1), sentinel(9)], [1, 1, 1, 9, 9, 9], [])).toThrow(/D must be even/);
  });
  it('rotate-half (half = 1, transformers LLMs): y = x cos + rotate_half(x) sin, pair j at table columns 2j, 2j + 1', () => {
    const B = 2, S = 7, H = 3, D = 12, xs = H * D + 3;
    const x = randn((B * S - 1) * xs + H * D, 5, 1.5), { cos, sin } = tables(S, D, 6);
    const y = sentinel(B * S * H * D);
    native.runKernel('rope', [x, cos, sin, y], [B, S, H, D, xs, H * D, 1], []);
    // transformers' apply_rotary_pos_emb in float64 on the same angles
    const want = new Float64Array(B * S * H * D);
    for (let r = 0; r < B * S; r++)
      for (let h = 0; h < H; h++)
        for (let d = 0; d < D; d++) {
          // the first half takes the pair's table column 2j, the second half column 2j + 1 (equal in a real table)
          const s0 = r % S, j = d % (D / 2), col = d < D / 2 ? 2 * j : 2 * j + 1, xr = x[r * xs + h * D + d]!;
          const rot = d < D / 2 ? -x[r * xs + h * D + d + D / 2]! : x[r * xs + h * D + d - D / 2]!;
          want[(r * H + h) * D + d] = xr * cos[s0 * D + col]! + rot * sin[s0 * D + col]!;
        }
    expectClose(y, want, 3e-6);
    expect(() => native.runKernel('rope', [x, cos, sin, y], [B, S, H, D, xs, H * D, 2], [])).toThrow(/half must be 0/);
  });
});

describe('qk_norm_rope', () => {
  it('B=2 S=9 H=3 D=16 with rope, strided input', () => {
    const B = 2, S = 9, H = 3, D = 16, xs = 3 * H * D;
    const x = randn((B * S - 1) * xs + H * D, 5, 2, 0.3), w = randn(D, 6, 0.3, 1), { cos, sin } = tables(S, D, 7);
    const y = sentinel(B * S * H * D);
    native.runKernel('qk_norm_rope', [x, w, cos, sin, y], [B, S, H, D, xs, H * D], [1e-6]);
    expectClose(y, ref.rope(x, cos, sin, B, S, H, D, xs, H * D, { w, eps: 1e-6 }), 2e-5);
  });
  it('cos == null: rms norm only; in place', () => {
    const B = 1, S = 13, H = 2, D = 128;
    const x = randn(B * S * H * D, 8), w = randn(D, 9);
    const want = ref.rope(x, null, null, B, S, H, D, H * D, H * D, { w, eps: 1e-6 });
    native.runKernel('qk_norm_rope', [x, w, null, null, x], [B, S, H, D, H * D, H * D], [1e-6]);
    expectClose(x, want, 2e-5, 2e-5);
  });
});

describe('rope_table', () => {
  it('FLUX-style 3 axes (d = 16, 56, 56) on text + image ids, theta 10000', () => {
    const dims = [16, 56, 56], A = 3, D = 128;
    const ids: number[] = [];
    for (let s = 0; s < 5; s++) ids.push(0, 0, 0); // text tokens: zeros
    for (let h = 0; h < 3; h++) for (let w = 0; w < 4; w++) ids.push(0, h, w); // image tokens
    ids.push(7, 123, 4095);
    const S = ids.length / A;
    const idf = Float32Array.from(ids), cos = sentinel(S * D), sin = sentinel(S * D);
    native.runKernel('rope_table', [idf, cos, sin], [S, A, ...dims, 0], [10000]);
    const want = ref.ropeTable(idf, S, A, dims, 10000);
    expectClose(cos, want.cos, 1e-7);
    expectClose(sin, want.sin, 1e-7);
  });
  it('odd S, 2 axes, fractional positions, theta 256', () => {
    const S = 13, A = 2, dims = [6, 10];
    const ids = uniform(S * A, 10, 0, 50);
    const cos = sentinel(S * 16), sin = sentinel(S * 16);
    native.runKernel('rope_table', [ids, cos, sin], [S, A, 6, 10, 0, 0], [256]);
    const want = ref.ropeTable(ids, S, A, dims, 256);
    expectClose(cos, want.cos, 1e-7);
    expectClose(sin, want.sin, 1e-7);
  });
});
