// LoRA adapters in the diffusers / peft format (`<module>.lora_A.weight` [r, in], `<module>.lora_B.weight`
// [out, r], an optional `<module>.alpha`; keys under `transformer.` / `transformer_2.` / `base_model.model.` or
// bare; the older `.lora.down.weight` / `.lora.up.weight` too), fused into the transformer's weights when they
// are bound: W' = W + sum over adapters of scale x (alpha / r) x B A, as diffusers' fuse_lora merges them. A plan
// never sees an adapter: every executor (one rank's, or a tensor-parallel rank's slice) binds the fused weights,
// and switching adapters re-binds only the weights the old or the new ones touch (from the checkpoint again,
// so nothing drifts). Files are read once and kept by a small LRU (LoraLibrary). Every error names the file
// and the key.
import fs from 'node:fs';
import path from 'node:path';
import { openSafetensorsSync } from './io/safetensors.ts';
import { UserError } from './model-dir.ts';
import { loadNative } from './native.ts';

export interface LoraSpec {
  /** a .safetensors LoRA file */
  path: string;
  /** lora_scale (default 1) */
  scale?: number;
  /** the checkpoint folders it may adapt (default all the file has: transformer, Wan 2.2's transformer_2) */
  target?: 'all' | 'transformer' | 'transformer_2';
}

/** one target module's low-rank factors: `delta = alpha / r x B [out, r] @ A [r, in]` */
export interface LoraFactors {
  A: Float32Array;
  B: Float32Array;
  rank: number;
  inF: number;
  outF: number;
  alphaOverRank: number;
}

/** a LoRA file read: its factors by checkpoint folder and target module (its weight is `<module>.weight`) */
export interface LoraFile {
  path: string;
  folders: Map<string, Map<string, LoraFactors>>;
  bytes: number;
}

/** one adapter in effect on one module */
export interface LoraTerm {
  m: LoraFactors;
  scale: number;
  file: string;
}

const SUFFIXES: [RegExp, 'A' | 'B' | 'alpha'][] = [
  [/\.lora_A(?:\.default)?\.weight$/, 'A'],
  [/\.lora_B(?:\.default)?\.weight$/, 'B'],
  [/\.lora\.down\.weight$/, 'A'],
  [/\.lora\.up\.weight$/, 'B'],
  [/\.alpha$/, 'alpha'],
];

/** Reads a LoRA file (every key checked: a key that is no LoRA tensor, a missing half, unmatched ranks are errors). */
export function readLoraFile(file: string): LoraFile {
  let f;
  try {
    f = openSafetensorsSync(file);
  } catch (e) {
    throw new UserError(`--lora-path ${file}: ${(e as Error).message}`);
  }
  const parts = new Map<string, { folder: string; module: string; A?: string; B?: string; alpha?: string }>();
  for (const key of f.names()) {
    const hit = SUFFIXES.find(([re]) => re.test(key));
    if (!hit) throw new UserError(`${file}: key "${key}" is not a LoRA tensor (expected <module>.lora_A.weight / .lora_B.weight / .alpha, diffusers / peft format)`);
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
  const folders = new Map<string, Map<string, LoraFactors>>();
  let bytes = 0;
  for (const p of parts.values()) {
    if (!p.A || !p.B) throw new UserError(`${file}: module "${p.module}" has ${p.A ? 'lora_A' : 'lora_B'} but no ${p.A ? 'lora_B' : 'lora_A'}`);
    const a = f.tensor(p.A);
    const b = f.tensor(p.B);
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1]) {
      throw new UserError(`${file}: module "${p.module}": lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] are not [r, in] and [out, r] of one rank r`);
    }
    const rank = a.shape[0]!;
    const alpha = p.alpha ? f.tensor(p.alpha).data[0]! : rank;
    if (!Number.isFinite(alpha)) throw new UserError(`${file}: ${p.alpha} is not finite (${alpha})`);
    if (!folders.has(p.folder)) folders.set(p.folder, new Map());
    folders.get(p.folder)!.set(p.module, { A: Float32Array.from(a.data), B: Float32Array.from(b.data), rank, inF: a.shape[1]!, outF: b.shape[0]!, alphaOverRank: alpha / rank });
    bytes += 4 * (a.data.length + b.data.length);
  }
  if (!folders.size) throw new UserError(`${file}: no LoRA tensors`);
  return { path: file, folders, bytes };
}

/**
 * LoRA files by path, read once and kept until `capacity` others were used since (least recently used out);
 * a file changed on disk since it was read is read again.
 */
export class LoraLibrary {
  private readonly files = new Map<string, { file: LoraFile; mtimeMs: number }>();

  constructor(readonly capacity = 8) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new UserError(`--max-loras must be an integer >= 1, got ${capacity}`);
  }

  get(file: string): LoraFile {
    const key = path.resolve(file);
    let st: fs.Stats;
    try {
      st = fs.statSync(key);
    } catch {
      throw new UserError(`--lora-path ${file}: no such file (a diffusers / peft LoRA .safetensors)`);
    }
    const hit = this.files.get(key);
    this.files.delete(key);
    const entry = hit && hit.mtimeMs === st.mtimeMs ? hit : { file: readLoraFile(file), mtimeMs: st.mtimeMs };
    this.files.set(key, entry);
    while (this.files.size > this.capacity) this.files.delete(this.files.keys().next().value!);
    return entry.file;
  }

  /** the paths held, least recently used first */
  loaded(): string[] {
    return [...this.files.keys()];
  }
}

/** the terms of `specs` by checkpoint folder and module (several adapters of one module are summed) */
export function loraTerms(specs: LoraSpec[], library: LoraLibrary): Map<string, Map<string, LoraTerm[]>> {
  const out = new Map<string, Map<string, LoraTerm[]>>();
  for (const spec of specs) {
    const scale = spec.scale ?? 1;
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new UserError(`lora scale must be a finite number, got ${String(spec.scale)}`);
    const target = spec.target ?? 'all';
    if (!['all', 'transformer', 'transformer_2'].includes(target)) throw new UserError(`lora target must be all, transformer or transformer_2, got "${String(target)}"`);
    const file = library.get(spec.path);
    let used = false;
    for (const [folder, modules] of file.folders) {
      if (target !== 'all' && folder !== target) continue;
      used = true;
      if (!out.has(folder)) out.set(folder, new Map());
      const byModule = out.get(folder)!;
      for (const [module, m] of modules) {
        if (!byModule.has(module)) byModule.set(module, []);
        byModule.get(module)!.push({ m, scale, file: spec.path });
      }
    }
    if (!used) throw new UserError(`${spec.path}: the LoRA has no keys for target ${target} (it adapts ${[...file.folders.keys()].join(', ')})`);
  }
  return out;
}

/**
 * A module's adapters as one low-rank branch: their A's stacked [sum r, in] and their B's side by side
 * [out, sum r], each B scaled by its scale x alpha / r (float32), so delta = B A (the unfused branch binds these)
 */
export function loraBranch(terms: LoraTerm[], module: string, shape: readonly number[]): { A: Float32Array; B: Float32Array; rank: number } {
  for (const t of terms) checkLoraShape(t, module, shape);
  const [outF, inF] = shape as [number, number];
  const R = terms.reduce((a, t) => a + t.m.rank, 0);
  const A = new Float32Array(R * inF);
  const B = new Float32Array(outF * R);
  let r0 = 0;
  for (const { m, scale } of terms) {
    const f = Math.fround(scale * m.alphaOverRank);
    for (let o = 0; o < outF; o++) for (let k = 0; k < m.rank; k++) B[o * R + r0 + k] = f * m.B[o * m.rank + k]!;
    A.set(m.A, r0 * inF);
    r0 += m.rank;
  }
  return { A, B, rank: R };
}

/** a term's adapter does not fit the weight it targets: an error naming the file, the module and both shapes */
export function checkLoraShape(t: LoraTerm, module: string, shape: readonly number[]): void {
  if (shape.length !== 2 || shape[0] !== t.m.outF || shape[1] !== t.m.inF) {
    throw new UserError(`${t.file}: module "${module}": the adapter is [${t.m.outF}, ${t.m.inF}] (B [${t.m.outF}, ${t.m.rank}] @ A [${t.m.rank}, ${t.m.inF}]), the weight "${module}.weight" is [${shape.join(', ')}]`);
  }
}

/**
 * W [out, in] + sum of scale x alpha / r x B @ A (a fresh float32 array). The terms' ranks are stacked into one
 * GEMM on the native `linear` kernel (y = residual + x W^T with x = the scaled B's side by side [out, R] and
 * W = the A's stacked, transposed [in, R]), so a 3072 x 3072 module of rank 64 takes milliseconds.
 */
export function fuseLora(w: Float32Array, shape: readonly number[], module: string, terms: LoraTerm[]): Float32Array {
  const [outF, inF] = shape as [number, number];
  const { A, B, rank: R } = loraBranch(terms, module, shape);
  // A^T [in, R] for the GEMM's K-major operand
  const at = new Float32Array(inF * R);
  for (let k = 0; k < R; k++) for (let i = 0; i < inF; i++) at[i * R + k] = A[k * inF + i]!;
  const bs = B;
  const y = Float32Array.from(w);
  // epilogue 3 (y = residual + gate x acc) with no gate (1) and y as its own residual
  loadNative().runKernel('linear', [bs, at, null, y, null, y], [outF, inF, R, 3, outF, 0], []);
  return y;
}
