// compiler/codegen/kernels.ts: deterministic rendering of the kernel library, family discovery, spec checks,
// and that a rendered fused chain compiles (g++ -fsyntax-only, when g++ exists).
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_TEMPLATES_DIR, listFamilies, normalizeElementwise, renderKernelLibrary } from '../../compiler/codegen/kernels.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ditforge-render-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const specs = [
  { name: 'ew_00ff', arity: 2, expr: 'a0 * (1.0f + a1) + f0' },
  { name: 'ew_0a0a', arity: 1, expr: 'gelu_tanh(a0 + f1) * sigmoid(a0)' },
];
const hasGxx = spawnSync('g++', ['--version']).status === 0;

describe('renderKernelLibrary', () => {
  it('renders every cpu and cuda template plus registry.cpp and registry.cu, deterministically', () => {
    const out1 = join(tmp, 'a', 'kernels', 'cpu'), out2 = join(tmp, 'b', 'kernels', 'cpu');
    const f1 = renderKernelLibrary({ elementwise: specs, outDir: out1 });
    const f2 = renderKernelLibrary({ elementwise: [...specs].reverse(), outDir: out2 });
    const cpu = listFamilies(DEFAULT_TEMPLATES_DIR, 'cpu');
    for (const fam of ['norm', 'modulate', 'rope', 'embed', 'layout', 'conv', 'elementwise']) expect(cpu).toContain(fam);
    expect(f1.filter((f) => f.endsWith('.cpp')).length).toBe(cpu.length + 1);
    expect(f1.length).toBe(f2.length);
    for (let k = 0; k < f1.length; k++) expect(readFileSync(f1[k], 'utf8')).toBe(readFileSync(f2[k], 'utf8'));
    const reg = readFileSync(join(out1, 'registry.cpp'), 'utf8');
    for (const fam of cpu) expect(reg).toContain(`ditforge_cpu_${fam},`);
    const ew = readFileSync(join(out1, 'elementwise.cpp'), 'utf8');
    expect(ew).toContain('void kernel_ew_00ff(');
    expect(ew).toContain('return static_cast<float>(a0 * (1.0f + a1) + f0);');
    expect(ew).toContain('{"ew_0a0a", 1 },');
    expect(ew).toContain('{"ew_selftest", 3 },');
    const cudaFams = listFamilies(DEFAULT_TEMPLATES_DIR, 'cuda');
    expect(readdirSync(join(tmp, 'a', 'kernels', 'cuda')).sort()).toEqual([...cudaFams.map((f) => `${f}.cu`), 'registry.cu'].sort());
    const cudaReg = readFileSync(join(tmp, 'a', 'kernels', 'cuda', 'registry.cu'), 'utf8');
    for (const fam of cudaFams) expect(cudaReg).toContain(`ditforge_cuda_table_${fam},`);
    expect(ew).not.toMatch(/\d{4}-\d{2}-\d{2}/); // no timestamps
  });

  it('discovers new families from template names (e.g. the GEMM engineer\'s linear.cpp.hbs)', () => {
    const tdir = join(tmp, 'templates');
    mkdirSync(join(tdir, 'cpu'), { recursive: true });
    copyFileSync(join(DEFAULT_TEMPLATES_DIR, 'cpu', 'elementwise.cpp.hbs'), join(tdir, 'cpu', 'elementwise.cpp.hbs'));
    writeFileSync(join(tdir, 'cpu', 'zz_linear.cpp.hbs'), '// fake\n');
    const files = renderKernelLibrary({ elementwise: [], outDir: join(tmp, 'c', 'cpu'), templatesDir: tdir });
    expect(files.map((f) => f.split('/').pop())).toEqual(['elementwise.cpp', 'registry.cpp', 'zz_linear.cpp']);
    const reg = readFileSync(join(tmp, 'c', 'cpu', 'registry.cpp'), 'utf8');
    expect(reg.indexOf('ditforge_cpu_elementwise,')).toBeLessThan(reg.indexOf('ditforge_cpu_zz_linear,'));
  });

  it('rejects bad specs', () => {
    expect(() => normalizeElementwise([{ name: 'ew x', arity: 1, expr: 'a0' }])).toThrow(/not a C identifier/);
    expect(() => normalizeElementwise([{ name: 'ew_1', arity: 1, expr: 'a0 + a1' }])).toThrow(/uses a1 but arity is 1/);
    expect(() => normalizeElementwise([{ name: 'ew_1', arity: 1, expr: 'a0; system("x")' }])).toThrow(/one C expression/);
    expect(() => normalizeElementwise([{ name: 'ew_1', arity: 0, expr: '1' }])).toThrow(/arity must be 1..7/);
    expect(() => normalizeElementwise([{ name: 'silu', arity: 1, expr: 'a0' }])).toThrow(/clashes with a built-in/);
    expect(() => normalizeElementwise([{ name: 'ew_1', arity: 1, expr: 'a0' }, { name: 'ew_1', arity: 1, expr: 'a0 + 1' }])).toThrow(/defined twice/);
    expect(normalizeElementwise([{ name: 'ew_1', arity: 1, expr: 'a0' }, { name: 'ew_1', arity: 1, expr: 'a0' }])).toHaveLength(1);
  });

  it.skipIf(!hasGxx)('the rendered fused chains compile (g++ -fsyntax-only)', () => {
    const file = join(tmp, 'a', 'kernels', 'cpu', 'elementwise.cpp');
    const inc = resolve(DEFAULT_TEMPLATES_DIR, '..', 'runtime', 'native', 'include');
    const r = spawnSync('g++', ['-std=c++17', '-fsyntax-only', '-Wall', '-Werror', '-fopenmp-simd', `-I${inc}`, file], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
