// CLI pieces of the compiler: `ditforge compile` and `ditforge inspect`.
import { PACKAGE_ROOT } from '../../runtime/package-root.ts';
import fs from 'node:fs';
import path from 'node:path';
import { componentConfig, readJson } from '../../runtime/model-dir.ts';
import { resolveModelDir } from '../../runtime/pipeline.ts';
import { pathToFileURL } from 'node:url';
import type { Component, Plan } from '../../runtime/plan.ts';
import { compilePlan, directoryConfig, exportOnnx, inspectModel, inspectModelJson, listModels, registerModel } from '../index.ts';
import type { ModelDefinition } from '../dsl/index.ts';
import { getModel } from '../registry.ts';
import { compileCudaSources, DEFAULT_CUDA_ARCHS } from '../toolchain/nvcc.ts';
import { REPO_ROOT } from '../dsl/trace.ts';

export const COMPONENTS: Component[] = ['text_encoder', 'text_encoder_2', 'transformer', 'vae', 'vae_encoder'];

/** Deterministic JSON: one line per value that fits in `width` columns, else expanded. */
export function formatJson(v: unknown, width = 140): string {
  const go = (x: unknown, ind: string): string => {
    const flat = JSON.stringify(x);
    if (flat === undefined) return 'null';
    if (x === null || typeof x !== 'object' || flat.length + ind.length <= width) return flat;
    const next = `${ind}  `;
    if (Array.isArray(x)) return `[\n${x.map((e) => next + go(e, next)).join(',\n')}\n${ind}]`;
    const ents = Object.entries(x as Record<string, unknown>).filter(([, e]) => e !== undefined);
    return `{\n${ents.map(([k, e]) => `${next}${JSON.stringify(k)}: ${go(e, next)}`).join(',\n')}\n${ind}}`;
  };
  return `${go(v, '')}\n`;
}

/** Resolves a model name or a model file (`models/x.ts`, default export = model(...)). */
export async function resolveModel(model: string): Promise<string> {
  if (/\.[cm]?[tj]s$/.test(model)) {
    const file = path.resolve(model);
    if (!fs.existsSync(file)) throw new Error(`model file ${model} does not exist`);
    const mod = (await import(pathToFileURL(file).href)) as { default?: ModelDefinition };
    const def = mod.default;
    if (!def || typeof def !== 'object' || !('components' in def)) throw new Error(`${model}: the default export must be a model(...) definition`);
    registerModel(def.name, def);
    return def.name;
  }
  getModel(model);
  return model;
}

export interface CompileCommandOptions {
  target?: 'cpu' | 'cuda';
  out?: string;
  /** components to compile (default: all the model has) */
  components?: Component[];
  /** per-component dims */
  dims?: Partial<Record<Component, Record<string, number>>>;
  /** write model.onnx (graph only, weights as inputs) next to plan.json (default true) */
  onnx?: boolean;
  /** render the kernel library into <out>/kernels (default: when out is the default generated/) */
  kernels?: boolean;
  quiet?: boolean;
  /** with target 'cuda': build the CUDA kernels with nvcc (default true) */
  build?: boolean;
}

export function writeIfChanged(file: string, data: string | Uint8Array): void {
  if (fs.existsSync(file)) {
    const old = fs.readFileSync(file);
    const now = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
    if (old.equals(now)) return;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
}

/** Renders the kernel library (compiler/codegen/kernels.ts) with the given plans' elementwise chains. */
export async function renderKernels(plans: Plan[], outDir: string): Promise<string[]> {
  const file = path.join(REPO_ROOT, 'compiler', 'codegen', 'kernels.ts');
  if (!fs.existsSync(file)) return [];
  const mod = (await import(pathToFileURL(file).href)) as { renderKernelLibrary?: (o: { elementwise: { name: string; arity: number; expr: string }[]; outDir: string }) => string[] };
  if (!mod.renderKernelLibrary) return [];
  const elementwise = plans.flatMap((p) => p.elementwise);
  return mod.renderKernelLibrary({ elementwise, outDir });
}

/** Collects the elementwise specs of every plan.json under generated/ (so kernels cover all plans). */
export function collectShippedPlans(generatedDir: string): Plan[] {
  const plans: Plan[] = [];
  if (!fs.existsSync(generatedDir)) return plans;
  for (const m of fs.readdirSync(generatedDir).sort()) {
    if (m === 'kernels') continue;
    const d = path.join(generatedDir, m);
    if (!fs.statSync(d).isDirectory()) continue;
    for (const c of fs.readdirSync(d).sort()) {
      const f = path.join(d, c, 'plan.json');
      if (fs.existsSync(f)) plans.push(JSON.parse(fs.readFileSync(f, 'utf8')) as Plan);
    }
  }
  return plans;
}

/** Compiles every component of `model` into `<out>/<model>/<component>/` (plan.json + model.onnx). */
export async function runCompile(model: string, opts: CompileCommandOptions = {}): Promise<string[]> {
  const name = await resolveModel(model);
  const def = getModel(name);
  const generated = path.join(PACKAGE_ROOT, 'generated');
  const outRoot = path.resolve(opts.out ?? generated);
  const comps = (opts.components ?? COMPONENTS).filter((c) => def.components[c]);
  const written: string[] = [];
  const plans: Plan[] = [];
  for (const component of comps) {
    const dims = opts.dims?.[component];
    const plan = compilePlan(name, { component, ...(dims ? { dims } : {}), target: opts.target ?? 'cpu' });
    plans.push(plan);
    const dir = path.join(outRoot, name, component);
    const pf = path.join(dir, 'plan.json');
    writeIfChanged(pf, formatJson(plan));
    written.push(pf);
    if (opts.onnx !== false) {
      const of = path.join(dir, 'model.onnx');
      writeIfChanged(of, exportOnnx(name, { component, ...(dims ? { dims } : {}) }));
      written.push(of);
    }
    if (!opts.quiet) process.stdout.write(`${name}/${component} ${plan.tag}: ${plan.kernels.length} kernels, arena ${(plan.arenaFloats * 4 / 2 ** 20).toFixed(2)} MiB -> ${path.relative(process.cwd(), dir) || '.'}\n`);
  }
  const cuda = opts.target === 'cuda' && opts.build !== false;
  if (cuda || (opts.kernels ?? outRoot === generated)) {
    const all = [...collectShippedPlans(outRoot).filter((p) => !plans.some((q) => q.model === p.model && q.component === p.component)), ...plans];
    written.push(...(await renderKernels(all, path.join(outRoot, 'kernels', 'cpu'))));
  }
  if (cuda) {
    // build the CUDA kernels the plans need with nvcc (sm_80 + sm_90a); objects go to a build folder,
    // never into generated/
    const cuDir = path.join(outRoot, 'kernels', 'cuda');
    const sources = fs.readdirSync(cuDir).filter((f) => f.endsWith('.cu')).sort().map((f) => path.join(cuDir, f));
    const objDir = outRoot === generated ? path.join(PACKAGE_ROOT, 'build', 'cuda') : path.join(outRoot, 'build', 'cuda');
    const objects = await compileCudaSources(sources, { outDir: objDir });
    if (!opts.quiet) process.stdout.write(`nvcc: ${objects.length} CUDA kernel objects for ${DEFAULT_CUDA_ARCHS.map((a) => `sm_${a}`).join(', ')} -> ${path.relative(process.cwd(), objDir)}\n`);
    written.push(...objects);
  }
  return written;
}

export async function runInspect(model: string, opts: { dims?: Record<string, number>; config?: Record<string, unknown>; json?: boolean } = {}): Promise<string> {
  const dir = fs.existsSync(path.join(model, 'model_index.json'));
  const name = dir ? resolveModelDir(model).name : await resolveModel(model);
  const o = dir ? { configs: directoryConfigs(model) } : { ...(opts.dims ? { dims: opts.dims } : {}), ...(opts.config ? { config: opts.config } : {}) };
  const text = opts.json ? JSON.stringify({ ...(dir ? { directory: path.resolve(model) } : {}), ...inspectModelJson(name, o) }) : dir ? inspectDirectory(model) : inspectModel(name, o);
  process.stdout.write(`${text}\n`);
  return text;
}

/** a directory's component configs as the family compiles them (a multimodal config's text_config for its language model) */
function directoryConfigs(dir: string): Record<string, Record<string, unknown>> {
  const { name, family } = resolveModelDir(dir);
  const configs: Record<string, Record<string, unknown>> = {};
  for (const c of family.dirConfigs) {
    const raw = componentConfig(dir, c);
    const text = raw.text_config && typeof raw.text_config === 'object' ? (raw.text_config as Record<string, unknown>) : raw;
    configs[c] = directoryConfig(name, c, text);
  }
  return configs;
}

export { listModels };

/**
 * A diffusers directory: what model_index.json names (component, library, class), then each component
 * the family compiles, traced with the directory's own config.json (parameters, FLOPs per forward).
 */
function inspectDirectory(dir: string): string {
  const { name, family } = resolveModelDir(dir);
  const idx = readJson(path.join(dir, 'model_index.json'));
  const rows = Object.entries(idx)
    .filter(([k, v]) => !k.startsWith('_') && Array.isArray(v))
    .map(([k, v]) => `  ${k.padEnd(16)} ${(v as string[]).join('.')}`);
  const head = [`${path.resolve(dir)}: ${String(idx._class_name)} (plans: ${name})`, ...rows, ''];
  return head.join('\n') + inspectModel(name, { configs: directoryConfigs(dir) });
}
