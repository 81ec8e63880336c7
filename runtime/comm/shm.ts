// Shared-memory communicator: ranks are worker threads (or coroutines of one thread) of one process,
// exchanging data through SharedArrayBuffers and synchronising with Atomics.waitAsync (never a blocking
// wait, so a rank keeps its event loop and can overlap compute with an in-flight collective).
//
// Layout: `ctrl` Int32Array (barrier counter/generation, abort word, per-rank arrival counters, p2p
// channel flags, failure message), `coll` staging (W regions of W slots of `slotBytes`), `p2p`
// (W*W single-producer/single-consumer channels of `p2pBytes`). Messages larger than a slot are moved
// in rounds, so memory stays bounded whatever the tensor sizes.
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  type CommBuffer,
  type Communicator,
  CommError,
  CommunicatorBase,
  OpQueue,
  asBytes,
  defaultTimeoutMs,
  prefix,
} from './communicator.ts';

const COUNT = 0;
const GEN = 1;
const ABORT = 2; // 0 = fine; otherwise failedRank + 1
const MSGLEN = 3;
const ARRIVE = 8; // + rank
const MSG_BYTES = 1024;
const noop = (): void => undefined;
// Atomics.waitAsync is in Node >= 16 but only in TS's es2024 lib.
type WaitAsync = (a: Int32Array, i: number, v: number, t?: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync: WaitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

export interface ShmOptions {
  /** Bound on every wait (ms). Default DITFORGE_COMM_TIMEOUT_MS or 300 s. */
  timeoutMs?: number;
  /** Collective staging bytes per (src, dst) slot. Default 4 MiB. */
  slotBytes?: number;
  /** Point-to-point channel bytes per (src, dst). Default 1 MiB. */
  p2pBytes?: number;
}

/** Everything a rank needs to attach to the shared world (structured-clonable, goes to workers). */
export interface ShmWorld {
  world: number;
  ctrl: SharedArrayBuffer;
  coll: SharedArrayBuffer;
  p2p: SharedArrayBuffer;
  slotBytes: number;
  p2pBytes: number;
  timeoutMs: number;
}

export function createShmWorld(world: number, opts: ShmOptions = {}): ShmWorld {
  if (!Number.isInteger(world) || world < 1) throw new Error(`shm: world size must be a positive integer, got ${world}`);
  const slotBytes = align8(opts.slotBytes ?? 4 << 20);
  const p2pBytes = align8(opts.p2pBytes ?? 1 << 20);
  return {
    world,
    ctrl: new SharedArrayBuffer(msgOffset(world) + MSG_BYTES),
    coll: new SharedArrayBuffer(world * world * slotBytes),
    p2p: new SharedArrayBuffer(world * world * p2pBytes),
    slotBytes,
    p2pBytes,
    timeoutMs: opts.timeoutMs ?? defaultTimeoutMs(),
  };
}

function align8(n: number): number {
  if (!Number.isFinite(n) || n < 8) throw new Error(`shm: buffer size ${n} too small`);
  return Math.ceil(n / 8) * 8;
}

/** Marks the world as failed because of `failedRank` (first failure wins) and wakes every waiter. */
export function abortShmWorld(w: ShmWorld, failedRank: number, message: string): void {
  const ctrl = new Int32Array(w.ctrl);
  if (Atomics.compareExchange(ctrl, ABORT, 0, failedRank + 1) === 0) {
    const bytes = new TextEncoder().encode(message).subarray(0, MSG_BYTES);
    new Uint8Array(w.ctrl, msgOffset(w.world), MSG_BYTES).set(bytes);
    Atomics.store(ctrl, MSGLEN, bytes.length);
  }
  for (let i = 0; i < intWords(w.world); i++) Atomics.notify(ctrl, i);
}

/** ctrl layout: Int32 words [0, ARRIVE + W + W*W), then (8-aligned) Float64 meta[W], then the message. */
function metaOffset(world: number): number {
  return Math.ceil(((ARRIVE + world + world * world) * 4) / 8) * 8;
}
function msgOffset(world: number): number {
  return metaOffset(world) + 8 * world;
}
function intWords(world: number): number {
  return ARRIVE + world + world * world;
}

export class ShmCommunicator extends CommunicatorBase implements Communicator {
  readonly backend = 'shm';
  readonly worldSize: number;
  private readonly ctrl: Int32Array;
  private readonly coll: Uint8Array;
  private readonly p2p: Uint8Array;
  private readonly collQ = new OpQueue();
  private readonly sendQ: OpQueue[];
  private readonly recvQ: OpQueue[];
  private closed = false;

  constructor(
    readonly w: ShmWorld,
    readonly rank: number,
  ) {
    super();
    if (!Number.isInteger(rank) || rank < 0 || rank >= w.world) throw new Error(`shm: rank ${rank} out of range [0, ${w.world})`);
    this.worldSize = w.world;
    this.ctrl = new Int32Array(w.ctrl);
    this.coll = new Uint8Array(w.coll);
    this.p2p = new Uint8Array(w.p2p);
    this.sendQ = Array.from({ length: w.world }, () => new OpQueue());
    this.recvQ = Array.from({ length: w.world }, () => new OpQueue());
  }


  /** Marks this world failed on behalf of `failedRank` (used by launchers and on local errors). */
  abort(message: string, failedRank = this.rank): void {
    abortShmWorld(this.w, failedRank, message);
  }

  // ---------------------------------------------------------------- waiting / failure
  private checkAbort(): void {
    const a = Atomics.load(this.ctrl, ABORT);
    if (a === 0) return;
    const failed = a - 1;
    const len = Atomics.load(this.ctrl, MSGLEN);
    const msg = new TextDecoder().decode(new Uint8Array(this.w.ctrl, msgOffset(this.w.world), len).slice());
    throw new CommError(
      failed === this.rank ? `shm rank ${this.rank}: ${msg}` : `shm rank ${this.rank}: rank ${failed} failed: ${msg}`,
      this.rank,
      failed,
    );
  }

  /** Waits until `ready(Atomics.load(ctrl, idx))`, bounded by timeoutMs; `who` names the peer(s) on timeout. */
  private async waitUntil(idx: number, ready: (v: number) => boolean, what: string, who: () => number): Promise<void> {
    const deadline = Date.now() + this.w.timeoutMs;
    for (;;) {
      const v = Atomics.load(this.ctrl, idx);
      if (ready(v)) return;
      this.checkAbort();
      const left = deadline - Date.now();
      if (left <= 0) {
        const culprit = who();
        const msg = `${what} timed out after ${this.w.timeoutMs} ms waiting for rank ${culprit} (dead or stuck)`;
        abortShmWorld(this.w, culprit, `${msg} [detected by rank ${this.rank}]`);
        throw new CommError(`shm rank ${this.rank}: ${msg}`, this.rank, culprit);
      }
      const r = waitAsync(this.ctrl, idx, v, Math.min(left, 500));
      if (r.async) {
        // A pending waitAsync does not keep Node's event loop alive: hold a timer while waiting.
        const keep = setTimeout(noop, left + 1000);
        try {
          await r.value;
        } finally {
          clearTimeout(keep);
        }
      }
    }
  }

  private async barrierRaw(what: string): Promise<void> {
    this.checkAbort();
    const gen = Atomics.load(this.ctrl, GEN);
    const mine = Atomics.add(this.ctrl, ARRIVE + this.rank, 1) + 1;
    const n = Atomics.add(this.ctrl, COUNT, 1) + 1;
    if (n === this.worldSize) {
      Atomics.store(this.ctrl, COUNT, 0);
      Atomics.add(this.ctrl, GEN, 1);
      Atomics.notify(this.ctrl, GEN);
      return;
    }
    await this.waitUntil(GEN, (v) => v !== gen, what, () => {
      for (let r = 0; r < this.worldSize; r++) if (Atomics.load(this.ctrl, ARRIVE + r) < mine) return r;
      return this.rank;
    });
  }

  private guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`shm rank ${this.rank}: ${op} on a closed communicator`));
    return fn().catch((e: unknown) => {
      if (!(e instanceof CommError)) this.abort(`${op} failed: ${(e as Error)?.message ?? e}`);
      throw e;
    });
  }

  // ---------------------------------------------------------------- collectives
  allToAll(send: CommBuffer, sendCounts: number[], recv: CommBuffer, recvCounts: number[]): Promise<void> {
    const me = this.rank;
    const { sendBytes, recvBytes } = this.startAllToAll(send, sendCounts, recv, recvCounts);
    return this.collQ.run(() =>
      this.guard('allToAll', async () => {
        const W = this.worldSize;
        const slot = this.w.slotBytes;
        const sb = asBytes(send);
        const rb = asBytes(recv);
        const so = prefix(sendBytes);
        const ro = prefix(recvBytes);
        if (sendBytes[me] !== recvBytes[me])
          throw new Error(`allToAll: rank ${me} sends ${sendBytes[me]} bytes to itself but expects ${recvBytes[me]}`);
        rb.set(sb.subarray(so[me], so[me] + sendBytes[me]), ro[me]);
        if (W === 1) return;
        // Rounds: every rank must agree; publish my need in the arrival-independent meta slot of round 0.
        let myRounds = 0;
        for (let j = 0; j < W; j++) if (j !== me) myRounds = Math.max(myRounds, Math.ceil(sendBytes[j] / slot), Math.ceil(recvBytes[j] / slot));
        const meta = this.meta();
        meta[me] = myRounds;
        let rounds = -1;
        for (let r = 0; rounds < 0 || r < rounds; r++) {
          const base = me * W * slot;
          for (let j = 0; j < W; j++) {
            if (j === me) continue;
            const off = r * slot;
            const n = Math.min(slot, sendBytes[j] - off);
            if (n > 0) this.coll.set(sb.subarray(so[j] + off, so[j] + off + n), base + j * slot);
          }
          await this.barrierRaw('allToAll');
          if (rounds < 0) {
            rounds = 0;
            for (let i = 0; i < W; i++) rounds = Math.max(rounds, meta[i]);
          }
          for (let i = 0; i < W; i++) {
            if (i === me) continue;
            const off = r * slot;
            const n = Math.min(slot, recvBytes[i] - off);
            const src = i * W * slot + me * slot;
            if (n > 0) rb.set(this.coll.subarray(src, src + n), ro[i] + off);
          }
          await this.barrierRaw('allToAll');
          if (rounds === 0) break;
        }
      }),
    );
  }

  /** Per-rank scratch numbers (rounds agreement). */
  private metaArr: Float64Array | null = null;
  private meta(): Float64Array {
    if (!this.metaArr) this.metaArr = new Float64Array(this.w.ctrl, metaOffset(this.w.world), this.w.world);
    return this.metaArr;
  }

  allGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): Promise<void> {
    const es = send.BYTES_PER_ELEMENT;
    const cnt = this.startAllGather(send, recv, counts);
    return this.collQ.run(() => this.guard('allGather', () => this.gatherRaw(asBytes(send), asBytes(recv), cnt.map((c) => c * es))));
  }

  private async gatherRaw(sb: Uint8Array, rb: Uint8Array, bytes: number[]): Promise<void> {
    const W = this.worldSize;
    const region = W * this.w.slotBytes;
    const off = prefix(bytes);
    const rounds = Math.ceil(Math.max(...bytes) / region);
    rb.set(sb, off[this.rank]);
    if (W === 1) return;
    for (let r = 0; r < Math.max(rounds, 1); r++) {
      const o = r * region;
      const n = Math.min(region, sb.length - o);
      if (n > 0) this.coll.set(sb.subarray(o, o + n), this.rank * region);
      await this.barrierRaw('allGather');
      for (let i = 0; i < W; i++) {
        if (i === this.rank) continue;
        const m = Math.min(region, bytes[i] - o);
        if (m > 0) rb.set(this.coll.subarray(i * region, i * region + m), off[i] + o);
      }
      await this.barrierRaw('allGather');
    }
  }

  allReduceSum(buf: Float32Array | Float64Array): Promise<void> {
    const W = this.worldSize;
    this.countAllReduce(buf);
    return this.collQ.run(() =>
      this.guard('allReduceSum', async () => {
        if (W === 1) return;
        const region = W * this.w.slotBytes;
        const es = buf.BYTES_PER_ELEMENT;
        const perRound = Math.floor(region / es);
        const view = (off: number, n: number): Float32Array | Float64Array =>
          buf instanceof Float64Array ? new Float64Array(this.w.coll, off, n) : new Float32Array(this.w.coll, off, n);
        for (let start = 0; start < buf.length; start += perRound) {
          const n = Math.min(perRound, buf.length - start);
          view(this.rank * region, n).set(buf.subarray(start, start + n));
          await this.barrierRaw('allReduceSum');
          // Rank-order sum: identical bits on every rank.
          const acc = view(0, n).slice();
          for (let i = 1; i < W; i++) {
            const v = view(i * region, n);
            for (let k = 0; k < n; k++) acc[k] += v[k];
          }
          buf.set(acc, start);
          await this.barrierRaw('allReduceSum');
        }
      }),
    );
  }

  barrier(): Promise<void> {
    this.countBarrier();
    return this.collQ.run(() => this.guard('barrier', () => this.barrierRaw('barrier')));
  }

  // ---------------------------------------------------------------- point to point
  private flagIdx(src: number, dst: number): number {
    return ARRIVE + this.worldSize + src * this.worldSize + dst;
  }

  private checkPeer(peer: number, op: string): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.worldSize) throw new Error(`${op}: peer ${peer} out of range`);
  }

  send(buf: CommBuffer, dest: number): Promise<void> {
    this.checkPeer(dest, 'send');
    this.countSend(buf, dest);
    return this.sendQ[dest].run(() =>
      this.guard('send', async () => {
        const b = asBytes(buf);
        const idx = this.flagIdx(this.rank, dest);
        const cap = this.w.p2pBytes;
        const base = (this.rank * this.worldSize + dest) * cap;
        let off = 0;
        do {
          await this.waitUntil(idx, (v) => v === 0, `send to rank ${dest}`, () => dest);
          const n = Math.min(cap, b.length - off);
          this.p2p.set(b.subarray(off, off + n), base);
          Atomics.store(this.ctrl, idx, n + 1);
          Atomics.notify(this.ctrl, idx);
          off += n;
        } while (off < b.length);
      }),
    );
  }

  recv(buf: CommBuffer, src: number): Promise<void> {
    this.checkPeer(src, 'recv');
    this.countRecv(buf, src);
    return this.recvQ[src].run(() =>
      this.guard('recv', async () => {
        const b = asBytes(buf);
        const idx = this.flagIdx(src, this.rank);
        const cap = this.w.p2pBytes;
        const base = (src * this.worldSize + this.rank) * cap;
        let off = 0;
        do {
          await this.waitUntil(idx, (v) => v !== 0, `recv from rank ${src}`, () => src);
          const n = Atomics.load(this.ctrl, idx) - 1;
          if (off + n > b.length) throw new Error(`recv from rank ${src}: message longer than the ${b.length}-byte buffer`);
          b.set(this.p2p.subarray(base, base + n), off);
          Atomics.store(this.ctrl, idx, 0);
          Atomics.notify(this.ctrl, idx);
          off += n;
          if (n < cap && off < b.length) throw new Error(`recv from rank ${src}: message of ${off} bytes, buffer expects ${b.length}`);
        } while (off < b.length);
      }),
    );
  }

  async sendRecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number): Promise<void> {
    await Promise.all([this.send(send, dest), this.recv(recv, src)]);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

// -------------------------------------------------------------------- launchers

/**
 * Runs `entry` for every rank as coroutines of the calling thread (deterministic, no module loading;
 * what tests and small host-side runs use). A rank that throws aborts the world: the others fail with a
 * CommError naming it. Resolves with every rank's result, rejects with the first failing rank's error.
 */
export async function runShm<T>(world: number, entry: (comm: ShmCommunicator) => Promise<T>, opts: ShmOptions = {}): Promise<T[]> {
  const w = createShmWorld(world, opts);
  const comms = Array.from({ length: world }, (_, r) => new ShmCommunicator(w, r));
  const settled = await settleWithGrace(
    comms.map(async (c) => {
      try {
        return await entry(c);
      } catch (e) {
        if (!(e instanceof CommError)) c.abort(`threw: ${(e as Error)?.message ?? e}`);
        throw e;
      }
    }),
    graceMs(w),
  );
  return collect(settled, w);
}

function graceMs(w: ShmWorld): number {
  return Math.min(w.timeoutMs, 5000);
}

/**
 * allSettled, except that once one rank has failed, ranks still running `grace` ms later are given up
 * on (rejected; `onGiveUp` terminates their workers), so a rank stuck outside the communicator cannot
 * hang the launcher.
 */
async function settleWithGrace<T>(ps: Promise<T>[], grace: number, onGiveUp?: (rank: number) => void): Promise<PromiseSettledResult<T>[]> {
  const out: (PromiseSettledResult<T> | undefined)[] = new Array(ps.length);
  let timer: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    let left = ps.length;
    const done = (i: number, r: PromiseSettledResult<T>) => {
      if (out[i]) return;
      out[i] = r;
      if (--left === 0) resolve();
      else if (r.status === 'rejected' && !timer)
        timer = setTimeout(() => {
          for (let k = 0; k < ps.length; k++)
            if (!out[k]) {
              onGiveUp?.(k);
              done(k, { status: 'rejected', reason: new Error(`rank ${k} still running ${grace} ms after the world failed; given up`) });
            }
        }, grace);
    };
    ps.forEach((p, i) =>
      p.then(
        (value) => done(i, { status: 'fulfilled', value }),
        (reason: unknown) => done(i, { status: 'rejected', reason }),
      ),
    );
  });
  if (timer) clearTimeout(timer);
  return out as PromiseSettledResult<T>[];
}

function collect<T>(settled: PromiseSettledResult<T>[], w: ShmWorld): T[] {
  const failed = settled.findIndex((s) => s.status === 'rejected');
  if (failed < 0) return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  const ctrl = new Int32Array(w.ctrl);
  const culprit = Atomics.load(ctrl, ABORT) - 1;
  const who = culprit >= 0 ? culprit : failed;
  // The abort word's message is the root cause (what the failing rank threw, or who timed out on whom).
  const len = Atomics.load(ctrl, MSGLEN);
  const rootMsg = culprit >= 0 ? new TextDecoder().decode(new Uint8Array(w.ctrl, msgOffset(w.world), len).slice()) : '';
  const reason = (settled[who]?.status === 'rejected' ? (settled[who] as PromiseRejectedResult) : (settled[failed] as PromiseRejectedResult)).reason as Error;
  const err = new CommError(`shm world of ${settled.length}: rank ${who} failed: ${rootMsg || (reason?.message ?? String(reason))}`, -1, who);
  (err as { cause?: unknown }).cause = reason;
  throw err;
}

export interface ShmWorkerLaunch extends ShmOptions {
  /** Module (path or file URL; .ts is loaded through tsx) whose export is called once per rank. */
  module: string | URL;
  /** Export name: `(comm: Communicator, args: unknown) => Promise<result>`. Default 'default'. */
  exportName?: string;
  /** Structured-clonable argument passed to every rank. */
  args?: unknown;
}

/**
 * Runs one worker thread per rank. Each imports `module` and calls its export with (comm, args).
 * A worker that throws, errors or exits early aborts the world; the others fail within the wait bound
 * with an error naming that rank; all workers are terminated before this rejects.
 */
export async function launchShm<T>(world: number, launch: ShmWorkerLaunch): Promise<T[]> {
  const w = createShmWorld(world, launch);
  const mod = launch.module instanceof URL ? launch.module.href : launch.module.startsWith('file:') ? launch.module : pathToFileURL(launch.module).href;
  const bootstrap = fileURLToPath(new URL('./shm-worker.mjs', import.meta.url));
  const workers: Worker[] = [];
  const results = Array.from({ length: world }, (_, rank) => {
    const worker = new Worker(bootstrap, {
      workerData: { w, rank, module: mod, exportName: launch.exportName ?? 'default', args: launch.args },
    });
    workers.push(worker);
    return new Promise<T>((resolve, reject) => {
      let done = false;
      worker.on('message', (m: { ok: boolean; value?: T; error?: string }) => {
        done = true;
        if (m.ok) resolve(m.value as T);
        else reject(new Error(m.error));
      });
      worker.on('error', (e) => {
        abortShmWorld(w, rank, `worker error: ${e?.message ?? e}`);
        done = true;
        reject(e);
      });
      worker.on('exit', (code) => {
        if (!done) {
          abortShmWorld(w, rank, `worker exited with code ${code} before finishing`);
          reject(new Error(`rank ${rank} exited with code ${code}`));
        }
      });
    });
  });
  const settled = await settleWithGrace(results, graceMs(w), (rank) => void workers[rank].terminate());
  await Promise.all(workers.map((x) => x.terminate()));
  return collect(settled, w);
}
