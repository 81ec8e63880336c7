// qwen-image and wan2.1 (compile-only models): scaled-down random-weight configs run on the native
// executor vs onnxruntime-node on the ONNX export (same block structure, tiny dims, odd token counts);
// the full-size configs compile with the diffusers checkpoint names and shapes; bad dims are refused.
import { describe, expect, it } from 'vitest';
import { compilePlan, exportOnnx, inspectModel, listModels, type CompileOptions } from '../../compiler/index.ts';
import { qwenImageRopeIds } from '../../runtime/latents.ts';
import { qwenImageReference, wanReference } from '../helpers/dit-reference.ts';
import { videoRopeIds } from '../../runtime/latents.ts';
import type { Plan } from '../../runtime/plan.ts';
import { randomInputs, randomWeights, rng } from '../helpers/random.ts';
import { notRunnable, runNative, runOnnx } from '../helpers/run-plan.ts';
import { relL2 } from '../helpers/safetensors-lite.ts';

const T = 'transformer' as const;

/** 2 blocks, 3 heads x 16, 48x80 px -> 3x5 = 15 image tokens, 7 text tokens, batch 2 */
const QWEN_SCALED: CompileOptions = {
  component: T,
  config: { num_layers: 2, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, in_channels: 20, out_channels: 5 },
  dims: { batch: 2, height: 48, width: 80, textTokens: 7 },
};

/** 2 blocks, 3 heads x 24 (Wan's RoPE split needs D in {24, 48, 128, ..}), 9 frames of 48x80 -> 3x3x5 = 45 tokens */
const WAN_SCALED: CompileOptions = {
  component: T,
  config: { num_layers: 2, num_attention_heads: 3, attention_head_dim: 24, ffn_dim: 100, text_dim: 40, freq_dim: 32, in_channels: 5, out_channels: 3 },
  dims: { batch: 2, frames: 9, height: 48, width: 80, textTokens: 7 },
};

/** same with a temporal patch of 2 (13 frames -> 4 latent frames -> 2 x 3 x 5 = 30 tokens): the general patchify */
const WAN_SCALED_PT2: CompileOptions = {
  ...WAN_SCALED,
  config: { ...WAN_SCALED.config, patch_size: [2, 2, 2] },
  dims: { batch: 1, frames: 13, height: 48, width: 80, textTokens: 5 },
};

/** inputs with the meaning the models give them: position ids, a text mask that drops padding, timesteps */
function modelInputs(model: string, plan: Plan, seed: number): Record<string, Float32Array> {
  const ins = randomInputs(plan, seed);
  const d = plan.dims;
  const r = rng(seed + 1);
  if (model === 'qwen-image') {
    const ids = qwenImageRopeIds(d.tokensH!, d.tokensW!, d.textTokens!);
    ins.txt_rope_ids = ids.txt;
    ins.img_rope_ids = ids.img;
    // batch row b keeps all image tokens and T - 2b text tokens (row 0 unpadded)
    const S = d.textTokens! + d.imageTokens!;
    const mask = new Float32Array(d.B! * S).fill(1);
    for (let b = 0; b < d.B!; b++) for (let t = d.textTokens! - 2 * b; t < d.textTokens!; t++) mask[b * S + t] = 0;
    ins.joint_attention_mask = mask;
  } else {
    ins.rope_ids = videoRopeIds(d.tokensF!, d.tokensH!, d.tokensW!);
    ins.timestep = Float32Array.from({ length: d.B! }, () => 50 + 900 * r());
  }
  return ins;
}

const parityCases: [string, string, CompileOptions][] = [
  ['qwen-image: 2 blocks, 3x16 heads, 15 image + 7 text tokens, batch 2, padded text', 'qwen-image', QWEN_SCALED],
  ['wan2.1-t2v-1.3b: 2 blocks, 3x24 heads, 45 video + 7 text tokens, batch 2', 'wan2.1-t2v-1.3b', WAN_SCALED],
  ['wan2.1-t2v-14b file with patch (2,2,2): 30 video + 5 text tokens', 'wan2.1-t2v-14b', WAN_SCALED_PT2],
];

describe('scaled-down qwen-image / wan2.1: native vs onnxruntime on the ONNX export', () => {
  it.each(parityCases)('%s: rel L2 <= 1e-5', async (_n, model, opts) => {
    const plan = compilePlan(model, opts);
    expect(notRunnable(plan), 'the native addon must run this plan (npm run build:native)').toBeNull();
    const w = randomWeights(plan, 5);
    const ins = modelInputs(model, plan, 11);
    for (const [k, v] of Object.entries(ins)) expect(v.some((x) => x !== 0), `input ${k} is all zeros`).toBe(true);
    const nat = runNative(plan, w, ins);
    const ref = await runOnnx(exportOnnx(model, { ...opts, weights: w }), plan, ins);
    for (const o of plan.outputs) {
      const out = nat[o.name]!;
      expect(out.every(Number.isFinite), `${o.name} finite`).toBe(true);
      const rms = Math.sqrt(out.reduce((a, x) => a + x * x, 0) / out.length);
      expect(rms, `${o.name} is not trivially small`).toBeGreaterThan(1e-2);
      const e = relL2(out, ref[o.name]!);
      console.log(`${model} ${o.name}[${o.shape.join(',')}]: rel L2 native vs onnxruntime ${e.toExponential(2)}`);
      expect(e, o.name).toBeLessThanOrEqual(1e-5);
    }
  });
});

/** the diffusers forward in float64 (test/helpers/dit-reference.ts) on the same weights and inputs */
function reference(model: string, plan: Plan, w: Map<string, Float32Array>, ins: Record<string, Float32Array>): Float64Array {
  const d = plan.dims;
  const c = plan.config as Record<string, any>;
  if (model === 'qwen-image') {
    const S = d.textTokens! + d.imageTokens!;
    const textMask = new Float32Array(d.B! * d.textTokens!);
    for (let b = 0; b < d.B!; b++) for (let t = 0; t < d.textTokens!; t++) textMask[b * d.textTokens! + t] = ins.joint_attention_mask![b * S + t]!;
    return qwenImageReference(w, c, d.B!, d.tokensH!, d.tokensW!, d.textTokens!, { hidden_states: ins.hidden_states!, encoder_hidden_states: ins.encoder_hidden_states!, timestep: ins.timestep!, textMask });
  }
  return wanReference(w, c, d.B!, d.latentFrames!, d.latentHeight!, d.latentWidth!, d.textTokens!, { hidden_states: ins.hidden_states!, encoder_hidden_states: ins.encoder_hidden_states!, timestep: ins.timestep! });
}

describe('scaled-down qwen-image / wan2.1: the ONNX export vs a float64 diffusers reference', () => {
  it.each(parityCases)('%s: rel L2 <= 1e-5', async (_n, model, opts) => {
    const plan = compilePlan(model, opts);
    const w = randomWeights(plan, 5);
    const ins = modelInputs(model, plan, 11);
    const ref = reference(model, plan, w, ins);
    const out = (await runOnnx(exportOnnx(model, { ...opts, weights: w }), plan, ins)).output!;
    const e = relL2(out, Float32Array.from(ref));
    console.log(`${model} output: rel L2 onnxruntime vs float64 diffusers reference ${e.toExponential(2)}`);
    expect(e).toBeLessThanOrEqual(1e-5);
  });
});

const shapeOf = (p: Plan, name: string): number[] | undefined => p.weights.find((w) => w.name === name)?.shape;
const params = (p: Plan): number => p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);

describe('full-size configs compile with diffusers checkpoint names', () => {
  it('registers the models', () => {
    expect(listModels()).toEqual(expect.arrayContaining(['qwen-image', 'wan2.1-t2v-1.3b', 'wan2.1-t2v-14b', 'wan2.2-t2v-a14b', 'z-image-turbo']));
    // Wan 2.2 A14B: each of its two experts is the 14B transformer (2 x 14.29B parameters)
    expect(params(compilePlan('wan2.2-t2v-a14b', { component: T, dims: { batch: 1, frames: 5, height: 64, width: 64, textTokens: 8 } }))).toBe(14288491584);
  });

  it('z-image-turbo: 30 layers + 2 noise / 2 context refiners (Pattern_3 `layers`), 6.15B transformer parameters as diffusers counts them', () => {
    const p = compilePlan('z-image-turbo', { component: T, dims: { batch: 1, height: 1024, width: 1024, textTokens: 512 } });
    // sum(p.numel() for p in ZImageTransformer2DModel(**Z-Image-Turbo's config).parameters())
    expect(params(p)).toBe(6154908736);
    const seg = p.segments.find((s) => s.name === 'blocks')!;
    expect([seg.list, seg.pattern, seg.blocks!.length]).toEqual(['layers', 3, 30]);
    expect(p.inputs.find((i) => i.name === 'hidden_states')!.shape).toEqual([1, 4096, 64]);
    expect(shapeOf(p, 'layers.0.feed_forward.w1.weight')).toEqual([10240, 3840]);
    expect(shapeOf(p, 'noise_refiner.1.adaLN_modulation.0.weight')).toEqual([15360, 256]);
    expect(shapeOf(p, 'context_refiner.0.attention.norm_q.weight')).toEqual([128]);
  });

  it("gemma3-text: Gemma 3 12B's text model (LTX-2's encoder) compiles at 1024 tokens with 11.77B parameters; 1025 tokens exceed its local window", () => {
    const p = compilePlan('gemma3-text', { component: 'text_encoder', dims: { batch: 1, textTokens: 1024 } });
    // embeddings 262208 x 3840 + 48 x (q/k/v/o, q/k norms, 4 norms, gated MLP) + the final norm
    expect(params(p)).toBe(11766034176);
    expect(shapeOf(p, 'model.layers.5.self_attn.q_proj.weight')).toEqual([4096, 3840]);
    expect(shapeOf(p, 'model.layers.47.post_feedforward_layernorm.weight')).toEqual([3840]);
    expect(() => compilePlan('gemma3-text', { component: 'text_encoder', dims: { batch: 1, textTokens: 1025 } })).toThrow(/1025 text tokens exceed sliding_window 1024/);
  });

  it('qwen-image: 60 dual-stream blocks (Pattern_1), 24x128 heads, 1024x1024 / 512 text tokens', () => {
    const p = compilePlan('qwen-image', { component: T });
    expect(p.tag).toBe('b1-h1024w1024-t512');
    expect(p.dims).toMatchObject({ imageTokens: 4096, textTokens: 512 });
    expect(p.inputs.map((i) => [i.name, i.shape])).toEqual([
      ['hidden_states', [1, 4096, 64]],
      ['encoder_hidden_states', [1, 512, 3584]],
      ['timestep', [1]],
      ['joint_attention_mask', [1, 4608]],
      ['txt_rope_ids', [512, 3]],
      ['img_rope_ids', [4096, 3]],
    ]);
    expect(p.outputs.map((o) => [o.name, o.shape])).toEqual([['output', [1, 4096, 64]]]);
    const seg = p.segments.find((s) => s.name === 'blocks')!;
    expect([seg.list, seg.pattern, seg.blocks!.length]).toEqual(['transformer_blocks', 1, 60]);
    // 9 embedding + 60 x 32 per block + 4 head tensors
    expect(p.weights.length).toBe(1933);
    expect(params(p)).toBe(20430401088);
    expect(shapeOf(p, 'img_in.weight')).toEqual([3072, 64]);
    expect(shapeOf(p, 'txt_norm.weight')).toEqual([3584]);
    expect(shapeOf(p, 'txt_in.weight')).toEqual([3072, 3584]);
    expect(shapeOf(p, 'time_text_embed.timestep_embedder.linear_1.weight')).toEqual([3072, 256]);
    expect(shapeOf(p, 'transformer_blocks.0.img_mod.1.weight')).toEqual([18432, 3072]);
    expect(shapeOf(p, 'transformer_blocks.59.attn.norm_added_k.weight')).toEqual([128]);
    expect(shapeOf(p, 'transformer_blocks.59.txt_mlp.net.0.proj.weight')).toEqual([12288, 3072]);
    expect(shapeOf(p, 'norm_out.linear.weight')).toEqual([6144, 3072]);
    expect(shapeOf(p, 'proj_out.weight')).toEqual([64, 3072]);
  });

  it.each([
    ['wan2.1-t2v-1.3b', 1536, 8960, 30, 825, 1418996800],
    ['wan2.1-t2v-14b', 5120, 13824, 40, 1095, 14288491584],
  ] as const)('%s: dim %d, ffn %d, %d blocks (Pattern_2), 81 frames of 480x832', (model, C, ffn, L, nWeights, nParams) => {
    const p = compilePlan(model, { component: T });
    expect(p.tag).toBe('b1-f81-h480w832-t512');
    expect(p.inputs.map((i) => [i.name, i.shape])).toEqual([
      ['hidden_states', [1, 16, 21, 60, 104]],
      ['timestep', [1]],
      ['encoder_hidden_states', [1, 512, 4096]],
      ['rope_ids', [21 * 30 * 52, 3]],
    ]);
    expect(p.outputs.map((o) => [o.name, o.shape])).toEqual([['output', [1, 16, 21, 60, 104]]]);
    const seg = p.segments.find((s) => s.name === 'blocks')!;
    expect([seg.list, seg.pattern, seg.blocks!.length]).toEqual(['blocks', 2, L]);
    expect(p.weights.length).toBe(nWeights);
    expect(params(p)).toBe(nParams);
    expect(shapeOf(p, 'patch_embedding.weight')).toEqual([C, 16, 1, 2, 2]);
    expect(shapeOf(p, 'condition_embedder.time_proj.weight')).toEqual([6 * C, C]);
    expect(shapeOf(p, 'condition_embedder.text_embedder.linear_1.weight')).toEqual([C, 4096]);
    expect(shapeOf(p, 'blocks.0.scale_shift_table')).toEqual([1, 6, C]);
    expect(shapeOf(p, `blocks.${L - 1}.attn1.norm_q.weight`)).toEqual([C]);
    expect(shapeOf(p, `blocks.${L - 1}.norm2.bias`)).toEqual([C]);
    expect(shapeOf(p, `blocks.${L - 1}.ffn.net.0.proj.weight`)).toEqual([ffn, C]);
    expect(shapeOf(p, 'scale_shift_table')).toEqual([1, 2, C]);
    expect(shapeOf(p, 'proj_out.weight')).toEqual([64, C]);
    expect(inspectModel(model)).toMatch(new RegExp(`blocks \\(blocks, ${L} blocks\\)\\s+Pattern_2`));
  });
});

describe('bad dims get a clear error', () => {
  it.each([
    ['qwen-image', { height: 1000 }, /qwen-image transformer: height 1000 is not valid: must be a multiple of 16/],
    ['qwen-image', { width: 24 }, /width 24 is not valid: must be a multiple of 16/],
    ['qwen-image', { textTokens: 5000 }, /textTokens 5000 is not valid: must be at most 4064/],
    ['wan2.1-t2v-1.3b', { frames: 80 }, /wan2.1-t2v-1.3b transformer: frames 80 is not valid: must be 4k\+1/],
    ['wan2.1-t2v-14b', { height: 488 }, /height 488 is not valid: must be a multiple of 16/],
    ['wan2.1-t2v-14b', { width: 100 }, /width 100 is not valid: must be a multiple of 16/],
    ['wan2.1-t2v-1.3b', { fps: 16 }, /unknown dim 'fps' \(valid dims: batch, frames, height, width, textTokens, imageEmbedTokens\)/],
  ] as const)('%s %j', (model, dims, re) => {
    expect(() => compilePlan(model, { component: T, dims: { ...dims } })).toThrow(re);
  });

  it('qwen-image: variants this file does not implement are refused, not traced as something else', () => {
    expect(() => compilePlan('qwen-image', { component: T, config: { zero_cond_t: true } })).toThrow(/config zero_cond_t=true is not supported/);
  });

  it('wan: a head dim WanRotaryPosEmbed cannot split into even axes is refused', () => {
    expect(() => compilePlan('wan2.1-t2v-1.3b', { component: T, config: { attention_head_dim: 15 } })).toThrow(/attention_head_dim 15 is not supported: WanRotaryPosEmbed needs an even head dim/);
  });
});
