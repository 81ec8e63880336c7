// Multi-process tests of the MPI communicator: each case starts `mpirun -np N node --import tsx/esm
// test/comm/mpi-entry.ts ...` and checks the ranks' printed results or the job's bounded failure.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { launchMpi, mpiAvailable, parseRankResults } from '../../runtime/comm/mpi.ts';
import type { ScenarioResult } from './scenarios.ts';
import { scenariosFor } from './scenarios.ts';

// Fresh checkouts: build the optional addon here when MPI is installed but the addon is not built yet.
if (!mpiAvailable().ok && spawnSync('sh', ['-c', 'command -v mpicc && command -v mpirun']).status === 0) {
  const b = spawnSync(process.execPath, ['scripts/build-mpi.mjs'], { encoding: 'utf8' });
  if (b.status !== 0) console.log(`[mpi] build-mpi failed:\n${b.stdout}\n${b.stderr}`);
}
const avail = mpiAvailable();
if (!avail.ok) console.log(`[mpi tests skipped] ${avail.reason}`);

const entry = 'test/comm/mpi-entry.ts';

describe.skipIf(!avail.ok)('mpi communicator (mpirun, one process per rank)', () => {
  for (const np of [2, 3, 4]) {
    it(`np=${np}: collectives and distributed attention equal the 1-rank reference`, async () => {
      const r = await launchMpi({ np, script: entry, args: ['run'], timeoutMs: 120_000 });
      if (r.code !== 0) console.log(r.stdout, r.stderr);
      expect(r.code).toBe(0);
      const rows = parseRankResults<{ world?: number; bad: string[]; results?: Record<string, ScenarioResult> }>(r.stdout);
      expect(rows.flatMap((x) => x.bad)).toEqual([]);
      const main = rows.find((x) => x.world === np);
      expect(main).toBeDefined();
      for (const { name, sc } of scenariosFor(np)) {
        const res = main!.results![name];
        console.log(`mpi np=${np} ${name}: relL2 ${res.relL2.toExponential(2)}, all-to-all bytes ${res.allToAllBytes}`);
        if (sc.float8) expect(res.psnr).toBeGreaterThan(30);
        else expect(res.relL2).toBeLessThan(1e-5);
        if (res.predictedAllToAllBytes >= 0) expect(res.allToAllBytes).toBe(res.predictedAllToAllBytes);
      }
      console.log(`mpi np=${np}: job took ${r.ms} ms`);
    });
  }

  it('a rank that throws aborts the job within a bounded time, naming the rank', async () => {
    const r = await launchMpi({ np: 3, script: entry, args: ['throw', '1'], timeoutMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/rank 1\/3: failed: Error: deliberate failure on rank 1/);
    // mpirun's own "MPI_ABORT was invoked on rank 1" help text is sometimes lost (ORTE show_help race).
    expect(r.ms).toBeLessThan(30_000);
    console.log(`mpi throw: job ended in ${r.ms} ms`);
  });

  it('a rank that dies (SIGKILL) ends the job, mpirun names the rank', async () => {
    const r = await launchMpi({ np: 3, script: entry, args: ['die', '2'], timeoutMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/process rank 2 .*exited on signal 9/);
    console.log(`mpi die: job ended in ${r.ms} ms`);
  });

  it('a rank that hangs: the others time out (watchdog) and abort the job', async () => {
    const r = await launchMpi({ np: 3, script: entry, args: ['hang', '1'], env: { DITFORGE_COMM_TIMEOUT_MS: '2000' }, timeoutMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/allToAll \(collective #\d+\) timed out after 2000 ms waiting for rank 1 \(at collective #\d+ barrier\)/);
    expect(r.ms).toBeLessThan(30_000);
    console.log(`mpi hang: job ended in ${r.ms} ms`);
  });
});

describe.skipIf(!avail.ok)('launchRanks: one API for shm and mpi', () => {
  it('returns the same per-rank results from both backends', async () => {
    const { launchRanks } = await import('../../runtime/comm/index.ts');
    const { fileURLToPath } = await import('node:url');
    const module = fileURLToPath(new URL('./shm-worker-entry.ts', import.meta.url));
    const sc = { mode: 'ulysses', B: 1, S: 13, H: 2, D: 8, anything: true };
    const shm = await launchRanks<ScenarioResult>(2, { backend: 'shm', module, exportName: 'scenario', args: sc });
    const mpi = await launchRanks<ScenarioResult>(2, { backend: 'mpi', module, exportName: 'scenario', args: sc });
    expect(mpi).toEqual(JSON.parse(JSON.stringify(shm))); // JSON transport: Infinity -> null
    expect(shm[0].relL2).toBeLessThan(1e-5);
  });
});
