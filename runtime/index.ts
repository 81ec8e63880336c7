/// <reference types="node" preserve="true" />
// Public runtime API: `import { loadPipeline } from 'ditforge'`.
export { loadPipeline, loadFluxPipeline, loadWanPipeline, loadQwenImagePipeline, componentDims, Pipeline, UserError, resolveModelDir, SHIPPED_MODELS, PACKAGE_ROOT, getNative } from './pipeline.ts';
export type { PipelineOptions, BaseGenerateOptions, GenerateOptions, GenerateResult, StageTimings, PlanDims, PlanProvider, NativeModule, NativeExecutor, FluxPipeline, WanPipeline, QwenImagePipeline } from './pipeline.ts';
export type { PipelineSpec, PipelineContext, PlanNeed, Sampler, ResolvedRequest, DecodeMode } from './pipelines/spec.ts';
export { openSafetensors, openSafetensorsSync, writeSafetensors, encodeSafetensors, SafetensorsFile, SafetensorsError, f16ToF32, bf16ToF32 } from './io/safetensors.ts';
export type { SafetensorsDType, TensorInfo, FloatTensor, WriteTensor } from './io/safetensors.ts';
export { WordTokenizer } from './tokenizer.ts';
export { fluxSchedule, calculateShift, linspace, eulerStep, transformerTimestep, loadSchedulerConfig, FLUX_SCHEDULER_CONFIG } from './scheduler.ts';
export type { Schedule, FlowMatchSchedulerConfig } from './scheduler.ts';
export { packLatents, unpackLatents, imageIds, textIds, videoRopeIds, latentGeometry, latentsToVaeSpace } from './latents.ts';
export type { LatentGeometry } from './latents.ts';
export { toUint8HWC, quantizeHWC, denormalize, roundHalfEven, encodePng, writePng, readPng } from './image.ts';
export { torchRandn, MT19937 } from './rng.ts';
export { vaeTilingConfig, needsTiling, tileGrid, tileShapes, extractTile, blendV, blendH, stitchTiles, tiledDecode, tiledDecodeParallel } from './vae-tiling.ts';
export type { VaeTilingConfig, VaeTile, VaeTileGrid } from './vae-tiling.ts';
export { combineCfg } from './denoise.ts';
export type { Plan, Component } from './plan.ts';
export { generateParallel, parallelRequest, PARALLEL_KINDS } from './pipeline-parallel.ts';
export type { ParallelGenerateRequest, ParallelGenerateResult, ParallelKind, ParallelOptions, ParallelPlanProvider, ParallelRequest, RankStats } from './pipeline-parallel.ts';
export { ParallelExecutor, nativeStagePlan } from './parallel/executor.ts';
export { ParallelBlockListRunner } from './parallel/cache.ts';
export { promptClean } from './pipelines/wan.ts';
export type { VideoGenerateOptions, VideoGenerateResult } from './pipelines/wan.ts';
export { rescaledCfg } from './pipelines/qwen-image.ts';
export type { QwenImageGenerateOptions, QwenImageResult } from './pipelines/qwen-image.ts';
export { familyOf } from './model-dir.ts';
export { checkVideoOutput, writeVideo } from './video.ts';
