// Distributed-attention scenarios shared by the shm tests and the MPI entry: every rank generates the
// same full q/k/v (seeded), takes its tensor_split sequence shard, runs the distributed path, and the
// gathered output is compared with single-rank float64 reference attention.
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { Rng, attentionRef, concatSeq, psnr, randn, relL2, sliceSeq, tensorSplitSizes } from '../../runtime/parallel/attention-ref.ts';
import { ringAttention, uspAttention } from '../../runtime/parallel/ring.ts';
import { type HeadPadPolicy, ulyssesAttention, ulyssesBytesPerAttention } from '../../runtime/parallel/ulysses.ts';

export interface Scenario {
  mode: 'ulysses' | 'ring' | 'usp';
  B: number;
  S: number;
  H: number;
  D: number;
  anything?: boolean;
  float8?: boolean;
  async?: boolean;
  ulysses?: number;
  ring?: number;
  seed?: number;
  headPadPolicy?: HeadPadPolicy;
}

export interface ScenarioResult {
  relL2: number;
  psnr: number;
  /** all-to-all bytes sent by all ranks together. */
  allToAllBytes: number;
  /** all bytes sent by all ranks together (every op). */
  bytesSent: number;
  /** formula from ulyssesBytesPerAttention x W (even splits only; -1 otherwise). */
  predictedAllToAllBytes: number;
}

export async function runScenario(comm: Communicator, sc: Scenario): Promise<ScenarioResult> {
  const { B, S, H, D } = sc;
  const W = comm.worldSize;
  const rng = new Rng(sc.seed ?? 42);
  const C = H * D;
  const q = randn(rng, B * S * C);
  const k = randn(rng, B * S * C);
  const v = randn(rng, B * S * C);
  const sizes = tensorSplitSizes(S, W);
  const start = sizes.slice(0, comm.rank).reduce((a, b) => a + b, 0);
  const sLocal = sizes[comm.rank];
  const [ql, kl, vl] = [q, k, v].map((x) => sliceSeq(x, B, S, C, start, sLocal));
  comm.resetStats();
  const dims = { B, sLocal, H, D };
  let o: Float32Array;
  if (sc.mode === 'ulysses') o = await ulyssesAttention(comm, ql, kl, vl, dims, sc);
  else if (sc.mode === 'ring') o = (await ringAttention(comm, ql, kl, vl, dims, { anything: sc.anything })).o;
  else o = await uspAttention(comm, ql, kl, vl, dims, { ...sc, ulysses: sc.ulysses ?? 2, ring: sc.ring ?? W / 2 });
  const a2a = comm.stats.bytesSentByOp.allToAll ?? 0;
  const sent = comm.stats.bytesSent;
  // gather the output shards (uneven) and the byte counters
  const all = new Float32Array(B * S * C);
  const gathered = new Float32Array(B * S * C);
  await comm.allGather(o, gathered, sizes.map((n) => B * n * C));
  let off = 0;
  const parts = sizes.map((n) => {
    const p = gathered.subarray(off, off + B * n * C);
    off += B * n * C;
    return p;
  });
  all.set(concatSeq(parts, B, C));
  const counters = Float64Array.of(a2a, sent);
  await comm.allReduceSum(counters);
  const ref = attentionRef(q, k, v, B, S, S, H, D).o;
  const even = S % W === 0;
  return {
    relL2: relL2(all, ref),
    psnr: psnr(all, ref),
    allToAllBytes: counters[0],
    bytesSent: counters[1],
    predictedAllToAllBytes: sc.mode === 'ulysses' && even ? W * ulyssesBytesPerAttention(S, B, H, D, W, !!sc.float8) : -1,
  };
}

/** Collective sanity checks (uneven alltoallv, allreduce f32/f64, allgather, ring p2p); returns failures. */
export async function collectiveChecks(comm: Communicator): Promise<string[]> {
  const W = comm.worldSize;
  const r = comm.rank;
  const bad: string[] = [];
  // alltoallv: rank i sends (i + j + 1) * 1000 elements to rank j, value = i * 1e6 + j * 1e4 + idx
  const sc = Array.from({ length: W }, (_, j) => (r + j + 1) * 1000);
  const rc = Array.from({ length: W }, (_, i) => (i + r + 1) * 1000);
  const send = new Float32Array(sc.reduce((a, b) => a + b));
  let p = 0;
  for (let j = 0; j < W; j++) for (let t = 0; t < sc[j]; t++) send[p++] = r * 1e6 + j * 1e4 + (t % 1000);
  const recv = new Float32Array(rc.reduce((a, b) => a + b));
  await comm.allToAll(send, sc, recv, rc);
  p = 0;
  for (let i = 0; i < W; i++)
    for (let t = 0; t < rc[i]; t++, p++)
      if (recv[p] !== i * 1e6 + r * 1e4 + (t % 1000)) {
        bad.push(`allToAll rank ${r}: from ${i} at ${t}: ${recv[p]}`);
        break;
      }
  // byte alltoall (fp8 payloads)
  const sb = new Uint8Array(W * 3).map((_, i) => (r * 16 + i) & 0xff);
  const rb = new Uint8Array(W * 3);
  await comm.allToAll(sb, new Array(W).fill(3), rb, new Array(W).fill(3));
  for (let i = 0; i < W; i++) for (let t = 0; t < 3; t++) if (rb[i * 3 + t] !== ((i * 16 + r * 3 + t) & 0xff)) bad.push(`byte allToAll rank ${r}`);
  const f = Float32Array.from({ length: 1000 }, (_, i) => r + i * 0.5);
  await comm.allReduceSum(f);
  if (f[10] !== (W * (W - 1)) / 2 + W * 5) bad.push(`allReduceSum f32 rank ${r}: ${f[10]}`);
  const d = Float64Array.of(0.1 * (r + 1));
  await comm.allReduceSum(d);
  let want = 0;
  for (let i = 0; i < W; i++) want += 0.1 * (i + 1);
  if (d[0] !== want) bad.push(`allReduceSum f64 rank ${r}: ${d[0]} vs ${want}`);
  const ints = await comm.allGatherInt(r * 7 + 1);
  if (ints.join() !== Array.from({ length: W }, (_, i) => i * 7 + 1).join()) bad.push(`allGatherInt rank ${r}: ${ints}`);
  const ring = new Float32Array(5000);
  await comm.sendRecv(Float32Array.from({ length: 5000 }, (_, i) => r * 10000 + i), (r + 1) % W, ring, (r - 1 + W) % W);
  if (ring[4999] !== ((r - 1 + W) % W) * 10000 + 4999) bad.push(`sendRecv rank ${r}: ${ring[4999]}`);
  await comm.barrier();
  return bad;
}

/** The matrix of scenarios the tests run for a world size. */
export function scenariosFor(W: number): { name: string; sc: Scenario }[] {
  const list: { name: string; sc: Scenario }[] = [
    { name: 'ulysses even S', sc: { mode: 'ulysses', B: 2, S: 12 * W, H: 2 * W, D: 16 } },
    { name: 'ulysses UAA S % W != 0', sc: { mode: 'ulysses', B: 1, S: 12 * W + 1, H: W, D: 16, anything: true } },
    { name: 'ulysses async', sc: { mode: 'ulysses', B: 1, S: 10 * W, H: W, D: 8, async: true } },
    { name: 'ring', sc: { mode: 'ring', B: 1, S: 10 * W, H: 3, D: 8 } },
    { name: 'ulysses fp8', sc: { mode: 'ulysses', B: 1, S: 16 * W, H: W, D: 64, float8: true } },
    { name: 'ulysses fp32 (fp8 twin)', sc: { mode: 'ulysses', B: 1, S: 16 * W, H: W, D: 64 } },
  ];
  if (W === 3) {
    // 4 heads over 3 ranks: padded to 6, real heads [2, 2, 0] (beyond Cache-DiT's assert, policy 'any')
    list.push({ name: 'ulysses H=4 over W=3 (head padding) + UAA', sc: { mode: 'ulysses', B: 2, S: 31, H: 4, D: 8, anything: true, headPadPolicy: 'any' } });
    list.push({ name: 'ulysses H=4 over W=3 fp8', sc: { mode: 'ulysses', B: 1, S: 30, H: 4, D: 16, float8: true, headPadPolicy: 'any' } });
    // 5 heads over 3 ranks: padded to 6, only the last rank carries one padding head (Cache-DiT's case)
    list.push({ name: 'ulysses H=5 over W=3 (Cache-DiT padding) + UAA', sc: { mode: 'ulysses', B: 1, S: 29, H: 5, D: 8, anything: true } });
  }
  if (W === 4) list.push({ name: 'ulysses H=7 over W=4 (Cache-DiT padding)', sc: { mode: 'ulysses', B: 1, S: 32, H: 7, D: 8 } });
  if (W === 4) list.push({ name: 'usp ulysses 2 x ring 2', sc: { mode: 'usp', B: 1, S: 32, H: 4, D: 8, ulysses: 2, ring: 2 } });
  return list;
}
