// Public compiler API: model registry, plan structure per runtime/plan.ts, inspect, determinism.
import { describe, expect, it } from 'vitest';
import { compilePlan, inspectModel, listModels } from '../../compiler/index.ts';
import { PLAN_FORMAT } from '../../runtime/plan.ts';

describe('compiler API', () => {
  it('lists the shipped models and rejects unknown ones with the list', () => {
    expect(listModels()).toEqual(expect.arrayContaining(['tiny-flux', 'flux1-dev']));
    expect(() => compilePlan('flux3', { component: 'transformer' })).toThrow(/unknown model 'flux3'; known models: .*tiny-flux.*flux1-dev/);
  });

  it('tiny-flux transformer plan: io names, segments, one PlanBlock per block', () => {
    const p = compilePlan('tiny-flux', { component: 'transformer' });
    expect(p.format).toBe(PLAN_FORMAT);
    expect(p.tag).toBe('b1-h32w32-t12');
    expect(p.dims).toMatchObject({ B: 1, imageTokens: 16, textTokens: 12 });
    expect(p.inputs.map((i) => [i.name, i.shape])).toEqual([
      ['hidden_states', [1, 16, 16]],
      ['encoder_hidden_states', [1, 12, 64]],
      ['pooled_projections', [1, 64]],
      ['timestep', [1]],
      ['img_ids', [16, 3]],
      ['txt_ids', [12, 3]],
    ]);
    expect(p.outputs.map((o) => [o.name, o.shape])).toEqual([['output', [1, 16, 16]]]);
    expect(p.segments.map((s) => s.name)).toEqual(['embed', 'blocks', 'head']);
    const blocks = p.segments[1]!;
    expect(blocks.list).toBe('transformer_blocks');
    expect(blocks.pattern).toBe(1);
    expect(blocks.blocks!.map((b) => b.name)).toEqual([
      'transformer_blocks.0', 'transformer_blocks.1',
      'single_transformer_blocks.0', 'single_transformer_blocks.1', 'single_transformer_blocks.2', 'single_transformer_blocks.3',
    ]);
    const io = blocks.io!;
    expect(p.tensors[io.hidden]!.shape).toEqual([1, 16, 128]);
    expect(p.tensors[io.encoder!]!.shape).toEqual([1, 12, 128]);
    // every op has its model-file location, every kernel is listed, every weight is a checkpoint name
    const ops = p.segments.flatMap((s) => s.ops ?? s.blocks!.flatMap((b) => b.ops));
    expect(ops.every((o) => /^models\/[\w.-]+\.ts:\d+:\d+$/.test(o.src ?? ''))).toBe(true);
    expect(new Set(ops.map((o) => o.k))).toEqual(new Set(p.kernels));
    expect(p.weights.length).toBe(136);
    expect(p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0)).toBe(2296336);
    for (const t of p.tensors) if (t.base === 'arena') expect(t.offset + t.numel).toBeLessThanOrEqual(p.arenaFloats);
    expect(p.flops).toBeGreaterThan(0);
  });

  it('text encoder and VAE plans', () => {
    const te = compilePlan('tiny-flux', { component: 'text_encoder', dims: { batch: 3, textTokens: 7 } });
    expect(te.inputs.map((i) => [i.name, i.shape])).toEqual([['input_ids', [3, 7]], ['attention_mask', [3, 7]]]);
    expect(te.outputs.map((i) => [i.name, i.shape])).toEqual([['encoder_hidden_states', [3, 7, 64]], ['pooled_projections', [3, 64]]]);
    expect(te.segments.map((s) => s.name)).toEqual(['forward']);
    const vae = compilePlan('tiny-flux', { component: 'vae', dims: { height: 48, width: 16 } });
    expect(vae.inputs).toEqual([{ name: 'latents', tensor: expect.any(Number), shape: [1, 4, 12, 4] }]);
    expect(vae.outputs[0]!.shape).toEqual([1, 3, 48, 16]);
  });

  it('flux1-dev transformer compiles at 1024x1024 / 512 text tokens: 19 + 38 blocks in one list', () => {
    const p = compilePlan('flux1-dev', { component: 'transformer' });
    expect(p.tag).toBe('b1-h1024w1024-t512');
    expect(p.dims).toMatchObject({ imageTokens: 4096, textTokens: 512 });
    expect(p.inputs.map((i) => i.name)).toContain('guidance');
    const seg = p.segments.find((s) => s.list)!;
    expect(seg.blocks!.length).toBe(57);
    expect(seg.blocks![19]!.name).toBe('single_transformer_blocks.0');
    expect(p.weights.find((w) => w.name === 'context_embedder.weight')!.shape).toEqual([3072, 4096]);
  });

  it('config overrides make scaled-down variants; output is deterministic', () => {
    const cfg = { num_layers: 1, num_single_layers: 2, num_attention_heads: 2, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 24, pooled_projection_dim: 8, in_channels: 12 };
    const a = compilePlan('flux1-dev', { component: 'transformer', config: cfg, dims: { height: 48, width: 80, textTokens: 7 } });
    const b = compilePlan('flux1-dev', { component: 'transformer', config: cfg, dims: { height: 48, width: 80, textTokens: 7 } });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(a.segments.find((s) => s.list)!.blocks!.length).toBe(3);
    expect(a.dims.imageTokens).toBe(15);
  });

  it('inspect prints blocks, patterns, params and FLOPs', () => {
    const s = inspectModel('tiny-flux');
    expect(s).toMatch(/transformer \(FluxTransformer2DModel\)/);
    expect(s).toMatch(/params 2\.30 M/);
    expect(s).toMatch(/single_transformer_blocks\.3\s+Pattern_1/);
    expect(s).toMatch(/vae \(AutoencoderKL\)/);
    expect(s).toMatch(/flops\/forward/);
  });
});

describe('parallel plan validation', () => {
  it('heads that tp cannot divide point at the attention call', () => {
    expect(() => compilePlan('flux1-dev', { component: 'transformer', parallel: { tp_size: 5 } })).toThrow(/^models\/flux1\.ts:\d+:\d+: attention with 24 heads cannot be split over tp=5/);
    const t11 = { component: 'transformer' as const, dims: { textTokens: 11 } };
    expect(() => compilePlan('tiny-flux', { ...t11, parallel: { ulysses_size: 2 } })).toThrow(/attention over 27 tokens cannot be split evenly over 2 context-parallel ranks: set ulysses_anything/);
    expect(() => compilePlan('tiny-flux', { ...t11, parallel: { ulysses_size: 2, ulysses_anything: true } })).not.toThrow();
    expect(() => compilePlan('tiny-flux', { component: 'transformer', parallel: { ulysses_size: 3 } })).toThrow(/4 heads per tp rank cannot be padded for ulysses=3/);
    expect(() => compilePlan('tiny-flux', { component: 'transformer', parallel: { ulysses_size: 2, tp_size: 2 } })).not.toThrow();
  });
});
