// Ulysses lowering (compiler/passes/parallel-lower.ts) + per-rank execution (runtime/parallel/executor.ts):
// plan format, compile-time errors, and 2/3/4 ranks (shm coroutines) == the 1-rank plan.
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { nativeStagePlan } from '../../runtime/parallel/executor.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { FLUX_SCALED, inputsFor, randomW, runOneRank, runRanks, tinyFluxWeights, expectRanksMatch } from './helpers.ts';

const T = 'transformer' as const;
/** scaled-down qwen-image (joint key mask input): 3 heads of 16, 15 image + 7 text tokens */
const QW = { config: { num_layers: 2, num_attention_heads: 3, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 40, in_channels: 20, out_channels: 5 }, dims: { height: 80, width: 48, textTokens: 7 } };

describe('Ulysses lowering: plan format and compile-time errors', () => {
  it('per-rank plans: split inputs, comm ops around every attention, gather, scratch at the arena end', () => {
    const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 3, ulysses_anything: true } });
    expect(plans).toHaveLength(3);
    expect(plans.map((p) => p.inputs.find((i) => i.name === 'hidden_states')!.shape)).toEqual([[1, 6, 16], [1, 5, 16], [1, 5, 16]]);
    expect(plans.map((p) => p.inputs.find((i) => i.name === 'encoder_hidden_states')!.shape[1])).toEqual([4, 4, 4]);
    const p1 = plans[1]!;
    expect(p1.parallel).toMatchObject({ kind: 'ulysses', world: 3, rank: 1, anything: true, headPadPolicy: 'any' });
    expect(p1.parallel!.split.hidden_states).toEqual({ axis: 1, sizes: [6, 5, 5] });
    expect(p1.parallel!.split.txt_ids).toEqual({ axis: 0, sizes: [4, 4, 4] });
    expect(p1.parallel!.gather.output).toEqual({ axis: 1, sizes: [6, 5, 5] });
    const ops = p1.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
    const seq = ops.filter((o) => o.k.startsWith('comm.') || o.k === 'attention').map((o) => o.k + (o.comm ? `:${o.comm.stream}` : ''));
    expect(seq).toEqual(['comm.all_to_all_qkv:q', 'comm.all_to_all_qkv:k', 'comm.all_to_all_qkv:v', 'attention', 'comm.all_to_all_o:o']);
    const q = ops.find((o) => o.k === 'comm.all_to_all_qkv')!;
    expect(q.comm).toMatchObject({ group: 'ulysses', sizes: [10, 9, 9], hLocal: 2, hPad: 2, hReal: 2, float8: false, wait: true, module: 'transformer_blocks.0' });
    const attn = ops.find((o) => o.k === 'attention')!;
    expect(attn.i.slice(0, 5)).toEqual([1, 28, 28, 2, 32]); // full joint sequence, this rank's heads
    // rank 2 holds only padding heads ('any' policy): no attention op, still in every all-to-all
    const ops2 = plans[2]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
    expect(ops2.some((o) => o.k === 'attention')).toBe(false);
    expect(ops2.filter((o) => o.k.startsWith('comm.')).length).toBe(4);
    // scratch lies past the 1-rank-style arena
    const scratch = p1.tensors.filter((t) => t.name?.startsWith('ulysses.'));
    expect(scratch.length).toBeGreaterThan(0);
    for (const t of scratch) expect(t.offset + t.numel).toBeLessThanOrEqual(p1.arenaFloats);
    // the native plan has no comm ops; a block is a sequence of stages
    const { native, programs } = nativeStagePlan(p1);
    expect(native.segments.flatMap((s) => (s.blocks ?? [{ ops: s.ops ?? [] }]).flatMap((b) => b.ops)).some((o) => o.k.startsWith('comm.'))).toBe(false);
    expect(programs.get('blocks')!.blocks[0]!.map((it) => ('native' in it ? 'n' : 'c')).join('')).toBe('ncccnc' + 'n');
  });

  it('async: V, Q, K each issued right after its producer, a wait before the attention', () => {
    const [p] = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, ulysses_async: true, ulysses_float8: true } });
    const ops = p!.segments.find((s) => s.name === 'blocks')!.blocks![4]!.ops; // a single block
    const ks = ops.map((o) => o.k);
    const iWait = ks.indexOf('comm.wait');
    const issued = ops.filter((o) => o.k === 'comm.all_to_all_qkv');
    expect(issued.map((o) => o.comm!.wait)).toEqual([false, false, false]);
    for (const o of issued) expect(ops.indexOf(o)).toBeLessThan(iWait);
    // each issue directly follows the op that produced its tensor
    for (const o of issued) expect(ops[ops.indexOf(o) - 1]!.t).toContain(o.t[0]);
    expect(ks[iWait + 1]).toBe('attention');
    expect(issued.map((o) => [o.comm!.stream, o.comm!.float8])).toEqual([['q', true], ['k', false], ['v', true]]);
    // output all-to-all in flight while proj_mlp computes; waited before the concat copy reads o
    const iO = ks.indexOf('comm.all_to_all_o');
    expect(ops[iO]!.comm!.wait).toBe(false);
    expect(ks.slice(iO + 1, iO + 4)).toEqual(['linear', 'comm.wait', 'copy3d']);
    expect(p!.segments.find((s) => s.name === 'blocks')!.blocks![4]!.name).toBe('single_transformer_blocks.2');
    expect(ops[iO + 1]!.t).toContain(p!.weights.find((w) => w.name === 'single_transformer_blocks.2.proj_mlp.weight')!.tensor);
  });

  it('impossible plans are compile-time errors naming the module / input', () => {
    // 48x32: 24 image + 12 text tokens divide by 3, the 4 heads cannot be padded without UAA
    expect(() => compileParallelPlans('tiny-flux', { component: T, dims: { height: 48 }, parallel: { ulysses_size: 3 } })).toThrow(
      /tiny-flux: transformer_blocks\.0 attention \(models\/flux1\.ts:\d+:\d+\) with 4 heads cannot be split over ulysses=3: .*set ulysses_anything/,
    );
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 3 } })).toThrow(/input 'hidden_states' has 16 tokens \(imageTokens\), not divisible by ulysses=3: set ulysses_anything/);
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { ring_size: 3 } })).toThrow(/not divisible by 3 context-parallel ranks \(ring: ulysses 1 x ring 3\)/);
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { ring_size: 2, ulysses_anything: true } })).toThrow(/ulysses_anything cannot be combined with ring_size > 1/);
    expect(() => compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, ring_size: 2, ulysses_async: true } })).toThrow(/ulysses_async cannot be combined with ring_size > 1/);
    // 'auto' switches UAA on only when needed
    expect(compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, ulysses_anything: 'auto' } })[0]!.parallel!.anything).toBe(false);
    expect(compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 3, ulysses_anything: 'auto' } })[0]!.parallel!.anything).toBe(true);
  });
});

describe.skipIf(!nativeAvailable())('Ulysses ranks (shm) reproduce the 1-rank transformer', () => {
  it('tiny-flux (trained weights): 2, 3, 4 ranks, UAA, async; 28 joint tokens over 3 ranks, 4 heads over 3', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 5);
    const want = runOneRank(ref, w, inputs);
    for (const [W, anything, async] of [
      [2, false, false],
      [3, true, false],
      [4, false, true],
      [3, true, true],
    ] as const) {
      const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: W, ulysses_anything: anything, ulysses_async: async } });
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `tiny-flux ulysses=${W}${anything ? ' UAA' : ''}${async ? ' async' : ''}`, { bytes: true });
      // every rank holds the same gathered output
      for (const o of outs) expect(Array.from(o.out)).toEqual(Array.from(outs[0]!.out));
    }
  });

  it('tiny-flux FP8 all-to-all: close to fp32, about half the all-to-all bytes', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 6);
    const want = runOneRank(ref, w, inputs);
    const base = await runRanks(compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2 } }), w, inputs);
    const fp8Plans = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, ulysses_float8: true } });
    const fp8 = await runRanks(fp8Plans, w, inputs);
    // native FP8 kernels (default) == the host reference kernels, bit for bit
    const host = await runRanks(fp8Plans, w, inputs, { fp8: 'host' });
    expect(Buffer.from(fp8[0]!.out.buffer).equals(Buffer.from(host[0]!.out.buffer))).toBe(true);
    // 3 ranks with a padding-only rank
    const p3 = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 3, ulysses_anything: true, ulysses_float8: true } });
    const [n3, h3] = [await runRanks(p3, w, inputs), await runRanks(p3, w, inputs, { fp8: 'host' })];
    expect(Buffer.from(n3[2]!.out.buffer).equals(Buffer.from(h3[2]!.out.buffer))).toBe(true);
    expect(relL2(n3[0]!.out, want)).toBeLessThan(5e-2);
    const e = relL2(fp8[0]!.out, want);
    console.log(`tiny-flux ulysses=2 fp8: relL2 ${e.toExponential(2)}, bytes ${fp8[0]!.bytes} vs ${base[0]!.bytes} fp32`);
    expect(e).toBeLessThan(5e-2);
    expect(fp8[0]!.bytes).toBeLessThan(0.75 * base[0]!.bytes);
  });

  it('scaled-down flux1-dev (random weights, guidance): 2, 3, 4 ranks; 15 + 7 tokens uneven, 6 heads over 4', async () => {
    const ref = compilePlan('flux1-dev', { component: T, ...FLUX_SCALED });
    const w = randomW(ref, 11);
    const inputs = inputsFor(ref, 12);
    const want = runOneRank(ref, w, inputs);
    for (const W of [2, 3, 4]) {
      const plans = compileParallelPlans('flux1-dev', { component: T, ...FLUX_SCALED, parallel: { ulysses_size: W, ulysses_anything: 'auto', ulysses_async: W === 3 } });
      expect(plans[0]!.parallel!.anything).toBe(true);
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `flux1-dev scaled ulysses=${W}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('Ulysses with a key mask: scaled-down qwen-image', () => {
  it('joint mask [text | image] split per stream and all-gathered per attention; 2, 3, 4 ranks, 3 heads over 4', async () => {
    const ref = compilePlan('qwen-image', { component: T, ...QW });
    const w = randomW(ref, 3);
    const inputs = inputsFor(ref, 4);
    const m = inputs.joint_attention_mask!;
    m.fill(1);
    m[5] = 0; // padded text tokens (they sit on the last rank's text shard)
    m[6] = 0;
    const want = runOneRank(ref, w, inputs);
    for (const W of [2, 3, 4]) {
      const plans = compileParallelPlans('qwen-image', { component: T, ...QW, parallel: { ulysses_size: W, ulysses_anything: 'auto', ulysses_async: W === 3 } });
      if (W === 2) expect(plans[1]!.parallel!.split.joint_attention_mask).toEqual({ axis: 1, sizes: [12, 10], parts: [[4, 3], [8, 7]] });
      const ops = plans[0]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
      expect(ops.filter((o) => o.k === 'comm.all_gather_mask')).toHaveLength(1);
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `qwen-image scaled ulysses=${W}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('ring attention and USP with a key mask: scaled-down qwen-image', () => {
  it('ring 2, ring 3, USP 2 x 2: the mask travels with its K/V block; a block with every key dropped merges as LSE -inf', async () => {
    const cases: { dims: Record<string, number> & { textTokens: number }; parallel: { ulysses_size?: number; ring_size: number }; dropRank?: number }[] = [
      { dims: { height: 64, width: 64, textTokens: 8 }, parallel: { ring_size: 2 } }, // 16 image + 8 text
      { dims: { height: 80, width: 48, textTokens: 9 }, parallel: { ring_size: 3 } }, // 15 image + 9 text
      // batch item 1 drops every key of ring rank 1 (its text and image shards): that rank's own first block
      // and the block visiting the others give LSE -inf for those rows
      { dims: { height: 80, width: 48, textTokens: 9, batch: 2 }, parallel: { ring_size: 3 }, dropRank: 1 },
      { dims: { height: 64, width: 64, textTokens: 8 }, parallel: { ulysses_size: 2, ring_size: 2 } },
    ];
    for (const c of cases) {
      const sc = { config: QW.config, dims: c.dims };
      const ref = compilePlan('qwen-image', { component: T, ...sc });
      const w = randomW(ref, 31);
      const inputs = inputsFor(ref, 32);
      const m = inputs.joint_attention_mask!;
      const nT = c.dims.textTokens;
      const S = ref.inputs.find((i) => i.name === 'joint_attention_mask')!.shape[1]!;
      const B = m.length / S;
      m.fill(1);
      for (let b = 0; b < B; b++) for (const j of [1, nT - 2, nT - 1]) m[b * S + j] = 0; // padded text tokens and one inside
      if (c.dropRank !== undefined) {
        const R = c.parallel.ring_size, t = nT / R, n = (S - nT) / R, r = c.dropRank;
        m.fill(0, S + r * t, S + (r + 1) * t);
        m.fill(0, S + nT + r * n, S + nT + (r + 1) * n);
      }
      const want = runOneRank(ref, w, inputs);
      // the mask changes the result (so the comparison below checks that it is applied)
      expect(relL2(runOneRank(ref, w, { ...inputs, joint_attention_mask: new Float32Array(m.length).fill(1) }), want)).toBeGreaterThan(1e-3);
      const plans = compileParallelPlans('qwen-image', { component: T, ...sc, parallel: c.parallel });
      const kind = plans[0]!.parallel!.kind;
      const ops = plans[0]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
      const comm = ops.filter((o) => o.k.startsWith('comm.'));
      expect(comm.map((o) => o.k)).toEqual([`comm.${kind}_attention`]); // no mask gather op: it rides with K/V
      expect(comm[0]!.t[4]).toBe(plans[0]!.inputs.find((i) => i.name === 'joint_attention_mask')!.tensor);
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `qwen-image scaled ${JSON.stringify(c.parallel)}${c.dropRank !== undefined ? ` B ${B}, rank ${c.dropRank}'s keys dropped` : ''}`);
    }
  });
});

describe.skipIf(!nativeAvailable())('ring attention and USP lowering (shm) reproduce the 1-rank transformer', () => {
  it('tiny-flux: ring 2 / 4 (K/V around the ring, LSE merge), USP ulysses 2 x ring 2 (+ FP8)', async () => {
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 8);
    const want = runOneRank(ref, w, inputs);
    for (const par of [{ ring_size: 2 }, { ring_size: 4 }, { ulysses_size: 2, ring_size: 2 }, { ulysses_size: 2, ring_size: 2, ulysses_float8: true }]) {
      const plans = compileParallelPlans('tiny-flux', { component: T, parallel: par });
      const kind = plans[0]!.parallel!.kind;
      expect(kind).toBe(par.ulysses_size ? 'usp' : 'ring');
      const ops = plans[0]!.segments.find((s) => s.name === 'blocks')!.blocks![0]!.ops;
      expect(ops.filter((o) => o.k.startsWith('comm.')).map((o) => o.k)).toEqual([`comm.${kind}_attention`]);
      expect(ops.some((o) => o.k === 'attention')).toBe(false);
      const outs = await runRanks(plans, w, inputs);
      expectRanksMatch(outs, want, `tiny-flux ${JSON.stringify(par)}`, { tol: par.ulysses_float8 ? 5e-2 : 1e-5 });
    }
  });
  it('scaled-down flux1-dev: ring 3 (15 image + 9 text tokens, 6 heads of 16; native attention_lse + attn_merge)', async () => {
    const sc = { ...FLUX_SCALED, dims: { ...FLUX_SCALED.dims, textTokens: 9 } };
    const ref = compilePlan('flux1-dev', { component: T, ...sc });
    const w = randomW(ref, 21);
    const inputs = inputsFor(ref, 22);
    const want = runOneRank(ref, w, inputs);
    const outs = await runRanks(compileParallelPlans('flux1-dev', { component: T, ...sc, parallel: { ring_size: 3 } }), w, inputs);
    expectRanksMatch(outs, want, 'flux1-dev scaled ring=3');
  });
});
