// Native runtime (plan.json executed by the C++ addon) vs onnxruntime-node on the compiler's ONNX
// export of the same component, and vs the PyTorch reference. Skipped until the addon is built.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compilePlan, exportOnnx, type CompileOptions } from '../../compiler/index.ts';
import { notRunnable, runNative, runOnnx } from '../helpers/run-plan.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { readSafetensors, relL2, weightsMap } from '../helpers/safetensors-lite.ts';

const FIX = 'test/fixtures/tiny-flux-reference';
const TF = 'models/tiny-flux';
const SCALED: CompileOptions = {
  component: 'transformer',
  config: { num_layers: 2, num_single_layers: 3, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, pooled_projection_dim: 24, in_channels: 20 },
  dims: { batch: 2, height: 48, width: 80, textTokens: 7 },
};

const cases: [string, string, CompileOptions, string | null][] = [
  ['tiny-flux transformer (real weights)', 'tiny-flux', { component: 'transformer' }, `${TF}/transformer/diffusion_pytorch_model.safetensors`],
  ['tiny-flux transformer batch 3, 5 text tokens', 'tiny-flux', { component: 'transformer', dims: { batch: 3, textTokens: 5, height: 24, width: 40 } }, `${TF}/transformer/diffusion_pytorch_model.safetensors`],
  ['tiny-flux text encoder (real weights)', 'tiny-flux', { component: 'text_encoder', dims: { batch: 2 } }, `${TF}/text_encoder/model.safetensors`],
  ['tiny-flux vae (real weights)', 'tiny-flux', { component: 'vae' }, `${TF}/vae/diffusion_pytorch_model.safetensors`],
  // the encoder's stride-2 convs pad after each axis only; odd latent sizes (5 x 9), batch 2
  ['tiny-flux vae encoder (real weights), 20x36', 'tiny-flux', { component: 'vae_encoder', dims: { batch: 2, height: 20, width: 36 } }, `${TF}/vae/diffusion_pytorch_model.safetensors`],
  ['scaled-down flux1-dev (random weights, odd token counts)', 'flux1-dev', SCALED, null],
];

describe('native vs onnxruntime on the ONNX export', () => {
  it.each(cases)('%s: rel L2 <= 1e-5', async (_n, model, opts, wfile) => {
    const plan = compilePlan(model, opts);
    expect(notRunnable(plan), 'the native addon must run this plan (npm run build:native)').toBeNull();
    const w = wfile && fs.existsSync(wfile) ? weightsMap(wfile) : randomWeights(plan, 3);
    const ins = randomInputs(plan, 9);
    const nat = runNative(plan, w, ins);
    const ref = await runOnnx(exportOnnx(model, { ...opts, weights: w }), plan, ins);
    for (const o of plan.outputs) expect(relL2(nat[o.name]!, ref[o.name]!), o.name).toBeLessThanOrEqual(1e-5);
  });
});

describe('native vs the PyTorch reference', () => {
  it('tiny-flux transformer, batch 2 (transformer_random.safetensors): rel L2 <= 1e-4', () => {
    const plan = compilePlan('tiny-flux', { component: 'transformer', dims: { batch: 2 } });
    expect(notRunnable(plan), 'the native addon must run this plan (npm run build:native)').toBeNull();
    const ref = readSafetensors(`${FIX}/transformer_random.safetensors`);
    const ins = Object.fromEntries(plan.inputs.map((i) => [i.name, ref.get(i.name)!.data]));
    const out = runNative(plan, weightsMap(`${TF}/transformer/diffusion_pytorch_model.safetensors`), ins);
    expect(relL2(out.output!, ref.get('output')!.data)).toBeLessThanOrEqual(1e-4);
  });
});
