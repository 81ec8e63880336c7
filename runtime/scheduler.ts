// FlowMatchEulerDiscreteScheduler as diffusers' FluxPipeline drives it (models/tiny-flux/README.md §5).
// Sigmas are computed in float32 exactly as the scheduler does (numpy float32 arithmetic), so they are
// bit-exact against diffusers; Math.fround marks every float32 rounding.

import fs from 'node:fs';

export interface FlowMatchSchedulerConfig {
  num_train_timesteps: number;
  shift: number;
  use_dynamic_shifting: boolean;
  base_shift: number;
  max_shift: number;
  base_image_seq_len: number;
  max_image_seq_len: number;
  time_shift_type: 'exponential' | 'linear';
  /** stretch the shifted sigmas so the last one is this (Qwen-Image: 0.02); null: off */
  shift_terminal: number | null;
}

export const FLUX_SCHEDULER_CONFIG: FlowMatchSchedulerConfig = {
  num_train_timesteps: 1000,
  shift: 3.0,
  use_dynamic_shifting: true,
  base_shift: 0.5,
  max_shift: 1.15,
  base_image_seq_len: 256,
  max_image_seq_len: 4096,
  time_shift_type: 'exponential',
  shift_terminal: null,
};

const f = Math.fround;

export function loadSchedulerConfig(file: string): FlowMatchSchedulerConfig {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<Record<keyof FlowMatchSchedulerConfig, unknown>>;
  const cfg = { ...FLUX_SCHEDULER_CONFIG };
  for (const k of Object.keys(cfg) as (keyof FlowMatchSchedulerConfig)[]) {
    const v = raw[k];
    if (v !== undefined && v !== null) (cfg as Record<string, unknown>)[k] = v;
  }
  for (const k of ['use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'invert_sigmas', 'stochastic_sampling'] as const) {
    if ((raw as Record<string, unknown>)[k]) throw new Error(`${file}: scheduler option ${k}=true is not supported`);
  }
  const st = (raw as Record<string, unknown>).shift_terminal;
  if (st !== undefined && st !== null && (typeof st !== 'number' || !(st >= 0 && st < 1))) throw new Error(`${file}: field "shift_terminal" must be a number in [0, 1) or null, got ${JSON.stringify(st)}`);
  return cfg;
}

/** diffusers `calculate_shift` (FluxPipeline), float64 */
export function calculateShift(imageSeqLen: number, cfg: FlowMatchSchedulerConfig = FLUX_SCHEDULER_CONFIG): number {
  const m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len);
  const b = cfg.base_shift - m * cfg.base_image_seq_len;
  return imageSeqLen * m + b;
}

/** torch.linspace(start, end, steps) in float32 (the CPU kernel: start + step * i in the first half, end - step * (steps - 1 - i) after) */
export function torchLinspace32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const a = f(start);
  const b = f(end);
  const step = f(f(b - a) / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < half ? f(a + f(step * i)) : f(b - f(step * (steps - i - 1)));
  return out;
}

/** numpy.linspace(start, stop, num) in float64, element for element as numpy computes it */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const y = new Float64Array(num);
  const div = num - 1;
  const delta = stop - start;
  if (div > 0) {
    const step = delta / div;
    if (step === 0) for (let i = 0; i < num; i++) y[i] = (i / div) * delta + start;
    else for (let i = 0; i < num; i++) y[i] = i * step + start;
    y[num - 1] = stop;
  } else {
    for (let i = 0; i < num; i++) y[i] = i * delta + start;
  }
  return y;
}

export interface Schedule {
  /** N + 1 float32 sigmas, last = 0 */
  sigmas: Float32Array;
  /** N float32 timesteps (= sigma * 1000) */
  timesteps: Float32Array;
  mu: number;
}

/**
 * Sigmas/timesteps for `steps` denoising steps at `imageSeqLen` packed image tokens (FluxPipeline); `muGiven`:
 * the pipeline's own shift (FLUX.2's empirical mu) instead of calculate_shift's.
 */
export function fluxSchedule(steps: number, imageSeqLen: number, cfg: FlowMatchSchedulerConfig = FLUX_SCHEDULER_CONFIG, base?: ArrayLike<number>, muGiven?: number): Schedule {
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`steps must be an integer >= 1, got ${steps}`);
  const mu = muGiven ?? calculateShift(imageSeqLen, cfg);
  // FluxPipeline: sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps); scheduler casts to
  // float32 (`base`: the pipeline's own sigmas, e.g. ZImagePipeline's torch.linspace)
  const s = base ?? linspace(1.0, 1 / steps, steps);
  const sigmas = new Float32Array(steps + 1);
  const timesteps = new Float32Array(steps);
  if (cfg.use_dynamic_shifting) {
    if (cfg.time_shift_type === 'exponential') {
      const e = f(Math.exp(mu));
      for (let i = 0; i < steps; i++) {
        const si = f(s[i]!);
        const x = f(f(1 / si) - 1); // (1 / t - 1) ** 1.0
        sigmas[i] = f(e / f(e + x));
      }
    } else {
      // linear: mu / (mu + (1 / t - 1) ** sigma)
      const e = f(mu);
      for (let i = 0; i < steps; i++) {
        const si = f(s[i]!);
        sigmas[i] = f(e / f(e + f(f(1 / si) - 1)));
      }
    }
  } else {
    const sh = f(cfg.shift);
    for (let i = 0; i < steps; i++) {
      const si = f(s[i]!);
      sigmas[i] = f(f(sh * si) / f(1 + f(f(sh - 1) * si)));
    }
  }
  if (cfg.shift_terminal) {
    // stretch_shift_to_terminal, float32: 1 - (1 - s) / ((1 - s_last) / (1 - shift_terminal))
    const scale = f(f(1 - sigmas[steps - 1]!) / f(1 - cfg.shift_terminal));
    for (let i = 0; i < steps; i++) sigmas[i] = f(1 - f(f(1 - sigmas[i]!) / scale));
  }
  for (let i = 0; i < steps; i++) timesteps[i] = f(sigmas[i]! * cfg.num_train_timesteps);
  sigmas[steps] = 0;
  return { sigmas, timesteps, mu };
}

/** The transformer's `timestep` input at step i: float32(t_i) / 1000 in float32 (FluxPipeline). */
export function transformerTimestep(schedule: Schedule, i: number): number {
  return f(schedule.timesteps[i]! / 1000);
}

/** One Euler step in place: x += (sigma_{i+1} - sigma_i) * v, float32 (FlowMatchEulerDiscreteScheduler.step). */
export function eulerStep(x: Float32Array, v: Float32Array, schedule: Schedule, i: number): void {
  const dt = f(schedule.sigmas[i + 1]! - schedule.sigmas[i]!);
  for (let j = 0; j < x.length; j++) x[j] = x[j]! + f(dt * v[j]!);
}

/** FlowMatchEulerDiscreteScheduler over a schedule as a pipeline's sampler (steps x in place) */
export function eulerSampler(schedule: Schedule): { schedule: Schedule; timesteps: Float32Array; sigmas: Float32Array; modelTimestep(i: number): number; step(v: Float32Array, i: number, x: Float32Array): Float32Array } {
  return {
    schedule,
    timesteps: schedule.timesteps,
    sigmas: schedule.sigmas,
    modelTimestep: (i) => transformerTimestep(schedule, i),
    step(v, i, x) {
      eulerStep(x, v, schedule, i);
      return x;
    },
  };
}
