// The mid-size FLUX.1 transformer the benchmarks share (random weights; 1024 image + 128 text tokens):
// test/bench/run.ts (single-rank step vs onnxruntime) and test/bench/parallel.ts (multi-rank steps).
import type { PlanDims } from '../../runtime/pipeline.ts';

export const MID_CONFIG = {
  num_layers: 2,
  num_single_layers: 4,
  num_attention_heads: 16,
  attention_head_dim: 64,
  in_channels: 64,
  joint_attention_dim: 1024,
  pooled_projection_dim: 768,
  guidance_embeds: false,
  axes_dims_rope: [16, 24, 24],
};
export const MID_DIMS: PlanDims = { batch: 1, height: 512, width: 512, textTokens: 128 }; // (512/16)^2 = 1024 tokens
