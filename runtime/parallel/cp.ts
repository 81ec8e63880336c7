// Context-parallel plan hooks (Cache-DiT §4.1 / §4.8): split sequence inputs at the transformer entry
// (even: chunk, asserts divisibility; UAA: tensor_split, first ranks get +1), all-gather the output
// with per-rank sizes at the exit, and all-reduce cache probe sums so every rank decides alike.
import type { Communicator } from '../comm/communicator.ts';
import { concatSeq, sliceSeq, tensorSplitSizes } from './attention-ref.ts';

/** Per-rank lengths of a sequence of `S` tokens; `what` names the tensor in the error. */
export function cpSplitSizes(S: number, world: number, anything: boolean, what = 'sequence'): number[] {
  if (!anything && S % world !== 0)
    throw new Error(`context parallel: ${what} length ${S} is not divisible by ${world} ranks (enable ulysses_anything / UAA)`);
  return tensorSplitSizes(S, world);
}

/** This rank's shard `[B, S_local, C]` of `x [B, S, C]`. */
export function cpSplit(x: Float32Array, B: number, S: number, C: number, world: number, rank: number, anything: boolean, what?: string): Float32Array {
  const sizes = cpSplitSizes(S, world, anything, what);
  const start = sizes.slice(0, rank).reduce((a, b) => a + b, 0);
  return sliceSeq(x, B, S, C, start, sizes[rank]);
}

/** All-gathers sequence shards `[B, S_r, C]` into `[B, S, C]` (sizes exchanged: never cached). */
export async function cpGather(comm: Communicator, local: Float32Array, B: number, C: number): Promise<Float32Array> {
  const sizes = await comm.allGatherInt(local.length / (B * C));
  const all = new Float32Array(sizes.reduce((a, b) => a + b, 0) * B * C);
  await comm.allGather(local, all, sizes.map((n) => n * B * C));
  let off = 0;
  const parts = sizes.map((n) => {
    const p = all.subarray(off, off + n * B * C);
    off += n * B * C;
    return p;
  });
  return concatSeq(parts, B, C);
}

/** Sums cache probe statistics over ranks (float64, rank order): identical on every rank. */
export async function allReduceProbe(comm: Communicator, values: number[]): Promise<number[]> {
  const buf = Float64Array.from(values);
  await comm.allReduceSum(buf);
  return Array.from(buf);
}
