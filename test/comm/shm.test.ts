import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { CommError } from '../../runtime/comm/communicator.ts';
import { launchShm, runShm } from '../../runtime/comm/shm.ts';
import { subgroup } from '../../runtime/comm/group.ts';
import { collectiveChecks } from './scenarios.ts';

const workerEntry = fileURLToPath(new URL('./shm-worker-entry.ts', import.meta.url));

describe('shm communicator (coroutines over SharedArrayBuffer)', () => {
  for (const W of [1, 2, 3, 4]) {
    it(`collectives are correct at W=${W} (default and tiny staging slots)`, async () => {
      expect((await runShm(W, collectiveChecks)).flat()).toEqual([]);
      // 4 KiB slots / 1 KiB p2p channels: every message goes through many rounds
      expect((await runShm(W, collectiveChecks, { slotBytes: 4096, p2pBytes: 1024 })).flat()).toEqual([]);
    });
  }

  it('runs collectives in issue order when several are in flight (async Ulysses)', async () => {
    const res = await runShm(3, async (c) => {
      const outs = [0, 1, 2].map(() => new Float32Array(3));
      const ps = [0, 1, 2].map((k) => c.allToAll(Float32Array.from([0, 1, 2], (j) => 100 * k + 10 * c.rank + j), [1, 1, 1], outs[k], [1, 1, 1]));
      const sumP = c.allReduceSum(Float32Array.of(1));
      await Promise.all([...ps, sumP]);
      return outs.map((o) => Array.from(o));
    });
    expect(res[1]).toEqual([
      [1, 11, 21],
      [101, 111, 121],
      [201, 211, 221],
    ]);
  });

  it('subgroups (emulated over p2p) run their own collectives', async () => {
    const res = await runShm(4, async (c) => {
      const g = await subgroup(c, c.rank % 2 === 0 ? [0, 2] : [1, 3]);
      const x = Float64Array.of(c.rank);
      await g.allReduceSum(x);
      const ints = await g.allGatherInt(c.rank * 10);
      return [x[0], ...ints, g.rank, g.worldSize];
    });
    expect(res).toEqual([
      [2, 0, 20, 0, 2],
      [4, 10, 30, 0, 2],
      [2, 0, 20, 1, 2],
      [4, 10, 30, 1, 2],
    ]);
  });

  it('counts bytes moved (self copies excluded)', async () => {
    const res = await runShm(2, async (c) => {
      await c.allToAll(new Float32Array(10), [5, 5], new Float32Array(10), [5, 5]);
      return [c.bytesMoved, c.stats.bytesReceived, c.stats.calls.allToAll];
    });
    expect(res).toEqual([
      [20, 20, 1],
      [20, 20, 1],
    ]);
  });

  it('a rank that throws makes the others fail fast, naming it', async () => {
    const t0 = Date.now();
    const err = await runShm(3, async (c) => {
      await c.barrier();
      if (c.rank === 1) throw new Error('boom on purpose');
      await c.allToAll(new Float32Array(3), [1, 1, 1], new Float32Array(3), [1, 1, 1]);
      return 0;
    }, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommError);
    expect((err as CommError).failedRank).toBe(1);
    expect((err as Error).message).toMatch(/rank 1 failed: .*boom on purpose/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a rank that hangs makes the others time out within the bound, naming it', async () => {
    const t0 = Date.now();
    let otherErrors: string[] = [];
    const err = await runShm(4, async (c) => {
      if (c.rank === 2) {
        await new Promise((r) => setTimeout(r, 1500)); // "stuck" past the 300 ms bound
        return 0;
      }
      try {
        await c.barrier();
      } catch (e) {
        otherErrors.push((e as Error).message);
        throw e;
      }
      return 0;
    }, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommError);
    expect((err as CommError).failedRank).toBe(2);
    expect(otherErrors.length).toBe(3);
    for (const m of otherErrors) expect(m).toMatch(/rank 2/);
    expect(Date.now() - t0).toBeLessThan(3000);
    otherErrors = [];
  });

  it('p2p recv from a silent peer times out naming it', async () => {
    const err = await runShm(2, async (c) => {
      if (c.rank === 0) await c.recv(new Float32Array(4), 1);
      else await new Promise((r) => setTimeout(r, 600));
      return 0;
    }, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect((err as CommError).failedRank).toBe(1);
    expect((err as Error).message).toMatch(/recv from rank 1 timed out/);
  });
});

describe('shm communicator over worker threads', () => {
  it('runs collectives across 3 worker threads', async () => {
    const res = await launchShm<string[]>(3, { module: workerEntry, exportName: 'checks' });
    expect(res.flat()).toEqual([]);
  });

  it('a worker that exits makes the others fail, naming its rank', async () => {
    const t0 = Date.now();
    const err = await launchShm(3, { module: workerEntry, exportName: 'dies', args: { die: 2 }, timeoutMs: 20_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommError);
    expect((err as CommError).failedRank).toBe(2);
    expect((err as Error).message).toMatch(/rank 2 .*exited with code 3/);
    expect(Date.now() - t0).toBeLessThan(15_000); // well inside the 20 s wait bound: failure is pushed, not polled
  });

  it('a worker stuck in a busy loop does not hang the launcher once another rank failed', async () => {
    const t0 = Date.now();
    const err = await launchShm(3, { module: workerEntry, exportName: 'spinsAfterFailure', args: { spin: 0, fail: 1 }, timeoutMs: 1000 }).catch((e: unknown) => e);
    expect((err as CommError).failedRank).toBe(1);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
