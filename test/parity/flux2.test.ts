// FLUX.2 (models/flux2.ts) against diffusers' own Flux2Transformer2DModel: the released configs' parameter
// counts, a scaled-down random-weight model's output (references from test/parity/make-flux2-references.py,
// diffusers' float32 forward on CPU), the same plan vs onnxruntime on its ONNX export, and 2 / 3 ranks
// (Ulysses, TP with the fused projections split block by block, Ulysses x TP) == 1 rank.
// Tolerances: 1e-5 relative L2, the float32 bound of the other transformer checks (the same math, only the
// summation order of GEMMs and softmax differs from torch's).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, exportOnnx, inspectModel, type CompileOptions } from '../../compiler/index.ts';
import { dbCacheConfig, type DBCacheConfig } from '../../runtime/cache/config.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { TransformerCacheSession, type PipelineCacheResult } from '../../runtime/pipeline-cache.ts';
import type { Plan } from '../../runtime/plan.ts';
import { notRunnable, runNative, runOnnx } from '../helpers/run-plan.ts';
import { relL2, weightsMap } from '../helpers/safetensors-lite.ts';
import { expectRanksMatch, runRanks } from '../parallel/helpers.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/flux2-transformer-scaled');
const T = 'transformer' as const;
const params = (p: Plan): number => p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);
const shapeOf = (p: Plan, name: string): number[] | undefined => p.weights.find((w) => w.name === name)?.shape;

/** the reference script's scaled config: 2 dual + 2 single blocks, 3 heads x 16, 48x80 px (15 tokens), 7 text tokens, batch 2 */
const scaled = (guidance: boolean): CompileOptions => ({
  component: T,
  config: { num_layers: 2, num_single_layers: 2, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 4, 4, 4], joint_attention_dim: 40, in_channels: 20, out_channels: 7, timestep_guidance_channels: 32, guidance_embeds: guidance },
  dims: { batch: 2, height: 48, width: 80, textTokens: 7 },
});

function fixture(guidance: boolean): { plan: Plan; w: Map<string, Float32Array>; ins: Record<string, Float32Array>; want: Float32Array } {
  const plan = compilePlan('flux2-dev', scaled(guidance));
  const all = weightsMap(path.join(DIR, 'transformer.safetensors'));
  // the plan reads exactly diffusers' state dict (less the guidance embedder without guidance)
  expect(plan.weights.map((x) => x.name).sort()).toEqual([...all.keys()].filter((k) => guidance || !k.includes('guidance_embedder')).sort());
  for (const x of plan.weights) expect(all.get(x.name)!.length, x.name).toBe(x.shape.reduce((a, b) => a * b, 1));
  const w = new Map(plan.weights.map((x) => [x.name, all.get(x.name)!]));
  const io = weightsMap(path.join(DIR, `io-${guidance ? 'guidance' : 'plain'}.safetensors`));
  const ins = Object.fromEntries(plan.inputs.map((i) => [i.name, io.get(i.name)!]));
  return { plan, w, ins, want: io.get('output')! };
}

describe('FLUX.2 released configs', () => {
  const counted = JSON.parse(fs.readFileSync(path.join(DIR, 'params.json'), 'utf8')) as Record<string, number>;
  it.each([
    ['flux2-dev', 8, 48, 6144, 15360],
    ['flux2-klein-4b', 5, 20, 3072, 7680],
    ['flux2-klein-9b', 8, 24, 4096, 12288],
  ] as const)('%s: %d dual (Pattern_1) + %d single (Pattern_3) blocks, dim %d, text %d; parameters as diffusers counts them', (model, dual, single, C, text) => {
    const p = compilePlan(model, { component: T });
    expect(params(p)).toBe(counted[model]);
    const lists = p.segments.filter((s) => s.blocks).map((s) => [s.list, s.pattern, s.blocks!.length]);
    expect(lists).toEqual([
      ['transformer_blocks', 1, dual],
      ['single_transformer_blocks', 3, single],
    ]);
    expect(p.inputs.map((i) => [i.name, i.shape])).toEqual([
      ['hidden_states', [1, 4096, 128]],
      ['encoder_hidden_states', [1, 512, text]],
      ['timestep', [1]],
      ['img_ids', [4096, 4]],
      ['txt_ids', [512, 4]],
      ...(model === 'flux2-dev' ? [['guidance', [1]]] : []),
    ]);
    expect(shapeOf(p, 'single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight')).toEqual([3 * C + 6 * C, C]);
    expect(shapeOf(p, 'single_transformer_blocks.0.attn.to_out.weight')).toEqual([C, C + 3 * C]);
    expect(shapeOf(p, 'transformer_blocks.0.ff.linear_in.weight')).toEqual([6 * C, C]);
    expect(shapeOf(p, 'double_stream_modulation_img.linear.weight')).toEqual([6 * C, C]);
    expect(shapeOf(p, 'single_stream_modulation.linear.weight')).toEqual([3 * C, C]);
    expect(p.weights.some((w) => w.name.endsWith('.bias'))).toBe(false);
    expect(inspectModel(model)).toMatch(/single_transformer_blocks/);
  });
  it('the shipped counts agree with the published sizes (32B, 4B, 9B)', () => {
    expect(counted['flux2-dev']! / 1e9).toBeCloseTo(32.2, 1);
    expect(counted['flux2-klein-4b']! / 1e9).toBeCloseTo(3.9, 1);
    expect(counted['flux2-klein-9b']! / 1e9).toBeCloseTo(9.1, 1);
  });
});

describe('FLUX.2 TP lowering: the fused projections split block by block (PackedColwiseParallel)', () => {
  it('3 heads of 16 and an MLP of 144 over 2 ranks: each of q, k, v, gate, up gives rank 0 two heads / 5 units, rank 1 the rest', () => {
    const plans = compileParallelPlans('flux2-dev', { ...scaled(true), parallel: { tp_size: 2 } });
    const slice = (r: number, name: string) => plans[r]!.weights.find((w) => w.name === name)!.slice!;
    const qkv = 'single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight';
    expect(slice(0, qkv)).toEqual({ full: [432, 48], axis: 0, ranges: [[0, 32], [48, 32], [96, 32], [144, 80], [288, 80]] });
    expect(slice(1, qkv).ranges).toEqual([[32, 16], [80, 16], [128, 16], [224, 64], [368, 64]]);
    // to_out takes the rank's attention columns, then its MLP columns
    expect(slice(1, 'single_transformer_blocks.0.attn.to_out.weight')).toEqual({ full: [48, 192], axis: 1, ranges: [[32, 16], [128, 64]] });
    // the dual blocks' SwiGLU halves reach no per-head op: split by channels, 72 + 72 of each
    expect(slice(1, 'transformer_blocks.1.ff_context.linear_in.weight').ranges).toEqual([[72, 72], [216, 72]]);
  });
});

describe.skipIf(!nativeAvailable())('scaled-down FLUX.2 vs diffusers Flux2Transformer2DModel', () => {
  it.each([true, false])('guidance embedding %s: native and onnxruntime within 1e-5 of diffusers', async (guidance) => {
    const { plan, w, ins, want } = fixture(guidance);
    expect(notRunnable(plan)).toBeNull();
    const nat = runNative(plan, w, ins).output!;
    const e = relL2(nat, want);
    const onnx = (await runOnnx(exportOnnx('flux2-dev', { ...scaled(guidance), weights: w }), plan, ins)).output!;
    const eo = relL2(onnx, want);
    console.log(`flux2 scaled (guidance ${guidance}): rel L2 native ${e.toExponential(2)}, onnxruntime ${eo.toExponential(2)} vs diffusers`);
    expect(e).toBeLessThan(1e-5);
    expect(eo).toBeLessThan(1e-5);
  });

  it('Ulysses 2 / 3 (uneven tokens, 3 heads; async at 3), TP 2 / 3 (packed to_qkv_mlp_proj and linear_in split block by block), Ulysses 2 x TP 3 == 1 rank', async () => {
    const { plan, w, ins } = fixture(true);
    const want = runNative(plan, w, ins, 1).output!;
    for (const parallel of [{ ulysses_size: 2, ulysses_anything: true }, { ulysses_size: 3, ulysses_anything: true, ulysses_async: true }, { tp_size: 2 }, { tp_size: 3 }, { ulysses_size: 2, tp_size: 3, ulysses_anything: true }]) {
      const plans = compileParallelPlans('flux2-dev', { ...scaled(true), parallel });
      expectRanksMatch(await runRanks(plans, w, ins), want, `flux2 scaled ${JSON.stringify(parallel)}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('FLUX.2 under DBCache: two block lists, two contexts (Cache-DiT [Pattern_1, Pattern_3])', () => {
  /** 8 steps of x <- x - 0.1 v (a toy sampler) with a falling timestep; returns every step's output and the session's result */
  async function loop(cache: DBCacheConfig | null): Promise<{ outs: Float32Array[]; res: PipelineCacheResult }> {
    const { plan, w, ins } = fixture(true);
    const ex = new native.Executor(JSON.stringify(plan), { threads: 1 });
    for (const x of plan.weights) ex.bindWeight(x.name, w.get(x.name)!);
    const session = new TransformerCacheSession(native, { cache }, { steps: 8, separateCfg: false });
    const x = Float32Array.from(ins.hidden_states!);
    const outs: Float32Array[] = [];
    for (let s = 0; s < 8; s++) {
      for (const [k, v] of Object.entries(ins)) ex.setInput(k, k === 'hidden_states' ? x : k === 'timestep' ? v.map((t) => t * (1 - s / 8)) : v);
      await session.forward(plan, ex);
      const out = new Float32Array(plan.outputs[0]!.shape.reduce((a, b) => a * b, 1));
      ex.getOutput('output', out);
      // the scaled model has 7 output channels for its 20 input ones: the update reuses them cyclically
      for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i]! - 0.1 * out[i % out.length]!);
      outs.push(out);
    }
    return { outs, res: session.result() };
  }

  it('each list decides on its own residual diff; threshold 0 caches nothing and equals the uncached run bit for bit', async () => {
    const plain = await loop(null);
    const exact = await loop(dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0, max_warmup_steps: 0 }));
    expect(exact.res.summary.map((s) => s.name)).toEqual(['blocks:transformer_blocks', 'blocks:single_transformer_blocks']);
    expect(exact.res.summary.map((s) => s.cached_steps)).toEqual([[], []]);
    exact.outs.forEach((o, s) => expect(relL2(o, plain.outs[s]!), `step ${s}`).toBe(0));
    // a threshold between the two lists' diffs: the dual list caches a step the single list computes
    const mid = (await loop(dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.8, max_warmup_steps: 2 }))).res.summary;
    const loose = await loop(dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 10, max_warmup_steps: 2 }));
    console.log(`flux2 scaled DBCache F1B0 cached steps (dual / single): rdt 0.8 ${JSON.stringify(mid.map((s) => s.cached_steps))}, rdt 10 ${JSON.stringify(loose.res.summary.map((s) => s.cached_steps))}`);
    expect(mid[0]!.cached_steps).not.toEqual(mid[1]!.cached_steps);
    expect(loose.res.summary.map((s) => s.cached_steps)).toEqual([[2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]]);
    // a cached list runs only its first block (F1B0): 2 warmup steps run all 4 blocks, 6 cached steps run 2
    expect(loose.res.blocksRun).toBe(2 * 4 + 6 * 2);
  });
});
