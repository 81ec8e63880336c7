// Caching on the compiled transformer plan (Cache-DiT's pipeline path): one CacheEngine per request over
// the plan's block-list segments, each driven by a NativeBlockListRunner (cache kernels on the arena in
// place). `Pipeline.generate({ cache })` creates a session per request (contexts start over, as
// Cache-DiT re-creates them per pipe call) and calls `refreshContext({ numInferenceSteps })` before the
// first step (expands an SCM policy name, validates Fn + Bn against each list). The multi-rank pipeline
// (runtime/pipeline-parallel.ts) runs the same session on every rank over its ParallelExecutor, with
// runners whose probe sums are all-reduced, so true CFG's separate contexts behave alike everywhere.

import type { Plan, PlanSegment } from './plan.ts';
import type { Native, NativeExecutor } from './native.ts';
import { CacheEngine, type BlockListRunner, type BlockListSpec } from './cache/engine.ts';
import { NativeBlockListRunner } from './cache/native-runner.ts';
import type { NativeOpsStats } from './cache/native-ops.ts';
import { cloneCacheConfig, type CacheConfig, type CalibratorConfig, type ParamsModifier } from './cache/config.ts';
import { formatSummaryTable, type CacheSummary } from './cache/context.ts';

export interface PipelineCacheOptions {
  /** DBCacheConfig / DBPruneConfig (runtime/cache/config.ts); null or cache_type 'NONE' = no caching */
  cache: CacheConfig | null;
  calibrator?: CalibratorConfig | null;
  /** Cache-DiT ParamsModifier per block-list segment name */
  modifiers?: Record<string, ParamsModifier>;
}

/** What `generate` returns under `cache`: Cache-DiT's summary fields per block list and the run tag. */
export interface PipelineCacheResult {
  /** Cache-DiT `strify()` of the first cached list, e.g. DBCache_F1B0_W8I1M0MC3_R0.12_T0O0_S11 */
  tag: string;
  summary: CacheSummary[];
  /** probe kernels (= small host reads) and other cache-kernel launches, summed over the lists */
  probes: number;
  kernels: number;
  blocksRun: number;
  /** calibrator kernel launches (NativeTensorOps) */
  calibratorKernels: number;
  /** every host read of the cache engine: the probes' 2 float64 sums and DMD's Gram rows; `hostReadValues`: float64s read */
  hostReads: number;
  hostReadValues: number;
}

const runnersByExec = new WeakMap<NativeExecutor, Map<string, NativeBlockListRunner>>();

function runnerFor(native: Native, plan: Plan, exec: NativeExecutor, seg: Plan['segments'][number]): NativeBlockListRunner {
  let m = runnersByExec.get(exec);
  if (!m) runnersByExec.set(exec, (m = new Map()));
  let r = m.get(seg.name);
  if (!r) m.set(seg.name, (r = new NativeBlockListRunner(exec, native, plan, seg)));
  return r;
}

/** What a session drives: the native executor, or a rank's ParallelExecutor (runtime/parallel/executor.ts). */
export interface CacheSessionExecutor {
  run(segment: string, blockBegin?: number, blockEnd?: number): Promise<void>;
}

/** A block-list runner and the counters the session reports (native: `stats`; multi-rank: `probes`). */
export type SessionRunner = BlockListRunner & { stats?: { probes: number; kernels: number; blocks: number }; probes?: number };

/** Makes the runner of one block-list segment (the multi-rank pipeline passes all-reducing runners). */
export type SessionRunnerFactory<E> = (plan: Plan, exec: E, seg: PlanSegment) => SessionRunner;

export class TransformerCacheSession<E extends CacheSessionExecutor = NativeExecutor> {
  private engine: CacheEngine | null = null;
  private exec: E | null = null;
  private runners: SessionRunner[] = [];
  private base = { probes: 0, kernels: 0, blocks: 0, calKernels: 0, reads: 0, readValues: 0 };
  private readonly makeRunner: SessionRunnerFactory<E>;

  /** `runners`: the native addon (NativeBlockListRunner on the executor's arena) or a runner factory. */
  constructor(
    runners: Native | SessionRunnerFactory<E>,
    private readonly opts: PipelineCacheOptions,
    private readonly request: { steps: number; separateCfg: boolean },
  ) {
    this.makeRunner =
      typeof runners === 'function' ? runners : (plan, exec, seg) => runnerFor(runners, plan, exec as unknown as NativeExecutor, seg);
  }

  private bind(plan: Plan, exec: E): CacheEngine {
    if (this.engine && this.exec === exec) return this.engine;
    const lists: BlockListSpec[] = [];
    this.runners = [];
    for (const seg of plan.segments) {
      if (!seg.blocks || !seg.io || seg.pattern === undefined) continue;
      const runner = this.makeRunner(plan, exec, seg);
      this.runners.push(runner);
      lists.push({ name: seg.name, runner, modifier: this.opts.modifiers?.[seg.name] });
    }
    if (lists.length === 0) throw new Error(`${plan.model}/${plan.component}: the plan has no block-list segment to cache`);
    let cache = this.opts.cache ? cloneCacheConfig(this.opts.cache) : null;
    // enable_separate_cfg=None (auto): True when the pipeline calls the transformer twice per step
    if (cache && cache.enable_separate_cfg === null) cache = { ...cache, enable_separate_cfg: this.request.separateCfg };
    this.engine = new CacheEngine({ lists, cache, calibrator: this.opts.calibrator ?? null });
    // refresh_context before the request: re-validates (Fn + Bn vs each list), expands a policy-name mask.
    // num_inference_steps is passed only when the config carries it (SCM): contexts are per request here
    // (Cache-DiT's pipeline path), and its run tag then has no `_N` part, as Cache-DiT's generate names.
    this.engine.refreshContext(cache?.num_inference_steps != null ? { numInferenceSteps: this.request.steps } : {});
    this.exec = exec;
    this.base = this.counters();
    return this.engine;
  }

  private counters(): TransformerCacheSession['base'] {
    const c = { probes: 0, kernels: 0, blocks: 0, calKernels: 0, reads: 0, readValues: 0 };
    for (const r of this.runners) {
      const s = r.stats ?? { probes: r.probes ?? 0, kernels: 0, blocks: 0 };
      c.probes += s.probes;
      c.kernels += s.kernels;
      c.blocks += s.blocks;
      // calibrator ops on the cache kernels count their launches and small host reads (DMD Gram rows)
      const os = (r.ops as { stats?: NativeOpsStats }).stats ?? { kernels: 0, hostReads: 0, hostReadValues: 0 };
      c.calKernels += os.kernels;
      c.reads += s.probes + os.hostReads;
      c.readValues += 2 * s.probes + os.hostReadValues;
    }
    return c;
  }

  /** Validate the config against the plan before any step runs (errors name the option). */
  prepare(plan: Plan, exec: E): void {
    this.bind(plan, exec);
  }

  /** One transformer forward: plain segments run whole, block lists through the cache engine. */
  async forward(plan: Plan, exec: E): Promise<void> {
    const engine = this.bind(plan, exec);
    for (const seg of plan.segments) {
      if (seg.blocks && seg.io && seg.pattern !== undefined) await engine.runList(seg.name);
      else await exec.run(seg.name);
    }
  }

  result(): PipelineCacheResult {
    const summary = this.engine?.summary() ?? [];
    const c = this.counters();
    return {
      tag: this.engine?.strify() ?? 'NONE',
      summary,
      probes: c.probes - this.base.probes,
      kernels: c.kernels - this.base.kernels,
      blocksRun: c.blocks - this.base.blocks,
      calibratorKernels: c.calKernels - this.base.calKernels,
      hostReads: c.reads - this.base.reads,
      hostReadValues: c.readValues - this.base.readValues,
    };
  }
}

/** Cache-DiT's summary fields for `--json` (one object per block list). */
export function summaryJson(s: CacheSummary): Record<string, unknown> {
  return {
    name: s.name,
    tag: s.tag,
    cached_steps: s.cached_steps,
    residual_diffs: s.residual_diffs,
    cfg_cached_steps: s.cfg_cached_steps,
    cfg_residual_diffs: s.cfg_residual_diffs,
    accumulated_cached_steps: s.accumulated_cached_steps,
    cfg_accumulated_cached_steps: s.cfg_accumulated_cached_steps,
    accumulated_executed_steps: s.accumulated_executed_steps,
    accumulated_transformer_executed_steps: s.accumulated_transformer_executed_steps,
    pruned_steps: s.pruned_steps,
    pruned_blocks: s.pruned_blocks,
    actual_blocks: s.actual_blocks,
    pruned_ratio: s.pruned_ratio,
    diff_stats: s.diff_stats,
    cache_options: s.cache_options,
  };
}

export { formatSummaryTable };

/**
 * The results of several transformers' sessions (Wan 2.2's experts) as one: their summaries in transformer
 * order (Cache-DiT's summary lists transformer, then transformer_2), the first one's tag, counters summed.
 */
export function mergeCacheResults(rs: PipelineCacheResult[]): PipelineCacheResult {
  if (rs.length === 1) return rs[0]!;
  const sum = (k: 'probes' | 'kernels' | 'blocksRun' | 'calibratorKernels' | 'hostReads' | 'hostReadValues'): number => rs.reduce((a, r) => a + r[k], 0);
  return {
    tag: rs[0]!.tag,
    summary: rs.flatMap((r) => r.summary),
    probes: sum('probes'),
    kernels: sum('kernels'),
    blocksRun: sum('blocksRun'),
    calibratorKernels: sum('calibratorKernels'),
    hostReads: sum('hostReads'),
    hostReadValues: sum('hostReadValues'),
  };
}
