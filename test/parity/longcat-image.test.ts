// LongCat-Image (models/longcat-image.ts) against diffusers' own LongCatImageTransformer2DModel: the released
// config's parameter count (6.27B, "6B"), a scaled-down random-weight model's output (references from
// test/parity/make-longcat-references.py) on the native executor and onnxruntime, and Ulysses / TP at 2 ranks ==
// 1 rank. Tolerance 1e-5 relative L2: the float32 bound of the other transformer checks.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, exportOnnx, type CompileOptions } from '../../compiler/index.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import type { Plan } from '../../runtime/plan.ts';
import { runNative, runOnnx } from '../helpers/run-plan.ts';
import { relL2, weightsMap } from '../helpers/safetensors-lite.ts';
import { expectRanksMatch, runRanks } from '../parallel/helpers.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/longcat-transformer-scaled');
const T = 'transformer' as const;
const SCALED: CompileOptions = {
  component: T,
  config: { num_layers: 2, num_single_layers: 2, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, in_channels: 20 },
  dims: { batch: 2, height: 48, width: 80, textTokens: 7 },
};
const params = (p: Plan): number => p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);

describe('LongCat-Image released config', () => {
  it('10 dual + 20 single blocks (two Pattern_1 lists), 24 x 128 heads, Qwen2.5-VL features; parameters as diffusers counts them', () => {
    const counted = JSON.parse(fs.readFileSync(path.join(DIR, 'params.json'), 'utf8')) as { released: number };
    for (const model of ['longcat-image', 'longcat-image-edit']) {
      const p = compilePlan(model, { component: T });
      expect(params(p)).toBe(counted.released);
      expect(p.segments.filter((s) => s.blocks).map((s) => [s.list, s.pattern, s.blocks!.length])).toEqual([
        ['transformer_blocks', 1, 10],
        ['single_transformer_blocks', 1, 20],
      ]);
      expect(p.weights.find((w) => w.name === 'time_embed.timestep_embedder.linear_1.weight')!.shape).toEqual([3072, 256]);
      expect(p.weights.find((w) => w.name === 'context_embedder.weight')!.shape).toEqual([3072, 3584]);
    }
  });
});

describe.skipIf(!nativeAvailable())('scaled-down LongCat-Image vs diffusers LongCatImageTransformer2DModel', () => {
  const plan = compilePlan('longcat-image', SCALED);
  const all = weightsMap(path.join(DIR, 'transformer.safetensors'));
  const io = weightsMap(path.join(DIR, 'io.safetensors'));
  const ins = Object.fromEntries(plan.inputs.map((i) => [i.name, io.get(i.name)!]));

  it("reads exactly diffusers' state dict; native and onnxruntime within 1e-5 of diffusers", async () => {
    expect(plan.weights.map((w) => w.name).sort()).toEqual([...all.keys()].sort());
    const nat = runNative(plan, all, ins).output!;
    const onnx = (await runOnnx(exportOnnx('longcat-image', { ...SCALED, weights: all }), plan, ins)).output!;
    const e = relL2(nat, io.get('output')!);
    const eo = relL2(onnx, io.get('output')!);
    console.log(`longcat scaled: rel L2 native ${e.toExponential(2)}, onnxruntime ${eo.toExponential(2)} vs diffusers`);
    expect(e).toBeLessThan(1e-5);
    expect(eo).toBeLessThan(1e-5);
  });

  it('Ulysses 2 (uneven tokens) and TP 2 (3 heads: 2 + 1) == 1 rank', async () => {
    const want = runNative(plan, all, ins, 1).output!;
    for (const parallel of [{ ulysses_size: 2, ulysses_anything: true }, { tp_size: 2 }]) {
      expectRanksMatch(await runRanks(compileParallelPlans('longcat-image', { ...SCALED, parallel }), all, ins), want, `longcat scaled ${JSON.stringify(parallel)}`);
    }
  });
});
