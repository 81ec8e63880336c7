// Communication benchmark: all-to-all bandwidth of the shm (worker threads) and mpi (mpirun) backends
// at W = 2 and 4 with 4 MiB chunks, and the Ulysses bytes per denoising step with and without FP8 for
// the mid-size FLUX config. `npx tsx test/bench/comm.ts` runs it standalone; `benchComm()` returns
// the numbers for `npm run bench`.
import { isMainThread } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { launchShm, runShm } from '../../runtime/comm/shm.ts';
import { launchMpi, mpiAvailable, parseRankResults, runMpiRank } from '../../runtime/comm/mpi.ts';
import { qkvPermuteQuant, perTokenQuant } from '../../runtime/comm/fp8.ts';
import { Rng, randn } from '../../runtime/parallel/attention-ref.ts';
import { allToAllO, allToAllQKV, ulyssesBytesPerAttention, ulyssesLayout } from '../../runtime/parallel/ulysses.ts';

const self = fileURLToPath(import.meta.url);
const CHUNK = 4 << 20;

/** Mid-size FLUX: hidden 1024 = 16 heads x 64, 2 dual + 4 single blocks, 1024 image + 128 text tokens. */
export const MID_FLUX = { hidden: 1024, heads: 16, headDim: 64, dualBlocks: 2, singleBlocks: 4, imageTokens: 1024, textTokens: 128, batch: 1 };

export interface AllToAllBench {
  backend: 'shm' | 'mpi';
  world: number;
  chunkBytes: number;
  msPerIter: number;
  /** Bytes moved between distinct ranks per iteration, all ranks together / time. */
  gbPerS: number;
}

export interface StepBytes {
  world: number;
  attentionsPerStep: number;
  allToAllsPerStep: number;
  bytesPerRankFp32: number;
  bytesPerRankFp8: number;
  /** Same numbers measured by running the all-to-alls over shm (must equal the formula). */
  measuredPerRankFp32: number;
  measuredPerRankFp8: number;
  ratio: number;
}

export interface CommBenchResult {
  allToAll: AllToAllBench[];
  stepBytes: StepBytes[];
  fp8QuantMBps: { qkvPermuteQuant: number; perTokenQuant: number };
  notes: string[];
}

/** Per-rank timing loop (shared by the shm worker entry and the mpi rank entry). */
export async function allToAllRank(comm: Communicator, args: { chunkBytes: number; iters: number }): Promise<number> {
  const W = comm.worldSize;
  const n = args.chunkBytes / 4;
  const send = new Float32Array(n * W).fill(comm.rank);
  const recv = new Float32Array(n * W);
  const counts = new Array<number>(W).fill(n);
  for (let i = 0; i < 2; i++) await comm.allToAll(send, counts, recv, counts);
  await comm.barrier();
  const t0 = performance.now();
  for (let i = 0; i < args.iters; i++) await comm.allToAll(send, counts, recv, counts);
  await comm.barrier();
  const ms = (performance.now() - t0) / args.iters;
  const t = Float64Array.of(ms);
  await comm.allReduceSum(t);
  return t[0] / W;
}

function gbps(world: number, chunkBytes: number, ms: number): number {
  return (world * (world - 1) * chunkBytes) / (ms * 1e6);
}

async function stepBytes(W: number): Promise<StepBytes> {
  const c = MID_FLUX;
  const S = c.imageTokens + c.textTokens;
  const attn = c.dualBlocks + c.singleBlocks; // joint text+image attention in every block
  const f32 = attn * ulyssesBytesPerAttention(S, c.batch, c.heads, c.headDim, W, false);
  const f8 = attn * ulyssesBytesPerAttention(S, c.batch, c.heads, c.headDim, W, true);
  // measure one attention's q, k, v, o all-to-alls over shm (no attention math), x attentions
  const measure = async (float8: boolean) => {
    const res = await runShm(W, async (comm) => {
      const sLocal = S / W;
      const L = await ulyssesLayout(comm, c.batch, sLocal, c.heads, c.headDim);
      const x = randn(new Rng(comm.rank + 1), c.batch * sLocal * c.heads * c.headDim);
      comm.resetStats();
      await allToAllQKV(comm, L, x, float8); // q
      await allToAllQKV(comm, L, x, false); // k (compute dtype)
      const v = await allToAllQKV(comm, L, x, float8); // v
      await allToAllO(comm, L, v, float8); // o (same shape as v)
      return comm.stats.bytesSentByOp.allToAll ?? 0;
    });
    return res[0] * attn;
  };
  const m32 = await measure(false);
  const m8 = await measure(true);
  return { world: W, attentionsPerStep: attn, allToAllsPerStep: 4 * attn, bytesPerRankFp32: f32, bytesPerRankFp8: f8, measuredPerRankFp32: m32, measuredPerRankFp8: m8, ratio: f8 / f32 };
}

function quantThroughput(): { qkvPermuteQuant: number; perTokenQuant: number } {
  const [B, S, P, N, D] = [1, 576, 2, 8, 64];
  const x = randn(new Rng(5), B * S * P * N * D);
  const out = new Uint8Array(P * S * B * N * (D + 4));
  const out2 = new Uint8Array((x.length / D) * (D + 2));
  const time = (f: () => void) => {
    f();
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < 300) {
      f();
      n++;
    }
    return (performance.now() - t0) / n;
  };
  const a = time(() => qkvPermuteQuant(x, B, S, P, N, D, out));
  const b = time(() => perTokenQuant(x, x.length / D, D, out2));
  return { qkvPermuteQuant: x.byteLength / (a * 1e3), perTokenQuant: x.byteLength / (b * 1e3) };
}

export async function benchComm(opts: { iters?: number; log?: (s: string) => void } = {}): Promise<CommBenchResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const iters = opts.iters ?? 10;
  const notes: string[] = [];
  const allToAll: AllToAllBench[] = [];
  for (const W of [2, 4]) {
    const ms = (await launchShm<number>(W, { module: self, exportName: 'allToAllRank', args: { chunkBytes: CHUNK, iters } }))[0];
    allToAll.push({ backend: 'shm', world: W, chunkBytes: CHUNK, msPerIter: ms, gbPerS: gbps(W, CHUNK, ms) });
    log(`all-to-all shm W=${W} 4 MiB chunks: ${ms.toFixed(2)} ms/iter, ${gbps(W, CHUNK, ms).toFixed(2)} GB/s`);
  }
  const mpi = mpiAvailable();
  if (!mpi.ok) {
    notes.push(`mpi skipped: ${mpi.reason}`);
    log(`all-to-all mpi: skipped (${mpi.reason})`);
  } else {
    for (const W of [2, 4]) {
      const r = await launchMpi({ np: W, script: self, args: ['--mpi-rank', String(CHUNK), String(iters)], timeoutMs: 180_000 });
      const rows = parseRankResults<{ ms: number }>(r.stdout);
      if (r.code !== 0 || !rows.length) {
        notes.push(`mpi W=${W} failed (exit ${r.code}): ${r.stderr.slice(-400)}`);
        log(`all-to-all mpi W=${W}: failed (exit ${r.code})`);
        continue;
      }
      const ms = rows[0].ms;
      allToAll.push({ backend: 'mpi', world: W, chunkBytes: CHUNK, msPerIter: ms, gbPerS: gbps(W, CHUNK, ms) });
      log(`all-to-all mpi W=${W} 4 MiB chunks: ${ms.toFixed(2)} ms/iter, ${gbps(W, CHUNK, ms).toFixed(2)} GB/s`);
    }
  }
  const steps: StepBytes[] = [];
  for (const W of [2, 4]) {
    const s = await stepBytes(W);
    steps.push(s);
    log(
      `ulysses bytes/step (mid FLUX, W=${W}, ${s.allToAllsPerStep} all-to-alls): fp32 ${(s.bytesPerRankFp32 / 2 ** 20).toFixed(2)} MiB/rank, ` +
        `fp8 ${(s.bytesPerRankFp8 / 2 ** 20).toFixed(2)} MiB/rank (ratio ${s.ratio.toFixed(3)}; measured ${s.measuredPerRankFp32} / ${s.measuredPerRankFp8} B)`,
    );
  }
  const q = quantThroughput();
  log(`fp8 quant (JS reference): qkvPermuteQuant ${q.qkvPermuteQuant.toFixed(0)} MB/s, perTokenQuant ${q.perTokenQuant.toFixed(0)} MB/s (input fp32 bytes)`);
  notes.push('2 CPU cores: W=4 is oversubscribed; GB/s counts bytes between distinct ranks, all ranks together.');
  return { allToAll, stepBytes: steps, fp8QuantMBps: q, notes };
}

// ---- entry points: standalone run, and the per-rank program under mpirun
if (isMainThread && process.argv[1] && resolve(process.argv[1]) === self) {
  const i = process.argv.indexOf('--mpi-rank');
  if (i >= 0) {
    const chunkBytes = Number(process.argv[i + 1]);
    const iters = Number(process.argv[i + 2]);
    await runMpiRank(async (comm) => {
      const ms = await allToAllRank(comm, { chunkBytes, iters });
      if (comm.rank === 0) console.log('DITFORGE_RESULT ' + JSON.stringify({ ms }));
    });
  } else {
    const r = await benchComm();
    console.log(JSON.stringify(r, null, 2));
  }
}
