// Wan 2.1 context parallelism (Cache-DiT's Wan CP plan, cache-dit.md §4.8): internal split points
// (`rope_ids` rows, the stream entering `blocks.0`), Ulysses self attention, local cross attention to the
// whole text, `proj_out` all-gathered before the unpatchify. Scaled-down Wan on 2, 3, 4 ranks (shm) and 2
// ranks (mpi) vs the 1-rank plan; 45 video tokens (uneven over 2 and 4: UAA), 4 heads over 3 ranks.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { launchRanks } from '../../runtime/comm/index.ts';
import { mpiAvailable } from '../../runtime/comm/mpi.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { dbCacheConfig } from '../../runtime/cache/index.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { nativeStagePlan } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { type CacheLoopOptions, cacheLoopOnRank, cacheLoopOneRank, randomW, expectRanksMatch, runOneRank, runRanks } from './helpers.ts';
import { WAN, wanInputs, wanScaled } from './wan-cp-rank.ts';

// 1e-5: every rank runs the same float32 kernels on a subset of the token rows and the all-to-alls / all-gather
// move values exactly, so only float32 rounding differs (kernel blocking depends on the row count);
// measured 0 .. 4.2e-7 rel L2
const TOL = 1e-5;

const opsOf = (p: ReturnType<typeof compilePlan>, seg: string, block = 0): string[] => {
  const s = p.segments.find((x) => x.name === seg)!;
  return (s.ops ?? s.blocks![block]!.ops).map((o) => o.k);
};

describe('Wan CP plan: internal split / gather points', () => {
  it('patch embedding and unpatchify on full tensors, blocks on the rank shard, proj_out all-gathered', () => {
    const plans = compileParallelPlans(WAN, { ...wanScaled(4), parallel: { ulysses_size: 4, ulysses_anything: true } });
    const p1 = plans[1]!;
    // inputs and output keep their full shapes (no entry split, no exit gather)
    expect(p1.inputs.map((i) => i.shape)).toEqual([[2, 5, 3, 6, 10], [2], [2, 7, 40], [45, 3]]);
    expect(p1.outputs[0]!.shape).toEqual([2, 3, 3, 6, 10]);
    expect(p1.parallel).toMatchObject({ kind: 'ulysses', world: 4, rank: 1, split: {}, gather: {} });
    expect(p1.parallel!.internal).toEqual({
      split: { rope_ids: { axis: 0, sizes: [12, 11, 11, 11] }, 'blocks.0.hidden': { axis: 1, sizes: [12, 11, 11, 11] } },
      gather: { proj_out: { axis: 1, sizes: [12, 11, 11, 11] } },
    });
    // block io holds this rank's 11 tokens; the text stream stays whole
    const blocks = p1.segments.find((s) => s.name === 'blocks')!;
    expect(p1.tensors.find((t) => t.id === blocks.io!.hidden)!.shape).toEqual([2, 11, 96]);
    // self attention: Ulysses; cross attention (11 queries x 7 text keys): a local attention, no comm
    const ops = blocks.blocks![0]!.ops;
    const attn = ops.filter((o) => o.k === 'attention');
    expect(attn.map((o) => o.i.slice(0, 4))).toEqual([
      [2, 45, 45, 1],
      [2, 11, 7, 4],
    ]);
    expect(ops.filter((o) => o.k.startsWith('comm.')).map((o) => o.k)).toEqual(['comm.all_to_all_qkv', 'comm.all_to_all_qkv', 'comm.all_to_all_qkv', 'comm.all_to_all_o']);
    // head: proj_out on the shard, then the all-gather, then the unpatchify transposes on the full tensor
    const head = p1.segments.find((s) => s.name === 'head')!.ops!;
    const g = head.find((o) => o.k === 'comm.all_gather')!;
    expect(g.i).toEqual([2, 11, 12]);
    expect(g.comm).toMatchObject({ group: 'cp', sizes: [12, 11, 11, 11], module: 'proj_out' });
    expect(opsOf(p1, 'head').slice(opsOf(p1, 'head').indexOf('comm.all_gather') - 1)).toEqual(['linear', 'comm.all_gather', 'transpose', 'transpose', 'transpose']);
    // the embed segment patchifies all 45 tokens on every rank
    const pe = p1.segments.find((s) => s.name === 'embed')!.ops!.find((o) => o.k === 'linear')!;
    expect(pe.i[0]).toBe(2 * 45);
    // comm ops are no native kernels
    expect(p1.kernels.some((k) => k.startsWith('comm.'))).toBe(false);
    expect(nativeStagePlan(p1).native.kernels.some((k) => k.startsWith('comm.'))).toBe(false);
  });

  it('bad CP plans are compile-time errors naming the point / op', () => {
    const bad = (cp: object) => () => compileParallelPlans(WAN, { ...wanScaled(4), parallel: { ulysses_size: 2, ulysses_anything: true, cp: cp as never } });
    const base = { split: {}, gather: {}, dims: { rope_ids: 'imageTokens', 'blocks.0.hidden': 'imageTokens' } };
    expect(bad({ ...base, internal: { split: { 'blocks.1.hidden': 1 }, gather: { proj_out: 1 } } })).toThrow(/CP split point 'blocks\.1\.hidden' is inside block list 'blocks'; only the stream entering its first block \(blocks\.0\)/);
    expect(bad({ ...base, internal: { split: { rope_ids: 0, 'blocks.0.hidden': 1 }, gather: { 'blocks.1.ffn.net.2': 1 } } })).toThrow(/CP gather point 'blocks\.1\.ffn\.net\.2' is inside block 'blocks\.1'/);
    expect(bad({ ...base, internal: { split: { nope: 1 }, gather: {} } })).toThrow(/CP split point 'nope' is not in the component; valid points: /);
    // tokens split without the RoPE table: the rope op is named
    expect(bad({ ...base, internal: { split: { 'blocks.0.hidden': 1 }, gather: { proj_out: 1 } } })).toThrow(/models\/wan2\.1\.ts:\d+:\d+: .*rope on a token-split value .*the tokens are split but the RoPE table is not/);
    // no gather: the output would be token-split
    expect(bad({ ...base, internal: { split: { rope_ids: 0, 'blocks.0.hidden': 1 }, gather: {} } })).toThrow(/reshape on a token-split value/);
    // 45 tokens over 2 ranks without UAA
    expect(() => compileParallelPlans(WAN, { ...wanScaled(4), parallel: { ulysses_size: 2 } })).toThrow(/split point 'rope_ids' has 45 tokens \(imageTokens\), not divisible by ulysses=2: set ulysses_anything/);
  });
});

describe.skipIf(!nativeAvailable())('Wan CP ranks reproduce the 1-rank transformer', () => {
  it.each([
    ['45 tokens uneven (23 + 22)', 4, 80, { ulysses_size: 2, ulysses_anything: 'auto' }],
    ['4 heads over 3 ranks (padding-only rank)', 4, 80, { ulysses_size: 3, ulysses_anything: true }],
    ['45 tokens uneven (12 + 11 x 3)', 4, 80, { ulysses_size: 4, ulysses_anything: 'auto' }],
    ['54 tokens even, 3 heads padded to 4 (Cache-DiT rule, no UAA)', 3, 96, { ulysses_size: 2 }],
    ['Wan 1.3B head count: 12 heads over 5 ranks', 12, 80, { ulysses_size: 5, ulysses_anything: true }],
    ['async Ulysses, 3 ranks', 4, 96, { ulysses_size: 3, ulysses_async: true, ulysses_anything: true }],
    ['ring attention, 3 ranks', 4, 96, { ring_size: 3 }],
  ] as const)('%s (shm)', async (_n, heads, width, parallel) => {
    const opts = wanScaled(heads, width);
    const ref = compilePlan(WAN, opts);
    const w = randomW(ref, 21);
    const ins = wanInputs(ref, 22);
    const want = runOneRank(ref, w, ins);
    const plans = compileParallelPlans(WAN, { ...opts, parallel });
    const outs = await runRanks(plans, w, ins);
    expectRanksMatch(outs, want, `wan CP ${heads} heads, ${JSON.stringify(parallel)} (UAA ${plans[0]!.parallel!.anything})`, { tol: TOL, bytes: true });
  });

  it.skipIf(!mpiAvailable().ok)('2 and 3 ranks over mpi (mpirun processes)', async () => {
    for (const [W, heads] of [
      [2, 4],
      [3, 4],
    ] as const) {
      const rs = await launchRanks<{ err: number; anything: boolean }>(W, {
        backend: 'mpi',
        module: fileURLToPath(new URL('./wan-cp-rank.ts', import.meta.url)),
        exportName: 'wanCpRank',
        args: { heads, anything: true },
        jobTimeoutMs: 120_000,
      });
      console.log(`wan CP mpi ${W} ranks: rel L2 ${rs.map((r) => r.err.toExponential(2)).join(' ')}`);
      for (const r of rs) expect(r.err).toBeLessThan(TOL);
    }
  }, 180_000);
});

describe.skipIf(!nativeAvailable())('Wan CP + DBCache: the block list io holds the rank shard', () => {
  const STEPS = 8;
  // the seeded random weights give 1-rank residual diffs 0.32 .. 0.42: a threshold inside that range caches some steps
  const CACHE = dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.36, max_warmup_steps: 2 });
  /** toy flow loop x <- x - 0.1 v with the cache engine over `blocks` (probe sums all-reduced on ranks) */
  const LOOP: CacheLoopOptions = { steps: STEPS, cache: CACHE, timestep: (s, v) => v.map(() => 1000 * (1 - s / STEPS)) };

  it('3 ranks (UAA, 4 heads over 3) cache the same steps as 1 rank, outputs within 1e-5', async () => {
    const base = wanScaled(4);
    const opts = { ...base, config: { ...base.config, out_channels: base.config.in_channels } }; // v has x's shape
    const ref: Plan = compilePlan(WAN, opts);
    const w = randomW(ref, 21);
    const ins = wanInputs(ref, 22);
    const one = await cacheLoopOneRank(ref, w, ins, LOOP);
    expect(one.cached.length).toBeGreaterThan(0);
    expect(one.cached.length).toBeLessThan(STEPS - 2);
    const plans = compileParallelPlans(WAN, { ...opts, parallel: { ulysses_size: 3, ulysses_anything: true } });
    const ranks = await runShm(3, (comm) => cacheLoopOnRank(comm, plans[comm.rank]!, w, ins, LOOP));
    console.log(`wan CP + DBCache: 1 rank cached ${JSON.stringify(one.cached)}, 3 ranks ${JSON.stringify(ranks.map((r) => r.cached))}, last-step rel L2 ${relL2(ranks[0]!.outs[STEPS - 1]!, one.outs[STEPS - 1]!).toExponential(2)}`);
    for (const r of ranks) {
      expect(r.cached).toEqual(one.cached);
      for (let s = 0; s < STEPS; s++) expect(relL2(r.outs[s]!, one.outs[s]!)).toBeLessThan(TOL);
    }
  });
});
