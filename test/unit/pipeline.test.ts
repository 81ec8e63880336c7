// Pipeline behaviour that is not numerical parity: plan selection, weight binding errors, input validation,
// concurrency. Parity with diffusers is in test/parity/tiny-flux-pipeline.test.ts.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { loadFluxPipeline, componentDims, UserError } from '../../runtime/pipeline.ts';
import type { Plan } from '../../runtime/plan.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const shipped = (c: string) => JSON.parse(fs.readFileSync(path.join(ROOT, 'generated/tiny-flux', c, 'plan.json'), 'utf8')) as Plan;
const PROMPT = 'a large red circle at the center on a black background';
const WEIGHTS = path.join(ROOT, 'models/tiny-flux/transformer/diffusion_pytorch_model.safetensors');

describe('pipeline', () => {
  it('rejects unknown models, bad steps, sizes and thread counts with clear errors', async () => {
    await expect(loadFluxPipeline('nope')).rejects.toThrow(/unknown model "nope": known models are tiny-flux/);
    await expect(loadFluxPipeline('tiny-flux', { threads: 0 })).rejects.toThrow(/--threads must be an integer >= 1/);
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1 });
    await expect(pipe.generate({ prompt: PROMPT, steps: 0 })).rejects.toThrow(UserError);
    await expect(pipe.generate({ prompt: PROMPT, steps: 0 })).rejects.toThrow(/--steps must be an integer >= 1, got 0/);
    await expect(pipe.generate({ prompt: PROMPT, height: 30 })).rejects.toThrow(/--height must be a positive multiple of 8/);
    await expect(pipe.generate({ prompt: PROMPT, width: 0 })).rejects.toThrow(/--width must be a positive multiple of 8/);
    await expect(pipe.generate({ prompt: PROMPT, seed: -1 })).rejects.toThrow(/--seed must be a non-negative integer/);
    await expect(pipe.generate({ prompt: PROMPT, latents: new Float32Array(10) })).rejects.toThrow(/latents must have shape \[1, 16, 16\]/);
  });

  it('a model directory (diffusers layout) loads, and tiny-flux copies use the tiny-flux plans', async () => {
    const pipe = await loadFluxPipeline(path.join(ROOT, 'models/tiny-flux'), { threads: 1 });
    expect(pipe.name).toBe('tiny-flux');
    const r = await pipe.generate({ prompt: PROMPT, steps: 1 });
    expect(r.image.length).toBe(32 * 32 * 3);
  });

  it('a size with no shipped plan and no plan provider is a clear error', async () => {
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1 });
    await expect(pipe.generate({ prompt: PROMPT, height: 64, width: 64, steps: 1 })).rejects.toThrow(
      /no text_encoder plan|no transformer plan for batch 1, 64x64 \(hidden_states \[1, 64, 16\]\)/,
    );
  });

  it('a plan provider is asked for missing sizes, with the component dims', async () => {
    const asked: string[] = [];
    const { compilePlan } = await import('../../compiler/index.ts');
    const pipe = await loadFluxPipeline('tiny-flux', {
      threads: 1,
      planProvider: (component, dims) => {
        asked.push(`${component}:${JSON.stringify(componentDims(component, dims))}`);
        return compilePlan('tiny-flux', { component, dims: componentDims(component, dims) });
      },
    });
    const r = await pipe.generate({ prompt: PROMPT, height: 48, width: 64, steps: 2 });
    expect([r.height, r.width, r.image.length]).toEqual([48, 64, 48 * 64 * 3]);
    expect(r.latentsShape).toEqual([1, 48, 16]);
    expect(asked).toEqual([
      'transformer:{"batch":1,"height":48,"width":64,"textTokens":12}',
      'vae:{"batch":1,"height":48,"width":64}',
    ]);
  });

  it('a missing weight names the weight, the file and the expected shape', async () => {
    const plan = shipped('transformer');
    plan.weights[0] = { ...plan.weights[0]!, name: 'not_a_weight.weight' };
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1, plans: { transformer: plan } });
    await expect(pipe.generate({ prompt: PROMPT, steps: 1 })).rejects.toThrow(
      `${WEIGHTS}: missing weight "not_a_weight.weight" (the transformer plan expects shape [${plan.weights[0]!.shape.join(', ')}])`,
    );
  });

  it('a mis-shaped weight names the weight, the file, its shape and the expected shape', async () => {
    const plan = shipped('transformer');
    const w = plan.weights.find((x) => x.shape.length === 2)!;
    const real = [...w.shape];
    w.shape = [w.shape[1]!, w.shape[0]!];
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1, plans: { transformer: plan } });
    await expect(pipe.generate({ prompt: PROMPT, steps: 1 })).rejects.toThrow(
      `${WEIGHTS} (transformer plan): weight "${w.name}" has shape [${real.join(', ')}], the plan expects [${w.shape.join(', ')}]`,
    );
  });

  it('seeded generation is deterministic and concurrent calls are serialised', async () => {
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 2 });
    const steps: number[] = [];
    const [a, b, c] = await Promise.all([
      pipe.generate({ prompt: PROMPT, seed: 3, steps: 4, onStep: (s) => steps.push(s.step) }),
      pipe.generate({ prompt: PROMPT, seed: 3, steps: 4 }),
      pipe.generate({ prompt: 'a small blue square at the left on a white background', seed: 3, steps: 4 }),
    ]);
    expect(Array.from(a.latents)).toEqual(Array.from(b.latents));
    expect(Array.from(a.image)).toEqual(Array.from(b.image));
    expect(Array.from(c.image)).not.toEqual(Array.from(a.image));
    expect(steps).toEqual([1, 2, 3, 4]);
    expect(a.timings.perStep).toBeGreaterThan(0);
    expect(pipe.threads()).toBe(2);
  });
});
