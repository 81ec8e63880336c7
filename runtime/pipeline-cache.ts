// Caching on the compiled transformer plan (Cache-DiT's pipeline path): one CacheEngine per request over
// the plan's block-list segments, each driven by a NativeBlockListRunner (cache kernels on the arena in
// place). `Pipeline.generate({ cache })` creates a session per request (contexts start over, as
// Cache-DiT re-creates them per pipe call) and calls `refreshContext({ numInferenceSteps })` before the
// first step (expands an SCM policy name, validates Fn + Bn against each list).

import type { Plan } from './plan.ts';
import type { Native, NativeExecutor } from './native.ts';
import { CacheEngine, type BlockListSpec } from './cache/engine.ts';
import { NativeBlockListRunner } from './cache/native-runner.ts';
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
}

const runnersByExec = new WeakMap<NativeExecutor, Map<string, NativeBlockListRunner>>();

function runnerFor(native: Native, plan: Plan, exec: NativeExecutor, seg: Plan['segments'][number]): NativeBlockListRunner {
  let m = runnersByExec.get(exec);
  if (!m) runnersByExec.set(exec, (m = new Map()));
  let r = m.get(seg.name);
  if (!r) m.set(seg.name, (r = new NativeBlockListRunner(exec, native, plan, seg)));
  return r;
}

export class TransformerCacheSession {
  private engine: CacheEngine | null = null;
  private exec: NativeExecutor | null = null;
  private runners: NativeBlockListRunner[] = [];
  private base = { probes: 0, kernels: 0, blocks: 0 };

  constructor(
    private readonly native: Native,
    private readonly opts: PipelineCacheOptions,
    private readonly request: { steps: number; separateCfg: boolean },
  ) {}

  private bind(plan: Plan, exec: NativeExecutor): CacheEngine {
    if (this.engine && this.exec === exec) return this.engine;
    const lists: BlockListSpec[] = [];
    this.runners = [];
    for (const seg of plan.segments) {
      if (!seg.blocks || !seg.io || seg.pattern === undefined) continue;
      const runner = runnerFor(this.native, plan, exec, seg);
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

  private counters(): { probes: number; kernels: number; blocks: number } {
    const c = { probes: 0, kernels: 0, blocks: 0 };
    for (const r of this.runners) {
      c.probes += r.stats.probes;
      c.kernels += r.stats.kernels;
      c.blocks += r.stats.blocks;
    }
    return c;
  }

  /** Validate the config against the plan before any step runs (errors name the option). */
  prepare(plan: Plan, exec: NativeExecutor): void {
    this.bind(plan, exec);
  }

  /** One transformer forward: plain segments run whole, block lists through the cache engine. */
  async forward(plan: Plan, exec: NativeExecutor): Promise<void> {
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
