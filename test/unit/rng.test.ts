import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { torchRandn, MT19937 } from '../../runtime/rng.ts';
import { packLatents } from '../../runtime/latents.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('seeded noise (torch.randn-compatible)', () => {
  it('mt19937 matches the C++ std::mt19937 reference value (10000th output for seed 5489)', () => {
    const g = new MT19937(5489);
    let v = 0;
    for (let i = 0; i < 10000; i++) v = g.nextU32();
    expect(v).toBe(4123659995);
  });

  for (const k of [0, 1, 2]) {
    it(`pack(torchRandn(256, seed ${k})) is bit-exact vs the reference noise_latents`, () => {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const seed = Number(f.metadata.seed);
      expect(bits(packLatents(torchRandn(256, seed), 1, 4, 8, 8))).toEqual(bits(f.tensor('noise_latents').data));
    });
  }

  it('is deterministic, handles sizes that are not multiples of 16, and looks normal', () => {
    const a = torchRandn(1000, 42);
    expect(bits(a)).toEqual(bits(torchRandn(1000, 42)));
    expect(bits(a)).not.toEqual(bits(torchRandn(1000, 43)));
    const big = torchRandn(100_003, 7);
    let m = 0, v = 0;
    for (const x of big) m += x;
    m /= big.length;
    for (const x of big) v += (x - m) ** 2;
    v /= big.length;
    expect(Math.abs(m)).toBeLessThan(0.02);
    expect(Math.abs(v - 1)).toBeLessThan(0.02);
    expect(big.every(Number.isFinite)).toBe(true);
    expect(() => torchRandn(8, 0)).toThrow(/at least 16/);
  });
});
