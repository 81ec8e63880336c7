// Sub-communicators. A backend with native groups (MPI_Comm_split, ncclCommSplit) provides `split`;
// otherwise `subgroup` emulates the collectives over the parent's point-to-point sendRecv (pairwise
// exchange, deadlock-free). Used by USP (ulysses x ring meshes) and hybrid TP x CP layouts.
import {
  type CommBuffer,
  type Communicator,
  CommunicatorBase,
  OpQueue,
  prefix,
} from './communicator.ts';

/** Communicator over `ranks` (parent ranks, in group-rank order); the caller must be a member. */
export async function subgroup(parent: Communicator, ranks: number[]): Promise<Communicator> {
  if (parent.split) return parent.split(ranks);
  return new GroupCommunicator(parent, ranks);
}

function sliceOf<T extends CommBuffer>(a: T, start: number, len: number): T {
  return a.subarray(start, start + len) as T;
}

export class GroupCommunicator extends CommunicatorBase implements Communicator {
  readonly backend = 'group';
  readonly rank: number;
  readonly worldSize: number;
  private readonly q = new OpQueue();

  constructor(
    readonly parent: Communicator,
    readonly ranks: number[],
  ) {
    super();
    const seen = new Set(ranks);
    if (seen.size !== ranks.length || ranks.some((r) => !Number.isInteger(r) || r < 0 || r >= parent.worldSize))
      throw new Error(`subgroup: bad rank list [${ranks.join(', ')}] for a world of ${parent.worldSize}`);
    this.rank = ranks.indexOf(parent.rank);
    if (this.rank < 0) throw new Error(`subgroup: parent rank ${parent.rank} is not in [${ranks.join(', ')}]`);
    this.worldSize = ranks.length;
  }


  allToAll(send: CommBuffer, sendCounts: number[], recv: CommBuffer, recvCounts: number[]): Promise<void> {
    const me = this.rank;
    this.startAllToAll(send, sendCounts, recv, recvCounts);
    return this.q.run(async () => {
      const n = this.worldSize;
      const so = prefix(sendCounts);
      const ro = prefix(recvCounts);
      if (sendCounts[me] !== recvCounts[me]) throw new Error(`allToAll: self chunk ${sendCounts[me]} vs ${recvCounts[me]}`);
      recv.set(sliceOf(send, so[me], sendCounts[me]) as never, ro[me]);
      for (let s = 1; s < n; s++) {
        const dst = (me + s) % n;
        const src = (me - s + n) % n;
        await this.parent.sendRecv(sliceOf(send, so[dst], sendCounts[dst]), this.ranks[dst], sliceOf(recv, ro[src], recvCounts[src]), this.ranks[src]);
      }
    });
  }

  allGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): Promise<void> {
    const cnt = this.startAllGather(send, recv, counts);
    return this.q.run(() => this.gatherRaw(send, recv, cnt));
  }

  private async gatherRaw(send: CommBuffer, recv: CommBuffer, cnt: number[]): Promise<void> {
    const n = this.worldSize;
    const me = this.rank;
    const off = prefix(cnt);
    recv.set(send as never, off[me]);
    for (let s = 1; s < n; s++) {
      const dst = (me + s) % n;
      const src = (me - s + n) % n;
      await this.parent.sendRecv(send, this.ranks[dst], sliceOf(recv, off[src], cnt[src]), this.ranks[src]);
    }
  }

  allReduceSum(buf: Float32Array | Float64Array): Promise<void> {
    const n = this.worldSize;
    this.countAllReduce(buf);
    return this.q.run(async () => {
      const all = buf instanceof Float64Array ? new Float64Array(buf.length * n) : new Float32Array(buf.length * n);
      await this.gatherRaw(buf, all, new Array<number>(n).fill(buf.length));
      const L = buf.length;
      for (let k = 0; k < L; k++) {
        let s = all[k];
        for (let i = 1; i < n; i++) s += all[i * L + k];
        buf[k] = s;
      }
    });
  }

  send(buf: CommBuffer, dest: number): Promise<void> {
    this.countSend(buf, dest);
    return this.parent.send(buf, this.ranks[dest]);
  }
  recv(buf: CommBuffer, src: number): Promise<void> {
    this.countRecv(buf, src);
    return this.parent.recv(buf, this.ranks[src]);
  }
  sendRecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number): Promise<void> {
    this.countSendRecv(send, dest, recv, src);
    return this.parent.sendRecv(send, this.ranks[dest], recv, this.ranks[src]);
  }
  async barrier(): Promise<void> {
    await this.allGatherInt(0);
  }
  async close(): Promise<void> {}
}
