// The weights of one diffusers / transformers component directory, as `save_pretrained` writes them: one
// `diffusion_pytorch_model.safetensors` / `model.safetensors`, or shards listed by
// `*.safetensors.index.json` (`weight_map`: tensor name -> shard file). Every shard is opened once (mmap,
// runtime/io/safetensors.ts); bf16 / fp16 tensors are converted to float32 once, when first read.
// Errors name the directory, the index, the shard and the tensor.
import fs from 'node:fs';
import path from 'node:path';
import { openSafetensors, SafetensorsError, type FloatTensor, type SafetensorsFile, type TensorInfo } from './safetensors.ts';

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
    return this.where.has(name);
  }

  /** the file a tensor is stored in */
  fileOf(name: string): string {
    return this.file(name).path;
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  tensor(name: string): FloatTensor {
    return this.file(name).tensor(name);
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
