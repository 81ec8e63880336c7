// mapFile: read-only (copy-on-write private) mmap as an external ArrayBuffer.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';

const dir = mkdtempSync(join(tmpdir(), 'ditforge-map-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('mapFile', () => {
  it('maps a file; contents match; writes never reach the file', () => {
    const data = Float32Array.from({ length: 1000 }, (_, k) => k * 0.5 - 3);
    const p = join(dir, 'w.bin');
    writeFileSync(p, Buffer.concat([Buffer.from('HDR!'), Buffer.from(data.buffer)]));
    const ab = native.mapFile(p);
    expect(ab).toBeInstanceOf(ArrayBuffer);
    expect(ab.byteLength).toBe(4 + 4000);
    const f = new Float32Array(ab, 4, 1000);
    expect(Array.from(f)).toEqual(Array.from(data));
    f[0] = 42; // private mapping: the file is untouched
    expect(readFileSync(p).readFloatLE(4)).toBe(-3);
  });
  it('an empty file gives an empty buffer', () => {
    const p = join(dir, 'empty.bin');
    writeFileSync(p, Buffer.alloc(0));
    expect(native.mapFile(p).byteLength).toBe(0);
  });
  it('errors name the path', () => {
    expect(() => native.mapFile(join(dir, 'missing.safetensors'))).toThrow(/mapFile: cannot open '.*missing\.safetensors': No such file or directory/);
    expect(() => native.mapFile(dir)).toThrow(/is not a regular file/);
    expect(() => (native.mapFile as any)(3)).toThrow(/path must be a string/);
  });
  it('mapped weights can be bound to an executor and survive GC of the caller reference', () => {
    const C = 8;
    const p = join(dir, 'ln.bin');
    writeFileSync(p, Buffer.from(Float32Array.from({ length: 2 * C }, (_, k) => (k < C ? 2 : 1)).buffer));
    const plan = {
      format: 'ditforge-plan/1', model: 'm', component: 'vae', tag: '', dims: {}, config: {},
      inputs: [{ name: 'x', tensor: 0, shape: [C] }], outputs: [{ name: 'y', tensor: 1, shape: [C] }],
      weights: [{ name: 'ln', shape: [2, C], tensor: 2 }], arenaFloats: 2 * C,
      tensors: [
        { id: 0, base: 'arena', offset: 0, numel: C }, { id: 1, base: 'arena', offset: C, numel: C },
        { id: 2, base: 'weight', weight: 'ln', offset: 0, numel: C }, { id: 3, base: 'weight', weight: 'ln', offset: C, numel: C },
      ],
      segments: [{ name: 'all', ops: [{ k: 'layer_norm', t: [0, 2, 3, 1], i: [1, C], f: [0] }] }], kernels: ['layer_norm'], elementwise: [],
    };
    const ex = new native.Executor(JSON.stringify(plan), { threads: 1 });
    ex.bindWeight('ln', new Float32Array(native.mapFile(p)));
    ex.setInput('x', Float32Array.from({ length: C }, (_, k) => (k % 2 ? 1 : -1)));
    ex.runSync('all');
    const y = new Float32Array(C);
    ex.getOutput('y', y);
    expect(Array.from(y)).toEqual(Array.from({ length: C }, (_, k) => (k % 2 ? 3 : -1)));
  });
});
