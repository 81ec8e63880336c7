// Public runtime API: `import { loadPipeline } from 'ditforge'`.
export { loadPipeline, componentDims, Pipeline, UserError, resolveModelDir, SHIPPED_MODELS, PACKAGE_ROOT, getNative } from './pipeline.ts';
export type { PipelineOptions, GenerateOptions, GenerateResult, StageTimings, PlanDims, PlanProvider, NativeModule, NativeExecutor } from './pipeline.ts';
export { openSafetensors, openSafetensorsSync, writeSafetensors, encodeSafetensors, SafetensorsFile, SafetensorsError, f16ToF32, bf16ToF32 } from './io/safetensors.ts';
export type { SafetensorsDType, TensorInfo, FloatTensor, WriteTensor } from './io/safetensors.ts';
export { WordTokenizer } from './tokenizer.ts';
export { fluxSchedule, calculateShift, linspace, eulerStep, transformerTimestep, loadSchedulerConfig, FLUX_SCHEDULER_CONFIG } from './scheduler.ts';
export type { Schedule, FlowMatchSchedulerConfig } from './scheduler.ts';
export { packLatents, unpackLatents, imageIds, textIds, latentGeometry, latentsToVaeSpace } from './latents.ts';
export type { LatentGeometry } from './latents.ts';
export { toUint8HWC, quantizeHWC, denormalize, roundHalfEven, encodePng, writePng, readPng } from './image.ts';
export { torchRandn, MT19937 } from './rng.ts';
export type { Plan, Component } from './plan.ts';
export { generateParallel, parallelRequest, PARALLEL_KINDS } from './pipeline-parallel.ts';
export type { ParallelGenerateRequest, ParallelGenerateResult, ParallelKind, ParallelOptions, ParallelPlanProvider, ParallelRequest } from './pipeline-parallel.ts';
export { ParallelExecutor, nativeStagePlan } from './parallel/executor.ts';
export { ParallelBlockListRunner } from './parallel/cache.ts';
