// Classifier-free guidance as the diffusers pipelines combine it (FluxPipeline's true CFG, WanPipeline's CFG):
// the Pipeline's loop (runtime/pipeline.ts) calls it after the cond and the uncond forwards.

/** `noise_pred = neg + scale * (pos - neg)` in float32 (torch float32 ops, no FMA), written into `pos`. */
export function combineCfg(pos: Float32Array, neg: Float32Array, scale: number): void {
  const sc = Math.fround(scale);
  for (let k = 0; k < pos.length; k++) pos[k] = Math.fround(neg[k]! + Math.fround(sc * Math.fround(pos[k]! - neg[k]!)));
}
