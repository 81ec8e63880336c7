// The server's bounded generation queue: at most `maxConcurrency` jobs run, at most `maxQueue` wait (FIFO);
// one more is refused at once (QueueFullError -> 429 with Retry-After); a job whose signal aborts while it
// waits leaves the queue without running (its slot goes to the next one).
//
// Batching (`maxBatch` > 1): when a batchable job gets its slot, the jobs waiting behind it with the same
// batch key (the same generation options but prompt and seed) join it, up to maxBatch in all, and run as
// one generation in that one slot. A job that waits alone runs alone; nothing waits for company.

export class QueueFullError extends Error {
  constructor(
    readonly running: number,
    readonly waiting: number,
    readonly retryAfterS: number,
  ) {
    super(`the server is busy: ${running} generation(s) running and ${waiting} waiting (--max-queue); retry after ${retryAfterS} s`);
    this.name = 'QueueFullError';
  }
}

/** a request cancelled by its timeout or by its client going away */
export class RequestCancelled extends Error {
  constructor(
    message: string,
    readonly timeout: boolean,
  ) {
    super(message);
    this.name = 'RequestCancelled';
  }
}

interface Waiter {
  start: () => void;
  fail: (e: unknown) => void;
  /** a batchable job's member (runBatched) */
  member?: BatchMember<unknown, unknown>;
}

/** one request of a batch: its item, its signal, and how its own promise settles */
interface BatchMember<I, R> {
  key: string;
  item: I;
  signal: AbortSignal;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

/** the reason a joined waiter's own start is dropped (its batch runs it) */
const JOINED = Symbol('joined');

export class GenerationQueue {
  running = 0;
  private readonly waiters: Waiter[] = [];
  /** mean seconds of the finished jobs (the Retry-After estimate) */
  private meanS = 1;
  private done = 0;

  constructor(
    readonly maxConcurrency: number,
    readonly maxQueue: number,
    readonly maxBatch = 1,
  ) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`--max-batch must be an integer >= 1, got ${maxBatch}`);
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) throw new Error(`--max-concurrency must be an integer >= 1, got ${maxConcurrency}`);
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new Error(`--max-queue must be an integer >= 0, got ${maxQueue}`);
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * runs `item` when a slot is free, batched with the waiting items of the same `key` (null: never batched):
   * `runBatch` gets every member's item and signal and returns one result per item; a member whose signal
   * aborts after joining gets its abort reason at once (the batch runs on for the others, and stops when all
   * have gone: `runBatch`'s own signal)
   */
  runBatched<I, R>(signal: AbortSignal, key: string | null, item: I, runBatch: (items: I[], signal: AbortSignal) => Promise<R[]>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const me: BatchMember<I, R> = { key: key ?? '', item, signal, resolve, reject };
      const job = async (): Promise<void> => {
        const members = key === null ? [me] : [me, ...(this.takeJoining(key) as unknown as BatchMember<I, R>[])];
        const all = new AbortController();
        const gone = (): void => {
          if (members.every((m) => m.signal.aborted)) all.abort(members[0]!.signal.reason);
        };
        for (const m of members) {
          if (m.signal.aborted) gone();
          else m.signal.addEventListener('abort', () => {
            m.reject(m.signal.reason);
            gone();
          }, { once: true });
        }
        try {
          const results = await runBatch(members.map((m) => m.item), all.signal);
          members.forEach((m, i) => m.resolve(results[i]!));
        } catch (e) {
          for (const m of members) m.reject(e);
        }
      };
      this.run(signal, job, key === null ? undefined : (me as BatchMember<unknown, unknown>)).catch((e) => {
        if (e !== JOINED) reject(e);
      });
    });
  }

  /** the waiting members of a batch key, oldest first, up to maxBatch - 1, taken off the queue */
  private takeJoining(key: string): BatchMember<unknown, unknown>[] {
    const out: BatchMember<unknown, unknown>[] = [];
    for (let i = 0; i < this.waiters.length && out.length < this.maxBatch - 1; ) {
      const w = this.waiters[i]!;
      if (w.member?.key === key && !w.member.signal.aborted) {
        this.waiters.splice(i, 1);
        w.fail(JOINED);
        out.push(w.member);
      } else i++;
    }
    return out;
  }

  /** runs `job` when a slot is free; refuses at once when the queue is full; `signal` cancels it while it waits */
  async run<T>(signal: AbortSignal, job: () => Promise<T>, member?: BatchMember<unknown, unknown>): Promise<T> {
    if (signal.aborted) throw signal.reason;
    if (this.running >= this.maxConcurrency) {
      if (this.waiters.length >= this.maxQueue) throw new QueueFullError(this.running, this.waiters.length, Math.max(1, Math.ceil(this.meanS * (this.waiters.length + 1))));
      await new Promise<void>((resolve, reject) => {
        const w: Waiter = {
          start: () => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          },
          fail: (e) => {
            signal.removeEventListener('abort', onAbort);
            reject(e);
          },
          ...(member ? { member } : {}),
        };
        const onAbort = (): void => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(w);
      });
    } else this.running++;
    const t0 = performance.now();
    try {
      return await job();
    } finally {
      this.done++;
      this.meanS += ((performance.now() - t0) / 1000 - this.meanS) / this.done;
      // the slot passes to the next waiter (running stays counted), or frees
      const next = this.waiters.shift();
      if (next) next.start();
      else this.running--;
    }
  }
}
