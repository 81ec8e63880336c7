// Wan 2.1 I2V (models/wan2.1.ts with image_dim / added_kv_proj_dim) against diffusers' own WanTransformer3DModel:
// the released config's parameter count, a scaled-down random-weight model's output (references from
// test/parity/make-wan-i2v-references.py) on the native executor and onnxruntime (the image embedder's exact
// GELU included), and Ulysses / TP at 2 ranks == 1 rank. Tolerance 1e-5 relative L2, the float32 bound of the
// other transformer checks.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, exportOnnx, type CompileOptions } from '../../compiler/index.ts';
import { videoRopeIds } from '../../runtime/latents.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import type { Plan } from '../../runtime/plan.ts';
import { runNative, runOnnx } from '../helpers/run-plan.ts';
import { relL2, weightsMap } from '../helpers/safetensors-lite.ts';
import { expectRanksMatch, runRanks } from '../parallel/helpers.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/wan-i2v-transformer-scaled');
const T = 'transformer' as const;
const SCALED: CompileOptions = {
  component: T,
  config: { image_dim: 20, added_kv_proj_dim: 72, attention_head_dim: 24, ffn_dim: 100, freq_dim: 32, in_channels: 12, num_attention_heads: 3, num_layers: 2, out_channels: 4, text_dim: 24 },
  // 2 latent frames of 6 x 10 (30 tokens), 512 text tokens, 9 image tokens, batch 2
  dims: { batch: 2, frames: 5, height: 48, width: 80, textTokens: 512, imageEmbedTokens: 9 },
};
const params = (p: Plan): number => p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);

describe('Wan 2.1 I2V 14B released config', () => {
  it('36 input channels, image embedder, image keys / values in every cross attention; parameters as diffusers counts them', () => {
    const counted = JSON.parse(fs.readFileSync(path.join(DIR, 'params.json'), 'utf8')) as { released: number };
    const p = compilePlan('wan2.1-i2v-14b', { component: T });
    expect(params(p)).toBe(counted.released);
    expect(p.inputs.find((i) => i.name === 'hidden_states')!.shape).toEqual([1, 36, 21, 60, 104]);
    expect(p.inputs.find((i) => i.name === 'encoder_hidden_states_image')!.shape).toEqual([1, 257, 1280]);
    expect(p.weights.find((w) => w.name === 'blocks.39.attn2.add_k_proj.weight')!.shape).toEqual([5120, 5120]);
    expect(p.weights.find((w) => w.name === 'condition_embedder.image_embedder.ff.net.0.proj.weight')!.shape).toEqual([1280, 1280]);
  });
});

describe.skipIf(!nativeAvailable())('scaled-down Wan I2V vs diffusers WanTransformer3DModel', () => {
  const plan = compilePlan('wan2.1-i2v-14b', SCALED);
  const all = weightsMap(path.join(DIR, 'transformer.safetensors'));
  const io = weightsMap(path.join(DIR, 'io.safetensors'));
  const d = plan.dims;
  const ins: Record<string, Float32Array> = { ...Object.fromEntries(['hidden_states', 'timestep', 'encoder_hidden_states', 'encoder_hidden_states_image'].map((k) => [k, io.get(k)!])), rope_ids: videoRopeIds(d.tokensF!, d.tokensH!, d.tokensW!) };

  it("reads exactly diffusers' state dict; native and onnxruntime within 1e-5 of diffusers", async () => {
    expect(plan.weights.map((w) => w.name).sort()).toEqual([...all.keys()].sort());
    const nat = runNative(plan, all, ins).output!;
    const onnx = (await runOnnx(exportOnnx('wan2.1-i2v-14b', { ...SCALED, weights: all }), plan, ins)).output!;
    const e = relL2(nat, io.get('output')!);
    const eo = relL2(onnx, io.get('output')!);
    console.log(`wan i2v scaled: rel L2 native ${e.toExponential(2)}, onnxruntime ${eo.toExponential(2)} vs diffusers`);
    expect(e).toBeLessThan(1e-5);
    expect(eo).toBeLessThan(1e-5);
  });

  it('Ulysses 2 (30 video tokens; text and image tokens whole on each rank) and TP 3 (heads, image keys / values split) == 1 rank', async () => {
    const want = runNative(plan, all, ins, 1).output!;
    for (const parallel of [{ ulysses_size: 2 }, { tp_size: 3 }]) {
      expectRanksMatch(await runRanks(compileParallelPlans('wan2.1-i2v-14b', { ...SCALED, parallel }), all, ins), want, `wan i2v scaled ${JSON.stringify(parallel)}`);
    }
  });
});
