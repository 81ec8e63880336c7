// Host-side reference of Cache-DiT's tensor-parallel plans (§4.7): column-parallel linears (weight rows
// split, output sharded on channels), row-parallel linears (weight columns split, partial products
// all-reduced, bias added once after the reduction), and FLUX single-block `proj_out`, whose input
// columns are re-ordered into per-rank `[attn_out shard | mlp shard]` groups so that it can be
// row-parallel after column-parallel `to_q/k/v` and `proj_mlp`. Weights are `W[N, K]` (out, in).
// `planWeightData` cuts a plan's TP weight slice (PlanWeight.slice, compiler/passes/tp-lower.ts) from the
// checkpoint tensor; the test of the lowered plans checks it against these reference shards.
import type { Communicator } from '../comm/communicator.ts';
import type { PlanWeight } from '../plan.ts';

/** Even split of `n` over `world` (asserts divisibility like Cache-DiT's shard_div_attr). */
export function evenShard(n: number, world: number, what: string): number {
  if (n % world !== 0) throw new Error(`tensor parallel: ${what} = ${n} is not divisible by tp degree ${world}`);
  return n / world;
}

/** Rows [rank*N/W, (rank+1)*N/W) of W[N, K] (+ bias slice): column-parallel shard. */
export function colShard(w: Float32Array, bias: Float32Array | null, N: number, K: number, world: number, rank: number): { w: Float32Array; b: Float32Array | null; n: number } {
  const n = evenShard(N, world, 'out_features');
  return { w: w.slice(rank * n * K, (rank + 1) * n * K), b: bias ? bias.slice(rank * n, (rank + 1) * n) : null, n };
}

/** Columns [rank*K/W, (rank+1)*K/W) of W[N, K]: row-parallel shard (bias stays whole, added once). */
export function rowShard(w: Float32Array, N: number, K: number, world: number, rank: number): { w: Float32Array; k: number } {
  const k = evenShard(K, world, 'in_features');
  return { w: selectColumns(w, N, K, [[rank * k, k]]), k };
}

/** Concatenation of column ranges [start, len) of W[N, K], in order. */
export function selectColumns(w: Float32Array, N: number, K: number, ranges: [number, number][]): Float32Array {
  const k = ranges.reduce((a, [, l]) => a + l, 0);
  const out = new Float32Array(N * k);
  for (let r = 0; r < N; r++) {
    let o = r * k;
    for (const [s, l] of ranges) {
      out.set(w.subarray(r * K + s, r * K + s + l), o);
      o += l;
    }
  }
  return out;
}

/**
 * FLUX single block `proj_out` (in = [attn C | mlp M]): the rank's row-parallel shard takes input
 * columns `[attn C/W shard | mlp M/W shard]`, matching the column-parallel outputs it holds.
 */
export function fluxSingleProjOutShard(w: Float32Array, N: number, C: number, M: number, world: number, rank: number): Float32Array {
  const c = evenShard(C, world, 'attention channels');
  const m = evenShard(M, world, 'mlp_hidden_dim');
  return selectColumns(w, N, C + M, [
    [rank * c, c],
    [C + rank * m, m],
  ]);
}

/**
 * The data a plan weight binds: the checkpoint tensor itself, or, for a tensor-parallel shard
 * (`w.slice`, docs/architecture.md §3c), the concatenation of the slice's ranges along its axis.
 * Throws (naming the weight and `source`) when the checkpoint shape is not the one the plan expects.
 */
export function planWeightData(w: PlanWeight, t: { data: Float32Array; shape: readonly number[] }, source: string): Float32Array {
  const full = w.slice?.full ?? w.shape;
  if (t.shape.join(',') !== full.join(',')) {
    throw new Error(`${source}: weight "${w.name}" has shape [${t.shape.join(', ')}], the plan expects [${full.join(', ')}]${w.slice ? ' (full tensor of a tensor-parallel shard)' : ''}`);
  }
  if (!w.slice) return t.data;
  const { axis, ranges } = w.slice;
  const outer = full.slice(0, axis).reduce((a, b) => a * b, 1);
  const along = full[axis]!;
  const inner = full.slice(axis + 1).reduce((a, b) => a * b, 1);
  const n = ranges.reduce((a, [, l]) => a + l, 0);
  for (const [s, l] of ranges) {
    if (!(s >= 0 && l > 0 && s + l <= along)) throw new Error(`${source}: weight "${w.name}": slice range [${s}, ${s + l}) is outside axis ${axis} (${along})`);
  }
  if (outer * n * inner !== w.shape.reduce((a, b) => a * b, 1)) throw new Error(`${source}: weight "${w.name}": slice of ${outer * n * inner} values, plan shape [${w.shape.join(', ')}]`);
  if (inner === 1 && outer > 1) return selectColumns(t.data, outer, along, ranges);
  const out = new Float32Array(outer * n * inner);
  let o = 0;
  for (let b = 0; b < outer; b++) {
    for (const [s, l] of ranges) {
      out.set(t.data.subarray((b * along + s) * inner, (b * along + s + l) * inner), o);
      o += l * inner;
    }
  }
  return out;
}

/** y[M, N] = x[M, K] W[N, K]^T (+ bias), float64 accumulation. */
export function linearRef(x: Float32Array, w: Float32Array, bias: Float32Array | null, M: number, N: number, K: number): Float32Array {
  const y = new Float32Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = bias ? bias[j] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      y[i * N + j] = s;
    }
  return y;
}

/** Row-parallel linear: local partial product, all-reduce (fp32, rank order), then + bias. */
export async function rowParallelLinear(
  comm: Communicator,
  xShard: Float32Array,
  wShard: Float32Array,
  bias: Float32Array | null,
  M: number,
  N: number,
  kLocal: number,
): Promise<Float32Array> {
  const y = linearRef(xShard, wShard, null, M, N, kLocal);
  await comm.allReduceSum(y);
  if (bias) for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) y[i * N + j] += bias[j];
  return y;
}

/** Column-parallel then all-gather along channels (`Colwise -> Replicate`, e.g. adaLN `norm.linear`). */
export async function colParallelReplicate(
  comm: Communicator,
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  M: number,
  N: number,
  K: number,
): Promise<Float32Array> {
  const W = comm.worldSize;
  const sh = colShard(w, bias, N, K, W, comm.rank);
  const part = linearRef(x, sh.w, sh.b, M, sh.n, K);
  const all = new Float32Array(M * N); // rank-major [W, M, n]
  await comm.allGather(part, all);
  const y = new Float32Array(M * N);
  for (let r = 0; r < W; r++) for (let i = 0; i < M; i++) y.set(all.subarray((r * M + i) * sh.n, (r * M + i + 1) * sh.n), i * N + r * sh.n);
  return y;
}
