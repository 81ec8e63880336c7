// Ring attention (Cache-DiT `_templated_ring.py`, §4.6) and USP (ulysses x ring), host-side reference.
// Each rank keeps its query shard; K/V shards travel around the ring (send to rank+1, receive from
// rank-1, the transfer in flight while the current block is computed); partial results are merged with
//   out = prev_out - sigmoid(lse - prev_lse) * (prev_out - out)
//   lse = prev_lse - logsigmoid(prev_lse - lse)
// in float64 (+inf LSE treated as -inf, as the fused Triton kernel does).
import type { Communicator } from '../comm/communicator.ts';
import { subgroup } from '../comm/group.ts';
import { attentionRef } from './attention-ref.ts';
import { type UlyssesOptions, ulyssesAttention } from './ulysses.ts';

function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}
function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

/**
 * In-place merge of a suffix block into the running state: out `[B, S, H, D]` (float64), lse `[B, H, S]`.
 * Blocks with lse = -inf (empty key sets) leave the state unchanged.
 */
export function mergeAttnStates(
  prevOut: Float64Array,
  prevLse: Float64Array,
  out: ArrayLike<number>,
  lse: ArrayLike<number>,
  B: number,
  S: number,
  H: number,
  D: number,
): void {
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < S; i++) {
        const li = (b * H + h) * S + i;
        let pl = prevLse[li];
        let sl = lse[li];
        if (pl === Infinity) pl = -Infinity;
        if (sl === Infinity) sl = -Infinity;
        const oi = ((b * S + i) * H + h) * D;
        if (sl === -Infinity) continue;
        if (pl === -Infinity) {
          for (let d = 0; d < D; d++) prevOut[oi + d] = out[oi + d];
          prevLse[li] = sl;
          continue;
        }
        const w = sigmoid(sl - pl);
        for (let d = 0; d < D; d++) prevOut[oi + d] = prevOut[oi + d] - w * (prevOut[oi + d] - out[oi + d]);
        prevLse[li] = pl - logSigmoid(pl - sl);
      }
}

export interface RingOptions {
  /** Per-rank sequence lengths of the ring members (default: all equal to sLocal; `anything` gathers them). */
  sizes?: number[];
  anything?: boolean;
}

/**
 * Ring attention: q/k/v `[B, S_local, H, D]` sequence-sharded over `comm`; returns this rank's
 * o `[B, S_local, H, D]` and lse `[B, H, S_local]` over the full key sequence.
 */
export async function ringAttention(
  comm: Communicator,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: { B: number; sLocal: number; H: number; D: number; scale?: number },
  opts: RingOptions = {},
): Promise<{ o: Float32Array; lse: Float64Array }> {
  const { B, sLocal, H, D } = dims;
  const W = comm.worldSize;
  const me = comm.rank;
  const sizes = opts.sizes ?? (opts.anything ? await comm.allGatherInt(sLocal) : new Array<number>(W).fill(sLocal));
  const row = B * H * D;
  const maxS = Math.max(...sizes);
  let cur = new Float32Array(2 * maxS * row);
  let nxt = new Float32Array(2 * maxS * row);
  cur.set(k, 0);
  cur.set(v, sLocal * row);
  const accO = new Float64Array(B * sLocal * H * D);
  const accL = new Float64Array(B * H * sLocal).fill(-Infinity);
  for (let t = 0; t < W; t++) {
    const owner = (me - t + W) % W; // whose K/V block `cur` holds
    const sk = sizes[owner];
    let inflight: Promise<void> | null = null;
    if (t + 1 < W) {
      const nextOwner = (me - t - 1 + W) % W;
      inflight = comm.sendRecv(cur.subarray(0, 2 * sk * row), (me + 1) % W, nxt.subarray(0, 2 * sizes[nextOwner] * row), (me - 1 + W) % W);
    }
    const kb = cur.subarray(0, sk * row);
    const vb = cur.subarray(sk * row, 2 * sk * row);
    const part = attentionRef(q, kb, vb, B, sLocal, sk, H, D, dims.scale);
    mergeAttnStates(accO, accL, part.o, part.lse, B, sLocal, H, D);
    if (inflight) {
      await inflight;
      [cur, nxt] = [nxt, cur];
    }
  }
  return { o: Float32Array.from(accO), lse: accL };
}

export interface UspOptions extends UlyssesOptions {
  ulysses: number;
  ring: number;
}

/**
 * USP: mesh `[ring, ulysses]` (rank = ringIdx * ulysses + ulyssesIdx). Ulysses all-to-all of Q, K, V
 * inside each ulysses group, ring attention across the ring group, inverse all-to-all of O.
 * Sequence shards are in rank order, so each ulysses group gathers one contiguous block.
 */
export async function uspAttention(
  comm: Communicator,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: { B: number; sLocal: number; H: number; D: number; scale?: number },
  opts: UspOptions,
): Promise<Float32Array> {
  const { ulysses: U, ring: R } = opts;
  if (U * R !== comm.worldSize) throw new Error(`USP: ulysses ${U} x ring ${R} != world ${comm.worldSize}`);
  if (opts.anything && R > 1) throw new Error('USP: ulysses_anything is not allowed with ring_degree > 1 (as in Cache-DiT)');
  const ringIdx = Math.floor(comm.rank / U);
  const uIdx = comm.rank % U;
  const ug = await subgroup(comm, Array.from({ length: U }, (_, i) => ringIdx * U + i));
  const rg = await subgroup(comm, Array.from({ length: R }, (_, j) => j * U + uIdx));
  return ulyssesAttention(ug, q, k, v, dims, opts, async (qg, kg, vg, B, S, H, D) => {
    const r = await ringAttention(rg, qg, kg, vg, { B, sLocal: S, H, D, scale: dims.scale });
    return r.o;
  });
}
