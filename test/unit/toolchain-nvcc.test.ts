// The nvcc driver of `ditforge compile --target cuda`: builds a generated kernel family for sm_80 and
// sm_90a, and a broken source fails with an error naming the file. Needs nvcc (CI has it), not a GPU.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileCudaSources, findNvcc, gencodeFlags } from '../../compiler/toolchain/nvcc.ts';

const nvcc = findNvcc();

describe('nvcc toolchain driver', () => {
  it('uses arch-specific -gencode for Hopper', () => {
    expect(gencodeFlags(['80', '90a'])).toEqual(['-gencode', 'arch=compute_80,code=sm_80', '-gencode', 'arch=compute_90a,code=sm_90a']);
  });

  it.skipIf(!nvcc)('compiles generated/kernels/cuda/cache.cu for sm_80 + sm_90a, and names a broken source', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-nvcc-'));
    try {
      const objs = await compileCudaSources([path.resolve('generated/kernels/cuda/cache.cu')], { outDir: dir });
      expect(objs).toEqual([path.join(dir, 'cache.o')]);
      expect(fs.statSync(objs[0]!).size).toBeGreaterThan(1000);
      const bad = path.join(dir, 'broken.cu');
      fs.writeFileSync(bad, '__global__ void k(float* x) { x[0] = undefined_symbol; }\n');
      await expect(compileCudaSources([bad], { outDir: dir })).rejects.toThrow(/nvcc failed on .*broken\.cu[\s\S]*undefined_symbol/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
