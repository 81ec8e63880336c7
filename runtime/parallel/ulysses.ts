// Host-side reference of Cache-DiT's Ulysses all-to-all layouts (§4.2 - §4.5):
// q/k/v `[B, S_local, H, D]` --(scatter heads, gather sequence)--> `[B, S_global, H_local, D]`,
// attention over the full sequence with H_local heads, and the inverse for o.
// - UAA (`anything`): uneven sequence shards (tensor_split: first ranks get +1), per-rank lengths
//   exchanged with allGatherInt; never cached.
// - Any head count: zero-pad heads to the next multiple of W; only the last rank carries padding and
//   drops it after the QKV all-to-all; asserts H_PAD < (H + H_PAD) / W like Cache-DiT.
// - FP8 (`float8`): Q, V and O travel as per-token e4m3 (fp8.ts layouts), K in the compute dtype.
// - Async (`async`): V, Q, K all-to-alls are all issued before any is awaited (the communicator runs
//   them in issue order), as `ulysses_async` does.
// Layouts sent over the wire: QKV chunk for rank p = `(S_local, B, H_local, D)` (fp8: rows of D+4
// bytes); O chunk for rank p = `(H_local, B, S_p, D)` (fp8: rows of D+2 bytes).
import type { Communicator } from '../comm/communicator.ts';
import { perTokenDequant, perTokenQuant, qkvPermuteDequant, qkvPermuteQuant } from '../comm/fp8.ts';
import { attentionRef } from './attention-ref.ts';

export interface UlyssesOptions {
  /** UAA: allow uneven sequence shards (per-rank lengths are all-gathered). */
  anything?: boolean;
  /** FP8 e4m3 all-to-all for Q, V and O (K stays float32). */
  float8?: boolean;
  /** Issue the V, Q, K all-to-alls before awaiting any. */
  async?: boolean;
  /** Head padding rule when W does not divide H (default 'cache-dit'). */
  headPadPolicy?: HeadPadPolicy;
  /**
   * FP8 payload kernels for the `float8` all-to-alls (default: fp8.ts on the host). The ParallelExecutor passes
   * its native ones (fp8-native.ts, bit-exact with fp8.ts), so USP quantises like plain Ulysses does.
   */
  fp8Kernels?: Fp8Kernels;
}

export type HeadPadPolicy = 'cache-dit' | 'any';

export interface UlyssesLayout {
  world: number;
  rank: number;
  B: number;
  /** Global (real) heads. */
  H: number;
  D: number;
  /** Zero heads appended so that W divides the head count. */
  hPad: number;
  /** Heads per rank after padding. */
  hLocal: number;
  /** Real heads on this rank (hLocal except on trailing ranks that hold padding). */
  hReal: number;
  /** Per-rank sequence lengths (rank order) and this rank's. */
  sizes: number[];
  sLocal: number;
  sGlobal: number;
  /** Sequence offset of each rank's shard. */
  offsets: number[];
}

/**
 * Head padding: zero heads up to the next multiple of W. With `policy` 'cache-dit' (default) this
 * asserts H_PAD < (H + H_PAD) / W as Cache-DiT does (so only the last rank carries padding, e.g. 30
 * heads over 8 ranks; 30 over 16 and 4 over 3 are rejected). 'any' accepts every H >= 1: trailing
 * ranks may then hold only padding heads (they join the all-to-alls and compute nothing), e.g. 4 heads
 * over 3 ranks -> [2, 2, 0] real heads.
 */
export function headPadding(H: number, W: number, policy: HeadPadPolicy = 'cache-dit'): { hPad: number; hLocal: number } {
  if (!Number.isInteger(H) || H < 1) throw new Error(`Ulysses: bad head count ${H}`);
  const hPad = (W - (H % W)) % W;
  const hLocal = (H + hPad) / W;
  if (policy === 'cache-dit' && hPad > 0 && !(hPad < hLocal))
    throw new Error(
      `Ulysses: ${H} heads over ${W} ranks need ${hPad} padding heads, not fewer than the ${hLocal} heads per rank ` +
        `(Cache-DiT asserts H_PAD < (H+H_PAD)/W; use headPadPolicy 'any' to allow ranks that hold only padding)`,
    );
  return { hPad, hLocal };
}

/** Real (unpadded) heads held by `rank`. */
export function realHeads(H: number, hLocal: number, rank: number): number {
  return Math.max(0, Math.min(hLocal, H - rank * hLocal));
}

/** Computes the layout; with `anything` the per-rank lengths are exchanged (collective). */
export async function ulyssesLayout(comm: Communicator, B: number, sLocal: number, H: number, D: number, opts: UlyssesOptions = {}): Promise<UlyssesLayout> {
  const W = comm.worldSize;
  const { hPad, hLocal } = headPadding(H, W, opts.headPadPolicy);
  const sizes = opts.anything ? await comm.allGatherInt(sLocal) : new Array<number>(W).fill(sLocal);
  const offsets: number[] = [];
  let s = 0;
  for (const n of sizes) {
    offsets.push(s);
    s += n;
  }
  return { world: W, rank: comm.rank, B, H, D, hPad, hLocal, hReal: realHeads(H, hLocal, comm.rank), sizes, sLocal, sGlobal: s, offsets };
}

/** Packs `x [B, S_local, H, D]` into `(W, S_local, B, H_local, D)` (zero pad heads), float32. */
function packQKV(L: UlyssesLayout, x: Float32Array): Float32Array {
  const { world: W, B, H, D, hLocal, sLocal } = L;
  const out = new Float32Array(W * sLocal * B * hLocal * D);
  for (let p = 0; p < W; p++)
    for (let s = 0; s < sLocal; s++)
      for (let b = 0; b < B; b++)
        for (let n = 0; n < hLocal; n++) {
          const h = p * hLocal + n;
          if (h >= H) continue;
          const src = ((b * sLocal + s) * H + h) * D;
          out.set(x.subarray(src, src + D), (((p * sLocal + s) * B + b) * hLocal + n) * D);
        }
  return out;
}

/** `x [B, S_local, H, D]` viewed as `(B, S_local, W, H_local, D)` with zero padding heads. */
function padHeads(L: UlyssesLayout, x: Float32Array): Float32Array {
  const { B, H, D, hPad, sLocal } = L;
  if (hPad === 0) return x;
  const Hp = H + hPad;
  const out = new Float32Array(B * sLocal * Hp * D);
  for (let t = 0; t < B * sLocal; t++) out.set(x.subarray(t * H * D, (t + 1) * H * D), t * Hp * D);
  return out;
}

/** `(S_global, B, H_local, D)` -> `[B, S_global, H_real, D]` (drops the last rank's padding heads). */
function unpackQKV(L: UlyssesLayout, r: Float32Array, layoutBSND: boolean): Float32Array {
  const { B, D, hLocal, hReal, sGlobal: S } = L;
  const out = new Float32Array(B * S * hReal * D);
  for (let s = 0; s < S; s++)
    for (let b = 0; b < B; b++) {
      const src = layoutBSND ? (b * S + s) * hLocal * D : (s * B + b) * hLocal * D;
      out.set(r.subarray(src, src + hReal * D), (b * S + s) * hReal * D);
    }
  return out;
}

/**
 * FP8 payload kernels (same layouts and bits as fp8.ts); `runtime/parallel/fp8-native.ts` provides the
 * native ones. `qkvPermuteQuant` takes the unpadded `[B, S, H, D]` rows (row stride H*D) and pads heads
 * to P*N itself.
 */
export interface Fp8Kernels {
  qkvPermuteQuant(x: Float32Array, B: number, S: number, P: number, N: number, D: number, H: number): Uint8Array;
  qkvPermuteDequant(q: Uint8Array, S: number, B: number, N: number, D: number): Float32Array;
  perTokenQuant(x: Float32Array, rows: number, H: number): Uint8Array;
  perTokenDequant(q: Uint8Array, rows: number, H: number): Float32Array;
}

/** the host reference kernels of fp8.ts behind the Fp8Kernels interface */
export const HOST_FP8: Fp8Kernels = {
  qkvPermuteQuant: (x, B, S, P, N, D, H) => {
    const Hp = P * N;
    let xp = x;
    if (Hp !== H) {
      xp = new Float32Array(B * S * Hp * D);
      for (let t = 0; t < B * S; t++) xp.set(x.subarray(t * H * D, (t + 1) * H * D), t * Hp * D);
    }
    return qkvPermuteQuant(xp, B, S, P, N, D);
  },
  qkvPermuteDequant: (q, S, B, N, D) => qkvPermuteDequant(q, S, B, N, D),
  perTokenQuant: (x, rows, H) => perTokenQuant(x, rows, H),
  perTokenDequant: (q, rows, H) => perTokenDequant(q, rows, H),
};

/** Ulysses QKV all-to-all: `[B, S_local, H, D]` -> `[B, S_global, H_real, D]`. */
export async function allToAllQKV(comm: Communicator, L: UlyssesLayout, x: Float32Array, float8 = false, kernels?: Fp8Kernels): Promise<Float32Array> {
  const { world: W, B, H, D, hLocal, sLocal, sizes } = L;
  if (x.length !== B * sLocal * H * D) throw new Error(`allToAllQKV: expected ${B * sLocal * H * D} floats, got ${x.length}`);
  if (!float8) {
    const send = packQKV(L, x);
    const recv = new Float32Array(L.sGlobal * B * hLocal * D);
    await comm.allToAll(send, new Array<number>(W).fill(sLocal * B * hLocal * D), recv, sizes.map((n) => n * B * hLocal * D));
    return unpackQKV(L, recv, false);
  }
  const R = D + 4;
  const send = kernels ? kernels.qkvPermuteQuant(x, B, sLocal, W, hLocal, D, H) : qkvPermuteQuant(padHeads(L, x), B, sLocal, W, hLocal, D);
  const recv = new Uint8Array(L.sGlobal * B * hLocal * R);
  await comm.allToAll(send, new Array<number>(W).fill(sLocal * B * hLocal * R), recv, sizes.map((n) => n * B * hLocal * R));
  return unpackQKV(L, (kernels ?? HOST_FP8).qkvPermuteDequant(recv, L.sGlobal, B, hLocal, D), true);
}

/** Ulysses O all-to-all: `[B, S_global, H_real, D]` -> `[B, S_local, H, D]`. */
export async function allToAllO(comm: Communicator, L: UlyssesLayout, o: Float32Array, float8 = false, kernels?: Fp8Kernels): Promise<Float32Array> {
  const { world: W, B, H, D, hLocal, hReal, sLocal, sizes, offsets, sGlobal: S } = L;
  if (o.length !== B * S * hReal * D) throw new Error(`allToAllO: expected ${B * S * hReal * D} floats, got ${o.length}`);
  // (W, H_local, B, S_p, D), padding heads zero
  const send = new Float32Array(hLocal * B * S * D);
  let pos = 0;
  for (let p = 0; p < W; p++)
    for (let n = 0; n < hLocal; n++)
      for (let b = 0; b < B; b++)
        for (let s = 0; s < sizes[p]; s++, pos += D) {
          if (n >= hReal) continue;
          const src = ((b * S + offsets[p] + s) * hReal + n) * D;
          send.set(o.subarray(src, src + D), pos);
        }
  const sendCounts = sizes.map((n) => hLocal * B * n * D);
  const recvCount = hLocal * B * sLocal * D;
  let recv: Float32Array;
  if (!float8) {
    recv = new Float32Array(W * recvCount);
    await comm.allToAll(send, sendCounts, recv, new Array<number>(W).fill(recvCount));
  } else {
    const R = D + 2;
    const k = kernels ?? HOST_FP8;
    const q = k.perTokenQuant(send, send.length / D, D);
    const rq = new Uint8Array(Math.ceil((W * recvCount * R) / D / 4) * 4); // whole floats for native dequant
    await comm.allToAll(q, sendCounts.map((c) => (c / D) * R), rq, new Array<number>(W).fill((recvCount / D) * R));
    recv = k.perTokenDequant(rq, (W * recvCount) / D, D);
  }
  // (W, H_local, B, S_local, D) -> [B, S_local, H, D]
  const out = new Float32Array(B * sLocal * H * D);
  for (let p = 0; p < W; p++)
    for (let n = 0; n < hLocal; n++) {
      const h = p * hLocal + n;
      if (h >= H) continue;
      for (let b = 0; b < B; b++)
        for (let s = 0; s < sLocal; s++) {
          const src = (((p * hLocal + n) * B + b) * sLocal + s) * D;
          out.set(recv.subarray(src, src + D), ((b * sLocal + s) * H + h) * D);
        }
    }
  return out;
}

/** Shape of sequence-sharded q/k/v `[B, S_local, H, D]` (and the softmax scale, default 1/sqrt(D)), as Ulysses and ring attention take it. */
export interface SeqShardDims {
  B: number;
  sLocal: number;
  H: number;
  D: number;
  scale?: number;
}

/** Attention over full-sequence, head-sharded tensors `[B, S, H_real, D]` -> o `[B, S, H_real, D]`. */
export type HeadShardAttention = (q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, H: number, D: number) => Promise<Float32Array> | Float32Array;

/**
 * Ulysses attention for sequence-sharded q/k/v `[B, S_local, H, D]`; returns o `[B, S_local, H, D]`.
 * `attention` defaults to the float64 reference; USP passes ring attention over the ring group.
 */
export async function ulyssesAttention(
  comm: Communicator,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: SeqShardDims,
  opts: UlyssesOptions = {},
  attention?: HeadShardAttention,
): Promise<Float32Array> {
  const { B, sLocal, H, D } = dims;
  const L = await ulyssesLayout(comm, B, sLocal, H, D, opts);
  const fp8 = !!opts.float8;
  const fk = opts.fp8Kernels;
  let qg: Float32Array, kg: Float32Array, vg: Float32Array;
  if (opts.async) {
    // issue V, Q, K back to back (Cache-DiT's async order), then wait
    const pv = allToAllQKV(comm, L, v, fp8, fk);
    const pq = allToAllQKV(comm, L, q, fp8, fk);
    const pk = allToAllQKV(comm, L, k, false);
    [vg, qg, kg] = await Promise.all([pv, pq, pk]);
  } else {
    qg = await allToAllQKV(comm, L, q, fp8, fk);
    kg = await allToAllQKV(comm, L, k, false);
    vg = await allToAllQKV(comm, L, v, fp8, fk);
  }
  const og = attention
    ? await attention(qg, kg, vg, B, L.sGlobal, L.hReal, D)
    : attentionRef(qg, kg, vg, B, L.sGlobal, L.sGlobal, L.hReal, D, dims.scale).o;
  return allToAllO(comm, L, og, fp8, fk);
}

/**
 * Bytes one rank sends per attention for the Ulysses all-to-alls (q, k, v, o), for planning/benchmarks.
 * Even split assumed (S_local = S / W); fp32 compute dtype.
 */
export function ulyssesBytesPerAttention(S: number, B: number, H: number, D: number, W: number, float8: boolean): number {
  const { hLocal } = headPadding(H, W, 'any');
  const sLocal = S / W;
  const rowsPerPeer = sLocal * B * hLocal; // rows of D sent to each peer, per tensor
  const peers = W - 1;
  const f32 = rowsPerPeer * D * 4 * peers;
  if (!float8) return 4 * f32;
  return rowsPerPeer * peers * ((D + 4) * 2 + (D + 2)) + f32; // q, v: D+4; o: D+2; k: fp32
}
