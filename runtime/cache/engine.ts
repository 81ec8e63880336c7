// CacheEngine: drives the cached forward of each block list over an abstract executor
// (BlockListRunner), following Cache-DiT's CachedBlocks_Pattern_* / PrunedBlocks_Pattern_* (reference
// §1.2, §1.10, §2.1). The engine owns the decisions and stats; the runner owns every tensor.

import {
  type CacheConfig,
  type CalibratorConfig,
  type DBPruneConfig,
  type ParamsModifier,
  applyParamsModifier,
  cloneCacheConfig,
  dbCacheConfig,
  dbPruneConfig,
  isPruneConfig,
  validateCacheConfig,
} from './config.ts';
import { CachedContext, type CacheSummary, type ProbeSums } from './context.ts';
import { PrunedContext } from './dbprune.ts';
import type { Calibrator } from './calibrators.ts';
import type { TensorOps } from './tensor-ops.ts';
import { stepsMask, type MaskPolicy } from './steps-mask.ts';

export type ForwardPattern = 0 | 1 | 2 | 3 | 4 | 5;
export type Stream = 'hidden' | 'encoder';

/**
 * The executor of one block list (a plan segment with `blocks` and `io`). Blocks read and write the
 * io tensors in place. Named buffers are device tensors of the size of their stream, owned by the runner.
 * Native mapping: save/residual/addTo/load are copy / sub / add kernels, probe is the fused relative-L1
 * reduction returning two sums (one small host read); calibrators work on `tensor()` handles through `ops`.
 */
export interface BlockListRunner {
  readonly numBlocks: number;
  readonly pattern: ForwardPattern;
  /** whether the list has an encoder stream (io.encoder); patterns 3 never has one */
  readonly hasEncoder: boolean;
  /** batch size of the hidden stream (DMD fits each batch item separately) */
  readonly batch: number;
  /** run blocks [begin, end) on the io tensors */
  runBlocks(begin: number, end: number): Promise<void>;
  /** buf[dst] := io[stream] */
  save(stream: Stream, dst: string): void;
  /** buf[dst] := io[stream] - buf[base] */
  residual(stream: Stream, dst: string, base: string): void;
  /** io[stream] += buf[src] */
  addTo(stream: Stream, src: string): void;
  /** io[stream] := buf[src] */
  load(stream: Stream, src: string): void;
  /** buf[dst] := buf[src], src released (a pointer swap natively) */
  move(src: string, dst: string): void;
  /** {num: sum|buf[prev] - cur|, den: sum|buf[prev]|}; cur = a buffer or an io stream; null on size mismatch */
  probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null>;
  /** tensor ops the calibrators run with (hostOps, or the native cache kernels) */
  readonly ops: TensorOps;
  /** buffer `name` itself, no copy (fed to a calibrator update, which copies it with `ops`) */
  tensor(name: string): Float32Array;
  /** io[stream] += t (residual) or io[stream] := t, t made by `ops` (a calibrator forecast) */
  apply(stream: Stream, t: Float32Array, residual: boolean): void;
  has(name: string): boolean;
  /** release every buffer (context refresh) */
  clear(): void;
}

export interface BlockListSpec {
  name: string;
  runner: BlockListRunner;
  /** Cache-DiT ParamsModifier for this list */
  modifier?: ParamsModifier;
}

export interface CacheEngineOptions {
  lists: BlockListSpec[];
  /** DBCacheConfig / DBPruneConfig; cache_type 'NONE' (or null) runs every block */
  cache: CacheConfig | null;
  calibrator?: CalibratorConfig | null;
}

export interface RefreshOptions {
  numInferenceSteps?: number;
  /** fields to override (non-null); steps_computation_mask may be a policy name, expanded to the steps */
  cache?: Partial<Omit<CacheConfig, 'steps_computation_mask'>> & {
    steps_computation_mask?: number[] | MaskPolicy | null;
  } & Partial<Pick<DBPruneConfig, 'non_prune_block_ids' | 'enable_dynamic_prune_threshold'>>;
  calibrator?: CalibratorConfig | null;
}

interface ListState {
  spec: BlockListSpec;
  /** the list's init config (Cache-DiT `_init_kwargs`) */
  initCache: CacheConfig;
  initCalibrator: CalibratorConfig | null;
  ctx: CachedContext | null;
}

const ENCODER_PATTERNS: ReadonlySet<ForwardPattern> = new Set([0, 1, 4, 5]);

function makeContext(name: string, cache: CacheConfig, cal: CalibratorConfig | null, numBlocks: number): CachedContext {
  return isPruneConfig(cache) ? new PrunedContext(name, cache, cal, numBlocks) : new CachedContext(name, cache, cal, numBlocks);
}

export class CacheEngine {
  private readonly lists: ListState[] = [];

  constructor(opts: CacheEngineOptions) {
    const names = new Set<string>();
    for (const spec of opts.lists) {
      if (names.has(spec.name)) throw new Error(`CacheEngine: duplicate block list name '${spec.name}'`);
      names.add(spec.name);
      if (![0, 1, 2, 3, 4, 5].includes(spec.runner.pattern)) {
        throw new Error(`CacheEngine: block list '${spec.name}' has unsupported forward pattern ${spec.runner.pattern}`);
      }
      if (opts.cache === null || opts.cache.cache_type === 'NONE') {
        this.lists.push({ spec, initCache: dbCacheConfig({ cache_type: 'NONE' }), initCalibrator: null, ctx: null });
        continue;
      }
      const { cache, calibrator } = applyParamsModifier(opts.cache, opts.calibrator ?? null, spec.modifier);
      const ctx = makeContext(spec.name, cache, calibrator, spec.runner.numBlocks);
      this.lists.push({ spec, initCache: cloneCacheConfig(cache), initCalibrator: calibrator, ctx });
    }
  }

  /** context of a block list (null when caching is off) */
  context(name: string): CachedContext | null {
    return this.state(name).ctx;
  }

  private state(name: string | number): ListState {
    const st = typeof name === 'number' ? this.lists[name] : this.lists.find((l) => l.spec.name === name);
    if (!st) throw new Error(`CacheEngine: unknown block list '${name}'`);
    return st;
  }

  /**
   * Cache-DiT `refresh_context`: merge the given fields into each list's init config and re-create its
   * context (stats and buffers start over). Call it before every request.
   */
  refreshContext(opts: RefreshOptions = {}): void {
    for (const st of this.lists) {
      if (!st.ctx) continue;
      const over: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(opts.cache ?? {})) if (v !== null && v !== undefined) over[k] = v;
      if (opts.numInferenceSteps !== undefined) over.num_inference_steps = opts.numInferenceSteps;
      if (typeof over.steps_computation_mask === 'string') {
        const steps = (over.num_inference_steps ?? st.initCache.num_inference_steps) as number | null;
        if (steps == null) throw new Error('refreshContext: a steps_computation_mask policy needs numInferenceSteps');
        over.steps_computation_mask = stepsMask({ totalSteps: steps, policy: over.steps_computation_mask as MaskPolicy });
      }
      const merged = { ...cloneCacheConfig(st.initCache), ...over } as CacheConfig;
      const cache = isPruneConfig(merged) ? dbPruneConfig(merged) : dbCacheConfig(merged);
      validateCacheConfig(cache, { numBlocks: st.spec.runner.numBlocks, listName: st.spec.name });
      const cal = opts.calibrator === undefined ? st.initCalibrator : opts.calibrator;
      st.initCache = cloneCacheConfig(cache);
      st.initCalibrator = cal;
      st.spec.runner.clear();
      st.ctx = makeContext(st.spec.name, cache, cal, st.spec.runner.numBlocks);
    }
  }

  /**
   * Cache-DiT `set_context` -> `maybe_refresh`: auto-refresh when current_step >= num_inference_steps
   * (QUIRK: checked before mark_step_begin, so it happens one forward late), or force refresh at
   * transformer step hint-1 (keeps the accumulated counters; 'once' clears the hint).
   */
  private maybeRefresh(st: ListState): void {
    const ctx = st.ctx!;
    const cfg = ctx.cacheConfig;
    let reason: '' | 'steps' | 'force' = '';
    if (cfg.num_inference_steps !== null && ctx.getCurrentStep() >= cfg.num_inference_steps) reason = 'steps';
    else if (cfg.force_refresh_step_hint !== null && ctx.getCurrentTransformerStep() === cfg.force_refresh_step_hint - 1) reason = 'force';
    if (!reason) return;
    st.spec.runner.clear();
    const fresh = makeContext(st.spec.name, reason === 'force' ? ctx.cacheConfig : st.initCache, st.initCalibrator, st.spec.runner.numBlocks);
    if (reason === 'force') {
      fresh.accumulatedCachedSteps = ctx.accumulatedCachedSteps;
      fresh.cfgAccumulatedCachedSteps = ctx.cfgAccumulatedCachedSteps;
      fresh.cachedSteps = [...ctx.cachedSteps];
      fresh.cfgCachedSteps = [...ctx.cfgCachedSteps];
      fresh.residualDiffs = structuredClone(ctx.residualDiffs);
      fresh.cfgResidualDiffs = structuredClone(ctx.cfgResidualDiffs);
      fresh.accumulatedExecutedSteps = ctx.accumulatedExecutedSteps;
      fresh.accumulatedTransformerExecutedSteps = ctx.accumulatedTransformerExecutedSteps;
      if (fresh.cacheConfig.force_refresh_step_policy === 'once') fresh.cacheConfig.force_refresh_step_hint = null;
    }
    st.ctx = fresh;
  }

  /** Run one block list of one transformer forward with caching (or all blocks when caching is off). */
  async runList(name: string | number): Promise<void> {
    const st = this.state(name);
    const r = st.spec.runner;
    if (!st.ctx) {
      await r.runBlocks(0, r.numBlocks);
      return;
    }
    this.maybeRefresh(st);
    if (st.ctx instanceof PrunedContext) await this.runPruned(st.ctx, r);
    else await this.runDBCache(st.ctx, r);
  }

  /** Run every block list in order (models whose lists are adjacent in the plan). */
  async runAll(): Promise<void> {
    for (let i = 0; i < this.lists.length; i++) await this.runList(i);
  }

  private encoderActive(r: BlockListRunner): boolean {
    // Pattern 2 blocks never change the encoder states: its residual is exactly zero, skipped.
    return r.hasEncoder && ENCODER_PATTERNS.has(r.pattern);
  }

  /** apply a cached stream: forecast (calibrator) or stored buffer; add (residual) or replace */
  private applyStream(
    r: BlockListRunner,
    stream: Stream,
    cal: Calibrator | null,
    calName: string,
    buf: string,
    residual: boolean,
    required: boolean,
  ): void {
    if (cal) {
      if (cal.has(calName)) r.apply(stream, cal.approximate(calName, r.ops), residual);
      else if (required) throw new Error(`cache hit before any compute step: calibrator state '${calName}' missing`);
      return;
    }
    if (!r.has(buf)) {
      if (required) throw new Error(`cache hit before any compute step: buffer '${buf}' is not set (static SCM with mask[0] = 0?)`);
      return;
    }
    if (residual) r.addTo(stream, buf);
    else r.load(stream, buf);
  }

  private async runDBCache(ctx: CachedContext, r: BlockListRunner): Promise<void> {
    const cfg = ctx.cacheConfig;
    const N = r.numBlocks;
    const Fn = cfg.Fn_compute_blocks;
    const Bn = cfg.Bn_compute_blocks;
    const enc = this.encoderActive(r);

    r.save('hidden', 'x0');
    await r.runBlocks(0, Fn);
    r.residual('hidden', 'Fn_cur', 'x0'); // R_F = h_F - x0
    ctx.markStepBegin(); // counters advance AFTER the Fn blocks
    const sfx = ctx.branchSuffix();
    const fnBuf = `Fn_buffer${sfx}`;
    const hit = await ctx.canCache(() => r.probe(fnBuf, 'Fn_cur'), fnBuf);
    const [cal, encCal] = ctx.currentCalibrators();
    const hResidual = ctx.isCacheResidual();
    const eResidual = ctx.isEncoderCacheResidual();
    const hName = hResidual ? 'Bn_residual' : 'Bn_hidden_states';
    const eName = eResidual ? 'Bn_residual' : 'Bn_hidden_states';
    if (hit) {
      ctx.addCachedStep();
      // h = h_F + Rbuf (or its forecast); e = e_F + Ebuf when an encoder buffer exists
      this.applyStream(r, 'hidden', ctx.enableCalibrator() ? cal : null, hName, `Bn_buffer${sfx}`, hResidual, true);
      if (enc) {
        this.applyStream(r, 'encoder', ctx.enableEncoderCalibrator() ? encCal : null, eName, `Bn_encoder_buffer${sfx}`, eResidual, false);
      }
      await r.runBlocks(N - Bn, N); // Bn blocks always recomputed on top
      return;
    }
    // miss: the Fn residual becomes the reference (only on compute steps)
    r.move('Fn_cur', fnBuf);
    ctx.buffers.add(fnBuf);
    r.save('hidden', 'h_F');
    if (enc) r.save('encoder', 'e_F');
    await r.runBlocks(Fn, N - Bn);
    const hb = `Bn_buffer${sfx}`;
    if (hResidual) r.residual('hidden', hb, 'h_F'); // "Bn" buffer = residual of the MIDDLE blocks
    else r.save('hidden', hb);
    ctx.buffers.add(hb);
    if (ctx.enableCalibrator() && cal) cal.update(r.tensor(hb), hName, r.batch, r.ops);
    if (enc) {
      const eb = `Bn_encoder_buffer${sfx}`;
      // QUIRK (Cache-DiT): patterns 3/4/5 always store the encoder RESIDUAL, even in hidden_states mode
      if (eResidual || r.pattern >= 3) r.residual('encoder', eb, 'e_F');
      else r.save('encoder', eb);
      ctx.buffers.add(eb);
      if (ctx.enableEncoderCalibrator() && encCal) encCal.update(r.tensor(eb), eName, r.batch, r.ops);
    }
    await r.runBlocks(N - Bn, N);
  }

  private async runPruned(ctx: PrunedContext, r: BlockListRunner): Promise<void> {
    const N = r.numBlocks;
    ctx.markStepBegin(); // DBPrune: before the first block
    const nonPrune = new Set(ctx.nonPruneBlockIds(N));
    const enc = this.encoderActive(r);
    const hResidual = ctx.isCacheResidual();
    const eResidual = ctx.isEncoderCacheResidual();
    let pruned = 0;
    for (let i = 0; i < N; i++) {
      const sfx = ctx.branchSuffix();
      const inBuf = `b${i}_in${sfx}`;
      // encoder input of block i: threaded (0/1) or the previous block's new encoder (4/5; none for block 0)
      const encIn = enc && (r.pattern <= 2 || i > 0);
      let can = false;
      if (!nonPrune.has(i)) can = await ctx.canCache(() => r.probe(inBuf, { io: 'hidden' }), inBuf);
      pruned += Number(can);
      const [cal, encCal] = ctx.currentCalibrators();
      const hName = `b${i}_${hResidual ? 'Bn_residual' : 'Bn_hidden_states'}`;
      const eName = `b${i}_${eResidual ? 'Bn_encoder_residual' : 'Bn_encoder_hidden_states'}`;
      if (can) {
        ctx.addPrunedStep();
        this.applyStream(r, 'hidden', ctx.enableCalibrator() ? cal : null, hName, `b${i}_R${sfx}`, hResidual, true);
        if (encIn) this.applyStream(r, 'encoder', ctx.enableEncoderCalibrator() ? encCal : null, eName, `b${i}_E${sfx}`, eResidual, false);
        continue;
      }
      const track = !nonPrune.has(i);
      if (track) {
        r.save('hidden', 'blk_in');
        if (encIn) r.save('encoder', 'blk_ein');
      }
      await r.runBlocks(i, i + 1);
      if (!track) continue;
      r.move('blk_in', inBuf);
      ctx.buffers.add(inBuf);
      const rb = `b${i}_R${sfx}`;
      if (hResidual) r.residual('hidden', rb, inBuf);
      else r.save('hidden', rb);
      if (ctx.enableCalibrator() && cal) cal.update(r.tensor(rb), hName, r.batch, r.ops);
      if (encIn) {
        const eb = `b${i}_E${sfx}`;
        r.residual('encoder', eb, 'blk_ein'); // QUIRK (Cache-DiT): the residual is stored in both modes
        if (ctx.enableEncoderCalibrator() && encCal) encCal.update(r.tensor(eb), eName, r.batch, r.ops);
      }
    }
    ctx.addPrunedBlock(pruned);
    ctx.addActualBlock(N);
  }

  /** Cache-DiT `summary()`: one entry per cached block list */
  summary(): CacheSummary[] {
    return this.lists.filter((l) => l.ctx).map((l) => l.ctx!.summary());
  }

  /** Cache-DiT `strify()`: the run tag (first cached block list), 'NONE' without caching */
  strify(): string {
    const s = this.summary();
    return s.length ? s[0].tag : 'NONE';
  }
}

/** Order the (hidden, encoder) outputs like the ForwardPattern returns them (Pattern_2/3: hidden only). */
export function patternOutputs<T>(pattern: ForwardPattern, hidden: T, encoder: T | null): T[] | T {
  if (pattern === 2 || pattern === 3) return hidden;
  if (pattern === 0 || pattern === 4) return [hidden, encoder as T];
  return [encoder as T, hidden];
}
