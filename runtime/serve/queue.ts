// The server's bounded generation queue: at most `maxConcurrency` jobs run, at most `maxQueue` wait (FIFO);
// one more is refused at once (QueueFullError -> 429 with Retry-After); a job whose signal aborts while it
// waits leaves the queue without running (its slot goes to the next one).

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
}

export class GenerationQueue {
  running = 0;
  private readonly waiters: Waiter[] = [];
  /** mean seconds of the finished jobs (the Retry-After estimate) */
  private meanS = 1;
  private done = 0;

  constructor(
    readonly maxConcurrency: number,
    readonly maxQueue: number,
  ) {
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) throw new Error(`--max-concurrency must be an integer >= 1, got ${maxConcurrency}`);
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new Error(`--max-queue must be an integer >= 0, got ${maxQueue}`);
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** runs `job` when a slot is free; refuses at once when the queue is full; `signal` cancels it while it waits */
  async run<T>(signal: AbortSignal, job: () => Promise<T>): Promise<T> {
    if (signal.aborted) throw signal.reason;
    if (this.running >= this.maxConcurrency) {
      if (this.waiters.length >= this.maxQueue) throw new QueueFullError(this.running, this.waiters.length, Math.max(1, Math.ceil(this.meanS * (this.waiters.length + 1))));
      await new Promise<void>((resolve, reject) => {
        const w: Waiter = {
          start: () => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          },
          fail: reject,
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
