// CachedContext: per-block-list step accounting and the `can_cache` decision of Cache-DiT
// (`cache_context.py`, `cache_manager.py`; reference §1.3-§1.7, §1.11, §3.3, §3.4).
// Tensors never live here: the context only knows which named buffers exist; the data lives in the
// executor (BlockListRunner). Similarity comes from the probe's numerator/denominator sums.

import {
  type CacheConfig,
  type CalibratorConfig,
  type DBPruneConfig,
  cloneCacheConfig,
  isPruneConfig,
  strifyCacheConfig,
  strifyCalibrator,
  validateCacheConfig,
  validateCalibratorConfig,
} from './config.ts';
import { createCalibrator, type Calibrator } from './calibrators.ts';
import { leadingComputeSteps } from './steps-mask.ts';
import { npPercentile, pyFloatRepr, pyRound } from './pyfmt.ts';

/** Output of the fused probe kernel: sums over all elements (already all-reduced in parallel runs). */
export interface ProbeSums {
  /** sum |prev - cur| */
  num: number;
  /** sum |prev| */
  den: number;
}

/** Lazy probe: called only when the decision needs a diff; null = shape mismatch (records -2). */
export type DiffProvider = () => Promise<ProbeSums | null> | ProbeSums | null;

/** relative L1: mean|t1-t2| / mean|t1| == sum ratio (same element count) */
export function relativeL1(s: ProbeSums): number {
  return s.num / s.den;
}

export type ResidualDiffs = Record<string, number>;
export type PruneResidualDiffs = Record<string, number[]>;

export interface CacheSummary {
  name: string;
  cache_options: { cache_config: CacheConfig; calibrator_config: CalibratorConfig | null; name: string };
  cached_steps: number[];
  residual_diffs: ResidualDiffs | PruneResidualDiffs;
  cfg_cached_steps: number[];
  cfg_residual_diffs: ResidualDiffs | PruneResidualDiffs;
  accumulated_cached_steps: number;
  cfg_accumulated_cached_steps: number;
  accumulated_executed_steps: number;
  accumulated_transformer_executed_steps: number;
  executed_steps: number;
  transformer_executed_steps: number;
  pruned_steps: number[];
  pruned_blocks: number[];
  actual_blocks: number[];
  pruned_ratio: number | null;
  cfg_pruned_steps: number[];
  cfg_pruned_blocks: number[];
  cfg_actual_blocks: number[];
  cfg_pruned_ratio: number | null;
  /** numpy percentiles of all recorded diffs (sentinels included, as Cache-DiT), null when none */
  diff_stats: DiffStats | null;
  cfg_diff_stats: DiffStats | null;
  /** Cache-DiT `strify()` of this list */
  tag: string;
}

export interface DiffStats {
  P00: number;
  P25: number;
  P50: number;
  P75: number;
  P95: number;
  min: number;
  max: number;
}

export function diffStats(values: number[]): DiffStats | null {
  if (!values.length) return null;
  return {
    P00: npPercentile(values, 0),
    P25: npPercentile(values, 25),
    P50: npPercentile(values, 50),
    P75: npPercentile(values, 75),
    P95: npPercentile(values, 95),
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

export class CachedContext {
  readonly name: string;
  cacheConfig: CacheConfig;
  calibratorConfig: CalibratorConfig | null;

  calibrator: Calibrator | null = null;
  encoderCalibrator: Calibrator | null = null;
  cfgCalibrator: Calibrator | null = null;
  cfgEncoderCalibrator: Calibrator | null = null;

  /** names of buffers that currently hold data in the executor */
  readonly buffers = new Set<string>();

  executedSteps = 0;
  transformerExecutedSteps = 0;
  accumulatedExecutedSteps = 0;
  accumulatedTransformerExecutedSteps = 0;

  cachedSteps: number[] = [];
  residualDiffs: Record<string, number | number[]> = {};
  accumulatedResidualDiff = 0;
  continuousCachedSteps = 0;
  accumulatedCachedSteps = 0;
  cfgCachedSteps: number[] = [];
  cfgResidualDiffs: Record<string, number | number[]> = {};
  cfgAccumulatedResidualDiff = 0;
  cfgContinuousCachedSteps = 0;
  cfgAccumulatedCachedSteps = 0;

  constructor(name: string, cacheConfig: CacheConfig, calibratorConfig: CalibratorConfig | null = null, numBlocks?: number) {
    this.name = name;
    validateCacheConfig(cacheConfig, { numBlocks, listName: name });
    if (calibratorConfig) validateCalibratorConfig(calibratorConfig);
    this.cacheConfig = cloneCacheConfig(cacheConfig);
    this.calibratorConfig = calibratorConfig ? { ...calibratorConfig } : null;
    const sep = Boolean(this.cacheConfig.enable_separate_cfg);
    if (this.calibratorConfig?.enable_calibrator) {
      this.calibrator = createCalibrator(this.calibratorConfig);
      if (sep) this.cfgCalibrator = createCalibrator(this.calibratorConfig);
    }
    if (this.calibratorConfig?.enable_encoder_calibrator) {
      this.encoderCalibrator = createCalibrator(this.calibratorConfig);
      if (sep) this.cfgEncoderCalibrator = createCalibrator(this.calibratorConfig);
    }
  }

  // ---- calibrator helpers
  enableCalibrator(): boolean {
    return Boolean(this.calibratorConfig?.enable_calibrator);
  }
  enableEncoderCalibrator(): boolean {
    return Boolean(this.calibratorConfig?.enable_encoder_calibrator);
  }
  hasCalibrators(): boolean {
    return this.enableCalibrator() || this.enableEncoderCalibrator();
  }
  /** residual (add) or hidden_states (replace) for the hidden stream */
  isCacheResidual(): boolean {
    return this.enableCalibrator() ? this.calibratorConfig!.calibrator_cache_type === 'residual' : true;
  }
  isEncoderCacheResidual(): boolean {
    return this.enableEncoderCalibrator() ? this.calibratorConfig!.calibrator_cache_type === 'residual' : true;
  }
  /** hidden / encoder calibrator of the current branch */
  currentCalibrators(): [Calibrator | null, Calibrator | null] {
    return this.isSeparateCfgStep() ? [this.cfgCalibrator, this.cfgEncoderCalibrator] : [this.calibrator, this.encoderCalibrator];
  }

  getResidualDiffThreshold(): number {
    return this.cacheConfig.residual_diff_threshold;
  }

  // ---- step accounting
  getCurrentStep(): number {
    return this.executedSteps - 1;
  }
  getCurrentTransformerStep(): number {
    return this.transformerExecutedSteps - 1;
  }
  isSeparateCfgStep(): boolean {
    if (!this.cacheConfig.enable_separate_cfg) return false;
    if (this.cacheConfig.cfg_compute_first) return this.getCurrentTransformerStep() % 2 === 0;
    return this.getCurrentTransformerStep() % 2 !== 0;
  }
  /** buffer name suffix of the current branch (`_cfg` on CFG calls) */
  branchSuffix(): string {
    return this.isSeparateCfgStep() ? '_cfg' : '';
  }

  /**
   * Cache-DiT `mark_step_begin`: called AFTER the Fn blocks (DBCache) or before the first block (DBPrune).
   * At transformer step 0 the per-request lists are cleared and calibrators reset (only then).
   */
  markStepBegin(): void {
    this.transformerExecutedSteps += 1;
    this.accumulatedTransformerExecutedSteps += 1;
    const cfg = this.cacheConfig;
    if (!cfg.enable_separate_cfg) {
      this.executedSteps += 1;
      this.accumulatedExecutedSteps += 1;
    } else if (!cfg.cfg_compute_first) {
      if (!this.isSeparateCfgStep()) {
        this.executedSteps += 1;
        this.accumulatedExecutedSteps += 1;
      }
    } else if (this.isSeparateCfgStep()) {
      this.executedSteps += 1;
      this.accumulatedExecutedSteps += 1;
    }
    if (this.getCurrentTransformerStep() === 0) {
      this.cachedSteps = [];
      this.residualDiffs = {};
      this.cfgCachedSteps = [];
      this.cfgResidualDiffs = {};
      for (const c of [this.calibrator, this.encoderCalibrator, this.cfgCalibrator, this.cfgEncoderCalibrator]) c?.resetCache();
    }
    if (this.hasCalibrators()) {
      const [a, b] = this.currentCalibrators();
      a?.markStepBegin();
      b?.markStepBegin();
    }
  }

  get warmupSteps(): number[] {
    let W = this.cacheConfig.max_warmup_steps;
    const mask = this.cacheConfig.steps_computation_mask;
    if (mask !== null) W = Math.min(W, leadingComputeSteps(mask)); // SCM truncates the warmup
    const out: number[] = [];
    for (let s = 0; s < W; s += this.cacheConfig.warmup_interval) out.push(s);
    return out;
  }
  isInWarmup(): boolean {
    return this.warmupSteps.includes(this.getCurrentStep());
  }
  isInFullComputeSteps(): boolean {
    const mask = this.cacheConfig.steps_computation_mask;
    if (mask === null) return false;
    const s = this.getCurrentStep();
    return s < mask.length ? mask[s] === 1 : false;
  }

  // ---- stats
  addResidualDiff(diff: number): void {
    const step = String(this.getCurrentStep());
    if (!this.isSeparateCfgStep()) {
      if (!(step in this.residualDiffs)) {
        this.residualDiffs[step] = diff;
        if (diff > 0) this.accumulatedResidualDiff += diff;
      }
    } else if (!(step in this.cfgResidualDiffs)) {
      this.cfgResidualDiffs[step] = diff;
      if (diff > 0) this.cfgAccumulatedResidualDiff += diff;
    }
  }

  /**
   * Cache-DiT `add_cached_step`. QUIRK (kept): the first-ever cached step adds 1; a cached step exactly
   * one after the previous cached step adds 2 if the counter is 0, else 1; a non-adjacent cached step
   * leaves the counter unchanged. Only the forced compute of `can_cache` resets it to 0. Net effect:
   * runs of at most MC consecutive cached steps, each followed by one forced compute.
   */
  addCachedStep(): void {
    const cur = this.getCurrentStep();
    const cfg = this.isSeparateCfgStep();
    const steps = cfg ? this.cfgCachedSteps : this.cachedSteps; // per-branch lists and counters
    const c = cfg ? this.cfgContinuousCachedSteps : this.continuousCachedSteps;
    const next = !steps.length ? c + 1 : cur - steps[steps.length - 1] === 1 ? c + (c === 0 ? 2 : 1) : c;
    steps.push(cur);
    if (cfg) {
      this.cfgContinuousCachedSteps = next;
      this.cfgAccumulatedCachedSteps += 1;
    } else {
      this.continuousCachedSteps = next;
      this.accumulatedCachedSteps += 1;
    }
  }

  /** diff recorded for the current step on the non-CFG branch (for cfg_diff_compute_separate=false) */
  getCurrentStepResidualDiff(): number | number[] | undefined {
    return this.residualDiffs[String(this.getCurrentStep())];
  }

  /**
   * Cache-DiT `similarity`: threshold <= 0 records -0.0 and says no; >= 1 records -1 and says yes;
   * shape mismatch (probe returns null) records -2 and says no; CFG branch may reuse the non-CFG diff.
   */
  async similarity(probe: DiffProvider, threshold: number): Promise<boolean> {
    if (threshold <= 0) {
      this.addResidualDiff(-0.0);
      return false;
    }
    if (threshold >= 1) {
      this.addResidualDiff(-1.0);
      return true;
    }
    let diff: number;
    const reuse = this.getCurrentStepResidualDiff();
    if (
      this.cacheConfig.enable_separate_cfg &&
      this.isSeparateCfgStep() &&
      !this.cacheConfig.cfg_diff_compute_separate &&
      typeof reuse === 'number'
    ) {
      diff = reuse; // reuse the non-CFG diff of this step (no probe, no host read)
    } else {
      const sums = await probe();
      if (sums === null) {
        this.addResidualDiff(-2.0);
        return false;
      }
      diff = relativeL1(sums);
    }
    this.addResidualDiff(diff);
    return diff < threshold;
  }

  /**
   * Cache-DiT `can_cache`, exact decision order: warmup -> steps mask (1: compute; static 0: cache
   * without diff) -> max cached steps -> max continuous cached steps (resets the counter) ->
   * accumulated diff cap -> threshold <= 0 -> no previous Fn buffer -> similarity.
   * `prevBuffer` is the name of the reference buffer the probe compares against.
   */
  async canCache(probe: DiffProvider, prevBuffer: string, threshold?: number): Promise<boolean> {
    if (this.isInWarmup()) return false;
    const cfg = this.cacheConfig;
    if (cfg.steps_computation_mask !== null) {
      if (this.isInFullComputeSteps()) return false;
      if (cfg.steps_computation_policy === 'static') return true;
    }
    const cfgStep = this.isSeparateCfgStep();
    const cached = cfgStep ? this.cfgCachedSteps : this.cachedSteps;
    if (cfg.max_cached_steps >= 0 && cached.length >= cfg.max_cached_steps) return false;
    const cont = cfgStep ? this.cfgContinuousCachedSteps : this.continuousCachedSteps;
    if (cfg.max_continuous_cached_steps >= 0 && cont >= cfg.max_continuous_cached_steps) {
      if (cfgStep) this.cfgContinuousCachedSteps = 0;
      else this.continuousCachedSteps = 0;
      return false;
    }
    const maxAcc = cfg.max_accumulated_residual_diff_threshold;
    if (maxAcc !== null && maxAcc > 0) {
      const acc = cfgStep ? this.cfgAccumulatedResidualDiff : this.accumulatedResidualDiff;
      if (acc >= maxAcc) return false;
    }
    let thr = threshold;
    if (thr === undefined || thr <= 0) thr = this.getResidualDiffThreshold();
    if (thr <= 0) return false;
    if (!this.buffers.has(prevBuffer)) return false;
    return this.similarity(probe, thr);
  }

  // ---- summary
  summary(): CacheSummary {
    const flat = (d: Record<string, number | number[]>) => Object.values(d).flatMap((v) => (Array.isArray(v) ? v : [v]));
    const s: CacheSummary = {
      name: this.name,
      cache_options: { cache_config: cloneCacheConfig(this.cacheConfig), calibrator_config: this.calibratorConfig, name: this.name },
      cached_steps: [...this.cachedSteps],
      residual_diffs: structuredClone(this.residualDiffs) as ResidualDiffs,
      cfg_cached_steps: [...this.cfgCachedSteps],
      cfg_residual_diffs: structuredClone(this.cfgResidualDiffs) as ResidualDiffs,
      accumulated_cached_steps: this.accumulatedCachedSteps,
      cfg_accumulated_cached_steps: this.cfgAccumulatedCachedSteps,
      accumulated_executed_steps: this.accumulatedExecutedSteps,
      accumulated_transformer_executed_steps: this.accumulatedTransformerExecutedSteps,
      executed_steps: this.executedSteps,
      transformer_executed_steps: this.transformerExecutedSteps,
      pruned_steps: [],
      pruned_blocks: [],
      actual_blocks: [],
      pruned_ratio: null,
      cfg_pruned_steps: [],
      cfg_pruned_blocks: [],
      cfg_actual_blocks: [],
      cfg_pruned_ratio: null,
      diff_stats: diffStats(flat(this.residualDiffs)),
      cfg_diff_stats: diffStats(flat(this.cfgResidualDiffs)),
      tag: '',
    };
    s.tag = strifySummary(s);
    return s;
  }
}

/**
 * Cache-DiT `strify(stats)`: `{cache tag}[_P{ratio%}]_{calibrator tag}_S{accumulated cached steps}`
 * (`_S` omitted when 0, as in Cache-DiT's `if cached_steps:`).
 */
export function strifySummary(s: Pick<CacheSummary, 'cache_options' | 'pruned_ratio' | 'accumulated_cached_steps'>): string {
  const cfg = s.cache_options.cache_config;
  if (cfg.cache_type === 'NONE') return 'NONE';
  let tag = strifyCacheConfig(cfg);
  if (cfg.cache_type === 'DBPrune' && s.pruned_ratio !== null) tag += `_P${pyFloatRepr(pyRound(s.pruned_ratio * 100, 2))}`;
  tag += `_${strifyCalibrator(s.cache_options.calibrator_config)}`;
  if (s.accumulated_cached_steps) tag += `_S${s.accumulated_cached_steps}`;
  return tag;
}

/** Format the Cache-DiT summary table (`| Cache Steps | Diffs P00 | ... |`). */
export function formatSummaryTable(s: CacheSummary): string {
  const r3 = (x: number) => pyFloatRepr(pyRound(x, 3));
  const lines: string[] = [];
  const st = s.diff_stats;
  const prune = s.pruned_ratio !== null;
  const first = prune ? 'Pruned Blocks' : 'Cache Steps';
  const count = prune ? s.pruned_blocks.reduce((a, b) => a + b, 0) : s.cached_steps.length;
  lines.push(`| ${first} | Diffs P00 | Diffs P25 | Diffs P50 | Diffs P75 | Diffs P95 | Diffs Min | Diffs Max |`);
  lines.push(`|${'-'.repeat(first.length + 2)}|-----------|-----------|-----------|-----------|-----------|-----------|-----------|`);
  if (st) {
    lines.push(
      `| ${String(count).padEnd(first.length)} | ${[st.P00, st.P25, st.P50, st.P75, st.P95, st.min, st.max].map((v) => r3(v).padEnd(9)).join(' | ')} |`,
    );
  } else {
    lines.push(`| ${String(count).padEnd(first.length)} | ${Array(7).fill('-'.padEnd(9)).join(' | ')} |`);
  }
  if (prune) {
    const p = s.pruned_blocks.reduce((a, b) => a + b, 0);
    const a = s.actual_blocks.reduce((x, y) => x + y, 0);
    lines.push(`Dynamic Block Prune Ratio: ${pyFloatRepr(pyRound((s.pruned_ratio ?? 0) * 100, 2))}% (${p}/${a})`);
  }
  lines.push(`Executed Steps: ${s.accumulated_executed_steps}, Transformer Executed Steps: ${s.accumulated_transformer_executed_steps}`);
  return lines.join('\n');
}

export type AnyContext = CachedContext;
export function isPruneContextConfig(cfg: CacheConfig): cfg is DBPruneConfig {
  return isPruneConfig(cfg);
}
