// Parity of the whole runtime pipeline (native executor + shipped/compiled plans) with diffusers'
// FluxPipeline on the tiny-flux references (test/fixtures/tiny-flux-reference, README there).
import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { loadFluxPipeline, componentDims, type FluxPipeline, type PlanDims } from '../../runtime/pipeline.ts';
import { latentsToVaeSpace } from '../../runtime/latents.ts';
import { quantizeHWC, denormalize } from '../../runtime/image.ts';
import { fluxSchedule, transformerTimestep } from '../../runtime/scheduler.ts';
import type { Component, Plan } from '../../runtime/plan.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');
const ref = (name: string) => openSafetensorsSync(path.join(FIX, name));

const report: Record<string, number> = {};
const record = (k: string, v: number) => {
  report[k] = v;
  console.log(`[parity] ${k} = ${v.toExponential(3)}`);
};

let pipe: FluxPipeline;

beforeAll(async () => {
  // shipped plans (generated/tiny-flux/*) when they fit; the compiler for other shapes (batch 2)
  const planProvider = async (component: Component, dims: PlanDims): Promise<Plan> => {
    const { compilePlan } = (await import(new URL('../../compiler/index.ts', import.meta.url).href)) as {
      compilePlan: (m: string, o: { component: Component; dims: Record<string, number> }) => Plan;
    };
    return compilePlan('tiny-flux', { component, dims: componentDims(component, dims) });
  };
  pipe = await loadFluxPipeline('tiny-flux', { threads: 2, planProvider });
});

describe('tiny-flux pipeline vs diffusers FluxPipeline', () => {
  for (const k of [0, 1, 2]) {
    describe(`prompt${k}`, () => {
      const f = ref(`prompt${k}.safetensors`);
      const prompt = f.metadata.prompt!;

      it('text encoder: encoder_hidden_states and pooled_projections within 1e-4 relative L2', async () => {
        const t = await pipe.spec.encodePrompt([prompt]);
        expect(t.inputIds[0]).toEqual(f.ints('input_ids'));
        const e1 = relL2(t.encoderHiddenStates, f.tensor('encoder_hidden_states').data);
        const e2 = relL2(t.pooledProjections, f.tensor('pooled_projections').data);
        record(`prompt${k}.encoder_hidden_states.relL2`, e1);
        record(`prompt${k}.pooled_projections.relL2`, e2);
        expect(e1).toBeLessThan(1e-4);
        expect(e2).toBeLessThan(1e-4);
      });

      it('transformer step 0 (reference inputs) within 1e-4 relative L2', async () => {
        const s = fluxSchedule(28, 16);
        const ts = transformerTimestep(s, 0);
        expect(ts).toBe(f.tensor('transformer_timestep_step0').data[0]);
        const v = await pipe.spec.transformer({
          hiddenStates: f.tensor('noise_latents').data,
          encoderHiddenStates: f.tensor('encoder_hidden_states').data,
          pooledProjections: f.tensor('pooled_projections').data,
          timestep: Float32Array.of(ts),
          batch: 1,
          height: 32,
          width: 32,
        });
        const e = relL2(v, f.tensor('transformer_out_step0').data);
        record(`prompt${k}.transformer_out_step0.relL2`, e);
        expect(e).toBeLessThan(1e-4);
      });

      it('28 steps from noise_latents: final latents within 1e-3 rel L2, pixels within 2/255', async () => {
        const r = await pipe.generate({ prompt, steps: 28, latents: f.tensor('noise_latents').data, height: 32, width: 32 });
        const e = relL2(r.latents, f.tensor('final_latents').data);
        record(`prompt${k}.final_latents.relL2`, e);
        expect(e).toBeLessThan(1e-3);
        const img = denormalize(r.decoded);
        record(`prompt${k}.image.maxAbs`, maxAbsDiff(img, f.tensor('image').data));
        const px = f.ints('image_uint8');
        let worst = 0;
        for (let c = 0; c < 3; c++) {
          let m = 0;
          for (let i = c; i < px.length; i += 3) m = Math.max(m, Math.abs(r.image[i]! - px[i]!));
          worst = Math.max(worst, m);
        }
        let differing = 0;
        for (let i = 0; i < px.length; i++) if (r.image[i] !== px[i]) differing++;
        record(`prompt${k}.image_uint8.maxAbsPerChannel`, worst);
        record(`prompt${k}.image_uint8.pixelsDiffering`, differing);
        expect(worst).toBeLessThanOrEqual(2);
        expect(Array.from(quantizeHWC(img, 3, 32, 32))).toEqual(Array.from(r.image));
      });

      it('seeded noise (pipe.noise, used by generate({ seed })) equals the diffusers noise_latents bit for bit', async () => {
        const n = pipe.spec.seededNoise(Number(f.metadata.seed), 1, 32, 32);
        expect(Array.from(n)).toEqual(Array.from(f.tensor('noise_latents').data));
      });
    });
  }

  it('VAE decoder vs vae_decode_random (raw output) within 1e-4 relative L2', async () => {
    const f = ref('vae_decode_random.safetensors');
    const out = await pipe.spec.decodeVaeSpace(f.tensor('latents').data, 1, 32, 32);
    const e = relL2(out, f.tensor('decoded').data);
    record('vae_decode_random.relL2', e);
    record('vae_decode_random.maxAbs', maxAbsDiff(out, f.tensor('decoded').data));
    expect(e).toBeLessThan(1e-4);
  });

  it('VAE decode of final_latents_unpacked_vae_space reproduces the reference image', async () => {
    const f = ref('prompt0.safetensors');
    const z = latentsToVaeSpace(f.tensor('final_latents').data, 1, 4, 8, 8, pipe.spec.scalingFactor, pipe.spec.shiftFactor);
    expect(Array.from(z)).toEqual(Array.from(f.tensor('final_latents_unpacked_vae_space').data));
    const out = await pipe.spec.decodeVaeSpace(z, 1, 32, 32);
    const e = maxAbsDiff(denormalize(out), f.tensor('image').data);
    record('prompt0.vae_from_final_latents.image.maxAbs', e);
    expect(e).toBeLessThan(1e-4);
  });

  it('transformer vs transformer_random (batch 2, timesteps 0.7 / 0.25) within 1e-4 relative L2', async () => {
    const f = ref('transformer_random.safetensors');
    const out = await pipe.spec.transformer({
      hiddenStates: f.tensor('hidden_states').data,
      encoderHiddenStates: f.tensor('encoder_hidden_states').data,
      pooledProjections: f.tensor('pooled_projections').data,
      timestep: f.tensor('timestep').data,
      batch: 2,
      height: 32,
      width: 32,
    });
    const e = relL2(out, f.tensor('output').data);
    record('transformer_random.relL2', e);
    expect(e).toBeLessThan(1e-4);
  });
});
