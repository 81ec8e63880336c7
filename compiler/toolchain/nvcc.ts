// nvcc driver (execa): compiles generated CUDA kernel sources for the target architectures.
// Hopper features need the arch-specific target: `-gencode arch=compute_90a,code=sm_90a` (plain
// `-arch=sm_90a` also emits generic compute_90 PTX, which rejects wgmma/setmaxnreg).
import { PACKAGE_ROOT } from '../../runtime/package-root.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

/** architectures CI compiles for: Ampere and Hopper (arch-specific) */
export const DEFAULT_CUDA_ARCHS = ['80', '90a'] as const;

/** nvcc on PATH (or CUDACXX, or /usr/local/cuda/bin/nvcc), or null */
export function findNvcc(): string | null {
  const candidates = [process.env.CUDACXX, ...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'nvcc')), '/usr/local/cuda/bin/nvcc'];
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  return null;
}

export function gencodeFlags(archs: readonly string[]): string[] {
  return archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
}

export interface NvccOptions {
  outDir: string;
  archs?: readonly string[];
  /** parallel nvcc processes (default: cores) */
  jobs?: number;
}

/** Compiles each `.cu` to `<outDir>/<name>.o` (relocatable device code off, -O3, C++17); returns the objects. */
export async function compileCudaSources(files: string[], opts: NvccOptions): Promise<string[]> {
  const nvcc = findNvcc();
  if (!nvcc) throw new Error('nvcc not found (PATH, CUDACXX, /usr/local/cuda/bin): --target cuda needs the CUDA toolkit to build the kernels');
  const archs = opts.archs ?? DEFAULT_CUDA_ARCHS;
  fs.mkdirSync(opts.outDir, { recursive: true });
  const include = path.join(PACKAGE_ROOT, 'runtime', 'native', 'include');
  const queue = [...files];
  const objects: string[] = [];
  const worker = async (): Promise<void> => {
    for (let f = queue.shift(); f; f = queue.shift()) {
      const obj = path.join(opts.outDir, `${path.basename(f, '.cu')}.o`);
      const r = await execa(nvcc, ['-c', '-O3', '-std=c++17', '-Xcompiler', '-fPIC', ...gencodeFlags(archs), '-I', include, f, '-o', obj], { reject: false, all: true });
      if (r.exitCode !== 0) throw new Error(`nvcc failed on ${path.relative(process.cwd(), f)} (archs ${archs.join(', ')}):\n${r.all ?? ''}`);
      objects.push(obj);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.jobs ?? os.availableParallelism()) }, worker));
  return objects.sort();
}
