// LoRA adapters (diffusers / peft format) fused into the transformer's weights at load: a random low-rank
// adapter on tiny-flux gives the output of a checkpoint whose weights were merged here in float64
// (W + scale * alpha / r * B A), on one rank and on two (TP: every rank slices the fused weights); adapter
// keys it cannot use are errors naming the file and the key.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, compileRequest, requestOptions } from '../../compiler/index.ts';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { LoraLibrary } from '../../runtime/lora.ts';
import { loadPipeline, PACKAGE_ROOT } from '../../runtime/pipeline.ts';
import { generateParallel } from '../../runtime/pipeline-parallel.ts';
import { makeLora } from '../helpers/lora.ts';
import { expectRanksMatch, inputsFor, randomW, runOneRank, runRanks } from '../parallel/helpers.ts';

const TINY = path.join(PACKAGE_ROOT, 'models', 'tiny-flux');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-lora-'));
const PROMPT = 'a large red circle at the center on a black background';
const TARGETS = ['transformer_blocks.0.attn.to_q', 'transformer_blocks.1.ff.net.0.proj', 'single_transformer_blocks.0.proj_out'];
const RANK = 3;
const ALPHA = 6;
const SCALE = 0.7;

/** a copy of tiny-flux whose transformer checkpoint holds the merged weights */
function mergedCopy(merged: Map<string, Float32Array>): string {
  const dir = path.join(tmp, 'tiny-flux-merged');
  fs.cpSync(TINY, dir, { recursive: true, dereference: true });
  const file = path.join(dir, 'transformer', 'diffusion_pytorch_model.safetensors');
  const st = openSafetensorsSync(file);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const n of st.names()) tensors[n] = { dtype: 'F32', shape: st.tensor(n).shape, data: merged.get(n) ?? Float32Array.from(st.tensor(n).data) };
  fs.rmSync(file);
  writeSafetensors(file, tensors);
  return dir;
}

describe.skipIf(!nativeAvailable())('LoRA (diffusers / peft format) fused at load', () => {
  const { file, merged } = makeLora(tmp, { targets: TARGETS, rank: RANK, alpha: ALPHA, scale: SCALE, seed: 11 });
  const lora = [{ path: file, scale: SCALE }];
  const opts = { prompt: PROMPT, steps: 6, seed: 5 };

  it('== the float64-merged checkpoint on 1 rank (and differs from no LoRA), and on 2 TP ranks', async () => {
    const withLora = await (await loadPipeline('tiny-flux', { threads: 1, lora })).generate(opts);
    const ref = await (await loadPipeline(mergedCopy(merged), { threads: 1 })).generate(opts);
    const plain = await (await loadPipeline('tiny-flux', { threads: 1 })).generate(opts);
    const e = relL2(withLora.latents, ref.latents);
    console.log(`tiny-flux + LoRA (r ${RANK}, alpha ${ALPHA}, scale ${SCALE}) vs merged weights: latents relL2 ${e.toExponential(2)}; vs no LoRA ${relL2(withLora.latents, plain.latents).toExponential(2)}`);
    expect(e).toBeLessThan(1e-5);
    expect(relL2(withLora.latents, plain.latents)).toBeGreaterThan(1e-3);
    const tp = await generateParallel('tiny-flux', { ...opts, world: 2, parallel: 'tp', threads: 1, lora, parallelPlanProvider: (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel }) });
    expect(relL2(tp.latents, withLora.latents)).toBeLessThan(1e-5);
    // two adapters of one module are summed: the file twice at half the scale is the file once
    const halves = await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: file, scale: SCALE / 2 }, { path: file, scale: SCALE / 2 }] })).generate(opts);
    expect(relL2(halves.latents, withLora.latents)).toBeLessThan(1e-5);
  });

  it('switches between generations: setLoras / generate({ lora }) give exactly a fresh load with those adapters, [] exactly none', async () => {
    const fresh = await (await loadPipeline('tiny-flux', { threads: 1, lora })).generate(opts);
    const plain = await (await loadPipeline('tiny-flux', { threads: 1 })).generate(opts);
    const pipe = await loadPipeline('tiny-flux', { threads: 1 });
    expect(relL2((await pipe.generate(opts)).latents, plain.latents)).toBe(0);
    await pipe.setLoras(lora);
    const t0 = performance.now();
    expect(relL2((await pipe.generate(opts)).latents, fresh.latents)).toBe(0);
    console.log(`LoRA switch + generate: ${(performance.now() - t0).toFixed(0)} ms`);
    // a per-call lora stays in effect; [] restores the checkpoint's own weights
    expect(relL2((await pipe.generate({ ...opts, lora: [] })).latents, plain.latents)).toBe(0);
    expect(relL2((await pipe.generate({ ...opts, lora })).latents, fresh.latents)).toBe(0);
    expect(pipe.loras).toEqual(lora);
    // a bad adapter changes nothing: the one before stays in effect
    const f = path.join(tmp, 'bad-switch.safetensors');
    writeSafetensors(f, { 'transformer.transformer_blocks.0.attn.to_q.lora_A.weight': { dtype: 'F32', shape: [2, 7], data: new Float32Array(14).fill(0.1) }, 'transformer.transformer_blocks.0.attn.to_q.lora_B.weight': { dtype: 'F32', shape: [64, 2], data: new Float32Array(128).fill(0.1) } });
    await expect(pipe.setLoras([{ path: f }])).rejects.toThrow(/bad-switch\.safetensors: module "transformer_blocks\.0\.attn\.to_q": the adapter is \[64, 7\]/);
    expect(pipe.loras).toEqual(lora);
    expect(relL2((await pipe.generate(opts)).latents, fresh.latents)).toBe(0);
  });

  it('LoraLibrary: read once, least recently used out, read again when the file changes', () => {
    const lib = new LoraLibrary(2);
    const copies = ['a', 'b', 'c'].map((n) => {
      const f = path.join(tmp, `lib-${n}.safetensors`);
      fs.copyFileSync(file, f);
      return f;
    });
    const a = lib.get(copies[0]!);
    expect(lib.get(copies[0]!)).toBe(a);
    lib.get(copies[1]!);
    lib.get(copies[0]!);
    lib.get(copies[2]!);
    expect(lib.loaded().map((p) => path.basename(p))).toEqual(['lib-a.safetensors', 'lib-c.safetensors']);
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(copies[0]!, later, later);
    expect(lib.get(copies[0]!)).not.toBe(a);
    expect(() => lib.get(path.join(tmp, 'nope.safetensors'))).toThrow(/--lora-path .*nope\.safetensors: no such file/);
    expect(() => new LoraLibrary(0)).toThrow(/--max-loras must be an integer >= 1/);
  });

  it('errors name the file and the key', async () => {
    const bad = (tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>, name: string) => {
      const f = path.join(tmp, name);
      writeSafetensors(f, tensors);
      return loadPipeline('tiny-flux', { threads: 1, lora: [{ path: f }] }).then((p) => p.generate({ prompt: PROMPT, steps: 1 }));
    };
    const t = (shape: number[]) => ({ dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.1) });
    await expect(bad({ 'transformer.transformer_blocks.0.attn.to_q.lora_A.weight': t([2, 64]) }, 'half.safetensors')).rejects.toThrow(/half\.safetensors: module "transformer_blocks\.0\.attn\.to_q" has lora_A but no lora_B/);
    await expect(bad({ 'transformer.no_such.lora_A.weight': t([2, 64]), 'transformer.no_such.lora_B.weight': t([64, 2]) }, 'unknown.safetensors')).rejects.toThrow(/unknown\.safetensors: LoRA module "no_such" has no weight "no_such\.weight"/);
    await expect(bad({ 'transformer.transformer_blocks.0.attn.to_q.lora_A.weight': t([2, 7]), 'transformer.transformer_blocks.0.attn.to_q.lora_B.weight': t([64, 2]) }, 'shape.safetensors')).rejects.toThrow(/shape\.safetensors: module "transformer_blocks\.0\.attn\.to_q": the adapter is \[64, 7\]/);
    await expect(bad({ 'text_encoder.x.weight': t([2, 2]) }, 'other.safetensors')).rejects.toThrow(/other\.safetensors: key "text_encoder\.x\.weight" is not a LoRA tensor/);
    await expect(loadPipeline('tiny-flux', { lora: [{ path: path.join(tmp, 'missing.safetensors') }] })).rejects.toThrow(/--lora-path .*missing\.safetensors/);
  });
});

describe.skipIf(!nativeAvailable())('unfused LoRA (fuseLora: false, --disable-fuse-lora): low-rank branches beside the base weights', () => {
  const { file } = makeLora(tmp, { targets: TARGETS, rank: RANK, alpha: ALPHA, scale: SCALE, seed: 11 });
  const { file: other } = makeLora(tmp, { targets: TARGETS, rank: RANK, alpha: ALPHA, scale: SCALE, seed: 23, name: 'lora-second.safetensors' });
  const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);
  const opts = { prompt: PROMPT, steps: 6, seed: 5 };
  // the same math in another order (the branch's two small GEMMs beside the base GEMM instead of one merged weight): float32 rounding only
  const TOL = 1e-5;

  it('== the fused adapters; a switch to another file of the same shape binds only the branches; [] is the base model exactly', async () => {
    const fused = await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: file, scale: SCALE }] })).generate(opts);
    const pipe = await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: file, scale: SCALE }], fuseLora: false, planProvider });
    const e = relL2((await pipe.generate(opts)).latents, fused.latents);
    console.log(`tiny-flux unfused LoRA (r ${RANK}) vs fused: latents relL2 ${e.toExponential(2)}`);
    expect(e).toBeLessThan(TOL);
    const plans = () => pipe.executorPlans().filter((p) => p.component === 'transformer');
    expect(plans()).toHaveLength(1);
    expect(plans()[0]!.weights.filter((w) => w.name.endsWith('.lora_A.weight')).map((w) => w.name).sort()).toEqual(TARGETS.map((t) => `${t}.lora_A.weight`).sort());
    await pipe.setLoras([{ path: other, scale: 0.4 }]);
    const fusedOther = await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: other, scale: 0.4 }] })).generate(opts);
    expect(relL2((await pipe.generate(opts)).latents, fusedOther.latents)).toBeLessThan(TOL);
    // the same modules and ranks: the one branch plan serves both adapters
    expect(plans()).toHaveLength(1);
    await pipe.setLoras([]);
    const plain = await (await loadPipeline('tiny-flux', { threads: 1 })).generate(opts);
    expect(relL2((await pipe.generate(opts)).latents, plain.latents)).toBe(0);
    // back to the first file: its branch plan again, bound anew
    await pipe.setLoras([{ path: file, scale: SCALE }]);
    expect(relL2((await pipe.generate(opts)).latents, fused.latents)).toBeLessThan(TOL);
    // another rank: a plan of its own; then the first shape again with the second file's values
    const { file: rank2 } = makeLora(tmp, { targets: TARGETS.slice(0, 2), rank: 2, alpha: 2, scale: 1, seed: 31, name: 'lora-rank2.safetensors' });
    await pipe.setLoras([{ path: rank2 }]);
    const fusedRank2 = await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: rank2 }] })).generate(opts);
    expect(relL2((await pipe.generate(opts)).latents, fusedRank2.latents)).toBeLessThan(TOL);
    // the base plan (no adapter), the rank-3 branches, the rank-2 ones
    expect(plans()).toHaveLength(3);
    await pipe.setLoras([{ path: other, scale: 0.4 }]);
    expect(relL2((await pipe.generate(opts)).latents, fusedOther.latents)).toBeLessThan(TOL);
  });

  it('TP lowering of the branches: B sliced as a colwise weight, A as a rowwise one; 2 ranks == 1 rank', async () => {
    const lb = { 'transformer_blocks.0.attn.to_q': 3, 'transformer_blocks.0.attn.to_out.0': 2, 'single_transformer_blocks.0.proj_out': 4 };
    const o = { component: 'transformer' as const, config: { lora_branches: lb } };
    const ref = compilePlan('tiny-flux', o);
    const w = randomW(ref, 7);
    const inputs = inputsFor(ref, 8);
    const want = runOneRank(ref, w, inputs);
    const plans = compileParallelPlans('tiny-flux', { ...o, parallel: { tp_size: 2 } });
    expect(plans[1]!.weights.find((x) => x.name === 'transformer_blocks.0.attn.to_q.lora_B.weight')!.slice).toEqual({ full: [128, 3], axis: 0, ranges: [[64, 64]] });
    expect(plans[1]!.weights.find((x) => x.name === 'transformer_blocks.0.attn.to_out.0.lora_A.weight')!.slice).toEqual({ full: [2, 128], axis: 1, ranges: [[64, 64]] });
    expectRanksMatch(await runRanks(plans, w, inputs), want, 'tiny-flux unfused LoRA branches tp=2');
  });

  it('--disable-fuse-lora with several ranks is a clear error', async () => {
    await expect(loadPipeline('tiny-flux', { fuseLora: false, rank: { comm: null as never, plans: {} } })).rejects.toThrow(/--disable-fuse-lora runs on one rank here/);
  });
});
