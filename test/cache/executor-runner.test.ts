import { describe, expect, it } from 'vitest';
import {
  CacheEngine,
  ExecutorBlockListRunner,
  dbCacheConfig,
  dbPruneConfig,
  mixToyBlocks,
  taylorSeerConfig,
  type CacheConfig,
  type ExecutorLike,
  type ForwardPattern,
} from '../../runtime/cache/index.ts';
import type { PlanSegment, PlanTensor } from '../../runtime/plan.ts';
import { HN, runToy, baseInput, stepInput } from './helpers.ts';

/** An in-memory executor over an arena running toy blocks in place (stands in for the native addon). */
function fakeExecutor(pattern: ForwardPattern, nBlocks: number, en: number) {
  const blocks = mixToyBlocks(nBlocks, pattern, 9);
  const arena = new Float32Array(HN + en);
  const tensors: PlanTensor[] = [
    { id: 1, base: 'arena', offset: 0, numel: HN, shape: [1, HN / 4, 4] },
    { id: 2, base: 'arena', offset: HN, numel: en, shape: [1, en] },
  ];
  const view = (id: number) => {
    const t = tensors.find((x) => x.id === id)!;
    return arena.subarray(t.offset, t.offset + t.numel);
  };
  const segment: PlanSegment = {
    name: 'blocks',
    list: 'transformer_blocks',
    pattern,
    blocks: blocks.map((_, i) => ({ name: `transformer_blocks.${i}`, ops: [] })),
    io: pattern === 3 ? { hidden: 1 } : { hidden: 1, encoder: 2 },
  };
  const exec: ExecutorLike & { runs: number } = {
    runs: 0,
    readTensor: (id, into) => into.set(view(id)),
    writeTensor: (id, data) => view(id).set(data),
    async run(seg, b = 0, e = nBlocks) {
      if (seg !== 'blocks') throw new Error(seg);
      this.runs++;
      for (let i = b; i < e; i++) {
        const h = view(1);
        const enc = pattern === 3 ? null : view(2);
        const out = blocks[i](h.slice(), pattern <= 2 ? enc!.slice() : null);
        h.set(out.h);
        if (out.e && enc && pattern !== 2) enc.set(out.e);
      }
    },
  };
  return { exec, segment, tensors, view, blocks };
}

describe('ExecutorBlockListRunner (plan segment + executor API) == toy reference runner', () => {
  for (const pattern of [0, 1, 2, 3, 4, 5] as ForwardPattern[]) {
    for (const [name, cache] of [
      ['DBCache F1B1 + TaylorSeer', dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 0.2, max_warmup_steps: 3 })],
      ['DBPrune', dbPruneConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 0.05, max_warmup_steps: 2, enable_dynamic_prune_threshold: true })],
    ] as [string, CacheConfig][]) {
      it(`pattern ${pattern}: ${name}`, async () => {
        const en = pattern >= 4 ? HN / 2 : 12;
        const steps = 12;
        const cal = cache.cache_type === 'DBCache' ? taylorSeerConfig() : null;
        const ref = await runToy({ cache, calibrator: cal, steps, pattern, blocks: mixToyBlocks(6, pattern, 9), encoderNumel: en });
        const { exec, segment, tensors, view } = fakeExecutor(pattern, 6, en);
        const runner = new ExecutorBlockListRunner(exec, { tensors }, segment);
        expect(runner.batch).toBe(1);
        const engine = new CacheEngine({ lists: [{ name: 'transformer_blocks', runner }], cache, calibrator: cal });
        const base = baseInput(HN);
        const ebase = baseInput(en, 2);
        for (let s = 0; s < steps; s++) {
          view(1).set(stepInput(base, s, 0.02));
          if (pattern <= 2) view(2).set(stepInput(ebase, s, 0.02));
          await engine.runList(0);
          expect(Array.from(view(1))).toEqual(Array.from(ref.outputs[s].h));
          if (pattern !== 3) expect(Array.from(view(2))).toEqual(Array.from(ref.outputs[s].e!));
        }
        expect(engine.summary()).toEqual(ref.engine.summary());
      });
    }
  }
  it('rejects a segment that is not a block list', () => {
    expect(() => new ExecutorBlockListRunner({} as ExecutorLike, { tensors: [] }, { name: 'embed', ops: [] })).toThrow(/not a block-list segment/);
  });
});
