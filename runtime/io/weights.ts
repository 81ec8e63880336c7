// The weights of one diffusers / transformers component directory, as `save_pretrained` writes them: one
// `diffusion_pytorch_model.safetensors` / `model.safetensors`, or shards listed by
// `*.safetensors.index.json` (`weight_map`: tensor name -> shard file). Every shard is opened once (mmap,
// runtime/io/safetensors.ts); bf16 / fp16 tensors are converted to float32 once, when first read.
// Errors name the directory, the index, the shard and the tensor.
import fs from 'node:fs';
import path from 'node:path';
import { openSafetensors, SafetensorsError, type FloatTensor, type SafetensorsFile, type TensorInfo } from './safetensors.ts';
import type { Plan } from '../plan.ts';
import { planWeightData } from '../parallel/tp.ts';
import { checkLoraShape, fuseLora, loraBranch, type LoraTerm } from '../lora.ts';
import { UserError } from '../model-dir.ts';

/** the weight file names a component directory may hold, in the order diffusers / transformers look */
const WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'model.safetensors'];

export class ComponentWeights {
  private constructor(
    /** the component directory */
    readonly dir: string,
    /** tensor name -> its shard */
    private readonly where: ReadonlyMap<string, SafetensorsFile>,
    /** the index file, when sharded */
    readonly index: string | null,
  ) {}

  /** a short label for errors: the single file, or the index */
  get path(): string {
    return this.index ?? [...this.where.values()][0]?.path ?? this.dir;
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name) || this.branchOf(name) !== null;
  }

  /**
   * false: adapters stay unfused (`--disable-fuse-lora`): the base weights are read as they are and each
   * adapted module serves `<module>.lora_A.weight` / `.lora_B.weight`, its branch (runtime/lora.ts loraBranch)
   */
  fuse = true;

  /** the unfused branch weight a name asks for: its module and half, or null */
  private branchOf(name: string): { module: string; half: 'A' | 'B' } | null {
    if (this.fuse) return null;
    const m = /^(.*)\.lora_([AB])\.weight$/.exec(name);
    return m && this.lora.has(`${m[1]}.weight`) ? { module: m[1]!, half: m[2] as 'A' | 'B' } : null;
  }

  /** the rank of each adapted module's branch (unfused LoRA: the transformer plan's lora_branches) */
  loraRanks(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, terms] of this.lora) out[name.slice(0, -'.weight'.length)] = terms.reduce((a, t) => a + t.m.rank, 0);
    return out;
  }

  /** the file a tensor is stored in (an unfused branch: its first adapter's LoRA file) */
  fileOf(name: string): string {
    const branch = this.branchOf(name);
    return branch ? this.lora.get(`${branch.module}.weight`)![0]!.file : this.file(name).path;
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  tensor(name: string): FloatTensor {
    const branch = this.branchOf(name);
    if (branch) {
      const w = `${branch.module}.weight`;
      const shape = this.info(w).shape;
      const b = loraBranch(this.lora.get(w)!, branch.module, shape);
      return branch.half === 'A' ? { dtype: 'F32', shape: [b.rank, shape[1]!], data: b.A } : { dtype: 'F32', shape: [shape[0]!, b.rank], data: b.B };
    }
    const t = this.file(name).tensor(name);
    const terms = this.fuse ? this.lora.get(name) : undefined;
    return terms ? { ...t, data: fuseLora(t.data, t.shape, name.slice(0, -'.weight'.length), terms) } : t;
  }

  /** the LoRA terms in effect, by weight name (`<module>.weight`) */
  private lora = new Map<string, LoraTerm[]>();

  /**
   * Puts LoRA terms in effect (runtime/lora.ts; by module, replacing those before): each `<module>.weight` they
   * target is read as W + the sum of its terms. Every module is checked against the checkpoint first (a module
   * it lacks or a shape that does not fit is an error naming both, and nothing changes). Returns the weights
   * whose value changed (targeted before or now), which the executors must bind again.
   */
  setLoras(terms: ReadonlyMap<string, LoraTerm[]>): string[] {
    const next = new Map<string, LoraTerm[]>();
    for (const [module, ts] of terms) {
      const name = `${module}.weight`;
      if (!this.where.has(name)) throw new UserError(`${ts[0]!.file}: LoRA module "${module}" has no weight "${name}" in ${this.path}`);
      for (const t of ts) checkLoraShape(t, module, this.info(name).shape);
      next.set(name, ts);
    }
    const changed = new Set<string>();
    for (const name of new Set([...this.lora.keys(), ...next.keys()])) {
      const a = this.lora.get(name) ?? [];
      const b = next.get(name) ?? [];
      if (a.length !== b.length || a.some((t, i) => t.m !== b[i]!.m || t.scale !== b[i]!.scale)) changed.add(name);
    }
    this.lora = next;
    // unfused: the base weights never change; the branches of the modules whose adapters changed do
    return this.fuse ? [...changed] : [...changed].flatMap((n) => {
      const m = n.slice(0, -'.weight'.length);
      return [`${m}.lora_A.weight`, `${m}.lora_B.weight`];
    });
  }

  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(`${this.path}: no tensor "${name}" (${this.where.size} tensors in ${this.dir})`, this.path, name);
    return f;
  }

  /** Opens the weights of a component directory (sharded or not). */
  static async open(dir: string): Promise<ComponentWeights> {
    let entries: string[];
    try {
      entries = fs.readdirSync(dir);
    } catch (e) {
      throw new SafetensorsError(`${dir}: cannot read the component directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, dir);
    }
    for (const base of WEIGHT_FILES) {
      const indexFile = path.join(dir, `${base}.index.json`);
      if (entries.includes(`${base}.index.json`)) return ComponentWeights.openSharded(dir, indexFile);
      if (entries.includes(base)) {
        const f = await openSafetensors(path.join(dir, base));
        return new ComponentWeights(dir, new Map(f.names().map((n) => [n, f])), null);
      }
    }
    throw new SafetensorsError(
      `${dir}: no weights: expected ${WEIGHT_FILES.join(' or ')} (or its .index.json with shards); the directory has: ${entries.join(', ') || 'nothing'}`,
      dir,
    );
  }

  private static async openSharded(dir: string, indexFile: string): Promise<ComponentWeights> {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    } catch (e) {
      throw new SafetensorsError(`${indexFile}: not a valid JSON index (${(e as Error).message})`, indexFile);
    }
    const map = (raw as { weight_map?: unknown })?.weight_map;
    if (!map || typeof map !== 'object' || Array.isArray(map)) throw new SafetensorsError(`${indexFile}: field "weight_map" must be an object of tensor name -> shard file`, indexFile);
    const shards = new Map<string, SafetensorsFile>();
    const where = new Map<string, SafetensorsFile>();
    for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
        throw new SafetensorsError(`${indexFile}: weight_map["${name}"] must be a shard file name in ${dir}, got ${JSON.stringify(shard)}`, indexFile, name);
      }
      let f = shards.get(shard);
      if (!f) {
        const file = path.join(dir, shard);
        if (!fs.existsSync(file)) throw new SafetensorsError(`${indexFile}: shard "${shard}" (holding "${name}") is missing from ${dir}`, indexFile, name);
        f = await openSafetensors(file);
        shards.set(shard, f);
      }
      if (!f.has(name)) throw new SafetensorsError(`${f.path}: the index ${path.basename(indexFile)} puts tensor "${name}" in this shard, but it is not there`, f.path, name);
      where.set(name, f);
    }
    for (const f of shards.values()) {
      for (const n of f.names()) {
        if (!where.has(n)) throw new SafetensorsError(`${f.path}: tensor "${n}" is not listed in ${path.basename(indexFile)}`, f.path, n);
      }
    }
    return new ComponentWeights(dir, where, indexFile);
  }
}

/**
 * Checkpoint tensors a plan may leave unread: what transformers itself ignores or ties (the T5 encoder's
 * copy of the shared embedding, CLIP's position_ids buffer) and the VAE's encoder, which text-to-image
 * never runs (the VAE plan is the decoder).
 */
function unreadOk(component: string, name: string): boolean {
  if (name === 'encoder.embed_tokens.weight' || name === 'text_model.embeddings.position_ids') return true;
  return component === 'vae' && (name.startsWith('encoder.') || name.startsWith('quant_conv.'));
}

/**
 * Binds every weight of a plan from a component's checkpoint (a tensor-parallel plan: the rank's slice of
 * each tensor). A missing weight, a tensor a plan of the whole model does not read, or a shape that differs
 * from the plan is an error naming the file and the tensor (missing and unexpected tensors: before anything
 * is bound). `mayLeave`: the tensors a plan of part of the component leaves (the Wan VAE's first chunk skips
 * the temporal upsampling convs); any other unread tensor is still unexpected.
 */
export function bindPlanWeights(target: { bindWeight(name: string, data: Float32Array): void }, plan: Plan, weights: ComponentWeights, o: { mayLeave?: (name: string) => boolean } = {}): void {
  const component = plan.component;
  const used = new Set(plan.weights.map((w) => w.name));
  // a tensor-parallel rank reads only its share (a row-parallel bias is added once, on one rank): the
  // tensors it leaves belong to the other ranks, so only a plan of the whole model checks for unread ones
  const wholeModel = (plan.parallel?.tp ?? 1) <= 1;
  const unexpected = wholeModel ? weights.names().filter((n) => !used.has(n) && !unreadOk(component, n) && !o.mayLeave?.(n)) : [];
  const listed = unexpected.length > 6 ? `${unexpected.slice(0, 6).join(', ')}, ... (${unexpected.length} tensors)` : unexpected.join(', ');
  const missing = plan.weights.find((w) => !weights.has(w.name));
  if (missing) {
    throw new SafetensorsError(
      `${weights.path}: missing weight "${missing.name}" (the ${component} plan expects shape [${missing.shape.join(', ')}])` +
        (unexpected.length ? `; the checkpoint has tensors the plan does not read: ${listed}` : ''),
      weights.path,
      missing.name,
    );
  }
  if (unexpected.length) {
    throw new SafetensorsError(
      `${weights.path}: unexpected tensor${unexpected.length > 1 ? 's' : ''} ${listed} (in ${weights.fileOf(unexpected[0]!)}): the ${component} model file does not read ${unexpected.length > 1 ? 'them' : 'it'}; is the config.json beside it the checkpoint's own?`,
      weights.path,
      unexpected[0]!,
    );
  }
  rebindWeights(target, plan, weights);
}

/**
 * Binds the plan's weights (those in `only`, or all) from the checkpoint, one tensor at a time (a TP slice is
 * a copy, and only one is held at once); a non-finite value is an error naming the file and the tensor.
 */
export function rebindWeights(target: { bindWeight(name: string, data: Float32Array): void }, plan: Plan, weights: ComponentWeights, only?: ReadonlySet<string>): void {
  for (const w of plan.weights) {
    if (only && !only.has(w.name)) continue;
    const data = planWeightData(w, weights.tensor(w.name), `${weights.fileOf(w.name)} (${plan.component} plan)`);
    // non-finite weights never reach a plan: one pass at load (the executor reads every value anyway)
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw new SafetensorsError(`${weights.fileOf(w.name)}: tensor "${w.name}" has a non-finite value (${data[i]}) at index ${i}`, weights.fileOf(w.name), w.name);
    }
    target.bindWeight(w.name, data);
  }
}
