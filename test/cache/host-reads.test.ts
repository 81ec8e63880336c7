// Calibrators without host reads (issue 3): on a 28-step tiny-flux cached run with TaylorSeer, FoCa and DMD,
// the calibrator updates and forecasts run as native cache kernels on the runner's tensors. Instrumented:
// every addon kernel launch (per denoising step), the executor's readTensor, and the host reference ops
// (`hostOps`, the only TS code that touches tensor elements for the calibrators). The only kernels whose
// outputs the host reads are `cache_probe` (2 float64 sums) and, for DMD's host-side fit, `dmd_gram`
// (batch x k x k float64 Gram matrices, launched at compute steps; they come back with the next probe's sums).
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadFluxPipeline, type FluxPipeline } from '../../runtime/pipeline.ts';
import { loadNative } from '../../runtime/native.ts';
import { dbCacheConfig, dmdConfig, focaConfig, taylorSeerConfig, type CalibratorConfig } from '../../runtime/cache/config.ts';
import { hostOps } from '../../runtime/cache/tensor-ops.ts';

const PROMPT = 'a large red circle at the center on a black background';
let pipe: FluxPipeline;

beforeAll(async () => {
  pipe = await loadFluxPipeline('tiny-flux', { threads: 2 });
}, 60_000);

afterEach(() => {
  vi.restoreAllMocks();
});

describe('28-step tiny-flux cached run: the probe sums are the only per-step host read', () => {
  for (const [label, cal] of [
    ['TaylorSeer', taylorSeerConfig()],
    ['FoCa', focaConfig()],
    ['DMD', dmdConfig()],
  ] as [string, CalibratorConfig][]) {
    it(label, async () => {
      const addon = loadNative();
      const steps: string[][] = [[]];
      const run = addon.runKernel.bind(addon);
      vi.spyOn(addon, 'runKernel').mockImplementation((name, t, i, f) => {
        steps[steps.length - 1]!.push(name);
        run(name, t, i, f);
      });
      const host = (['copy', 'diff', 'combine', 'foca', 'gram', 'combine64'] as const).map((m) => vi.spyOn(hostOps, m));
      const r = await pipe.generate({
        prompt: PROMPT,
        steps: 28,
        seed: 0,
        cache: {
          cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.12, max_warmup_steps: 4, max_continuous_cached_steps: 3 }),
          calibrator: cal,
        },
        onStep: () => steps.push([]),
      });
      steps.pop(); // the empty list opened after the last step
      expect(steps.length).toBe(28);
      const s = r.cache!.summary[0]!;
      expect(s.cached_steps.length, 'cached steps').toBeGreaterThanOrEqual(8);
      const count = (xs: string[], name: string) => xs.filter((x) => x === name).length;
      const probes = steps.map((xs) => count(xs, 'cache_probe'));
      const grams = steps.map((xs) => count(xs, 'dmd_gram'));
      const calKernels = steps.map((xs) => xs.filter((x) => x !== 'cache_probe' && x !== 'residual_store' && x !== 'residual_apply').length);
      console.log(
        `${label}: ${r.cache!.tag}; probes per step ${probes.join('')}; dmd_gram launches per step ${grams.join('')}; ` +
          `${r.cache!.hostReads} host reads, ${r.cache!.hostReadValues} float64 in all; ${r.cache!.calibratorKernels} calibrator kernels`,
      );
      // one probe (2 float64) per step at most; none in the 4 warmup steps
      expect(Math.max(...probes)).toBeLessThanOrEqual(1);
      expect(probes.slice(0, 4)).toEqual([0, 0, 0, 0]);
      // calibrator updates (compute steps) and forecasts (cached steps) ran as kernels
      expect(calKernels.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      for (const st of s.cached_steps) expect(calKernels[st]!, `step ${st} forecast kernels`).toBeGreaterThan(0);
      // nothing tensor-sized came back: no host calibrator arithmetic (the native runner has no readTensor path:
      // io tensors are arena views, buffers never leave the kernels)
      for (const h of host) expect(h).not.toHaveBeenCalled();
      // the probes are the only host reads: <= 1 per step
      expect(r.cache!.hostReads).toBe(r.cache!.probes);
      if (cal.calibrator_type !== 'dmd') {
        expect(grams.every((g) => g === 0)).toBe(true);
        expect(r.cache!.hostReadValues).toBe(2 * r.cache!.probes);
      } else {
        // DMD's fit: Gram matrices (hidden + encoder streams, <= 6 x 6 float64 each at batch 1) launched at compute
        // steps once >= 4 uniformly spaced snapshots exist, delivered with the next probe's sums
        expect(grams.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
        for (let i = 0; i < 28; i++) {
          if (grams[i]! > 0) expect(s.cached_steps.includes(i), `gram launch at compute step ${i}`).toBe(false);
          expect(grams[i]!).toBeLessThanOrEqual(2);
        }
        const extra = r.cache!.hostReadValues - 2 * r.cache!.probes;
        expect(extra).toBeGreaterThan(0);
        expect(extra).toBeLessThanOrEqual(36 * grams.reduce((a, b) => a + b, 0));
      }
    }, 60_000);
  }
});
