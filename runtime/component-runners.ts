// The executors of one pipeline's components on the native runtime: where a component's plan comes from
// (given, shipped under generated/<model>/<component>/plan.json, or compiled by the plan provider), its
// checkpoint (opened once, bound into each executor), and the set-inputs / forward / read-output calls
// every pipeline family makes.
import fs from 'node:fs';
import path from 'node:path';
import { bindPlanWeights, ComponentWeights, rebindWeights } from './io/weights.ts';
import { LoraLibrary, loraTerms, type LoraSpec, type LoraTerm } from './lora.ts';
import { readJson, UserError } from './model-dir.ts';
import { loadNative, type NativeExecutor } from './native.ts';
import { ExecutorBlockListRunner } from './cache/executor-runner.ts';
import type { Component, Plan } from './plan.ts';
import type { PlanProvider } from './pipeline.ts';
import { TransformerCacheSession, type PipelineCacheOptions, type PipelineCacheResult } from './pipeline-cache.ts';

export function shapeKey(shape: readonly number[]): string {
  return shape.join('x');
}

export function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** a plan and the executor it runs on (weights bound) */
export interface Runner {
  plan: Plan;
  exec: NativeExecutor;
}

/** runs every segment of the plan */
export async function forwardRunner(r: Runner): Promise<void> {
  for (const s of r.plan.segments) await r.exec.run(s.name);
}

/** sets every plan input (each must be given, with the plan's element count) */
export function setRunnerInputs(r: Runner, inputs: Record<string, Float32Array>): void {
  for (const io of r.plan.inputs) {
    const v = inputs[io.name];
    if (!v) throw new Error(`${r.plan.model}/${r.plan.component} plan input "${io.name}" was not provided`);
    if (v.length !== product(io.shape)) {
      throw new Error(`${r.plan.component} input "${io.name}": ${v.length} values, plan shape [${io.shape.join(', ')}] needs ${product(io.shape)}`);
    }
    r.exec.setInput(io.name, v);
  }
}

/** a fresh copy of a plan output */
export function runnerOutput(r: Runner, name: string): Float32Array {
  const io = r.plan.outputs.find((o) => o.name === name);
  if (!io) throw new Error(`${r.plan.component} plan has no output "${name}" (outputs: ${r.plan.outputs.map((o) => o.name).join(', ')})`);
  const out = new Float32Array(product(io.shape));
  r.exec.getOutput(name, out);
  return out;
}

export interface ComponentRunnerOptions {
  threads?: number;
  /** the executors' backend: "cpu" (default), "cuda", "cuda:N" */
  device?: string;
  /** directory holding <model>/<component>/plan.json (default: <package>/generated) */
  generatedDir: string;
  /** LoRA adapters fused into the transformer weights (runtime/lora.ts) */
  loras?: LoraSpec[];
  /** where LoRA files are read and kept (default: a library of its own) */
  loraLibrary?: LoraLibrary;
  /**
   * false (`--disable-fuse-lora`): adapters run as low-rank branches beside the untouched base weights (a
   * transformer plan per set of adapted modules and ranks; a switch among adapters of the same shape binds only
   * the branches)
   */
  fuseLora?: boolean;
}

/** Checkpoints and executors of a pipeline directory's components, created once per shape. */
export class ComponentRunners {
  private readonly runners = new Map<string, Runner>();
  private readonly weights = new Map<string, ComponentWeights>();
  private readonly shipped = new Map<Component, Plan | null>();
  /** the LoRA terms in effect by checkpoint folder and module (runtime/lora.ts) */
  private loraTerms = new Map<string, Map<string, LoraTerm[]>>();
  /** the adapters in effect, as given */
  private loraSpecs: LoraSpec[] = [];
  /** every executor with weights bound, and the folder they came from (LoRA switches bind again) */
  private readonly bound: { folder: string; plan: Plan; target: { bindWeight(name: string, data: Float32Array): void } }[] = [];
  readonly loraLibrary: LoraLibrary;

  constructor(
    readonly model: string,
    readonly dir: string,
    private readonly opts: ComponentRunnerOptions,
  ) {
    this.loraLibrary = opts.loraLibrary ?? new LoraLibrary();
    if (opts.loras?.length) this.setLorasNow(opts.loras);
  }

  /** the LoRA adapters in effect */
  get loras(): LoraSpec[] {
    return this.loraSpecs;
  }

  /**
   * Puts `specs` in effect (replacing the adapters before; [] for none): checked against every folder first
   * (nothing changes on an error), then each executor binds again the weights the old or the new adapters
   * touch. Not while a forward pass runs (the pipeline calls it between generations).
   */
  async setLoras(specs: LoraSpec[]): Promise<void> {
    this.setLorasNow(specs);
  }

  private setLorasNow(specs: LoraSpec[]): void {
    const terms = loraTerms(specs, this.loraLibrary);
    for (const [folder, modules] of terms) {
      if (!fs.existsSync(path.join(this.dir, folder))) throw new UserError(`${[...modules.values()][0]![0]!.file}: the LoRA adapts ${folder}, which ${this.dir} does not have`);
    }
    const folders = new Set([...this.loraTerms.keys(), ...terms.keys()]);
    const open = [...folders].filter((f) => this.weights.has(f));
    // check every opened checkpoint before changing any
    const changed = new Map<string, string[]>();
    const before = new Map(open.map((f) => [f, this.loraTerms.get(f) ?? new Map<string, LoraTerm[]>()]));
    try {
      for (const f of open) changed.set(f, this.weights.get(f)!.setLoras(terms.get(f) ?? new Map()));
    } catch (e) {
      for (const [f, t] of before) this.weights.get(f)!.setLoras(t);
      throw e;
    }
    this.loraTerms = terms;
    this.loraSpecs = specs.map((s) => ({ ...s }));
    for (const b of this.bound) {
      const w = this.weights.get(b.folder);
      if (!w) continue;
      if (this.opts.fuseLora === false) {
        // unfused: the executors whose plan has exactly the new branches bind all of them (they are small);
        // the others wait as they are until their modules and ranks are adapted again
        if (JSON.stringify(b.plan.config?.lora_branches ?? null) !== JSON.stringify(this.loraBranches(b.folder))) continue;
        const names = b.plan.weights.filter((x) => /\.lora_[AB]\.weight$/.test(x.name)).map((x) => x.name);
        if (names.length) rebindWeights(b.target, b.plan, w, new Set(names));
        continue;
      }
      const names = changed.get(b.folder);
      if (names?.length) rebindWeights(b.target, b.plan, w, new Set(names));
    }
  }

  /** unfused LoRA: the branch rank of each module the adapters in effect adapt in `folder` (null: fused, or none) */
  loraBranches(folder: string): Record<string, number> | null {
    const terms = this.loraTerms.get(folder);
    if (this.opts.fuseLora !== false || !terms?.size) return null;
    const out: Record<string, number> = {};
    for (const [module, ts] of [...terms].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) out[module] = ts.reduce((a, t) => a + t.m.rank, 0);
    return out;
  }

  /** records an executor whose weights came from `folder`'s checkpoint, so a LoRA switch binds them again */
  track(folder: string, plan: Plan, target: { bindWeight(name: string, data: Float32Array): void }): void {
    this.bound.push({ folder, plan, target });
  }

  /** the checkpoint in a component folder (sharded or single file), opened on first use */
  async weightsOf(folder: string): Promise<ComponentWeights> {
    let f = this.weights.get(folder);
    if (!f) {
      try {
        f = await ComponentWeights.open(path.join(this.dir, folder));
      } catch (e) {
        throw new UserError((e as Error).message);
      }
      f.fuse = this.opts.fuseLora !== false;
      const terms = this.loraTerms.get(folder);
      if (terms) f.setLoras(terms);
      this.weights.set(folder, f);
    }
    return f;
  }

  /** the plan shipped for this model and component, or null */
  shippedPlan(component: Component): Plan | null {
    if (!this.shipped.has(component)) {
      const file = path.join(this.opts.generatedDir, this.model, component, 'plan.json');
      this.shipped.set(component, fs.existsSync(file) ? (readJson(file) as unknown as Plan) : null);
    }
    return this.shipped.get(component)!;
  }

  /**
   * the executor cached under `key`, or one made from `plan()` with the weights of the component's folder (or
   * `o.folder`: Wan 2.2's transformer_2 runs transformer plans) bound
   */
  async runner(component: Component, key: string, plan: () => Promise<Plan>, o: { mayLeave?: (name: string) => boolean; folder?: string } = {}): Promise<Runner> {
    const k = `${component}:${key}`;
    let r = this.runners.get(k);
    if (r) return r;
    const p = await plan();
    const file = await this.weightsOf(o.folder ?? component);
    let exec: NativeExecutor;
    try {
      exec = new (loadNative().Executor)(JSON.stringify(p), { ...(this.opts.threads ? { threads: this.opts.threads } : {}), ...(this.opts.device ? { device: this.opts.device } : {}) });
    } catch (e) {
      // a device that is not there (no GPU, no driver, a build without CUDA): the backend says what is missing
      if (/--device|unknown device/.test((e as Error).message)) throw new UserError((e as Error).message);
      throw e;
    }
    try {
      bindPlanWeights(exec, p, file, o.mayLeave ? { mayLeave: o.mayLeave } : {});
    } catch (e) {
      throw new UserError((e as Error).message);
    }
    this.track(o.folder ?? component, p, exec);
    r = { plan: p, exec };
    this.runners.set(k, r);
    return r;
  }

  all(): Runner[] {
    return [...this.runners.values()];
  }

  /** worker threads of the executors (the requested count before the first one exists) */
  threads(): number | null {
    for (const r of this.runners.values()) return typeof r.exec.threads === 'function' ? r.exec.threads() : (this.opts.threads ?? null);
    return this.opts.threads ?? null;
  }

  /** bytes of the executors' arenas */
  arenaBytes(): number {
    let n = 0;
    for (const r of this.runners.values()) n += r.exec.arenaBytes();
    return n;
  }
}

/** A per-request Cache-DiT session bound to one executor (runtime/pipeline-cache.ts). */
export interface CachedForward {
  forward(): Promise<void>;
  result(): PipelineCacheResult;
}

/**
 * What a pipeline drives a component through, whatever runs it: this process's native executor, or one
 * rank's ParallelExecutor of a multi-rank run (runtime/parallel/rank-executor.ts).
 */
export interface ComponentExecutor {
  readonly plan: Plan;
  setInputs(inputs: Record<string, Float32Array>): void;
  forward(): Promise<void>;
  /** the full output (a multi-rank executor gathers it) */
  output(name: string): Promise<Float32Array>;
  /** a Cache-DiT session over the plan's block lists for one request (the config is validated now) */
  cacheSession(opts: PipelineCacheOptions, request: { steps: number; separateCfg: boolean }): CachedForward;
}

/** the ComponentExecutor of a local runner */
export function localExecutor(r: Runner): ComponentExecutor {
  return {
    plan: r.plan,
    setInputs: (inputs) => setRunnerInputs(r, inputs),
    forward: () => forwardRunner(r),
    output: async (name) => runnerOutput(r, name),
    cacheSession(opts, request) {
      // on a host backend the cache kernels run in place on the arena; elsewhere the io tensors are copied
      // through the backend (readTensor / writeTensor) and the cache math runs on the host copies
      const s = r.exec.device() === 'cpu' ? new TransformerCacheSession(loadNative(), opts, request) : new TransformerCacheSession((p, exec, seg) => new ExecutorBlockListRunner(exec, p, seg), opts, request);
      s.prepare(r.plan, r.exec);
      return { forward: () => s.forward(r.plan, r.exec), result: () => s.result() };
    },
  };
}

/** Runs calls one after the other (a pipeline's generate calls share its executors' arenas). */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn, fn);
    this.tail = r.catch(() => undefined);
    return r;
  }
}

/** Where a plan may come from, and the directory config it must have been built with. */
export interface PlanSources {
  given?: Plan | Plan[];
  provider?: PlanProvider;
  /** the compile request (model, dims, the directory's config) */
  request: { model: string; dims: Record<string, number>; config?: Record<string, unknown> };
}

/**
 * A plan of `component` whose inputs have the `want` shapes and whose recorded config agrees with the
 * directory's: given, else shipped, else from the provider; `also` adds a check (the Wan VAE's chunk).
 */
export async function resolvePlan(runners: ComponentRunners, component: Component, want: Record<string, number[]>, src: PlanSources, also?: (p: Plan) => boolean): Promise<Plan> {
  const cfg = src.request.config ?? {};
  const fits = (p: Plan | null | undefined): p is Plan =>
    !!p &&
    p.component === component &&
    Object.entries(want).every(([n, s]) => shapeKey(p.inputs.find((i) => i.name === n)?.shape ?? []) === shapeKey(s)) &&
    (also ? also(p) : true) &&
    Object.entries((p as { config?: Record<string, unknown> }).config ?? {}).every(([k, v]) => !(k in cfg) || JSON.stringify(cfg[k]) === JSON.stringify(v)) &&
    // unfused LoRA branches: the plan must have exactly the ones asked for (a plan without any has none)
    JSON.stringify((p as { config?: Record<string, unknown> }).config?.lora_branches ?? null) === JSON.stringify(cfg.lora_branches ?? null);
  for (const given of [src.given].flat()) if (fits(given)) return given;
  const shipped = runners.shippedPlan(component);
  if (fits(shipped)) return shipped;
  const dims = src.request.dims;
  if (!src.provider) {
    const size = dims.height !== undefined && dims.width !== undefined ? `, ${dims.height}x${dims.width}` : '';
    const shapes = Object.entries(want).map(([n, sh]) => `${n} [${sh.join(', ')}]`).join(', ');
    throw new UserError(`no ${component} plan for batch ${dims.batch ?? 1}${size} (${shapes}): compile one with \`ditforge compile ${runners.model}\` or use the CLI, which compiles missing sizes`);
  }
  const planDims = { batch: dims.batch ?? 1, height: dims.height ?? 0, width: dims.width ?? 0, textTokens: dims.textTokens ?? 0 };
  const p = await src.provider(component, planDims, src.request);
  if (!fits(p)) throw new Error(`the plan provider returned a ${component} plan that does not fit ${JSON.stringify(want)}`);
  return p;
}
