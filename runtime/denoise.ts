// FluxPipeline's denoising loop with optional true CFG, shared by the 1-rank pipeline (runtime/pipeline.ts)
// and every rank of the multi-rank one (runtime/pipeline-parallel.ts), so both call the transformer in the
// same order (cond, then uncond: the order Cache-DiT's separate-CFG contexts count on) and combine alike.
import { eulerStep, transformerTimestep, type Schedule } from './scheduler.ts';
import { assertFinite } from './request-checks.ts';

/** The text conditioning of one branch (text encoder outputs). */
export interface TextEmbeds {
  encoderHiddenStates: Float32Array;
  pooledProjections: Float32Array;
}

/** `noise_pred = neg + scale * (pos - neg)` in float32 (torch float32 ops, no FMA), written into `pos`. */
export function combineCfg(pos: Float32Array, neg: Float32Array, scale: number): void {
  const sc = Math.fround(scale);
  for (let k = 0; k < pos.length; k++) pos[k] = Math.fround(neg[k]! + Math.fround(sc * Math.fround(pos[k]! - neg[k]!)));
}

export interface DenoiseOptions {
  /** packed latents, stepped in place */
  x: Float32Array;
  schedule: Schedule;
  steps: number;
  batch: number;
  pos: TextEmbeds;
  /** the negative prompt's embeddings (true CFG), or null */
  neg: TextEmbeds | null;
  /** true_cfg_scale (used with `neg`) */
  cfgScale: number;
  /** one transformer forward: velocity [B, tokens, channels] (a fresh array the loop may overwrite) */
  velocity: (text: TextEmbeds, timestep: Float32Array) => Promise<Float32Array>;
  /** called before each step (e.g. fault injection in tests) */
  beforeStep?: (step: number) => void;
  onStep?: (info: { step: number; steps: number; timestep: number; sigma: number; ms: number }) => void;
}

/** The Euler loop: per step the cond forward, with CFG the uncond forward and the combine, then the step. */
export async function denoiseLoop(o: DenoiseOptions): Promise<void> {
  const timestep = new Float32Array(o.batch);
  for (let i = 0; i < o.steps; i++) {
    o.beforeStep?.(i);
    const tStep = performance.now();
    timestep.fill(transformerTimestep(o.schedule, i));
    const v = await o.velocity(o.pos, timestep);
    if (o.neg) combineCfg(v, await o.velocity(o.neg, timestep), o.cfgScale);
    eulerStep(o.x, v, o.schedule, i);
    assertFinite(o.x, `the latents after denoising step ${i + 1} of ${o.steps} (the transformer's output)`);
    o.onStep?.({ step: i + 1, steps: o.steps, timestep: o.schedule.timesteps[i]!, sigma: o.schedule.sigmas[i]!, ms: performance.now() - tStep });
  }
}
