// The communicator contract shared by every backend (shm worker threads, Open MPI, later NCCL).
//
// Semantics (all backends):
// - Collectives (allToAll, allReduceSum, allGather, allGatherInt, barrier) run in the order a rank
//   issues them, like operations on one NCCL communicator / CUDA stream: a caller may issue several
//   without awaiting (async Ulysses) and await them later; every rank must issue the same sequence.
// - Point-to-point messages between one (src, dst) pair are delivered in FIFO order; `recv` must be
//   given a buffer of exactly the size sent. Rings should use `sendRecv` (deadlock-free everywhere).
// - Buffers are typed arrays; counts are in elements of the buffer's type. Send and receive buffers of
//   one call must have the same element size. Buffers must not be touched until the promise settles.
// - Every wait is bounded: a rank that throws, exits or hangs makes the others fail with a CommError
//   naming that rank within `timeoutMs` (never a hang).

export type CommBuffer = Float32Array | Float64Array | Uint8Array | Uint16Array | Int32Array;

export interface CommStats {
  /** Bytes this rank sent to other ranks (self-copies excluded). */
  bytesSent: number;
  /** Bytes this rank received from other ranks (self-copies excluded). */
  bytesReceived: number;
  /** Number of calls per operation name. */
  calls: Record<string, number>;
  /** Bytes sent per operation name. */
  bytesSentByOp: Record<string, number>;
}

export interface Communicator {
  readonly rank: number;
  readonly worldSize: number;
  /** 'shm' | 'mpi' | 'nccl' | 'group' (a subgroup emulated over point-to-point). */
  readonly backend: string;
  /** Traffic counters since creation or the last resetStats(). */
  readonly stats: CommStats;
  /** Convenience: stats.bytesSent. */
  readonly bytesMoved: number;
  resetStats(): void;

  /**
   * alltoallv: chunk j of `send` (sendCounts[j] elements, packed in rank order) goes to rank j;
   * chunk i of `recv` (recvCounts[i] elements, packed in rank order) comes from rank i.
   */
  allToAll(send: CommBuffer, sendCounts: number[], recv: CommBuffer, recvCounts: number[]): Promise<void>;
  /** In-place elementwise sum over ranks; the result is bit-identical on every rank (rank-order sum). */
  allReduceSum(buf: Float32Array | Float64Array): Promise<void>;
  /** Gathers `send` from every rank into `recv` in rank order; `counts` (elements per rank) for uneven sizes. */
  allGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): Promise<void>;
  /** Gathers one integer per rank (UAA sequence lengths). */
  allGatherInt(n: number): Promise<number[]>;
  send(buf: CommBuffer, dest: number): Promise<void>;
  recv(buf: CommBuffer, src: number): Promise<void>;
  /** Sends `send` to `dest` while receiving `recv` from `src` (ring step). */
  sendRecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number): Promise<void>;
  barrier(): Promise<void>;
  /** Optional native sub-communicator (NCCL/MPI comm split); see group.ts `subgroup` for the fallback. */
  split?(ranks: number[]): Promise<Communicator>;
  close(): Promise<void>;
}

/** Error raised on every rank when a peer fails, dies or times out; `failedRank` names the culprit. */
export class CommError extends Error {
  constructor(
    message: string,
    readonly rank: number,
    readonly failedRank: number,
  ) {
    super(message);
    this.name = 'CommError';
  }
}

export function newStats(): CommStats {
  return { bytesSent: 0, bytesReceived: 0, calls: {}, bytesSentByOp: {} };
}

export function countOp(stats: CommStats, op: string, sent: number, received: number): void {
  stats.calls[op] = (stats.calls[op] ?? 0) + 1;
  stats.bytesSentByOp[op] = (stats.bytesSentByOp[op] ?? 0) + sent;
  stats.bytesSent += sent;
  stats.bytesReceived += received;
}

/**
 * What the backends share: argument checks and traffic counters (each op checked and counted up front, the
 * same on every backend; a message between a rank and itself moves no bytes) and allGatherInt over allGather.
 */
export abstract class CommunicatorBase {
  abstract readonly rank: number;
  abstract readonly worldSize: number;
  stats: CommStats = newStats();

  abstract allGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): Promise<void>;

  get bytesMoved(): number {
    return this.stats.bytesSent;
  }
  resetStats(): void {
    this.stats = newStats();
  }

  /** one float64 per rank: exact for every safe integer */
  async allGatherInt(n: number): Promise<number[]> {
    const out = new Float64Array(this.worldSize);
    await this.allGather(Float64Array.of(n), out);
    return Array.from(out);
  }

  /** Validates alltoallv arguments and counts the op; returns byte counts. */
  protected startAllToAll(
    send: CommBuffer,
    sendCounts: number[],
    recv: CommBuffer,
    recvCounts: number[],
  ): { es: number; sendBytes: number[]; recvBytes: number[] } {
    const world = this.worldSize;
    if (sendCounts.length !== world || recvCounts.length !== world)
      throw new Error(`allToAll: sendCounts/recvCounts need ${world} entries, got ${sendCounts.length}/${recvCounts.length}`);
    if (send.BYTES_PER_ELEMENT !== recv.BYTES_PER_ELEMENT)
      throw new Error(`allToAll: send and recv element sizes differ (${send.BYTES_PER_ELEMENT} vs ${recv.BYTES_PER_ELEMENT})`);
    for (const c of [...sendCounts, ...recvCounts])
      if (!Number.isInteger(c) || c < 0) throw new Error(`allToAll: bad count ${c}`);
    if (sum(sendCounts) > send.length) throw new Error(`allToAll: sendCounts sum ${sum(sendCounts)} > send length ${send.length}`);
    if (sum(recvCounts) > recv.length) throw new Error(`allToAll: recvCounts sum ${sum(recvCounts)} > recv length ${recv.length}`);
    const es = send.BYTES_PER_ELEMENT;
    const sendBytes = sendCounts.map((c) => c * es);
    const recvBytes = recvCounts.map((c) => c * es);
    countOp(this.stats, 'allToAll', sum(sendBytes) - sendBytes[this.rank]!, sum(recvBytes) - recvBytes[this.rank]!);
    return { es, sendBytes, recvBytes };
  }

  /**
   * Validates an allGather of `send` into `recv` (`counts`: elements per rank, default `send.length` each) and
   * counts the op; returns the per-rank element counts.
   */
  protected startAllGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): number[] {
    const world = this.worldSize;
    const cnt = counts ?? new Array<number>(world).fill(send.length);
    if (cnt.length !== world) throw new Error(`allGather: counts needs ${world} entries`);
    if (cnt[this.rank] !== send.length) throw new Error(`allGather: rank ${this.rank} sends ${send.length} elements, counts says ${cnt[this.rank]}`);
    if (recv.BYTES_PER_ELEMENT !== send.BYTES_PER_ELEMENT) throw new Error('allGather: send and recv element sizes differ');
    if (sum(cnt) > recv.length) throw new Error(`allGather: recv holds ${recv.length} < ${sum(cnt)}`);
    countOp(this.stats, 'allGather', send.byteLength * (world - 1), (sum(cnt) - send.length) * send.BYTES_PER_ELEMENT);
    return cnt;
  }

  protected countAllReduce(buf: CommBuffer): void {
    countOp(this.stats, 'allReduceSum', buf.byteLength * (this.worldSize - 1), buf.byteLength * (this.worldSize - 1));
  }
  protected countSend(buf: CommBuffer, dest: number): void {
    countOp(this.stats, 'send', dest === this.rank ? 0 : buf.byteLength, 0);
  }
  protected countRecv(buf: CommBuffer, src: number): void {
    countOp(this.stats, 'recv', 0, src === this.rank ? 0 : buf.byteLength);
  }
  protected countBarrier(): void {
    countOp(this.stats, 'barrier', 0, 0);
  }
  protected countSendRecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number): void {
    countOp(this.stats, 'sendRecv', dest === this.rank ? 0 : send.byteLength, src === this.rank ? 0 : recv.byteLength);
  }
}

export function asBytes(a: CommBuffer): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function sum(a: number[]): number {
  let s = 0;
  for (const x of a) s += x;
  return s;
}

export function prefix(a: number[]): number[] {
  const out = new Array<number>(a.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    out[i] = s;
    s += a[i];
  }
  return out;
}

/** FIFO of async operations: each starts when the previous settled (errors do not block the chain). */
export class OpQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

/**
 * Default bound on every wait (DITFORGE_COMM_TIMEOUT_MS, default 300 s). Dead ranks are detected at
 * once (worker exit / mpirun); the bound only catches hangs, so it is generous enough for a rank that
 * legitimately computes longer than its peers (CPU steps of large models, VAE decode on rank 0).
 */
export function defaultTimeoutMs(): number {
  const v = Number(process.env.DITFORGE_COMM_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 300_000;
}
