// Tensor-parallel lowering (compiler/passes/tp-lower.ts) + per-rank execution (runtime/parallel/executor.ts
// `comm.all_reduce`, weight slices): plan format, compile-time errors, and 2/3/4 ranks (shm coroutines)
// == the 1-rank plan. Tolerance 1e-5 rel L2: TP changes only the summation order of the row-parallel
// GEMMs (K split into tp partial sums, added in rank order) in float32; everything else is the same math.
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { tpShare } from '../../compiler/passes/tp-lower.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { openSafetensors } from '../../runtime/io/safetensors.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import { ParallelBlockListRunner } from '../../runtime/parallel/cache.ts';
import { videoRopeIds } from '../../runtime/latents.ts';
import { runNative } from '../helpers/run-plan.ts';
import { relL2 } from '../../runtime/metrics.ts';
import type { Plan } from '../../runtime/plan.ts';
import { dbCacheConfig } from '../../runtime/cache/index.ts';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { FLUX_SCALED, cacheLoop, cacheLoopOneRank, inputsFor, randomW, runOneRank, runRanks, tinyFluxWeights, expectRanksMatch } from './helpers.ts';

const T = 'transformer' as const;

/** whether two plan tensors share arena floats */
function overlaps(p: Plan, a: number, b: number): boolean {
  const x = p.tensors.find((t) => t.id === a);
  const y = p.tensors.find((t) => t.id === b);
  return !!x && !!y && x.base === 'arena' && y.base === 'arena' && x.offset < y.offset + y.numel && y.offset < x.offset + x.numel;
}

describe('TP lowering: plan format and compile-time errors', () => {
  it('per-rank plans: sliced weights, all-reduce after every rowwise linear, all-gathered adaLN', () => {
    const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 2 } });
    expect(plans).toHaveLength(2);
    const [p0, p1] = plans as [(typeof plans)[0], (typeof plans)[0]];
    expect(p1.parallel).toMatchObject({ kind: 'tp', world: 2, rank: 1, tp: 2, ulysses: 1, ring: 1, split: {}, gather: {} });
    expect(p1.tag).toMatch(/-tp2r1$/);
    const w = (p: typeof p0, n: string) => p.weights.find((x) => x.name === n);
    // colwise: rows of the rank
    expect(w(p1, 'transformer_blocks.0.attn.to_q.weight')).toMatchObject({ shape: [64, 128], slice: { full: [128, 128], axis: 0, ranges: [[64, 64]] } });
    expect(w(p1, 'transformer_blocks.0.attn.to_q.bias')).toMatchObject({ shape: [64], slice: { full: [128], axis: 0, ranges: [[64, 64]] } });
    // rowwise: columns of the rank, bias on rank 0 only
    expect(w(p1, 'transformer_blocks.0.ff.net.2.weight')).toMatchObject({ shape: [128, 256], slice: { full: [128, 512], axis: 1, ranges: [[256, 256]] } });
    expect(w(p0, 'transformer_blocks.0.ff.net.2.bias')!.slice).toBeUndefined();
    expect(w(p1, 'transformer_blocks.0.ff.net.2.bias')).toBeUndefined();
    // FLUX single block proj_out: input columns [attn shard | mlp shard] of the rank
    expect(w(p1, 'single_transformer_blocks.0.proj_out.weight')).toMatchObject({ shape: [128, 320], slice: { full: [128, 640], axis: 1, ranges: [[64, 64], [128 + 256, 256]] } });
    // colwise_replicate (adaLN): the rank's rows, then the channels all-gathered over the TP group
    expect(w(p1, 'transformer_blocks.0.norm1.linear.weight')).toMatchObject({ shape: [384, 128], slice: { full: [768, 128], axis: 0, ranges: [[384, 384]] } });
    const ag = p1.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops.filter((o) => o.k === 'comm.all_gather_tp');
    expect(ag.map((o) => [o.i, o.comm!.sizes])).toEqual([
      [[1, 384, 1], [384, 384]],
      [[1, 384, 1], [384, 384]],
    ]); // norm1 and norm1_context
    // outside the plan (embedders, norm_out, proj_out): full weights
    expect(w(p1, 'x_embedder.weight')!.slice).toBeUndefined();
    // dual block: 4 all-reduces (to_out, to_add_out, ff, ff_context); attention on the rank's 2 heads
    const dual = p1.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
    const ars = dual.filter((o) => o.k === 'comm.all_reduce');
    expect(ars).toHaveLength(4);
    expect(ars[0]!.comm).toMatchObject({ group: 'tp', module: 'transformer_blocks.0' });
    expect(dual.find((o) => o.k === 'attention')!.i.slice(3, 5)).toEqual([2, 32]);
    const single = p1.segments.find((s) => s.name === 'blocks')!.blocks![2]!.ops;
    expect(single.filter((o) => o.k === 'comm.all_reduce')).toHaveLength(1);
    // the gated residual applies after the reduce: no rowwise GEMM carries epilogue 3
    for (const b of p1.segments.find((s) => s.name === 'blocks')!.blocks!) {
      b.ops.forEach((o, j) => {
        if (o.k === 'comm.all_reduce') expect(b.ops[j - 1]!.k === 'linear' && b.ops[j - 1]!.i[3]).toBe(0);
      });
    }
    expect(p1.kernels.some((k) => k.startsWith('comm.'))).toBe(false);
  });

  it('Ulysses x TP plan format: Ulysses comm ops over H/tp heads, all-reduces, rank mapping', () => {
    const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, tp_size: 2 } });
    expect(plans).toHaveLength(4);
    expect(plans.map((p) => [p.parallel!.rank, p.parallel!.kind, p.parallel!.ulysses, p.parallel!.tp])).toEqual([[0, 'ulysses', 2, 2], [1, 'ulysses', 2, 2], [2, 'ulysses', 2, 2], [3, 'ulysses', 2, 2]]);
    expect(plans[3]!.tag).toMatch(/-u2tp2r3$/);
    // rank 3 = ulysses rank 1, tp rank 1: the second half of the tokens, the second half of q's rows
    expect(plans[3]!.inputs.find((i) => i.name === 'hidden_states')!.shape).toEqual([1, 8, 16]);
    expect(plans[3]!.weights.find((w) => w.name === 'transformer_blocks.0.attn.to_q.weight')!.slice!.ranges).toEqual([[64, 64]]);
    const ops = plans[3]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
    expect(ops.find((o) => o.k === 'comm.all_to_all_qkv')!.comm).toMatchObject({ group: 'ulysses', hLocal: 1, hReal: 1 });
    expect(ops.find((o) => o.k === 'comm.all_to_all_qkv')!.i.slice(0, 3)).toEqual([1, 2, 32]); // B, H/tp heads, D
    expect(ops.filter((o) => o.k === 'comm.all_reduce')).toHaveLength(4);
  });

  it('async Ulysses x TP: issues after their producers, no TP collective while an all-to-all is in flight, one collective order per group', () => {
    for (const [model, extra, par] of [
      ['tiny-flux', {}, { ulysses_size: 2, tp_size: 2 }],
      ['flux1-dev', FLUX_SCALED, { ulysses_size: 2, tp_size: 3, ulysses_anything: 'auto' as const }],
    ] as const) {
      const plans = compileParallelPlans(model, { component: T, ...extra, parallel: { ...par, ulysses_async: true } });
      const Tp = par.tp_size;
      const seqs = plans.map((p) => {
        expect(p.parallel).toMatchObject({ kind: 'ulysses', async: true, tp: Tp });
        const seq: { cp: string[]; tp: string[] } = { cp: [], tp: [] };
        for (const b of p.segments.find((s) => s.name === 'blocks')!.blocks!) {
          const inFlight = new Set<string>(); // cp-group all-to-alls issued without waiting
          b.ops.forEach((o, j) => {
            if (o.k === 'comm.wait') return inFlight.clear();
            if (!o.k.startsWith('comm.')) return;
            const tp = o.comm!.group === 'tp';
            (tp ? seq.tp : seq.cp).push(`${o.k}:${o.comm!.stream}:${o.comm!.module}`);
            if (tp) expect([...inFlight], `${p.tag} ${b.name} op ${j} ${o.k}`).toEqual([]);
            else if (!o.comm!.wait) {
              inFlight.add(o.comm!.stream);
              // q / k / v issued right after the op that wrote them (a view of the same arena floats)
              if (o.k === 'comm.all_to_all_qkv') expect(b.ops[j - 1]!.t.some((id) => overlaps(p, id, o.t[0]!)), `${p.tag} ${b.name} op ${j}`).toBe(true);
            }
          });
          expect(b.ops.some((o) => o.k === 'comm.all_to_all_qkv' && o.comm!.wait)).toBe(false);
          // single blocks: the rank's proj_mlp shard computes while the output all-to-all is in flight
          if (b.name.startsWith('single_')) {
            const ks = b.ops.map((o) => o.k);
            const iO = ks.indexOf('comm.all_to_all_o');
            expect(ks.slice(iO + 1, iO + 3), `${p.tag} ${b.name}`).toEqual(['linear', 'comm.wait']);
            expect(b.ops[iO + 1]!.t).toContain(p.weights.find((x) => x.name === `${b.name}.proj_mlp.weight`)!.tensor);
          }
        }
        return seq;
      });
      // ranks c*T + t: the cp group {t, T + t, ..} and the tp group {c*T, ..} issue identical sequences
      plans.forEach((_, r) => {
        expect(seqs[r]!.cp).toEqual(seqs[r % Tp]!.cp);
        expect(seqs[r]!.tp).toEqual(seqs[r - (r % Tp)]!.tp);
      });
      expect(seqs[0]!.tp.length).toBeGreaterThan(0);
    }
  });

  it('uneven shares: whole units, the first ranks one more', () => {
    expect([0, 1].map((r) => tpShare(48, 16, 2, r))).toEqual([[0, 32], [32, 16]]);
    expect([0, 1, 2].map((r) => tpShare(64, 16, 3, r))).toEqual([[0, 32], [32, 16], [48, 16]]);
    expect([0, 1, 2].map((r) => tpShare(256, 1, 3, r))).toEqual([[0, 86], [86, 85], [171, 85]]);
    expect([0, 1].map((r) => tpShare(96, 1, 2, r))).toEqual([[0, 48], [48, 48]]);
  });

  it('impossible plans are compile-time errors naming the module', () => {
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 5 } })).toThrow(
      /tiny-flux transformer: tensor parallel: transformer_blocks\.0 attention \(models\/flux1\.ts:\d+:\d+\) has 4 heads, fewer than tp_size 5/,
    );
    // a CP x TP hybrid keeps Cache-DiT's rule: tp_size divides the heads
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 3, ulysses_size: 2, ulysses_anything: true } })).toThrow(/has 4 heads, not divisible by tp_size 3, which a CP x TP hybrid needs/);
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 2, tp: { 'transformer_blocks.*.attn.to_q': 'colwise' } } })).toThrow(
      /tensor parallel \(tp_size 2\): concat on a rank trace where 1 of its inputs are channel-sharded .*models\/flux1\.ts:\d+:\d+: concat on axis 1/,
    );
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 2, tp: { 'transformer_blocks.*.ff.net.2': 'rowwise' } } })).toThrow(
      /rowwise linear 'transformer_blocks\.0\.ff\.net\.2' takes a replicated input/,
    );
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: 2, tp: { x: 'sideways' as never } } })).toThrow(/style 'sideways'; valid: colwise, rowwise, colwise_replicate/);
  });
});

describe.skipIf(!nativeAvailable())('TP ranks (shm) reproduce the 1-rank transformer', () => {
  it('tiny-flux (trained weights): tp 2 and 4', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 5);
    const want = runOneRank(ref, w, inputs);
    for (const tp of [2, 4]) {
      const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { tp_size: tp } });
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `tiny-flux tp=${tp}`, { bytes: true });
      for (const o of outs) expect(Array.from(o.out)).toEqual(Array.from(outs[0]!.out)); // replicated, bit-identical
    }
  });

  it('scaled-down flux1-dev (random weights, guidance, 6 heads): tp 2 and 3', async () => {
    const ref = compilePlan('flux1-dev', { component: T, ...FLUX_SCALED });
    const w = randomW(ref, 11);
    const inputs = inputsFor(ref, 12);
    const want = runOneRank(ref, w, inputs);
    for (const tp of [2, 3]) {
      const outs = await runRanks(compileParallelPlans('flux1-dev', { component: T, ...FLUX_SCALED, parallel: { tp_size: tp } }), w, inputs);
      expectRanksMatch(outs, want, `flux1-dev scaled tp=${tp}`);
    }
  });

  it('scaled-down qwen-image (joint key mask, random weights): tp 2', async () => {
    const QW = { config: { num_layers: 2, num_attention_heads: 4, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, in_channels: 20, out_channels: 5 }, dims: { height: 80, width: 48, textTokens: 7 } };
    const ref = compilePlan('qwen-image', { component: T, ...QW });
    const w = randomW(ref, 3);
    const inputs = inputsFor(ref, 4);
    const m = inputs.joint_attention_mask!;
    m.fill(1);
    m[5] = 0;
    m[6] = 0;
    const want = runOneRank(ref, w, inputs);
    const outs = await runRanks(compileParallelPlans('qwen-image', { component: T, ...QW, parallel: { tp_size: 2 } }), w, inputs);
    expectRanksMatch(outs, want, 'qwen-image scaled tp=2');
  });
});

describe.skipIf(!nativeAvailable())('TE-P: the tiny-flux text encoder over 2 / 4 ranks == 1 rank', () => {
  it('per-rank plans from the component TP plan, 3 ranks splitting 4 heads 2 + 1 + 1; outputs within 1e-5; 5 ranks (4 heads) is an error', async () => {
    const f = await openSafetensors('models/tiny-flux/text_encoder/model.safetensors');
    const w = new Map(f.names().map((n) => [n, f.tensor(n).data]));
    const TE = 'text_encoder' as const;
    const ref = compilePlan('tiny-flux', { component: TE });
    const inputs = inputsFor(ref, 9);
    // token ids in the vocabulary, a padded tail (mask 0)
    inputs.input_ids = Float32Array.from({ length: 12 }, (_, i) => (i < 9 ? 2 + ((i * 7) % 29) : 0));
    inputs.attention_mask = Float32Array.from({ length: 12 }, (_, i) => (i < 9 ? 1 : 0));
    const want = runNative(ref, w, inputs, 1);
    for (const tp of [2, 3, 4]) {
      const plans = compileParallelPlans('tiny-flux', { component: TE, parallel: { tp_size: tp } });
      // rank 1's heads: 4 heads of 16 channels split in whole heads (3 ranks: heads 2 | 1 | 1)
      expect(plans[1]!.weights.find((x) => x.name === 'layers.0.self_attn.q_proj.weight')!.slice).toEqual({ full: [64, 64], axis: 0, ranges: [tp === 3 ? [32, 16] : [64 / tp, 64 / tp]] });
      expect(plans[0]!.segments[0]!.ops!.filter((o) => o.k === 'comm.all_reduce')).toHaveLength(4); // out_proj + fc2, 2 layers
      const outs = await runShm(tp, async (comm) => {
        const pe = new ParallelExecutor(comm, plans[comm.rank]!, native, { threads: 1 });
        for (const x of pe.plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
        for (const [k, v] of Object.entries(inputs)) pe.setInput(k, v);
        await pe.forward();
        return { h: await pe.output('encoder_hidden_states'), p: await pe.output('pooled_projections') };
      });
      const errs = outs.map((o) => [relL2(o.h, want.encoder_hidden_states!), relL2(o.p, want.pooled_projections!)]);
      console.log(`TE-P tp=${tp}: relL2 ${errs.map((e) => e.map((x) => x.toExponential(2)).join('/')).join(' ')}`);
      for (const e of errs.flat()) expect(e).toBeLessThan(1e-5);
    }
    expect(() => compileParallelPlans('tiny-flux', { component: TE, parallel: { tp_size: 5 } })).toThrow(/tiny-flux text_encoder: tensor parallel: forward attention \(models\/tiny-flux-text-encoder\.ts:\d+:\d+\) has 4 heads, fewer than tp_size 5/);
  });
});

describe.skipIf(!nativeAvailable())('TP on Wan 2.1 (norm_q / norm_k over all heads: distributed RMSNorm)', () => {
  it('scaled-down wan2.1-t2v-1.3b (random weights, batch 2, self + cross attention): tp 2, tp 4, ulysses 2 x tp 2 (sync, async) == 1 rank', async () => {
    const WAN = { config: { num_layers: 2, num_attention_heads: 4, attention_head_dim: 24, ffn_dim: 96, text_dim: 40, freq_dim: 32, in_channels: 5, out_channels: 3 }, dims: { batch: 2, frames: 9, height: 48, width: 80, textTokens: 7 } };
    const ref = compilePlan('wan2.1-t2v-1.3b', { component: T, ...WAN });
    const w = randomW(ref, 21);
    const inputs = inputsFor(ref, 22);
    const d = ref.dims;
    inputs.rope_ids = videoRopeIds(d.tokensF!, d.tokensH!, d.tokensW!);
    inputs.timestep = Float32Array.of(120, 870);
    const want = runOneRank(ref, w, inputs);
    for (const tp of [2, 4]) {
      const plans = compileParallelPlans('wan2.1-t2v-1.3b', { component: T, ...WAN, parallel: { tp_size: tp } });
      const blk = plans[1]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
      // norm_q / norm_k of attn1 and attn2: native sums of squares, a float64 all-reduce of the [M] sums, native apply
      const ks = blk.map((o) => o.k);
      expect(ks.filter((k) => k === 'rms_sumsq')).toHaveLength(4);
      ks.forEach((k, j) => {
        if (k !== 'rms_sumsq') return;
        expect(ks.slice(j, j + 3)).toEqual(['rms_sumsq', 'comm.all_reduce', 'rms_norm_apply']);
        const M = blk[j]!.i[0]!;
        expect(blk[j + 1]!.i).toEqual([2 * M, 1]);
        expect(blk[j + 1]!.t).toEqual([blk[j]!.t[1], blk[j]!.t[1]]);
        expect(blk[j + 2]!.i).toEqual([M, 96 / tp, 96]);
      });
      expect(plans[1]!.kernels).toEqual(expect.arrayContaining(['rms_sumsq', 'rms_norm_apply']));
      expect(plans[1]!.weights.find((x) => x.name === 'blocks.0.attn1.norm_q.weight')!.slice).toEqual({ full: [96], axis: 0, ranges: [[96 / tp, 96 / tp]] });
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `wan2.1 scaled tp=${tp}`);
    }
    // Ulysses 2 x TP 2 (Wan's internal CP points: split at blocks.0, gather proj_out; 45 tokens: UAA), sync and async
    for (const ulysses_async of [false, true]) {
      const hy = await runRanks(compileParallelPlans('wan2.1-t2v-1.3b', { component: T, ...WAN, parallel: { ulysses_size: 2, tp_size: 2, ulysses_anything: 'auto', ulysses_async } }), w, inputs);
      expectRanksMatch(hy, want, `wan2.1 scaled ulysses 2 x tp 2${ulysses_async ? ' async' : ''}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('CP x TP hybrids (mesh (ring, ulysses, tp), rank = cpRank * tp + tpRank)', () => {
  it('tiny-flux ulysses 2 x tp 2 and scaled flux1-dev ulysses 2 x tp 3 (UAA auto) == 1 rank', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 7);
    const want = runOneRank(ref, w, inputs);
    const outs = await runRanks(compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, tp_size: 2 } }), w, inputs);
    expectRanksMatch(outs, want, 'tiny-flux ulysses 2 x tp 2');
    for (const o of outs) expect(Array.from(o.out)).toEqual(Array.from(outs[0]!.out));

    const sref = compilePlan('flux1-dev', { component: T, ...FLUX_SCALED });
    const sw = randomW(sref, 13);
    const sin = inputsFor(sref, 14);
    const swant = runOneRank(sref, sw, sin);
    const plans = compileParallelPlans('flux1-dev', { component: T, ...FLUX_SCALED, parallel: { ulysses_size: 2, tp_size: 3, ulysses_anything: 'auto' } });
    expect(plans[0]!.parallel!.anything).toBe(true); // 15 image + 7 text tokens over 2
    const souts = await runRanks(plans, sw, sin);
    expectRanksMatch(souts, swant, 'flux1-dev scaled ulysses 2 x tp 3');
  });

  it('async Ulysses x TP: tiny-flux ulysses 2 x tp 2 and scaled flux1-dev ulysses 2 x tp 3 (UAA auto) == 1 rank', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 7);
    const want = runOneRank(ref, w, inputs);
    const outs = await runRanks(compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, tp_size: 2, ulysses_async: true } }), w, inputs);
    expectRanksMatch(outs, want, 'tiny-flux ulysses 2 x tp 2 async');
    for (const o of outs) expect(Array.from(o.out)).toEqual(Array.from(outs[0]!.out));

    const sref = compilePlan('flux1-dev', { component: T, ...FLUX_SCALED });
    const sw = randomW(sref, 13);
    const sin = inputsFor(sref, 14);
    const swant = runOneRank(sref, sw, sin);
    const souts = await runRanks(compileParallelPlans('flux1-dev', { component: T, ...FLUX_SCALED, parallel: { ulysses_size: 2, tp_size: 3, ulysses_anything: 'auto', ulysses_async: true } }), sw, sin);
    expectRanksMatch(souts, swant, 'flux1-dev scaled ulysses 2 x tp 3 async');
  });

  it('tiny-flux ring 2 x tp 2 and USP (ulysses 2 x ring 2) x tp 2 == 1 rank', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 8);
    const want = runOneRank(ref, w, inputs);
    for (const par of [{ ring_size: 2, tp_size: 2 }, { ulysses_size: 2, ring_size: 2, tp_size: 2 }]) {
      const plans = compileParallelPlans('tiny-flux', { component: T, parallel: par });
      expect(plans).toHaveLength(par.ring_size * (par.ulysses_size ?? 1) * 2);
      expect(plans.at(-1)!.tag).toMatch(par.ulysses_size ? /-u2r2tp2r7$/ : /-r2tp2r3$/);
      expect(plans[0]!.parallel).toMatchObject({ kind: par.ulysses_size ? 'usp' : 'ring', tp: 2 });
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `tiny-flux ${JSON.stringify(par)}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('TP + cache: probe sums reduced as over the CP group alone', () => {
  it('scaled flux1-dev tp 3 (6 heads), DBCache F1B0: the 1-rank cached steps; every rank gets TP rank 0 sums exactly', async () => {
    const STEPS = 10;
    const loopOpts = {
      steps: STEPS,
      // random weights move the toy latents a lot per step (diffs 0.46 .. 0.80): a threshold in that range
      cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.6, max_warmup_steps: 2 }),
      timestep: (s: number) => Float32Array.of(1 - s / STEPS),
    };
    const ref = compilePlan('flux1-dev', { component: T, ...FLUX_SCALED });
    const w = randomW(ref, 31);
    const inputs = inputsFor(ref, 32);
    const blocks = (p: Plan) => p.segments.find((s) => s.name === 'blocks')!;
    const one = await cacheLoopOneRank(ref, w, inputs, loopOpts);
    console.log(`flux1-dev scaled, 1 rank: cached steps ${JSON.stringify(one.cached)}, residual diffs ${JSON.stringify(one.diffs)}`);
    expect(one.cached.length).toBeGreaterThan(0);
    expect(one.cached.length).toBeLessThan(STEPS - 2);
    const plans = compileParallelPlans('flux1-dev', { component: T, ...FLUX_SCALED, parallel: { tp_size: 3 } });
    const ranks = await runShm(3, async (comm) => {
      const plan = plans[comm.rank]!;
      const pe = new ParallelExecutor(comm, plan, native, { threads: 1 });
      for (const x of plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
      // the probe all-reduces as this rank sees them: [num, den, flag] sent, then received (a spy on the
      // runner's communicator only, so cacheLoopOnRank, which shares one communicator, does not fit)
      const seen: { sent: number[]; got: number[] }[] = [];
      const spy = new Proxy(comm, {
        get(t, k) {
          if (k === 'allReduceSum')
            return async (buf: Float64Array) => {
              const sent = Array.from(buf);
              await t.allReduceSum(buf);
              seen.push({ sent, got: Array.from(buf) });
            };
          const v = Reflect.get(t, k) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        },
      }) as Communicator;
      const r = await cacheLoop(pe, new ParallelBlockListRunner(spy, pe, plan, blocks(plan)), () => pe.output('output'), inputs, loopOpts);
      return { ...r, seen };
    });
    const r0 = ranks[0]!;
    expect(r0.seen.length).toBeGreaterThan(0);
    for (const [t, r] of ranks.entries()) {
      expect(r.cached).toEqual(one.cached);
      for (let s = 0; s < STEPS; s++) expect(relL2(r.outs[s]!, one.outs[s]!)).toBeLessThan(1e-5);
      // TP ranks 1, 2 send zeros; every rank receives TP rank 0's own sums bit for bit (no 3x scaling)
      r.seen.forEach((x, j) => {
        if (t > 0) expect(x.sent).toEqual([0, 0, 0]);
        expect(x.got).toEqual(r0.seen[j]!.sent);
      });
    }
    console.log(`flux1-dev scaled tp 3: cached steps ${JSON.stringify(r0.cached)} on every rank, ${r0.seen.length} probes`);
  });
});
