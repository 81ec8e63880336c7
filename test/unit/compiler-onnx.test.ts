// ONNX export (from the unfused IR) run by onnxruntime-node: matches the PyTorch reference tensors,
// and the compiler's fused plan (run by the JS plan interpreter) matches the ONNX model.
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compilePlan, exportOnnx, type CompileOptions } from '../../compiler/index.ts';
import { PlanInterpreter } from '../helpers/plan-interpreter.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { readSafetensors, relL2, weightsMap } from '../helpers/safetensors-lite.ts';

const FIX = 'test/fixtures/tiny-flux-reference';
const TF = 'models/tiny-flux';

async function runOnnx(bytes: Uint8Array, feeds: Record<string, { data: Float32Array; shape: number[] }>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2 });
  const f: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) f[k] = new ort.Tensor('float32', v.data, v.shape);
  const r = await s.run(f);
  const out: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(r)) out[k] = v.data as Float32Array;
  await s.release();
  return out;
}

describe('ONNX export vs the PyTorch reference', () => {
  it('tiny-flux transformer, batch 2 (transformer_random.safetensors): rel L2 <= 1e-4', async () => {
    const ref = readSafetensors(`${FIX}/transformer_random.safetensors`);
    const bytes = exportOnnx('tiny-flux', { component: 'transformer', dims: { batch: 2 }, weights: weightsMap(`${TF}/transformer/diffusion_pytorch_model.safetensors`) });
    const feeds = Object.fromEntries(['hidden_states', 'encoder_hidden_states', 'pooled_projections', 'timestep', 'img_ids', 'txt_ids'].map((n) => [n, ref.get(n)!]));
    const out = await runOnnx(bytes, feeds);
    expect(relL2(out.output!, ref.get('output')!.data)).toBeLessThanOrEqual(1e-4);
  });

  it('tiny-flux text encoder and VAE (prompt0)', async () => {
    const p0 = readSafetensors(`${FIX}/prompt0.safetensors`);
    const ids = p0.get('input_ids')!;
    const te = await runOnnx(exportOnnx('tiny-flux', { component: 'text_encoder', weights: weightsMap(`${TF}/text_encoder/model.safetensors`) }), {
      input_ids: { data: ids.data, shape: [1, 12] },
      attention_mask: { data: ids.data.map((x) => (x !== 0 ? 1 : 0)), shape: [1, 12] },
    });
    expect(relL2(te.encoder_hidden_states!, p0.get('encoder_hidden_states')!.data)).toBeLessThanOrEqual(1e-5);
    expect(relL2(te.pooled_projections!, p0.get('pooled_projections')!.data)).toBeLessThanOrEqual(1e-5);
    const z = p0.get('final_latents_unpacked_vae_space')!;
    const vae = await runOnnx(exportOnnx('tiny-flux', { component: 'vae', weights: weightsMap(`${TF}/vae/diffusion_pytorch_model.safetensors`) }), { latents: z });
    const img = vae.sample!.map((x) => Math.min(1, Math.max(0, x * 0.5 + 0.5)));
    expect(relL2(img, p0.get('image')!.data)).toBeLessThanOrEqual(1e-5);
  });

  it('without weights: checkpoint tensors become graph inputs (small file)', () => {
    const bytes = exportOnnx('tiny-flux', { component: 'transformer' });
    expect(bytes.length).toBeLessThan(200_000);
  });
});

const SCALED: CompileOptions = {
  component: 'transformer',
  // FLUX.1-dev block structure (guidance embeds, dual + single), small dims, odd token counts
  config: { num_layers: 2, num_single_layers: 3, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, pooled_projection_dim: 24, in_channels: 20 },
  dims: { batch: 2, height: 48, width: 80, textTokens: 7 },
};

describe('fused plan (JS interpreter) vs ONNX of the unfused IR', () => {
  const cases: [string, string, CompileOptions, string | null][] = [
    ['tiny-flux transformer (real weights)', 'tiny-flux', { component: 'transformer', dims: { batch: 2, textTokens: 5 } }, `${TF}/transformer/diffusion_pytorch_model.safetensors`],
    ['tiny-flux text encoder (real weights)', 'tiny-flux', { component: 'text_encoder', dims: { batch: 2, textTokens: 9 } }, `${TF}/text_encoder/model.safetensors`],
    ['tiny-flux vae (real weights)', 'tiny-flux', { component: 'vae', dims: { height: 16, width: 24 } }, `${TF}/vae/diffusion_pytorch_model.safetensors`],
    ['scaled-down flux1-dev (random weights)', 'flux1-dev', SCALED, null],
  ];
  it.each(cases)('%s: rel L2 <= 1e-5', async (_n, model, opts, wfile) => {
    const plan = compilePlan(model, opts);
    const w = wfile && fs.existsSync(wfile) ? weightsMap(wfile) : randomWeights(plan, 3);
    const ins = randomInputs(plan, 5);
    const it = new PlanInterpreter(plan, w);
    for (const [k, v] of Object.entries(ins)) it.setInput(k, v);
    it.runAll();
    const feeds = Object.fromEntries(plan.inputs.map((i) => [i.name, { data: ins[i.name]!, shape: i.shape }]));
    const ref = await runOnnx(exportOnnx(model, { ...opts, weights: w }), feeds);
    for (const o of plan.outputs) expect(relL2(it.getOutput(o.name), ref[o.name]!)).toBeLessThanOrEqual(1e-5);
  });
});
