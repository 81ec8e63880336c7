// GFLOP/s of the native `linear` and `attention` kernels against onnxruntime-node (MatMul; and
// MatMul+Mul+Softmax+MatMul for attention) and OpenBLAS sgemm (when the addon was built with it), at
// the same thread count. Native kernels run through a one-op plan in an Executor, so each thread count
// gets its own pool. ORT gets W as a constant initializer (so it may prepack it: its best case) and
// intraOpNumThreads = threads. Standalone: `npx tsx test/bench/gemm.ts` prints a table; env
// GEMM_THREADS=1,2 (default 1 and all cores), GEMM_ITERS (default 8), GEMM_SECTIONS=gemm,attention.
// The lead's `npm run bench` imports benchGemm().
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { loadNative, type Native } from '../../runtime/native.ts';
import { median } from './plan-data.ts';

const { onnx } = onnxProto;
const F = onnx.TensorProto.DataType;

export interface GemmRow {
  name: string;
  M: number;
  N: number;
  K: number;
  threads: number;
  /** best-of-iters GFLOP/s; median in *Median */
  native: number;
  nativeMedian: number;
  ort: number;
  ortMedian: number;
  openblas?: number;
  openblasMedian?: number;
}
export interface AttentionRow {
  name: string;
  B: number;
  H: number;
  S: number;
  D: number;
  threads: number;
  native: number;
  nativeMedian: number;
  ort: number;
  ortMedian: number;
}
export interface GemmBench {
  cpu: string;
  iters: number;
  gemm: GemmRow[];
  attention: AttentionRow[];
}

/** DiT shapes: 1152 = 1024 image + 128 text tokens of a 512x512 FLUX-like model, C = 1024 */
export const GEMM_SHAPES: { name: string; M: number; N: number; K: number }[] = [
  { name: 'square 1024^3', M: 1024, N: 1024, K: 1024 },
  { name: 'qkv proj 1152x3072x1024', M: 1152, N: 3072, K: 1024 },
  { name: 'attn out 1152x1024x1024', M: 1152, N: 1024, K: 1024 },
  { name: 'mlp up 1152x4096x1024', M: 1152, N: 4096, K: 1024 },
  { name: 'mlp down 1152x1024x4096', M: 1152, N: 1024, K: 4096 },
  { name: 'text 28x1024x1024', M: 28, N: 1024, K: 1024 },
  { name: 'adaLN 1x6144x1024', M: 1, N: 6144, K: 1024 },
];
export const ATTENTION_SHAPES = [{ name: 'B1 H16 S1152 D64', B: 1, H: 16, S: 1152, D: 64 }];

function rand(n: number, seed: number, amp = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
  return a;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * best and median of `iters` timed calls after 2 warm-ups. Starts with a 400 ms pause: OpenBLAS and ORT
 * worker threads busy-wait for a while after a call, and on a 2-core machine they would otherwise steal
 * the second core from whatever is measured next.
 */
async function timeMs(fn: () => unknown | Promise<unknown>, iters: number): Promise<{ best: number; median: number }> {
  await sleep(400);
  await fn();
  await fn();
  const runs: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t = performance.now();
    await fn();
    runs.push(performance.now() - t);
  }
  return { best: Math.min(...runs), median: median(runs) };
}

const gf = (flop: number, ms: number) => Math.round((flop / ms / 1e6) * 10) / 10;

function vi(name: string, dims: number[]) {
  return { name, type: { tensorType: { elemType: F.FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } };
}
function init(name: string, dims: number[], data: Float32Array) {
  return { name, dims, dataType: F.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}
async function ortSession(graph: object, threads: number): Promise<ort.InferenceSession> {
  const bytes = onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 10, opsetImport: [{ domain: '', version: 21 }], graph })).finish();
  return ort.InferenceSession.create(Buffer.from(bytes), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

/** a one-op plan: tensors 0 = x (arena), 1 = W (weight), 2 = y (arena) */
function linearPlan(M: number, N: number, K: number): string {
  return JSON.stringify({
    format: 'ditforge-plan/1', model: 'bench', component: 'transformer', tag: `linear-${M}x${N}x${K}`,
    dims: {},
    inputs: [{ name: 'x', tensor: 0, shape: [M, K] }],
    outputs: [{ name: 'y', tensor: 2, shape: [M, N] }],
    weights: [{ name: 'w', shape: [N, K], tensor: 1 }],
    arenaFloats: M * K + M * N,
    tensors: [
      { id: 0, base: 'arena', offset: 0, numel: M * K },
      { id: 1, base: 'weight', weight: 'w', offset: 0, numel: N * K },
      { id: 2, base: 'arena', offset: M * K, numel: M * N },
    ],
    segments: [{ name: 'main', ops: [{ k: 'linear', t: [0, 1, -1, 2, -1, -1], i: [M, N, K, 0, M, 0], f: [] }] }],
    kernels: ['linear'],
  });
}

/** tensors 0 = fused qkv [B*S, 3*H*D] (arena), 1 = o [B*S, H*D] */
function attentionPlan(B: number, H: number, S: number, D: number): string {
  const HD = H * D, st = 3 * HD, rows = B * S;
  return JSON.stringify({
    format: 'ditforge-plan/1', model: 'bench', component: 'transformer', tag: `attention-${B}-${H}-${S}-${D}`,
    dims: {},
    inputs: [{ name: 'qkv', tensor: 0, shape: [rows, st] }],
    outputs: [{ name: 'o', tensor: 4, shape: [rows, HD] }],
    weights: [],
    arenaFloats: rows * st + rows * HD,
    tensors: [
      { id: 0, base: 'arena', offset: 0, numel: rows * st },
      { id: 1, base: 'arena', offset: 0, numel: rows * st - 2 * HD },
      { id: 2, base: 'arena', offset: HD, numel: rows * st - 2 * HD },
      { id: 3, base: 'arena', offset: 2 * HD, numel: rows * st - 2 * HD },
      { id: 4, base: 'arena', offset: rows * st, numel: rows * HD },
    ],
    segments: [{ name: 'main', ops: [{ k: 'attention', t: [1, 2, 3, -1, 4], i: [B, S, S, H, D, st, st, st, HD], f: [1 / Math.sqrt(D)] }] }],
    kernels: ['attention'],
  });
}

async function benchLinear(nat: Native, s: { name: string; M: number; N: number; K: number }, threads: number, iters: number): Promise<GemmRow> {
  const { M, N, K } = s;
  const flop = 2 * M * N * K;
  const x = rand(M * K, 1), W = rand(N * K, 2, 1 / 32);
  const ex = new nat.Executor(linearPlan(M, N, K), { threads });
  ex.bindWeight('w', W);
  ex.setInput('x', x);
  const tn = await timeMs(() => ex.runSync('main'), iters);

  const Wt = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) Wt[k * N + n] = W[n * K + k]!;
  const sess = await ortSession({
    name: 'linear', node: [{ opType: 'MatMul', input: ['X', 'Wt'], output: ['Y'] }],
    input: [vi('X', [M, K])], output: [vi('Y', [M, N])], initializer: [init('Wt', [K, N], Wt)],
  }, threads);
  const feeds = { X: new ort.Tensor('float32', x, [M, K]) };
  const to = await timeMs(() => sess.run(feeds), iters);
  await sess.release();

  const row: GemmRow = { name: s.name, M, N, K, threads, native: gf(flop, tn.best), nativeMedian: gf(flop, tn.median), ort: gf(flop, to.best), ortMedian: gf(flop, to.median) };
  if (typeof nat.sgemmOpenBLAS === 'function') {
    const y = new Float32Array(M * N);
    const tb = await timeMs(() => nat.sgemmOpenBLAS!(x, W, y, M, N, K, threads), iters);
    row.openblas = gf(flop, tb.best);
    row.openblasMedian = gf(flop, tb.median);
  }
  return row;
}

async function benchAttention(nat: Native, s: { name: string; B: number; H: number; S: number; D: number }, threads: number, iters: number): Promise<AttentionRow> {
  const { B, H, S, D } = s;
  const flop = 4 * B * H * S * S * D;
  const HD = H * D;
  const qkv = rand(B * S * 3 * HD, 3);
  const ex = new nat.Executor(attentionPlan(B, H, S, D), { threads });
  ex.setInput('qkv', qkv);
  const tn = await timeMs(() => ex.runSync('main'), iters);

  // ORT: Q [B*H, S, D], Kt [B*H, D, S], V [B*H, S, D] -> MatMul, Mul(scale), Softmax, MatMul
  const BH = B * H;
  const q = rand(BH * S * D, 4), kt = rand(BH * D * S, 5), v = rand(BH * S * D, 6);
  const sess = await ortSession({
    name: 'attention',
    node: [
      { opType: 'MatMul', input: ['Q', 'Kt'], output: ['s'] },
      { opType: 'Mul', input: ['s', 'scale'], output: ['ss'] },
      { opType: 'Softmax', input: ['ss'], output: ['p'], attribute: [{ name: 'axis', type: 2, i: -1 }] },
      { opType: 'MatMul', input: ['p', 'V'], output: ['O'] },
    ],
    input: [vi('Q', [BH, S, D]), vi('Kt', [BH, D, S]), vi('V', [BH, S, D])],
    output: [vi('O', [BH, S, D])],
    initializer: [init('scale', [], new Float32Array([1 / Math.sqrt(D)]))],
  }, threads);
  const feeds = { Q: new ort.Tensor('float32', q, [BH, S, D]), Kt: new ort.Tensor('float32', kt, [BH, D, S]), V: new ort.Tensor('float32', v, [BH, S, D]) };
  const to = await timeMs(() => sess.run(feeds), iters);
  await sess.release();
  return { name: s.name, B, H, S, D, threads, native: gf(flop, tn.best), nativeMedian: gf(flop, tn.median), ort: gf(flop, to.best), ortMedian: gf(flop, to.median) };
}

export async function benchGemm(opts: { threads?: number; threadList?: number[]; iters?: number; sections?: ('gemm' | 'attention')[] } = {}): Promise<GemmBench> {
  const nat = loadNative();
  const all = os.availableParallelism();
  const threadList = opts.threadList ?? [...new Set([1, opts.threads ?? all])];
  const iters = opts.iters ?? Number(process.env.GEMM_ITERS ?? 8);
  const out: GemmBench = { cpu: os.cpus()[0]?.model ?? 'unknown', iters, gemm: [], attention: [] };
  for (const t of threadList) {
    const sections = opts.sections ?? ['gemm', 'attention'];
    if (sections.includes('gemm')) for (const s of GEMM_SHAPES) out.gemm.push(await benchLinear(nat, s, t, iters));
    if (sections.includes('attention')) for (const s of ATTENTION_SHAPES) out.attention.push(await benchAttention(nat, s, t, iters));
  }
  return out;
}

export function formatGemmTable(r: GemmBench): string {
  const lines = [`CPU: ${r.cpu}; GFLOP/s, best of ${r.iters} (median in parentheses)`];
  const pad = (s: string, n: number) => s.padEnd(n);
  const cell = (b?: number, m?: number) => (b === undefined ? '-' : `${b.toFixed(1)} (${m!.toFixed(1)})`);
  lines.push(`${pad('shape', 28)}${pad('threads', 8)}${pad('native', 16)}${pad('ORT', 16)}${pad('OpenBLAS', 16)}native/ORT`);
  for (const g of r.gemm)
    lines.push(`${pad(g.name, 28)}${pad(String(g.threads), 8)}${pad(cell(g.native, g.nativeMedian), 16)}${pad(cell(g.ort, g.ortMedian), 16)}${pad(cell(g.openblas, g.openblasMedian), 16)}${(g.native / g.ort).toFixed(2)}`);
  for (const a of r.attention)
    lines.push(`${pad('attention ' + a.name, 28)}${pad(String(a.threads), 8)}${pad(cell(a.native, a.nativeMedian), 16)}${pad(cell(a.ort, a.ortMedian), 16)}${pad('-', 16)}${(a.native / a.ort).toFixed(2)}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const threadList = process.env.GEMM_THREADS ? process.env.GEMM_THREADS.split(',').map(Number) : undefined;
  const sections = process.env.GEMM_SECTIONS ? (process.env.GEMM_SECTIONS.split(',') as ('gemm' | 'attention')[]) : undefined;
  const r = await benchGemm({ threadList, sections });
  console.log(formatGemmTable(r));
}
