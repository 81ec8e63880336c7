// UniPCMultistepScheduler against diffusers' own run of the Wan 2.1 fixture: sigmas and timesteps bit-exact,
// every step's latents within 1e-6 relative L2 given diffusers' CFG-combined transformer outputs; the
// solver variants on an exact flow path; clear errors for configs and calls it does not support.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { UniPCScheduler, WAN_UNIPC_CONFIG, loadUniPCConfig, parseUniPCConfig, type UniPCConfig } from '../../runtime/schedulers/unipc.ts';

const MODEL = path.resolve(import.meta.dirname, '../fixtures/wan2.1-random');
const CONFIG_FILE = path.join(MODEL, 'scheduler/scheduler_config.json');
const REF = path.join(MODEL, 'reference');
const GUIDANCE = 5.0;

const f = Math.fround;
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const WAN_JSON = JSON.parse(fs.readFileSync(CONFIG_FILE, 'utf8')) as Record<string, unknown>;


/** WanPipeline's loop over the recorded transformer outputs: CFG in float32, then scheduler.step */
function replay(file: string, sched: UniPCScheduler) {
  const g = openSafetensorsSync(file);
  const steps = g.ints('timesteps').length;
  sched.setTimesteps(steps);
  const cond = g.tensor('transformer_out_all_steps').data;
  const uncond = g.tensor('transformer_out_uncond_all_steps').data;
  const perStep = g.tensor('latents_per_step').data;
  let x: Float32Array = Float32Array.from(g.tensor('initial_latents').data);
  const M = x.length;
  const errs: number[] = [];
  const exact: boolean[] = [];
  for (let i = 0; i < steps; i++) {
    // noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond), float32 tensors
    const v = new Float32Array(M);
    for (let j = 0; j < M; j++) v[j] = uncond[i * M + j]! + f(GUIDANCE * f(cond[i * M + j]! - uncond[i * M + j]!));
    x = sched.step(v, i, x);
    const ref = perStep.subarray(i * M, (i + 1) * M);
    errs.push(relL2(x, ref));
    const refBits = bits(ref);
    exact.push(bits(x).every((b, j) => b === refBits[j]));
  }
  return { g, steps, errs, exact, final: x };
}

describe('UniPCMultistepScheduler (WanPipeline, flow sigmas)', () => {
  const cfg = loadUniPCConfig(CONFIG_FILE);

  it('reads the fixture scheduler_config.json', () => {
    expect(cfg).toEqual(WAN_UNIPC_CONFIG);
  });

  for (const n of [4, 8]) {
    it(`golden_0_s${n}: sigmas/timesteps exact, every step's latents within 1e-6 relative L2`, () => {
      const sched = new UniPCScheduler(cfg);
      const { g, steps, errs, exact, final } = replay(path.join(REF, `golden_0_s${n}.safetensors`), sched);
      expect(steps).toBe(n);
      expect(bits(sched.sigmas)).toEqual(bits(g.tensor('sigmas').data));
      expect(Array.from(sched.timesteps)).toEqual(g.ints('timesteps'));
      expect(sched.timestepInput(0)).toBe(g.ints('transformer_timestep_step0')[0]);
      console.log(`golden_0_s${n} relative L2 per step: ${errs.map((e) => e.toExponential(2)).join(' ')}; bit-exact: ${exact.map((e) => (e ? 'y' : 'n')).join('')}`);
      for (const e of errs) expect(e).toBeLessThan(1e-6);
      expect(relL2(final, g.tensor('final_latents').data)).toBeLessThan(1e-6);
      // float32 rounding replicated: s4 is bit-exact, s8 up to step 4 (after that, one torch float32 log differs
      // from the correctly rounded value by an ulp)
      if (n === 4) expect(exact).toEqual([true, true, true, true]);
      else expect(exact.slice(0, 5)).toEqual([true, true, true, true, true]);
    });
  }

  it('setTimesteps resets the history: a second run on the same scheduler gives the same latents', () => {
    const sched = new UniPCScheduler(cfg);
    const file = path.join(REF, 'golden_0_s8.safetensors');
    const a = replay(file, sched).final;
    replay(path.join(REF, 'golden_0_s4.safetensors'), sched);
    const b = replay(file, sched).final;
    expect(bits(b)).toEqual(bits(a));
  });

  // numpy 2.4 float64 -> float32 exactly as diffusers' set_timesteps computes them (use_flow_sigmas)
  const NUMPY: { steps: number; shift: number; fin: 'zero' | 'sigma_min'; sigmas: number[]; timesteps: number[] }[] = [
    {
      steps: 13, shift: 3, fin: 'zero',
      sigmas: [1065353199, 1064900256, 1064395586, 1063829817, 1063191137, 1062464481, 1061630329, 1060662920, 1059527551, 1058176322, 1056117808, 1052079878, 1045359920, 0],
      timesteps: [999, 973, 942, 909, 871, 827, 778, 720, 652, 572, 474, 354, 202],
    },
    { steps: 1, shift: 3, fin: 'zero', sigmas: [1065353199, 0], timesteps: [999] },
    {
      steps: 7, shift: 5, fin: 'sigma_min',
      sigmas: [1065353199, 1064812626, 1064112070, 1063168212, 1061827671, 1059773842, 1055497515, 1055497515],
      timesteps: [999, 967, 926, 869, 789, 667, 456],
    },
  ];
  for (const c of NUMPY) {
    it(`sigmas/timesteps bit-exact vs numpy for N=${c.steps}, flow_shift ${c.shift}, final ${c.fin}`, () => {
      const sched = new UniPCScheduler({ ...WAN_UNIPC_CONFIG, flow_shift: c.shift, final_sigmas_type: c.fin });
      sched.setTimesteps(c.steps);
      expect(bits(sched.sigmas)).toEqual(c.sigmas);
      expect(Array.from(sched.timesteps)).toEqual(c.timesteps);
    });
  }

  // a point-mass data distribution: the exact velocity is (x - x0) / sigma, every x0 prediction is x0, and each
  // step must land on the flow path x(sigma) = (1 - sigma) x0 + sigma * eps, for every solver variant
  const variants: [string, Partial<UniPCConfig>][] = [
    ['order 1', { solver_order: 1 }],
    ['order 2 bh2', {}],
    ['order 3 bh2', { solver_order: 3 }],
    ['order 3 bh1, final sigma_min', { solver_order: 3, solver_type: 'bh1', final_sigmas_type: 'sigma_min' }],
    ['order 2, lower_order_final false, final sigma_min', { lower_order_final: false, final_sigmas_type: 'sigma_min' }],
    ['order 2, corrector disabled after steps 0 and 2', { disable_corrector: [0, 2] }],
  ];
  for (const [name, over] of variants) {
    it(`stays on the exact flow path for a point-mass target (${name})`, () => {
      const sched = new UniPCScheduler({ ...WAN_UNIPC_CONFIG, ...over });
      const N = 9;
      sched.setTimesteps(N);
      const M = 256;
      const x0 = Float32Array.from({ length: M }, (_, j) => Math.sin(j * 0.37) * 0.8);
      const eps = Float32Array.from({ length: M }, (_, j) => Math.cos(j * 1.3 + 0.2) * 1.1);
      const s0 = sched.sigmas[0]!;
      let x: Float32Array = Float32Array.from(x0, (v, j) => (1 - s0) * v + s0 * eps[j]!);
      for (let i = 0; i < N; i++) {
        const sg = sched.sigmas[i]!;
        const v = Float32Array.from(x, (xv, j) => (xv - x0[j]!) / sg);
        x = sched.step(v, i, x);
        const st = sched.sigmas[i + 1]!;
        const want = Float32Array.from(x0, (xv, j) => (1 - st) * xv + st * eps[j]!);
        expect(relL2(x, want)).toBeLessThan(1e-5);
      }
    });
  }

  it('rejects steps < 1 and non-integers, and steps out of order', () => {
    const sched = new UniPCScheduler(cfg);
    expect(() => sched.setTimesteps(0)).toThrow(/integer >= 1/);
    expect(() => sched.setTimesteps(-3)).toThrow(/integer >= 1/);
    expect(() => sched.setTimesteps(2.5)).toThrow(/integer >= 1/);
    expect(() => sched.step(new Float32Array(4), 0, new Float32Array(4))).toThrow(/setTimesteps/);
    sched.setTimesteps(4);
    expect(() => sched.step(new Float32Array(4), 1, new Float32Array(4))).toThrow(/out of order; the next step is 0/);
    expect(() => sched.step(new Float32Array(3), 0, new Float32Array(4))).toThrow(/3 values but the sample has 4/);
    expect(() => sched.timestepInput(4)).toThrow(/0\.\.3/);
  });

  describe('scheduler_config.json errors name the file, the field and the allowed values', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'unipc-'));
    const withField = (patch: Record<string, unknown>) => {
      const file = path.join(tmp, 'scheduler_config.json');
      fs.writeFileSync(file, JSON.stringify({ ...WAN_JSON, ...patch }));
      return () => loadUniPCConfig(file);
    };
    const file = path.join(tmp, 'scheduler_config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

    it('wrong field types', () => {
      expect(withField({ flow_shift: '3.0' })).toThrow(new RegExp(`^${file}: field "flow_shift" must be a number > 0, got "3.0"`));
      expect(withField({ solver_order: 2.5 })).toThrow(/field "solver_order" must be an integer >= 1, got 2.5/);
      expect(withField({ lower_order_final: 'yes' })).toThrow(/field "lower_order_final" must be a boolean, got "yes"/);
      expect(withField({ disable_corrector: [0, 'a'] })).toThrow(/field "disable_corrector" must be a list of integers/);
      expect(withField({ num_train_timesteps: '1000' })).toThrow(/field "num_train_timesteps" must be an integer >= 1/);
      expect(withField({ solver_type: 2 })).toThrow(/field "solver_type" must be a string, got 2/);
    });

    it('unsupported options', () => {
      expect(withField({ use_karras_sigmas: true })).toThrow(new RegExp(`^${file}: field "use_karras_sigmas" = true is not supported .*allowed: false`));
      expect(withField({ use_exponential_sigmas: true })).toThrow(/"use_exponential_sigmas" = true is not supported.*allowed: false/);
      expect(withField({ use_beta_sigmas: true })).toThrow(/"use_beta_sigmas" = true is not supported.*allowed: false/);
      expect(withField({ thresholding: true })).toThrow(/"thresholding" = true is not supported.*allowed: false/);
      expect(withField({ use_dynamic_shifting: true })).toThrow(/"use_dynamic_shifting" = true is not supported.*allowed: false/);
      expect(withField({ prediction_type: 'epsilon' })).toThrow(/"prediction_type" = "epsilon" is not supported.*allowed: "flow_prediction"/);
      expect(withField({ solver_type: 'dpm' })).toThrow(/"solver_type" = "dpm" is not supported.*allowed: "bh1", "bh2"/);
      expect(withField({ solver_order: 4 })).toThrow(/"solver_order" = 4 is not supported.*allowed: 1, 2, 3/);
      expect(withField({ use_flow_sigmas: false })).toThrow(/"use_flow_sigmas" = false is not supported.*allowed: true/);
      expect(withField({ predict_x0: false })).toThrow(/"predict_x0" = false is not supported.*allowed: true/);
      expect(withField({ final_sigmas_type: 'one' })).toThrow(/"final_sigmas_type" = "one" is not supported.*allowed: "zero", "sigma_min"/);
      expect(withField({ timestep_spacing: 'random' })).toThrow(/"timestep_spacing" = "random" is not supported.*allowed: "linspace", "leading", "trailing"/);
      expect(withField({ shift_terminal: 0.1 })).toThrow(/"shift_terminal" = 0.1 is not supported.*allowed: null/);
      expect(withField({ _class_name: 'FlowMatchEulerDiscreteScheduler' })).toThrow(/field "_class_name" must be "UniPCMultistepScheduler"/);
      expect(withField({ solver_type: 'bh1' })).toThrow(/solver_type "bh1" with final_sigmas_type "zero" is not supported.*NaN/);
      // diffusers maps the legacy solver names to bh2
      expect(withField({ solver_type: 'midpoint' })().solver_type).toBe('bh2');
    });

    it('missing file and non-object JSON', () => {
      expect(() => loadUniPCConfig(path.join(tmp, 'nope.json'))).toThrow(/nope\.json: cannot read the scheduler config/);
      expect(() => parseUniPCConfig([1, 2], 'x.json')).toThrow(/^x\.json: must hold a JSON object/);
    });

    it('lower_order_final false with a zero final sigma (diffusers returns inf/NaN) is rejected at setTimesteps', () => {
      const sched = new UniPCScheduler(withField({ lower_order_final: false })());
      expect(() => sched.setTimesteps(4)).toThrow(/lower_order_final false with final_sigmas_type "zero" and solver_order 2 is not supported for 4 steps.*NaN/);
      expect(() => sched.setTimesteps(1)).not.toThrow();
      const o3 = new UniPCScheduler({ ...WAN_UNIPC_CONFIG, solver_order: 3, lower_order_final: false, final_sigmas_type: 'sigma_min' });
      expect(() => o3.setTimesteps(5)).toThrow(/final_sigmas_type "sigma_min" and solver_order 3 is not supported for 5 steps/);
      expect(() => o3.setTimesteps(2)).not.toThrow();
    });
  });
});
