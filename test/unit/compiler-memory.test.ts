// Memory plan: simulate every launch and check no op reads a buffer another buffer has overwritten;
// reuse must not change results (JS interpreter), block-by-block runs must match whole-list runs.
import { describe, expect, it } from 'vitest';
import { compileDetailed, type CompileOptions } from '../../compiler/index.ts';
import { orderOps } from '../../compiler/codegen/plan.ts';
import { PlanInterpreter } from '../helpers/plan-interpreter.ts';
import { randomWeights, randomInputs } from '../helpers/random.ts';

const cases: [string, CompileOptions][] = [
  ['tiny-flux', { component: 'transformer', dims: { batch: 2 } }],
  ['tiny-flux', { component: 'text_encoder' }],
  ['tiny-flux', { component: 'vae' }],
  ['flux1-dev', { component: 'transformer', config: { num_layers: 2, num_single_layers: 2, num_attention_heads: 2, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 24, pooled_projection_dim: 8, in_channels: 12 }, dims: { batch: 2, height: 48, width: 80, textTokens: 7 } }],
];

describe.each(cases)('memory plan %s %o', (model, opts) => {
  const r = compileDetailed(model, opts);

  it('no live buffer is overwritten (simulation over the launch order)', () => {
    const lw = r.lowered;
    const { flat } = orderOps(r.fused, lw);
    const owner = new Int32Array(r.plan.arenaFloats).fill(-1);
    const at = (st: number, off: number): number => lw.storages[st]!.offset! + off;
    for (const i of lw.inputs) owner.fill(i.ref.st, at(i.ref.st, 0), at(i.ref.st, i.ref.numel));
    flat.forEach((op, j) => {
      op.t.forEach((ref, slot) => {
        if (!ref || op.outs.includes(slot) || lw.storages[ref.st]!.kind !== 'arena') return;
        for (let k = at(ref.st, ref.off); k < at(ref.st, ref.off) + ref.numel; k++) {
          if (owner[k] !== ref.st) throw new Error(`op ${j} (${op.k} ${op.src}) reads ${lw.storages[ref.st]!.name} at float ${k}, which holds ${owner[k] === -1 ? 'nothing' : lw.storages[owner[k]!]!.name}`);
        }
      });
      op.outs.forEach((slot) => {
        const ref = op.t[slot]!;
        owner.fill(ref.st, at(ref.st, ref.off), at(ref.st, ref.off) + ref.numel);
      });
    });
    for (const o of lw.outputs) for (let k = at(o.ref.st, 0); k < at(o.ref.st, o.ref.numel); k++) expect(owner[k]).toBe(o.ref.st);
    // pinned buffers never share floats with anything
    const pinned = lw.storages.filter((s) => s.kind === 'arena' && s.pinned);
    for (const s of lw.storages.filter((x) => x.kind === 'arena' && r.memory.intervals.has(x.id))) {
      for (const p of pinned) {
        if (p.id === s.id) continue;
        const disjoint = s.offset! + s.numel <= p.offset! || p.offset! + p.numel <= s.offset!;
        if (!disjoint) throw new Error(`${s.name} overlaps pinned ${p.name}`);
      }
    }
  });

  it('reuse does not change the result; blocks can run one at a time', () => {
    const noReuse = compileDetailed(model, opts, { memoryReuse: false }).plan;
    expect(r.plan.arenaFloats).toBeLessThan(noReuse.arenaFloats);
    const w = randomWeights(r.plan, 7);
    const ins = randomInputs(r.plan, 11);
    const run = (plan: typeof r.plan, oneByOne: boolean): Float32Array[] => {
      const it = new PlanInterpreter(plan, w);
      for (const [k, v] of Object.entries(ins)) it.setInput(k, v);
      for (const s of plan.segments) {
        if (oneByOne && s.blocks) for (let b = 0; b < s.blocks.length; b++) it.run(s.name, b, b + 1);
        else it.run(s.name);
      }
      return plan.outputs.map((o) => it.getOutput(o.name));
    };
    const a = run(r.plan, false);
    const b = run(noReuse, false);
    const c = run(r.plan, true);
    a.forEach((x, i) => {
      expect(Array.from(x)).toEqual(Array.from(b[i]!));
      expect(Array.from(x)).toEqual(Array.from(c[i]!));
      expect(x.every(Number.isFinite)).toBe(true);
    });
  });
});
