// The native plan interpreter: a hand-written tiny plan chaining a few kernels, run sync and async, block
// ranges, and every validation error the executor promises (docs/architecture.md §3, §4).
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import * as ref from '../kernels/reference.ts';
import { expectClose, randn } from '../kernels/harness.ts';

const M = 13, C = 37, NB = 3;

// arena layout: x [M*C] @0, h [M*C] @M*C, tmp [M*C] @2MC, out [M*C] @3MC
function tinyPlan(): any {
  const MC = M * C;
  const tensors: any[] = [
    { id: 0, base: 'arena', offset: 0, numel: MC, shape: [1, M, C], name: 'x' },
    { id: 1, base: 'arena', offset: MC, numel: MC, name: 'h' },
    { id: 2, base: 'arena', offset: 2 * MC, numel: MC, name: 'tmp' },
    { id: 3, base: 'arena', offset: 3 * MC, numel: MC, name: 'out' },
    { id: 10, base: 'weight', weight: 'norm.weight', offset: 0, numel: C },
    { id: 11, base: 'weight', weight: 'norm.bias', offset: 0, numel: C },
  ];
  const weights: any[] = [
    { name: 'norm.weight', shape: [C], tensor: 10 },
    { name: 'norm.bias', shape: [C], tensor: 11 },
  ];
  const blocks: any[] = [];
  for (let b = 0; b < NB; b++) {
    // one packed weight per block, viewed twice: [w (C) | scale (C)]
    weights.push({ name: `blocks.${b}.packed`, shape: [2, C], tensor: 20 + 2 * b });
    tensors.push({ id: 20 + 2 * b, base: 'weight', weight: `blocks.${b}.packed`, offset: 0, numel: C });
    tensors.push({ id: 21 + 2 * b, base: 'weight', weight: `blocks.${b}.packed`, offset: C, numel: C });
    blocks.push({
      name: `blocks.${b}`,
      ops: [
        { k: 'rms_norm', t: [1, 20 + 2 * b, 2], i: [M, C], f: [1e-6], src: `test.ts:${b}:1` },
        { k: 'gate_residual', t: [1, 21 + 2 * b, 2, 1], i: [M, C, M, 0], f: [] },
      ],
    });
  }
  return {
    format: 'ditforge-plan/1',
    model: 'tiny-test',
    component: 'transformer',
    tag: 'm13c37',
    dims: { M, C },
    config: {},
    inputs: [{ name: 'x', tensor: 0, shape: [1, M, C] }],
    outputs: [{ name: 'out', tensor: 3, shape: [1, M, C] }],
    weights,
    arenaFloats: 4 * MC,
    tensors,
    segments: [
      { name: 'embed', ops: [
        { k: 'layer_norm', t: [0, 10, 11, 1], i: [M, C], f: [1e-6] },
        { k: 'silu', t: [1, 1], i: [M * C], f: [] },
      ] },
      { name: 'blocks', list: 'transformer_blocks', pattern: 1, blocks, io: { hidden: 1 } },
      { name: 'head', ops: [{ k: 'ew_selftest', t: [1, 0, 1, 3], i: [M * C], f: [0.5, 0.25] }] },
    ],
    kernels: ['layer_norm', 'silu', 'rms_norm', 'gate_residual', 'ew_selftest'],
    elementwise: [],
  };
}

const x = randn(M * C, 1, 1.2, 0.1);
const normW = randn(C, 2, 0.3, 1), normB = randn(C, 3, 0.3);
const packed = Array.from({ length: NB }, (_, b) => randn(2 * C, 10 + b, 0.5, 0.5));

function reference(): { h: Float64Array; out: Float64Array } {
  let h: Float64Array<ArrayBufferLike> = ref.layerNorm(x, normW, normB, M, C, 1e-6).map(ref.silu);
  h = Float64Array.from(Float32Array.from(h)); // the arena stores float32
  for (let b = 0; b < NB; b++) {
    const w = packed[b].subarray(0, C), g = packed[b].subarray(C);
    const t = ref.rmsNorm(h, w, M, C, 1e-6);
    h = ref.gateResidual(h, g, t, M, C, M, 0);
  }
  const out = ref.elementwise(M * C, [h, x, h], ref.ewSelftest(0.5, 0.25));
  return { h, out };
}

function ready(threads?: number) {
  const ex = new native.Executor(JSON.stringify(tinyPlan()), threads ? { threads } : {});
  ex.bindWeight('norm.weight', normW);
  ex.bindWeight('norm.bias', normB);
  for (let b = 0; b < NB; b++) ex.bindWeight(`blocks.${b}.packed`, packed[b]);
  ex.setInput('x', x);
  return ex;
}

// float32 chain of ~10 kernels on O(3) values: 1e-5 absolute/relative (each kernel's own bound is <= 2e-5
// relative on its output; these small rows stay well inside it)
const ATOL = 2e-5, RTOL = 2e-5;

describe('Executor: running a plan', () => {
  it('runSync runs embed, blocks and head; matches the reference chain', () => {
    const ex = ready();
    expect(ex.arenaBytes()).toBe(4 * M * C * 4);
    expect(ex.segments()).toEqual([{ name: 'embed', blocks: 0 }, { name: 'blocks', blocks: NB }, { name: 'head', blocks: 0 }]);
    ex.runSync('embed');
    ex.runSync('blocks');
    ex.runSync('head');
    const out = new Float32Array(M * C);
    ex.getOutput('out', out);
    const want = reference();
    expectClose(out, want.out, ATOL, RTOL);
    const h = new Float32Array(M * C);
    ex.readTensor(1, h);
    expectClose(h, want.h, ATOL, RTOL);
  });

  it('run() is async (a Promise) and gives the same bits as runSync; threads=1 gives the same bits too', async () => {
    const a = ready(), b = ready(1);
    const p = a.run('embed');
    expect(p).toBeInstanceOf(Promise);
    await p;
    await a.run('blocks');
    await a.run('head');
    for (const s of ['embed', 'blocks', 'head']) b.runSync(s);
    const oa = new Float32Array(M * C), ob = new Float32Array(M * C);
    a.getOutput('out', oa);
    b.getOutput('out', ob);
    expect(Buffer.from(oa.buffer).equals(Buffer.from(ob.buffer))).toBe(true);
    expect(b.threads()).toBe(1);
  });

  it('block ranges: [0,1) then [1,3) equals all blocks; writeTensor/readTensor round-trip the hidden state', async () => {
    const a = ready(), b = ready();
    a.runSync('embed');
    b.runSync('embed');
    await a.run('blocks');
    await b.run('blocks', 0, 1);
    const mid = new Float32Array(M * C);
    b.readTensor(1, mid);
    b.writeTensor(1, mid);
    await b.run('blocks', 1, 3);
    await b.run('blocks', 3, 3); // empty range is a no-op
    const ha = new Float32Array(M * C), hb = new Float32Array(M * C);
    a.readTensor(1, ha);
    b.readTensor(1, hb);
    expect(Array.from(hb)).toEqual(Array.from(ha));
  });

  it('readTensor can read a bound weight view but writeTensor refuses it', () => {
    const ex = ready();
    const w = new Float32Array(C);
    ex.readTensor(21, w);
    expect(Array.from(w)).toEqual(Array.from(packed[0].subarray(C)));
    expect(() => ex.writeTensor(21, w)).toThrow(/only arena tensors can be written/);
  });
});

describe('Executor: validation errors', () => {
  const build = (mutate: (p: any) => void) => () => {
    const p = tinyPlan();
    mutate(p);
    return new native.Executor(JSON.stringify(p), {});
  };
  it('unknown kernel: names the kernel, the plan and where it is', () => {
    expect(build((p) => (p.segments[1].blocks[2].ops[0].k = 'fused_magic'))).toThrow(
      /plan tiny-test\/transformer \(m13c37\): unknown kernel 'fused_magic' in segment 'blocks' block 'blocks\.2' op 0/,
    );
    expect(build((p) => p.kernels.push('ew_deadbeef'))).toThrow(/unknown kernel 'ew_deadbeef'/);
  });
  it('tensor out of arena bounds', () => {
    expect(build((p) => (p.tensors[3].offset = 3 * M * C + 1))).toThrow(/tensor 3 \[\d+, \d+\) is out of the arena bounds \(arenaFloats 1924\)/);
    expect(build((p) => (p.arenaFloats = 100))).toThrow(/out of the arena bounds/);
  });
  it('tensor view out of its weight, unknown tensor ids, too-small operands', () => {
    expect(build((p) => (p.tensors.find((t: any) => t.id === 21).offset = C + 1))).toThrow(/out of the bounds of weight 'blocks\.0\.packed'/);
    expect(build((p) => (p.segments[0].ops[0].t[3] = 99))).toThrow(/t\[3\] refers to unknown tensor 99/);
    expect(build((p) => (p.segments[0].ops[1].i[0] = M * C + 1))).toThrow(/segment 'embed' op 1 'silu': tensor t\[0\] \(in0\) holds 481 floats, needs 482/);
  });
  it('malformed plans', () => {
    expect(() => new native.Executor('{"format": ', {})).toThrow(/invalid JSON at line 1, column 12/);
    expect(build((p) => (p.format = 'other/2'))).toThrow(/format must be "ditforge-plan\/1", got "other\/2"/);
    expect(build((p) => delete p.tensors)).toThrow(/missing field 'tensors'/);
    expect(build((p) => (p.inputs[0].shape = [2, M, C]))).toThrow(/input.*'x' has shape of 962 elements but tensor 0 holds 481/);
    expect(() => new native.Executor(JSON.stringify(tinyPlan()), { threads: 0 })).toThrow(/threads must be 1..1024/);
    expect(() => new (native.Executor as any)(42)).toThrow(/plan.json text/);
  });
  it('wrong input/output sizes and names', () => {
    const ex = ready();
    expect(() => ex.setInput('x', new Float32Array(M * C - 1))).toThrow(/setInput\('x'\): got 480 floats, the input holds 481/);
    expect(() => ex.setInput('y', x)).toThrow(/no input named 'y' \(inputs: x\)/);
    expect(() => ex.getOutput('out', new Float32Array(3))).toThrow(/getOutput\('out'\): got a buffer of 3 floats/);
    expect(() => ex.readTensor(77, new Float32Array(1))).toThrow(/no tensor with id 77/);
    expect(() => ex.readTensor(0, new Float32Array(1))).toThrow(/the tensor holds 481/);
    expect(() => ex.setInput('x', new Float64Array(M * C) as unknown as Float32Array)).toThrow(/Float32Array/);
  });
  it('weights: unknown name, wrong size, missing at run time (named)', async () => {
    const ex = new native.Executor(JSON.stringify(tinyPlan()), {});
    expect(() => ex.bindWeight('nope', normW)).toThrow(/the plan has no weight named 'nope'/);
    expect(() => ex.bindWeight('norm.weight', new Float32Array(C + 1))).toThrow(/got 38 floats, the plan expects 37/);
    ex.bindWeight('norm.weight', normW);
    expect(() => ex.runSync('embed')).toThrow(/weight 'norm\.bias' is not bound \(needed by segment 'embed'\)/);
    ex.bindWeight('norm.bias', normB);
    ex.runSync('embed');
    await expect(ex.run('blocks', 1, 2)).rejects.toThrow(/weight 'blocks\.1\.packed' is not bound \(needed by block 'blocks\.1' of segment 'blocks'\)/);
    ex.bindWeight('blocks.0.packed', packed[0]);
    await ex.run('blocks', 0, 1); // only block 0's weights are needed
  });
  it('segments and block ranges', async () => {
    const ex = ready();
    await expect(ex.run('middle')).rejects.toThrow(/no segment named 'middle' \(segments: embed, blocks, head\)/);
    await expect(ex.run('blocks', 2, 5)).rejects.toThrow(/block range \[2, 5\) is out of \[0, 3\]/);
    expect(() => ex.runSync('head', 0, 1)).not.toThrow();
    expect(() => ex.runSync('head', 1, 2)).toThrow(/has no blocks/);
  });
});
