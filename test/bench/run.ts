// `npm run bench`: per-step time of the native runtime against onnxruntime-node (same model, same weights,
// same thread count), GEMM GFLOP/s (test/bench/gemm.ts), and peak RSS of `ditforge generate`.
// Writes bench/results.json and prints a table. Never run by the tests.
//
// env: BENCH_THREADS (default: all cores), BENCH_ITERS (timed iterations, default 20 tiny / 5 mid),
//      BENCH_SKIP=tiny,fixture,loadrss,mid,gemm,rss,comm,parallel,cache,serve (comma list of sections to skip)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { compilePlan, directoryConfig, exportOnnx } from '../../compiler/index.ts';
import { ComponentWeights } from '../../runtime/io/weights.ts';
import { componentConfig } from '../../runtime/model-dir.ts';
import { getNative, componentDims, type PlanDims } from '../../runtime/pipeline.ts';
import { openSafetensors } from '../../runtime/io/safetensors.ts';
import type { Plan } from '../../runtime/plan.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { median, randomInputs, randomWeights } from './plan-data.ts';
import { MID_CONFIG, MID_DIMS } from './mid-config.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const THREADS = Number(process.env.BENCH_THREADS ?? os.availableParallelism());
const SKIP = new Set((process.env.BENCH_SKIP ?? '').split(',').filter(Boolean));
const log = (s: string) => process.stderr.write(s + '\n');


interface StepBench {
  model: string;
  tokens: string;
  params: number;
  threads: number;
  nativeSecPerStep?: number;
  ortSecPerStep?: number;
  nativeMinSecPerStep?: number;
  ortMinSecPerStep?: number;
  /** onnxruntime median time / native median time (> 1: native is faster) */
  speedupVsOrt?: number;
  /** the same from the fastest run of each (least disturbed by background load) */
  speedupVsOrtMin?: number;
  nativeVsOrtRelL2?: number;
  nativeRuns?: number[];
  ortRuns?: number[];
  error?: string;
}

/** native executor vs onnxruntime-node on the same transformer plan, weights and inputs */
async function benchTransformer(
  label: string,
  model: string,
  plan: Plan,
  weights: Map<string, Float32Array>,
  dims: PlanDims,
  onnxOpts: Parameters<typeof exportOnnx>[1],
  iters: number,
): Promise<StepBench> {
  const params = [...weights.values()].reduce((a, w) => a + w.length, 0);
  const res: StepBench = { model: label, tokens: `${plan.inputs.find((i) => i.name === 'hidden_states')?.shape[1]} img + ${dims.textTokens} txt`, params, threads: THREADS };
  const inputs = randomInputs(plan, dims);
  const outIo = plan.outputs.find((o) => o.name === 'output')!;
  const nativeOut = new Float32Array(outIo.shape.reduce((a, b) => a * b, 1));
  let nativeStep: (() => Promise<void>) | undefined;
  let ortStep: (() => Promise<void>) | undefined;
  let ortOut: Float32Array | undefined;
  let session: ort.InferenceSession | undefined;
  try {
    const native = getNative();
    const exec = new native.Executor(JSON.stringify(plan), { threads: THREADS });
    for (const w of plan.weights) exec.bindWeight(w.name, weights.get(w.name)!);
    nativeStep = async () => {
      for (const io of plan.inputs) exec.setInput(io.name, inputs[io.name]!);
      for (const s of plan.segments) await exec.run(s.name);
      exec.getOutput('output', nativeOut);
    };
  } catch (e) {
    res.error = `native: ${(e as Error).message}`;
  }
  try {
    const bytes = exportOnnx(model, { ...onnxOpts, weights });
    const sess = await ort.InferenceSession.create(bytes, {
      intraOpNumThreads: THREADS,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    session = sess;
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of sess.inputNames) {
      const io = plan.inputs.find((i) => i.name === name);
      if (!io) throw new Error(`ONNX input "${name}" is not a plan input`);
      feeds[name] = new ort.Tensor('float32', inputs[name]!, io.shape);
    }
    ortStep = async () => {
      const r = await sess.run(feeds);
      ortOut = r[sess.outputNames[0]!]!.data as Float32Array;
    };
  } catch (e) {
    res.error = `${res.error ? res.error + '; ' : ''}onnxruntime: ${(e as Error).message}`;
  }
  // warm up, then interleave the two engines so background load hits both alike
  const nRuns: number[] = [];
  const oRuns: number[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      await nativeStep?.();
      await ortStep?.();
    }
    for (let i = 0; i < iters; i++) {
      for (const [step, runs] of [
        [nativeStep, nRuns],
        [ortStep, oRuns],
      ] as const) {
        if (!step) continue;
        const t = performance.now();
        await step();
        runs.push(performance.now() - t);
      }
    }
  } catch (e) {
    res.error = `${res.error ? res.error + '; ' : ''}run: ${(e as Error).message}`;
  }
  const r2 = (x: number) => Math.round(x * 100) / 100;
  if (nRuns.length) {
    res.nativeSecPerStep = median(nRuns) / 1000;
    res.nativeMinSecPerStep = Math.min(...nRuns) / 1000;
    res.nativeRuns = nRuns.map(r2);
    log(`  ${label}: native ${median(nRuns).toFixed(2)} ms/step (min ${Math.min(...nRuns).toFixed(2)})`);
  }
  if (oRuns.length) {
    res.ortSecPerStep = median(oRuns) / 1000;
    res.ortMinSecPerStep = Math.min(...oRuns) / 1000;
    res.ortRuns = oRuns.map(r2);
    log(`  ${label}: onnxruntime ${median(oRuns).toFixed(2)} ms/step (min ${Math.min(...oRuns).toFixed(2)})`);
  }
  if (res.nativeSecPerStep && res.ortSecPerStep) {
    res.speedupVsOrt = res.ortSecPerStep / res.nativeSecPerStep;
    res.speedupVsOrtMin = res.ortMinSecPerStep! / res.nativeMinSecPerStep!;
  }
  if (ortOut && nRuns.length) res.nativeVsOrtRelL2 = relL2(nativeOut, ortOut);
  if (res.error) log(`  ${label}: ${res.error}`);
  await session?.release();
  return res;
}

async function benchTiny(): Promise<StepBench> {
  const dims: PlanDims = { batch: 1, height: 32, width: 32, textTokens: 12 };
  const shipped = path.join(ROOT, 'generated/tiny-flux/transformer/plan.json');
  const plan: Plan = fs.existsSync(shipped)
    ? (JSON.parse(fs.readFileSync(shipped, 'utf8')) as Plan)
    : compilePlan('tiny-flux', { component: 'transformer', dims: componentDims('transformer', dims) });
  const file = await openSafetensors(path.join(ROOT, 'models/tiny-flux/transformer/diffusion_pytorch_model.safetensors'));
  const weights = new Map(plan.weights.map((w) => [w.name, file.tensor(w.name).data] as const));
  return benchTransformer('tiny-flux transformer', 'tiny-flux', plan, weights, dims, { component: 'transformer', dims: componentDims('transformer', dims) }, Number(process.env.BENCH_ITERS ?? 20));
}

/** the FLUX.1 fixture directory's own transformer (sharded bf16 weights, its config.json) at 128x128, 32 T5 tokens */
async function benchFlux1Fixture(): Promise<StepBench> {
  const dir = path.join(ROOT, 'test/fixtures/flux1-random');
  const dims: PlanDims = { batch: 1, height: 128, width: 128, textTokens: 32 };
  const config = directoryConfig('flux1-dev', 'transformer', componentConfig(dir, 'transformer'));
  const opts = { component: 'transformer' as const, config, dims: componentDims('transformer', dims) };
  const plan = compilePlan('flux1-dev', opts);
  const file = await ComponentWeights.open(path.join(dir, 'transformer'));
  const weights = new Map(plan.weights.map((w) => [w.name, file.tensor(w.name).data] as const));
  return benchTransformer('flux1-random fixture transformer', 'flux1-dev', plan, weights, dims, opts, Number(process.env.BENCH_ITERS ?? 20));
}

async function benchMid(): Promise<StepBench> {
  const opts = { component: 'transformer' as const, config: MID_CONFIG, dims: componentDims('transformer', MID_DIMS) };
  const plan = compilePlan('flux1-dev', opts);
  const weights = randomWeights(plan);
  return benchTransformer('flux1 mid (random weights)', 'flux1-dev', plan, weights, MID_DIMS, opts, Number(process.env.BENCH_ITERS ?? 5));
}

async function benchGemmSection(): Promise<unknown> {
  const file = path.join(ROOT, 'test/bench/gemm.ts');
  if (!fs.existsSync(file)) return { skipped: 'test/bench/gemm.ts not present' };
  const mod = (await import(new URL('./gemm.ts', import.meta.url).href)) as { benchGemm?: (o?: { threads?: number }) => unknown };
  if (typeof mod.benchGemm !== 'function') return { skipped: 'test/bench/gemm.ts exports no benchGemm()' };
  return await mod.benchGemm({ threads: THREADS });
}

function benchRss(): Record<string, unknown> {
  const out = path.join(os.tmpdir(), `ditforge-bench-${process.pid}.png`);
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, 'bin/ditforge.mjs'), 'generate', '--model', 'tiny-flux', '--prompt', 'a large red circle at the center on a black background', '--seed', '0', '--out', out, '--json', '--threads', String(THREADS)],
    { encoding: 'utf8', timeout: 600_000 },
  );
  fs.rmSync(out, { force: true });
  if (r.status !== 0) return { error: r.stderr.trim() || `exit ${r.status}` };
  const j = JSON.parse(r.stdout) as { peakRssMB: number; timings: Record<string, number>; arenaMB: number };
  return { command: 'ditforge generate --model tiny-flux (28 steps, 32x32)', peakRssMB: j.peakRssMB, arenaMB: j.arenaMB, timingsMs: j.timings };
}

function fmt(x: number | undefined, digits = 4): string {
  return x === undefined || Number.isNaN(x) ? '-' : x < 0.01 ? x.toExponential(2) : x.toFixed(digits);
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memGB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()}-${os.arch()}` },
    threads: THREADS,
    ortVersion: (ort.env as { versions?: { common?: string } }).versions?.common ?? null,
  };
  // first, while this process is small
  if (!SKIP.has('rss')) {
    log('peak RSS of generate ...');
    results.generate = benchRss();
  }
  const steps: StepBench[] = [];
  if (!SKIP.has('tiny')) {
    log('tiny-flux transformer step ...');
    steps.push(await benchTiny().catch((e: Error) => ({ model: 'tiny-flux transformer', tokens: '', params: 0, threads: THREADS, error: e.message })));
  }
  if (!SKIP.has('fixture')) {
    log('FLUX.1 fixture directory transformer step (its bf16 weights and config) ...');
    steps.push(await benchFlux1Fixture().catch((e: Error) => ({ model: 'flux1-random fixture transformer', tokens: '', params: 0, threads: THREADS, error: e.message })));
  }
  if (!SKIP.has('loadrss')) {
    log('peak RSS of loading a sharded bf16 checkpoint ...');
    const { benchLoadRss } = await import('./load-rss.ts');
    results.loadRss = benchLoadRss({ log });
  }
  if (!SKIP.has('mid')) {
    log('mid-size FLUX transformer step (1024 + 128 tokens) ...');
    steps.push(await benchMid().catch((e: Error) => ({ model: 'flux1 mid (random weights)', tokens: '', params: 0, threads: THREADS, error: e.message })));
  }
  results.denoisingStep = steps;
  if (!SKIP.has('gemm')) {
    log('GEMM ...');
    results.gemm = await benchGemmSection().catch((e: Error) => ({ error: e.message }));
  }

  if (!SKIP.has('comm')) {
    log('communicators: all-to-all GB/s (shm, mpi), Ulysses bytes per step with / without FP8 ...');
    const { benchComm } = await import('./comm.ts');
    results.comm = await benchComm({ log }).catch((e: Error) => ({ error: e.message }));
  }
  if (!SKIP.has('parallel')) {
    log('mid-size FLUX step on 1, 2, 4 ranks (shm): Ulysses (+ FP8), ring, TP ...');
    const { benchParallelSteps } = await import('./parallel.ts');
    const kinds = ['ulysses', 'ring', 'tp'] as const;
    results.parallelStep = await benchParallelSteps({ model: 'flux1-dev', config: MID_CONFIG, dims: MID_DIMS, threads: THREADS, iters: Number(process.env.BENCH_ITERS ?? 3), kinds: [...kinds], log }).catch(
      (e: Error) => ({ error: e.message }),
    );
  }

  if (!SKIP.has('cache')) {
    log('cache engine: tiny-flux 28 / 50 steps, DBCache / TaylorSeer / SCM / DBPrune speed-up vs PSNR, SSIM (bench/cache.svg) ...');
    const { benchCache } = await import('./cache.ts');
    results.cache = await benchCache({ log }).catch((e: Error) => ({ error: e.message }));
  }

  if (!SKIP.has('serve')) {
    log('ditforge serve under load: 200 requests from 4 clients on loopback, /health during the load, RSS ...');
    const { benchServe } = await import('./serve.ts');
    results.serve = await benchServe({ threads: THREADS, log }).catch((e: Error) => ({ error: e.message }));
  }

  fs.mkdirSync(path.join(ROOT, 'bench'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench/results.json'), JSON.stringify(results, null, 2) + '\n');

  const rows = [['model', 'tokens', 'params', 'threads', 'native s/step', 'onnxruntime s/step', 'ort/native', 'ort/native (min)', 'rel L2 vs ort']];
  for (const s of steps) {
    rows.push([s.model, s.tokens, s.params ? `${(s.params / 1e6).toFixed(2)} M` : '-', String(s.threads), fmt(s.nativeSecPerStep), fmt(s.ortSecPerStep), s.speedupVsOrt ? `${s.speedupVsOrt.toFixed(2)}x` : '-', s.speedupVsOrtMin ? `${s.speedupVsOrtMin.toFixed(2)}x` : '-', fmt(s.nativeVsOrtRelL2, 6)]);
  }
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  console.log(rows.map((r) => r.map((v, c) => (c === 0 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  ')).join('\n'));
  for (const s of steps) if (s.error) console.log(`  ${s.model}: ${s.error}`);
  if (results.gemm !== undefined) console.log(`\nGEMM: ${JSON.stringify(results.gemm, null, 1).replace(/\n\s*/g, ' ')}`);
  if (results.generate) console.log(`\ngenerate: ${JSON.stringify(results.generate)}`);
  if (results.loadRss) console.log(`\nloading a sharded bf16 checkpoint: ${JSON.stringify(results.loadRss)}`);
  if (Array.isArray(results.parallelStep)) {
    console.log('\nshm ranks, mid-size FLUX step (2 cores: ranks share them, so scaling is not expected here):');
    for (const r of results.parallelStep as import('./parallel.ts').ParallelStepBench[]) {
      console.log(`  ${r.kind} world ${r.world}${r.float8 ? ' fp8' : ''}: ${r.error ?? `${r.secPerStep.toFixed(3)} s/step, ${(r.bytesPerStepRank0 / 2 ** 20).toFixed(2)} MiB sent/step (rank 0), comm ${r.commMsPerStep.toFixed(0)} ms/step`}`);
    }
  }
  if (Array.isArray(results.cache)) {
    const { cacheTable } = await import('./cache.ts');
    console.log('\nCache engine (tiny-flux 32x32; speed-up = paired median of the denoising loop; PSNR/SSIM vs the uncached image), chart bench/cache.svg:');
    console.log(cacheTable(results.cache as import('./cache.ts').CacheBenchRow[]));
  } else if (results.cache) console.log(`\ncache: ${JSON.stringify(results.cache)}`);
  if (results.serve) console.log(`\nserve (tiny-flux 32x32, 2 steps, loopback): ${JSON.stringify(results.serve)}`);
  console.log(`\nwrote bench/results.json`);
}

await main();
// the native thread pool must not keep the process alive
process.stdout.write('', () => process.exit(0));
