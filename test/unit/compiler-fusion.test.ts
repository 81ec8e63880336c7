// Each fusion pass fires on tiny-flux; the fused plan launches the fused kernels.
import { describe, expect, it } from 'vitest';
import { compileDetailed } from '../../compiler/index.ts';
import type { Plan, PlanOp } from '../../runtime/plan.ts';

const ops = (p: Plan): PlanOp[] => p.segments.flatMap((s) => s.ops ?? s.blocks!.flatMap((b) => b.ops));
const count = (p: Plan, pred: (o: PlanOp) => boolean): number => ops(p).filter(pred).length;

describe('fusion on tiny-flux', () => {
  const tr = compileDetailed('tiny-flux', { component: 'transformer', dims: { batch: 2 } });
  const p = tr.plan;

  it('LayerNorm + modulate -> ln_modulate (2 x 2 per dual block, 1 per single block, norm_out)', () => {
    expect(tr.fusion.lnModulate).toBe(2 * 4 + 4 + 1);
    expect(count(p, (o) => o.k === 'ln_modulate')).toBe(13);
    expect(count(p, (o) => o.k === 'layer_norm')).toBe(0);
    // shift/scale are chunk views with the stride of the adaLN output row
    const lm = ops(p).find((o) => o.k === 'ln_modulate')!;
    expect(lm.i.slice(3)).toEqual([768, 768]);
  });

  it('bias + GELU/SiLU -> linear epilogue 1/2', () => {
    // GELU: ff + ff_context per dual block, proj_mlp per single block; SiLU: timestep/text embedders
    expect(count(p, (o) => o.k === 'linear' && o.i[3] === 1)).toBe(2 * 2 + 4);
    expect(count(p, (o) => o.k === 'linear' && o.i[3] === 2)).toBe(2);
    expect(count(p, (o) => o.k === 'gelu_tanh')).toBe(0);
  });

  it('gate + residual from a linear -> linear epilogue 3 with strided gate', () => {
    expect(tr.fusion.linearGateResidual).toBe(4 * 2 + 4);
    const e3 = ops(p).filter((o) => o.k === 'linear' && o.i[3] === 3 && o.t[4]! >= 0);
    expect(e3.length).toBe(12);
    for (const o of e3) {
      expect(o.t[4]).toBeGreaterThanOrEqual(0);
      expect(o.t[5]).toBeGreaterThanOrEqual(0);
      expect([768, 384]).toContain(o.i[5]); // gate = a chunk view of the adaLN row (6C or 3C floats)
    }
    expect(count(p, (o) => o.k === 'gate_residual')).toBe(0);
  });

  it('per-head RMSNorm + RoPE -> qk_norm_rope', () => {
    expect(tr.fusion.qkNormRope).toBe(2 * 4 + 4 * 2);
    expect(count(p, (o) => o.k === 'qk_norm_rope')).toBe(16);
    expect(count(p, (o) => o.k === 'rope' || o.k === 'rms_norm')).toBe(0);
  });

  it('remaining elementwise chains -> generated ew kernels listed in plan.elementwise', () => {
    expect(tr.fusion.ewChains).toBeGreaterThanOrEqual(1);
    const ew = p.kernels.filter((k) => k.startsWith('ew_'));
    expect(ew.length).toBeGreaterThan(0);
    expect(p.elementwise.map((e) => e.name).sort()).toEqual([...ew].sort());
    for (const e of p.elementwise) expect(e.expr).toMatch(/a0/);
  });

  it('GroupNorm + SiLU fuse in the VAE', () => {
    const v = compileDetailed('tiny-flux', { component: 'vae' });
    expect(v.fusion.groupNormSilu).toBe(17);
    expect(count(v.plan, (o) => o.k === 'group_norm' && o.i[4] === 1)).toBe(17);
    expect(count(v.plan, (o) => o.k === 'silu')).toBe(0);
  });

  it('residual + linear -> linear epilogue 3 with a null gate (temb sums, text-encoder residuals)', () => {
    expect(tr.fusion.linearResidual).toBe(1); // temb = time + text_embedder(pooled)
    const f = compileDetailed('flux1-dev', { component: 'transformer', config: { num_layers: 1, num_single_layers: 1 }, dims: { height: 32, width: 32, textTokens: 8 } });
    expect(f.fusion.linearResidual).toBe(2); // (time + guidance) + text
    const te = compileDetailed('tiny-flux', { component: 'text_encoder' });
    expect(te.fusion.linearResidual).toBe(4); // out_proj and fc2 residuals in both layers
    expect(count(te.plan, (o) => o.k === 'linear' && o.i[3] === 3 && o.t[4] === -1)).toBe(4);
    expect(count(te.plan, (o) => o.k === 'add')).toBe(0);
  });
});
