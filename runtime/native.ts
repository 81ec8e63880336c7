// Typed loader of the native addon (docs/architecture.md §4). Build it with `npm run build:native`.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './package-root.ts';

/** An arena-backed plan interpreter built from plan.json text. */
export interface NativeExecutor {
  /** Binds a weight by its plan name; the array is kept alive by the executor and used in place. */
  bindWeight(name: string, data: Float32Array): void;
  /** Copies an input into its arena tensor (length must equal the input's numel). */
  setInput(name: string, data: Float32Array): void;
  /** Copies an output out of the arena (length must equal the output's numel). */
  getOutput(name: string, into: Float32Array): void;
  /** Copies any tensor view (arena, or a bound weight) into `into` (length must equal its numel). */
  readTensor(id: number, into: Float32Array): void;
  /** Overwrites an arena tensor view. */
  writeTensor(id: number, data: Float32Array): void;
  /**
   * A Float32Array aliasing an arena tensor (no copy). It keeps the executor alive; never touch it while a
   * run() is in flight. Used by the cache engine (runtime/cache/native-runner.ts) to run its kernels in place.
   */
  tensorView(id: number): Float32Array;
  /**
   * `runKernel` on this executor's own thread pool (not while a run() is in flight): multi-rank runs keep each
   * rank's threads (the global pool serves one caller at a time; the others would run single-threaded).
   * Optional so structural fakes need not provide it.
   */
  runKernel?(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
  /** Runs a segment on a worker thread; a "blocks" segment runs blocks [blockBegin, blockEnd) (default all). */
  run(segment: string, blockBegin?: number, blockEnd?: number): Promise<void>;
  /** Same, on the calling thread. */
  runSync(segment: string, blockBegin?: number, blockEnd?: number): void;
  /** Size of the activation arena in bytes. */
  arenaBytes(): number;
  /** Worker threads of this executor's pool (including the calling thread). */
  threads(): number;
  /** Segments in plan order; `blocks` is the block count of block-list segments, 0 otherwise. */
  segments(): { name: string; blocks: number }[];
  /** The backend the plan runs on: "cpu", "cuda:0", ... (tensorView and runKernel need "cpu") */
  device(): string;
}

export interface ExecutorOptions {
  /** default: env DITFORGE_THREADS, else hardware_concurrency */
  threads?: number;
  /** "cpu" (default), "cuda" or "cuda:N" (runtime/native/src/backend.h); a device that is not there is a clear error */
  device?: string;
}

export interface NativeFeatures {
  avx512: boolean;
  avx2: boolean;
  /** ISA the kernels were compiled for: 'avx512' | 'avx2' | 'generic' */
  compiledFor: string;
  /** default thread count (DITFORGE_THREADS or hardware_concurrency) */
  threads: number;
  hardwareThreads: number;
  cudaCompiled: boolean;
  cudaDevices: number;
  /** why no CUDA device is usable (absent when one is) */
  cudaReason?: string;
  openblas: boolean;
  openblasCore?: string;
  /** number of registered CPU kernels */
  kernels: number;
}

export interface Native {
  kernels(): string[];
  /** runs one kernel; `device` other than "cpu": on that backend, every tensor copied there and back */
  runKernel(name: string, t: (Float32Array | null)[], i: number[], f: number[], device?: string): void;
  /** floats each tensor slot needs for these parameters (the kernel's argument signature) */
  kernelNeeds(name: string, present: boolean[], ints: number[], nFloats: number): number[];
  mapFile(path: string): ArrayBuffer;
  /** the kernels the CUDA backend of this build implements (empty when it was built without CUDA) */
  cudaKernels(): string[];
  /** drops the resident whole pages of a byte range of a mapFile buffer (it reads the file again if touched) */
  releaseMappedPages(buffer: ArrayBuffer, offset: number, length: number): void;
  Executor: new (plan: string, opts?: ExecutorOptions) => NativeExecutor;
  features(): NativeFeatures;
  /** y[M,N] = x[M,K] @ w[N,K]^T with OpenBLAS (benchmark peer); absent when built without OpenBLAS. */
  sgemmOpenBLAS?: (x: Float32Array, w: Float32Array, y: Float32Array, M: number, N: number, K: number, threads?: number) => void;
}

export const NATIVE_ADDON_PATH = process.env.DITFORGE_NATIVE_ADDON ?? join(PACKAGE_ROOT, 'build', 'native', 'Release', 'ditforge_native.node');

let cached: Native | undefined;
let loadError: Error | undefined;

/** Loads the addon once; throws a clear error when it is not built. */
export function loadNative(): Native {
  if (cached) return cached;
  if (loadError) throw loadError;
  // OpenBLAS 0.3.21 misdetects some Xeons as Prescott under dlopen; must be set before the library loads.
  process.env.OPENBLAS_CORETYPE ??= 'Cooperlake';
  if (!existsSync(NATIVE_ADDON_PATH)) {
    loadError = new Error(`ditforge native addon not built (${NATIVE_ADDON_PATH} is missing): run \`npm run build:native\``);
    throw loadError;
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(NATIVE_ADDON_PATH) as Native;
    return cached;
  } catch (e) {
    loadError = new Error(`cannot load the ditforge native addon ${NATIVE_ADDON_PATH}: ${(e as Error).message}; rebuild it with \`npm run build:native\``);
    throw loadError;
  }
}

/** True when the addon exists and loads. */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

/**
 * The addon, loaded on first use (so importing this module never throws; the first call does when the
 * addon is not built).
 */
export const native: Native = new Proxy({} as Native, {
  get(_t, prop) {
    const n = loadNative() as unknown as Record<string | symbol, unknown>;
    return n[prop];
  },
  has(_t, prop) {
    return prop in (loadNative() as object);
  },
});
