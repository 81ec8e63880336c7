// LoRA adapters in the diffusers / peft format (`<module>.lora_A.weight` [r, in], `<module>.lora_B.weight`
// [out, r], an optional `<module>.alpha`; keys under `transformer.` / `transformer_2.` / `base_model.model.` or
// bare; the older `.lora.down.weight` / `.lora.up.weight` too), fused into the transformer's weights when they
// are read: W' = W + scale x (alpha / r) x B A, float32, as diffusers' fuse_lora merges them. A plan never sees
// an adapter: every executor (one rank's or a tensor-parallel rank's slice) binds the fused weights. Every
// error names the file and the key.
import { openSafetensorsSync } from './io/safetensors.ts';
import { UserError } from './model-dir.ts';

export interface LoraSpec {
  /** a .safetensors LoRA file */
  path: string;
  /** lora_scale (default 1) */
  scale?: number;
}

/** one target module's adapter: `delta = factor x B [out, r] @ A [r, in]` */
export interface LoraModule {
  A: Float32Array;
  B: Float32Array;
  rank: number;
  inF: number;
  outF: number;
  /** scale x alpha / r */
  factor: number;
  file: string;
}

const SUFFIXES: [RegExp, 'A' | 'B' | 'alpha'][] = [
  [/\.lora_A(?:\.default)?\.weight$/, 'A'],
  [/\.lora_B(?:\.default)?\.weight$/, 'B'],
  [/\.lora\.down\.weight$/, 'A'],
  [/\.lora\.up\.weight$/, 'B'],
  [/\.alpha$/, 'alpha'],
];

/**
 * The adapters of a LoRA file by checkpoint folder (`transformer`, Wan 2.2's `transformer_2`) and target module
 * (its weight is `<module>.weight` in that folder's checkpoint).
 */
export function readLora(spec: LoraSpec): Map<string, Map<string, LoraModule>> {
  const scale = spec.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new UserError(`--lora-scale must be a number, got ${spec.scale}`);
  let f;
  try {
    f = openSafetensorsSync(spec.path);
  } catch (e) {
    throw new UserError(`--lora-path ${spec.path}: ${(e as Error).message}`);
  }
  const parts = new Map<string, { folder: string; module: string; A?: string; B?: string; alpha?: string }>();
  for (const key of f.names()) {
    const hit = SUFFIXES.find(([re]) => re.test(key));
    if (!hit) throw new UserError(`${spec.path}: key "${key}" is not a LoRA tensor (expected <module>.lora_A.weight / .lora_B.weight / .alpha, diffusers / peft format)`);
    let module = key.replace(hit[0], '');
    let folder = 'transformer';
    for (const [prefix, to] of [['base_model.model.', 'transformer'], ['transformer_2.', 'transformer_2'], ['transformer.', 'transformer']] as const) {
      if (module.startsWith(prefix)) {
        module = module.slice(prefix.length);
        folder = to;
        break;
      }
    }
    const id = `${folder}:${module}`;
    const p = parts.get(id) ?? { folder, module };
    p[hit[1]] = key;
    parts.set(id, p);
  }
  const out = new Map<string, Map<string, LoraModule>>();
  for (const p of parts.values()) {
    if (!p.A || !p.B) throw new UserError(`${spec.path}: module "${p.module}" has ${p.A ? 'lora_A' : 'lora_B'} but no ${p.A ? 'lora_B' : 'lora_A'}`);
    const a = f.tensor(p.A);
    const b = f.tensor(p.B);
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1]) {
      throw new UserError(`${spec.path}: module "${p.module}": lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] are not [r, in] and [out, r] of one rank r`);
    }
    const rank = a.shape[0]!;
    const alpha = p.alpha ? f.tensor(p.alpha).data[0]! : rank;
    const m: LoraModule = { A: a.data, B: b.data, rank, inF: a.shape[1]!, outF: b.shape[0]!, factor: Math.fround(scale * (alpha / rank)), file: spec.path };
    if (!out.has(p.folder)) out.set(p.folder, new Map());
    out.get(p.folder)!.set(p.module, m);
  }
  if (!out.size) throw new UserError(`${spec.path}: no LoRA tensors`);
  return out;
}

/** W [out, in] + factor x B @ A, float32 (a fresh array) */
export function fuseLora(w: Float32Array, shape: number[], m: LoraModule, module: string): Float32Array {
  if (shape.length !== 2 || shape[0] !== m.outF || shape[1] !== m.inF) {
    throw new UserError(`${m.file}: module "${module}": the adapter is [${m.outF}, ${m.inF}] (B [${m.outF}, ${m.rank}] @ A [${m.rank}, ${m.inF}]), the weight "${module}.weight" is [${shape.join(', ')}]`);
  }
  const out = Float32Array.from(w);
  const { A, B, rank, inF, outF, factor } = m;
  for (let o = 0; o < outF; o++) {
    for (let k = 0; k < rank; k++) {
      const b = Math.fround(factor * B[o * rank + k]!);
      if (b === 0) continue;
      const row = o * inF;
      const ak = k * inF;
      for (let i = 0; i < inF; i++) out[row + i] = out[row + i]! + Math.fround(b * A[ak + i]!);
    }
  }
  return out;
}
