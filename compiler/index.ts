/// <reference types="node" preserve="true" />
// Public compiler API (other parts code against exactly this).
import fs from 'node:fs';
import path from 'node:path';
import type { Plan, PlanComponent } from '../runtime/plan.ts';
import { REPO_ROOT } from './dsl/trace.ts';
import type { ModelDefinition, ParallelPlan } from './dsl/index.ts';
import { validateParallel } from './passes/parallel-check.ts';
import { lowerContextParallel, ulyssesNeedsAnything } from './passes/parallel-lower.ts';
import { lowerTensorParallel } from './passes/tp-lower.ts';
import type { TpTraceHook } from './dsl/trace.ts';
import { checkModelFile } from './dsl/check.ts';
import { LORA_BRANCHES, resolveConfig, traceComponent, type Traced } from './frontend.ts';
import { CompileError, type Graph } from './ir/graph.ts';
import { runFusion, type FusionStats } from './passes/fusion.ts';
import { lower, type Lowered } from './passes/lower.ts';
import { emitPlan } from './codegen/plan.ts';
import { exportGraphOnnx } from './codegen/onnx.ts';
import { graphFlops, paramCount } from './analysis.ts';
import { getModel, registerModel as register, registeredModels } from './registry.ts';
import type { MemoryPlan } from './passes/memory.ts';
import '../models/index.ts';

export type { ModelDefinition } from './dsl/index.ts';
export { CompileError } from './ir/graph.ts';

export interface CompileOptions {
  component: PlanComponent;
  dims?: Record<string, number>;
  config?: Record<string, unknown>;
  target?: 'cpu' | 'cuda';
  /** validated against the model (heads vs tp/ulysses, token splits); lowering comes later */
  parallel?: ParallelPlan;
}

export function listModels(): string[] {
  return registeredModels();
}

export function registerModel(name: string, def: ModelDefinition): void {
  register(name, def);
}

/**
 * Static checks of the files a model was written in (imports only from compiler/dsl): the files of
 * the model and component definitions, plus every file an op of `graph` was recorded from.
 */
export function checkModel(def: ModelDefinition, graph?: Graph): void {
  const files = new Set<string>();
  if (def.file) files.add(def.file);
  for (const inst of Object.values(def.components)) if (inst?.def.file) files.add(inst.def.file);
  for (const n of graph?.nodes ?? []) {
    const f = n.src.replace(/:\d+:\d+$/, '');
    if (f) files.add(path.isAbsolute(f) ? f : path.join(REPO_ROOT, f));
  }
  const issues = [...files].filter((f) => !f.includes('node_modules') && fs.existsSync(f)).flatMap((f) => checkModelFile(f));
  if (issues.length) throw new CompileError(issues.map((i) => `${i.loc}: ${i.message}`).join('\n'));
}

export interface CompileResult {
  plan: Plan;
  traced: Traced;
  fused: Graph;
  fusion: FusionStats;
  memory: MemoryPlan;
  lowered: Lowered;
}

/** Full pipeline with the intermediate results (tests, inspect). */
export function compileDetailed(
  model: string,
  opts: CompileOptions,
  internal: {
    memoryReuse?: boolean;
    dimsOverride?: Record<string, number>;
    tp?: (g: Graph) => TpTraceHook;
    /** applied to each traced graph before fusion (context parallel internal points, compiler/passes/cp-points.ts) */
    graphPass?: (g: Graph) => Graph;
  } = {},
): CompileResult {
  const def = getModel(model);
  checkModel(def);
  const traceOpts = {
    ...(opts.dims ? { dims: opts.dims } : {}),
    ...(opts.config ? { config: opts.config } : {}),
    ...(internal.dimsOverride ? { dimsOverride: internal.dimsOverride } : {}),
    ...(internal.tp ? { tp: internal.tp } : {}),
  };
  const pass = (t: Traced): Traced => (internal.graphPass ? { ...t, graph: internal.graphPass(t.graph) } : t);
  const traced = pass(traceComponent(def, opts.component, traceOpts));
  checkModel(def, traced.graph);
  if (opts.parallel) validateParallel(traced.graph, opts.parallel);
  const flops = graphFlops(traced.graph);
  const fused = pass(traceComponent(def, opts.component, traceOpts)).graph;
  const fusion = runFusion(fused);
  const lw = lower(fused);
  const { plan, memory } = emitPlan(fused, lw, { model, component: opts.component, tag: traced.tag, dims: traced.dims, config: traced.config, flops }, { reuse: internal.memoryReuse ?? true });
  return { plan, traced, fused, fusion, memory, lowered: lw };
}

/**
 * The part of a directory's `config.json` a model file reads: the keys of the component's config
 * (bookkeeping keys such as `_class_name`, `architectures` or `transformers_version` are dropped; a
 * value the model cannot run is refused by the model file when it is traced).
 */
export function directoryConfig(model: string, component: PlanComponent, raw: Record<string, unknown>): Record<string, unknown> {
  const known = resolveConfig(getModel(model), component);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === LORA_BRANCHES) out[k] = v;
    else if (k in known) {
      const want = kindOf(known[k]);
      // the model file's default says what the field holds; a default of null leaves it to the model file
      if (want !== 'null' && kindOf(v) !== want) {
        throw new CompileError(`${component}/config.json: field "${k}" must be ${want === 'array' ? 'a list' : `a ${want}`} (the model's default is ${JSON.stringify(known[k])}), got ${JSON.stringify(v)}`);
      }
      out[k] = v;
    }
  }
  return out;
}

/** the JSON kind of a config value (a number only when finite) */
function kindOf(v: unknown): 'null' | 'number' | 'boolean' | 'string' | 'array' | 'object' | 'other' {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isFinite(v) ? 'number' : 'other';
  if (typeof v === 'boolean' || typeof v === 'string' || typeof v === 'object') return typeof v as 'boolean' | 'string' | 'object';
  return 'other';
}

export function compilePlan(model: string, opts: CompileOptions): Plan {
  return compileDetailed(model, opts).plan;
}

/** The runtime's compile request (runtime/pipeline.ts PlanRequest): model, dims and the directory's config. */
export interface PlanRequestLike {
  model: string;
  dims: Record<string, number>;
  config?: Record<string, unknown>;
}

/** compile options of a runtime request: the directory config reduced to what the model file reads */
export function requestOptions(component: PlanComponent, req: PlanRequestLike): CompileOptions {
  return { component, dims: req.dims, ...(req.config ? { config: directoryConfig(req.model, component, req.config) } : {}) };
}

/** compilePlan for a runtime request (the CLI's and the tests' plan provider) */
export function compileRequest(component: PlanComponent, req: PlanRequestLike): Plan {
  return compilePlan(req.model, requestOptions(component, req));
}

/**
 * Per-rank plans of a parallel lowering (index = rank; docs/architecture.md §3c): Ulysses
 * (`ulysses_size`, `ulysses_anything`, `ulysses_float8`, `ulysses_async`), ring (`ring_size`) and USP
 * (both) over the model's CP plan; tensor parallelism (`tp_size`, compiler/passes/tp-lower.ts) over the
 * model's / component's TP plan.
 * `ulysses_anything: 'auto'` switches UAA on only where the sizes need it.
 */
export function compileParallelPlans(model: string, opts: Omit<CompileOptions, 'parallel'> & { parallel: Omit<ParallelPlan, 'ulysses_anything'> & { ulysses_anything?: boolean | 'auto' } }): Plan[] {
  const W = opts.parallel.ulysses_size ?? 1;
  const ring = opts.parallel.ring_size ?? 1;
  const base = { component: opts.component, ...(opts.dims ? { dims: opts.dims } : {}), ...(opts.config ? { config: opts.config } : {}) };
  if ((opts.parallel.tp_size ?? 1) > 1) {
    // tensor parallel (compiler/passes/tp-lower.ts): one plan per TP rank
    const { parallel: tpPar, ...plainTp } = opts;
    const parallel: ParallelPlan = { ...tpPar, ulysses_anything: tpPar.ulysses_anything === true };
    const lowerTp = (par: ParallelPlan): Plan[] =>
      lowerTensorParallel(model, { ...base, parallel: par }, (tp, over, graphPass) =>
        compileDetailed(model, plainTp, { tp, ...(over ? { dimsOverride: over } : {}), ...(graphPass ? { graphPass } : {}) }).plan,
      );
    // Ulysses x TP with 'auto' UAA: UAA only when the split or the per-TP-rank heads need it
    if (W > 1 && tpPar.ulysses_anything === 'auto') {
      try {
        return lowerTp(parallel);
      } catch (e) {
        if (!(e instanceof CompileError)) throw e;
        return lowerTp({ ...parallel, ulysses_anything: true });
      }
    }
    return lowerTp(parallel);
  }
  const anything = opts.parallel.ulysses_anything === 'auto' ? ring === 1 && ulyssesNeedsAnything(model, base, W) : !!opts.parallel.ulysses_anything;
  const parallel: ParallelPlan = { ...opts.parallel, ulysses_anything: anything };
  const { parallel: _p, ...plain } = opts;
  void _p;
  return lowerContextParallel(model, { ...base, parallel }, (dimsOverride, graphPass) => compileDetailed(model, plain, { dimsOverride, ...(graphPass ? { graphPass } : {}) }).plan);
}

/** ONNX (opset 21) of the uncached one-rank component, from the unfused IR. */
export function exportOnnx(model: string, opts: CompileOptions & { weights?: Map<string, Float32Array> }): Uint8Array {
  const def = getModel(model);
  const traced = traceComponent(def, opts.component, { ...(opts.dims ? { dims: opts.dims } : {}), ...(opts.config ? { config: opts.config } : {}) });
  return exportGraphOnnx(traced.graph, { name: `${model}-${opts.component}`, ...(opts.weights ? { weights: opts.weights } : {}) });
}

function fmtNum(n: number): string {
  if (n >= 1e12) return `${(n / 1e12).toFixed(2)} T`;
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)} K`;
  return String(n);
}

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((v, c) => (c === 0 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  ')).join('\n');
}

/** A readable summary: components, block lists, patterns, params, FLOPs per step. */
type InspectOptions = { dims?: Record<string, number>; config?: Record<string, unknown>; configs?: Partial<Record<PlanComponent, Record<string, unknown>>> };

/** every component of a model traced for inspection: `dims` / `config` the transformer's, `configs` per component (a directory's config.json files) */
function inspectTraces(model: string, opts: InspectOptions) {
  const def = getModel(model);
  return (Object.keys(def.components) as CompileOptions['component'][]).map((comp) => {
    const own = opts.configs?.[comp];
    const base = comp === 'transformer' ? { ...(opts.dims ? { dims: opts.dims } : {}), ...(opts.config ? { config: opts.config } : {}) } : {};
    return { comp, t: traceComponent(def, comp, { ...base, ...(own ? { config: own } : {}) }) };
  });
}

/**
 * `inspect --json`: per component its class, dims tag, parameter count (every weight the trace declares, as
 * `sum(p.numel() for p in model.parameters())` counts the ones it uses) and FLOPs per forward; the cache lists.
 */
export function inspectModelJson(model: string, opts: InspectOptions = {}): Record<string, unknown> {
  const def = getModel(model);
  const comps = inspectTraces(model, opts);
  return {
    model,
    params: Object.fromEntries(comps.map(({ comp, t }) => [comp, paramCount(t.graph)])),
    flops: Object.fromEntries(comps.map(({ comp, t }) => [comp, graphFlops(t.graph)])),
    components: Object.fromEntries(
      comps.map(({ comp, t }) => [comp, { className: t.className, tag: t.tag, dims: t.dims, blockLists: t.graph.lists.map((l) => ({ name: l.list, pattern: l.pattern, blocks: l.blocks.length })) }]),
    ),
    ...(def.cache ? { cache: def.cache.lists.map((l) => ({ name: l.name, blocks: l.blocks, pattern: l.pattern })) } : {}),
  };
}

export function inspectModel(model: string, opts: InspectOptions = {}): string {
  const def = getModel(model);
  const out: string[] = [`model ${model}`];
  for (const { comp, t } of inspectTraces(model, opts)) {
    const g = t.graph;
    out.push('', `${comp} (${t.className}) ${t.tag}  dims ${JSON.stringify(t.dims)}`);
    out.push(`  params ${fmtNum(paramCount(g))}  flops/forward ${fmtNum(graphFlops(g))}`);
    // a long list (the Wan VAE's causal caches) shows its first entries and a count
    const ios = (xs: { name: string; node: number }[]): string => {
      const items = xs.map((i) => `${i.name}[${g.node(i.node).shape.join(',')}]`);
      return items.length > 6 ? `${items.slice(0, 4).join(' ')} ... (${items.length - 4} more)` : items.join(' ');
    };
    out.push(`  inputs  ${ios(g.inputs)}`);
    out.push(`  outputs ${ios(g.outputs)}`);
    const rows: string[][] = [['segment / block', 'pattern', 'params', 'flops']];
    for (const s of g.segments) {
      const li = g.lists.find((l) => l.segment === s);
      if (!li) {
        rows.push([s, '', '', fmtNum(graphFlops(g, (n) => n.segment === s))]);
        continue;
      }
      rows.push([`${s} (${li.list}, ${li.blocks.length} blocks)`, `Pattern_${li.pattern}`, '', fmtNum(graphFlops(g, (n) => n.segment === s))]);
      for (const b of li.blocks) rows.push([`  ${b.name}`, `Pattern_${b.pattern}`, fmtNum(paramCount(g, `${b.name}.`)), fmtNum(graphFlops(g, (n) => n.block === b.name))]);
    }
    out.push(table(rows).split('\n').map((l) => `  ${l}`).join('\n'));
  }
  if (def.cache) out.push('', `cache: ${def.cache.lists.map((l) => `${l.name} = ${l.blocks.join(' + ')} (Pattern_${l.pattern})`).join('; ')}`);
  return out.join('\n');
}
