// Public entry of the communication layer: one launcher for every backend, so callers (the CLI's
// `--world N --comm shm|mpi`, tests, benchmarks) do not depend on which one runs the ranks.
import { fileURLToPath } from 'node:url';
import { type MpiLaunchResult, launchMpi, mpiAvailable, parseRankResults } from './mpi.ts';
import { type ShmOptions, launchShm } from './shm.ts';

export * from './communicator.ts';
export { ShmCommunicator, createShmWorld, launchShm, runShm, type ShmOptions, type ShmWorld } from './shm.ts';
export { MpiCommunicator, launchMpi, mpiAvailable, mpirunCommand, parseRankResults, runMpiRank } from './mpi.ts';
export { subgroup, GroupCommunicator } from './group.ts';
export * from './fp8.ts';

export type CommBackend = 'shm' | 'mpi';

export interface LaunchRanks extends ShmOptions {
  backend: CommBackend;
  /** Module path whose export is called once per rank with (comm, args). */
  module: string;
  exportName?: string;
  /** Structured-clonable (shm) / JSON-serialisable (mpi) argument. */
  args?: unknown;
  /** mpi only: kill the job after this long (ms). */
  jobTimeoutMs?: number;
}

/**
 * Starts `world` ranks on `backend` and returns every rank's result (rank order). shm: worker threads
 * of this process; mpi: `mpirun -np world` child processes (results come back as JSON). Fails with an
 * error naming the failing rank (shm) or carrying mpirun's report (mpi).
 */
export async function launchRanks<T>(world: number, l: LaunchRanks): Promise<T[]> {
  if (l.backend === 'shm') return launchShm<T>(world, { ...l, module: l.module });
  if (l.backend !== 'mpi') throw new Error(`unknown comm backend '${String(l.backend)}' (shm | mpi)`);
  const avail = mpiAvailable();
  if (!avail.ok) throw new Error(`--comm mpi unavailable: ${avail.reason}`);
  const r: MpiLaunchResult = await launchMpi({
    np: world,
    script: fileURLToPath(new URL('./mpi-rank-main.ts', import.meta.url)),
    env: {
      DITFORGE_RANK_MODULE: l.module,
      DITFORGE_RANK_EXPORT: l.exportName ?? 'default',
      DITFORGE_RANK_ARGS: JSON.stringify(l.args ?? null),
      ...(l.timeoutMs ? { DITFORGE_COMM_TIMEOUT_MS: String(l.timeoutMs) } : {}),
    },
    timeoutMs: l.jobTimeoutMs,
  });
  if (r.code !== 0 || r.timedOut) {
    const all = r.stderr + r.stdout;
    const tail = all.split('\n').filter((s) => /rank|abort|signal|Error/i.test(s)).slice(-12).join('\n');
    // mpirun names the first process that died as `Process name: [[job,step],RANK]` + `Exit code: N`
    const died = /Process name:\s*\[\[\d+,\d+\],(\d+)\][\s\S]*?(?:Exit code:\s*(-?\d+)|Signal:\s*(\S+))?/.exec(all);
    const who = died ? `rank ${died[1]} died${died[2] ? ` (exit code ${died[2]})` : died[3] ? ` (signal ${died[3]})` : ''}; ` : '';
    throw new Error(`mpi job of ${world} ranks failed (${who}exit ${r.code}${r.timedOut ? ', killed after the job timeout' : ''}):\n${tail}`);
  }
  const rows = parseRankResults<{ rank: number; value: T }>(r.stdout).sort((a, b) => a.rank - b.rank);
  if (rows.length !== world) throw new Error(`mpi job returned ${rows.length} results for ${world} ranks`);
  return rows.map((x) => x.value);
}
