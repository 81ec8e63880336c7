// Ring attention (Cache-DiT `_templated_ring.py`, §4.6) and USP (ulysses x ring).
// Each rank keeps its query shard; K/V shards travel around the ring (send to rank+1, receive from
// rank-1, the transfer in flight while the current block is computed); partial results are merged with
//   out = prev_out - sigmoid(lse - prev_lse) * (prev_out - out)
//   lse = prev_lse - logsigmoid(prev_lse - lse)
// (+inf LSE treated as -inf, as the fused Triton kernel does).
// - `ringAttentionNative` / `uspAttention(.., { kernels })`: what the ParallelExecutor runs: the native
//   `attention_lse` per ring step and the native `attn_merge` (float32, Cache-DiT's fused kernel) on strided
//   rows, in place in the output (docs/architecture.md §2).
// - `ringAttention` / `uspAttention` without kernels: the float64 host reference, the tests' oracle.
import type { Communicator } from '../comm/communicator.ts';
import { subgroup } from '../comm/group.ts';
import { attentionRef } from './attention-ref.ts';
import { type SeqShardDims, type UlyssesOptions, ulyssesAttention } from './ulysses.ts';

/** The two native calls the ring needs (the addon's runKernel). */
export interface KernelRunner {
  kernels(): string[];
  runKernel(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
}

export const RING_KERNELS = ['attention_lse', 'attn_merge', 'copy3d'];

/** Throws a clear error when the addon lacks the ring kernels (an addon built before they existed). */
export function checkRingKernels(k: KernelRunner): void {
  const have = new Set(k.kernels());
  const missing = RING_KERNELS.filter((n) => !have.has(n));
  if (missing.length) throw new Error(`ring/USP attention needs the native kernels ${missing.join(', ')}, which this addon lacks: rebuild it with \`npm run build:native\``);
}

/**
 * Scratch of the native ring per communicator (calls on one communicator are sequential): the two K/V
 * blocks, the block output and the two LSE vectors, grown on demand, so a step does not allocate (and zero)
 * several MB per attention.
 */
const ringScratch = new WeakMap<Communicator, Float32Array[]>();

function scratch(comm: Communicator, sizes: number[]): Float32Array[] {
  const have = ringScratch.get(comm) ?? [];
  const out = sizes.map((n, j) => (have[j] && have[j]!.length >= n ? have[j]! : new Float32Array(n)));
  ringScratch.set(comm, out);
  return out.map((a, j) => a.subarray(0, sizes[j]));
}

/** `rows` rows of a strided tensor: row r starts at data[r * stride] (a zero-copy arena view or a plain array). */
export interface Rows {
  data: Float32Array;
  stride: number;
}

/**
 * Native ring attention on strided row views: q, k, v, o `[B, S_local, H*D]` (rows at their strides);
 * o is written in place (the first block's attention goes straight into it, later blocks merge into it).
 * K/V are packed once (`copy3d`) into a contiguous `[K | V]` block that travels around the ring with
 * `sendRecv` while the current block is computed. `sizes`: every ring member's S_local.
 * `mask`: this rank's key mask `[B, S_local]` (1 keep / 0 drop, Qwen-Image's joint mask); it travels with
 * its keys as `[K | V | mask]`, so every step masks the visiting block by its owner's mask. A block whose
 * keys are all dropped for a batch row gives LSE -inf there, which `attn_merge` ignores: the result is the
 * exact masked attention over the whole sequence.
 */
export async function ringAttentionNative(
  comm: Communicator,
  kernels: KernelRunner,
  q: Rows,
  k: Rows,
  v: Rows,
  o: Rows,
  dims: SeqShardDims,
  sizes: number[],
  mask?: Float32Array,
): Promise<void> {
  const { B, sLocal, H, D } = dims;
  const W = comm.worldSize;
  const me = comm.rank;
  if (sizes.length !== W || sizes[me] !== sLocal) throw new Error(`ring attention: sizes [${sizes.join(', ')}] do not fit rank ${me} of ${W} with ${sLocal} local tokens`);
  if (mask && mask.length !== B * sLocal) throw new Error(`ring attention: the key mask holds ${mask.length} floats, rank ${me} needs [B ${B}, S_local ${sLocal}] = ${B * sLocal}`);
  const HD = H * D;
  const rows = B * sLocal;
  if (rows === 0 || HD === 0) return;
  const scale = dims.scale ?? 1 / Math.sqrt(D);
  const block = (n: number) => B * n * HD; // floats of one of K, V of an owner with n tokens
  const packed = (n: number) => 2 * block(n) + (mask ? B * n : 0); // [K | V | mask?] of an owner with n tokens
  const maxS = Math.max(...sizes);
  // every float of these is written before it is read (attention_lse fills o/lse, sendRecv the blocks)
  const ring = W > 1 ? 1 : 0; // a world of 1 needs only lse
  const buf = scratch(comm, [ring * packed(maxS), ring * packed(maxS), ring * rows * HD, rows * H, ring * rows * H]);
  let cur = buf[0]!;
  let nxt = buf[1]!;
  const [tmpO, lse, tmpL] = [buf[2]!, buf[3]!, buf[4]!];
  const att = (kb: Float32Array, vb: Float32Array, mb: Float32Array | null, sk: number, ks: number, vs: number, out: Rows, l: Float32Array) =>
    kernels.runKernel('attention_lse', [q.data, kb, vb, mb, out.data, l], [B, sLocal, sk, H, D, q.stride, ks, vs, out.stride], [scale]);
  if (W === 1) {
    att(k.data, v.data, mask ?? null, sLocal, k.stride, v.stride, o, lse);
    return;
  }
  // pack the local K, V rows (strided arena views) into [K | V], each [B, S_local, H*D], and the mask after them
  kernels.runKernel('copy3d', [k.data, cur], [1, rows, HD, 0, k.stride, 0, HD], []);
  kernels.runKernel('copy3d', [v.data, cur.subarray(block(sLocal))], [1, rows, HD, 0, v.stride, 0, HD], []);
  if (mask) cur.set(mask, 2 * block(sLocal));
  for (let t = 0; t < W; t++) {
    const owner = (me - t + W) % W; // whose K/V block `cur` holds
    const sk = sizes[owner]!;
    let inflight: Promise<void> | null = null;
    if (t + 1 < W) {
      const nextOwner = (me - t - 1 + W) % W;
      inflight = comm.sendRecv(cur.subarray(0, packed(sk)), (me + 1) % W, nxt.subarray(0, packed(sizes[nextOwner]!)), (me - 1 + W) % W);
    }
    if (t === 0) att(k.data, v.data, mask ?? null, sk, k.stride, v.stride, o, lse); // the local block, straight from the views
    else {
      const mb = mask ? cur.subarray(2 * block(sk), packed(sk)) : null;
      att(cur.subarray(0, block(sk)), cur.subarray(block(sk), 2 * block(sk)), mb, sk, HD, HD, { data: tmpO, stride: HD }, tmpL);
      kernels.runKernel('attn_merge', [o.data, lse, tmpO, tmpL, o.data, lse], [B, sLocal, H, D, o.stride, HD, o.stride], []);
    }
    if (inflight) {
      await inflight;
      [cur, nxt] = [nxt, cur];
    }
  }
}

/**
 * All-gathers key masks `[B, sizes[r]]` (one per rank of `comm`) into `[B, sum(sizes)]` with the shards in
 * rank order, the order in which the sequence is gathered (Ulysses' `comm.all_gather_mask`; USP: the mask of
 * the ulysses group's gathered sequence). Written into `out` when given (e.g. an arena view).
 */
export async function allGatherKeyMask(comm: Communicator, local: Float32Array, B: number, sizes: number[], out?: Float32Array): Promise<Float32Array> {
  const S = sizes.reduce((a, b) => a + b, 0);
  if (local.length !== B * sizes[comm.rank]!) throw new Error(`key mask all-gather: rank ${comm.rank} holds ${local.length} floats, expected [B ${B}, ${sizes[comm.rank]}]`);
  const all = new Float32Array(B * S);
  await comm.allGather(local, all, sizes.map((x) => x * B));
  const y = out ?? new Float32Array(B * S);
  if (y.length !== B * S) throw new Error(`key mask all-gather: the output holds ${y.length} floats, the gathered mask [B ${B}, ${S}] ${B * S}`);
  // rank-major [r][B, n_r] -> batch-major [B, S]
  let off = 0;
  let start = 0;
  for (const n of sizes) {
    for (let b = 0; b < B; b++) y.set(all.subarray(off + b * n, off + (b + 1) * n), b * S + start);
    off += n * B;
    start += n;
  }
  return y;
}

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
  dims: SeqShardDims,
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
  /** native ring steps (attention_lse + attn_merge); without: the float64 host reference */
  kernels?: KernelRunner;
  /** the ulysses and ring sub-communicators, when the caller keeps them (else created per call) */
  groups?: UspGroups;
  /** this rank's key mask `[B, S_local]` (1 keep / 0 drop); native ring only */
  mask?: Float32Array;
}

export interface UspGroups {
  ulysses: Communicator;
  ring: Communicator;
}

/** USP mesh `[ring, ulysses]` (rank = ringIdx * ulysses + ulyssesIdx): this rank's two sub-communicators. */
export async function uspGroups(comm: Communicator, U: number, R: number): Promise<UspGroups> {
  if (U * R !== comm.worldSize) throw new Error(`USP: ulysses ${U} x ring ${R} != world ${comm.worldSize}`);
  const ringIdx = Math.floor(comm.rank / U);
  const uIdx = comm.rank % U;
  const ulysses = await subgroup(comm, Array.from({ length: U }, (_, i) => ringIdx * U + i));
  const ring = await subgroup(comm, Array.from({ length: R }, (_, j) => j * U + uIdx));
  return { ulysses, ring };
}

/**
 * USP: mesh `[ring, ulysses]` (rank = ringIdx * ulysses + ulyssesIdx). Ulysses all-to-all of Q, K, V
 * inside each ulysses group, ring attention across the ring group, inverse all-to-all of O.
 * Sequence shards are in rank order, so each ulysses group gathers one contiguous block.
 * `float8` all-to-alls quantise with `opts.fp8Kernels` (the executor passes the native ones it uses for plain
 * Ulysses; default: the host fp8.ts).
 */
export async function uspAttention(
  comm: Communicator,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: SeqShardDims,
  opts: UspOptions,
): Promise<Float32Array> {
  const { ulysses: U, ring: R } = opts;
  if (U * R !== comm.worldSize) throw new Error(`USP: ulysses ${U} x ring ${R} != world ${comm.worldSize}`);
  if (opts.anything && R > 1) throw new Error('USP: ulysses_anything is not allowed with ring_degree > 1 (as in Cache-DiT)');
  const kernels = opts.kernels;
  if (opts.mask && !kernels) throw new Error('USP: a key mask needs the native ring (opts.kernels); the float64 host reference has none');
  const { ulysses: ug, ring: rg } = opts.groups ?? (await uspGroups(comm, U, R));
  // the ring member's keys are its ulysses group's gathered sequence (shards in rank order): so is its mask
  const uSizes = async () => (opts.anything ? ug.allGatherInt(dims.sLocal) : new Array<number>(U).fill(dims.sLocal));
  const maskg = opts.mask ? await allGatherKeyMask(ug, opts.mask, dims.B, await uSizes()) : undefined;
  return ulyssesAttention(ug, q, k, v, dims, opts, async (qg, kg, vg, B, S, H, D) => {
    if (!kernels) return (await ringAttention(rg, qg, kg, vg, { B, sLocal: S, H, D, scale: dims.scale })).o;
    // even splits (no UAA with a ring): every ring member holds the same S after its ulysses gather;
    // ranks holding only padding heads (H = 0) skip the ring together (their ring group shares the heads)
    const og = new Float32Array(B * S * H * D);
    if (H === 0) return og;
    const rows = (data: Float32Array): Rows => ({ data, stride: H * D });
    await ringAttentionNative(rg, kernels, rows(qg), rows(kg), rows(vg), rows(og), { B, sLocal: S, H, D, scale: dims.scale }, new Array<number>(R).fill(S), maskg);
    return og;
  });
}
