// DBPrune, Dynamic Block Prune (reference §1.10; Cache-DiT prune_context.py / prune_manager.py /
// PrunedBlocks_Pattern_*). Per block, every step: never prune the first Fn, the last Bn or listed ids;
// otherwise compare the block's INPUT now vs its input at the last step it was computed with the same
// relative L1 and the same warmup/limit checks (`can_prune` = `can_cache`).

import type { DBPruneConfig, CalibratorConfig } from './config.ts';
import { CachedContext, type CacheSummary, diffStats, strifySummary } from './context.ts';

export class PrunedContext extends CachedContext {
  declare cacheConfig: DBPruneConfig;
  prunedBlocks: number[] = [];
  actualBlocks: number[] = [];
  cfgPrunedBlocks: number[] = [];
  cfgActualBlocks: number[] = [];

  constructor(name: string, cacheConfig: DBPruneConfig, calibratorConfig: CalibratorConfig | null = null, numBlocks?: number) {
    super(name, cacheConfig, calibratorConfig, numBlocks);
  }

  /**
   * Dynamic threshold: mean of the first 5 positive diffs already recorded this step x relax ratio,
   * used only if below max_dynamic_prune_threshold (default 2 x threshold) and only if it raises the base.
   */
  override getResidualDiffThreshold(): number {
    let thr = this.cacheConfig.residual_diff_threshold;
    if (this.cacheConfig.enable_dynamic_prune_threshold) {
      const step = this.getCurrentStep();
      const rec = this.residualDiffs[String(step)];
      if (step >= 0 && Array.isArray(rec)) {
        const diffs = rec.slice(0, 5).filter((d) => d > 0);
        if (diffs.length) {
          const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
          const relaxed = mean * this.cacheConfig.dynamic_prune_threshold_relax_ratio;
          const max = this.cacheConfig.max_dynamic_prune_threshold ?? 2 * this.cacheConfig.residual_diff_threshold;
          if (relaxed < max) thr = relaxed > thr ? relaxed : thr;
        }
      }
    }
    return thr;
  }

  override markStepBegin(): void {
    super.markStepBegin();
    // QUIRK (Cache-DiT): only the non-CFG block lists are cleared at transformer step 0.
    if (this.getCurrentTransformerStep() === 0) {
      this.prunedBlocks = [];
      this.actualBlocks = [];
    }
  }

  /** DBPrune records every diff of the step in a list (no accumulation into the diff cap, as Cache-DiT). */
  override addResidualDiff(diff: number): void {
    const step = String(this.getCurrentStep());
    const d = this.isSeparateCfgStep() ? this.cfgResidualDiffs : this.residualDiffs;
    const cur = d[step];
    if (Array.isArray(cur)) cur.push(diff);
    else d[step] = [diff];
  }

  /**
   * With DBPrune the per-step record is a list, so Cache-DiT's CFG diff reuse would compare a list with
   * a float; here the CFG branch computes its own diff instead.
   */
  override getCurrentStepResidualDiff(): number | undefined {
    return undefined;
  }

  /** a step with any pruned block counts once as a cached (pruned) step */
  addPrunedStep(): void {
    const cur = this.getCurrentStep();
    const list = this.isSeparateCfgStep() ? this.cfgCachedSteps : this.cachedSteps;
    if (!list.includes(cur)) this.addCachedStep();
  }
  addPrunedBlock(n: number): void {
    (this.isSeparateCfgStep() ? this.cfgPrunedBlocks : this.prunedBlocks).push(n);
  }
  addActualBlock(n: number): void {
    (this.isSeparateCfgStep() ? this.cfgActualBlocks : this.actualBlocks).push(n);
  }

  /** sorted ids never pruned: first Fn, last Bn, and non_prune_block_ids (< numBlocks) */
  nonPruneBlockIds(numBlocks: number): number[] {
    const Fn = Math.min(this.cacheConfig.Fn_compute_blocks, numBlocks);
    const Bn = Math.min(this.cacheConfig.Bn_compute_blocks, numBlocks);
    const ids = new Set<number>();
    for (let i = 0; i < Fn; i++) ids.add(i);
    for (let i = numBlocks - Bn; i < numBlocks; i++) ids.add(i);
    for (const i of this.cacheConfig.non_prune_block_ids) ids.add(i);
    return [...ids].filter((i) => i < numBlocks).sort((a, b) => a - b);
  }

  override summary(): CacheSummary {
    const s = super.summary();
    const ratio = (p: number[], a: number[]) => {
      const sa = a.reduce((x, y) => x + y, 0);
      return sa > 0 ? p.reduce((x, y) => x + y, 0) / sa : null;
    };
    s.pruned_steps = [...this.cachedSteps];
    s.pruned_blocks = [...this.prunedBlocks];
    s.actual_blocks = [...this.actualBlocks];
    s.pruned_ratio = ratio(this.prunedBlocks, this.actualBlocks);
    s.cfg_pruned_steps = [...this.cfgCachedSteps];
    s.cfg_pruned_blocks = [...this.cfgPrunedBlocks];
    s.cfg_actual_blocks = [...this.cfgActualBlocks];
    s.cfg_pruned_ratio = ratio(this.cfgPrunedBlocks, this.cfgActualBlocks);
    s.diff_stats = diffStats(Object.values(this.residualDiffs).flatMap((v) => (Array.isArray(v) ? v : [v])));
    s.cfg_diff_stats = diffStats(Object.values(this.cfgResidualDiffs).flatMap((v) => (Array.isArray(v) ? v : [v])));
    s.tag = strifySummary(s);
    return s;
  }
}
