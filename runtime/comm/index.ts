// Public entry of the communication layer: one launcher for every backend, so callers (the CLI's
// `--world N --comm shm|mpi`, tests, benchmarks) do not depend on which one runs the ranks.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMPILED } from '../package-root.ts';
import { type MpiLaunchResult, launchMpi, mpiAvailable } from './mpi.ts';
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
  // the arguments (plans can be megabytes, beyond what one environment variable may hold) and the results
  // go through files of a folder only the job uses, removed when it ends
  const argsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-mpi-args-'));
  const argsFile = path.join(argsDir, 'args.json');
  fs.writeFileSync(argsFile, JSON.stringify(l.args ?? null));
  try {
    const r: MpiLaunchResult = await launchMpi({
      np: world,
      script: fileURLToPath(new URL(`./mpi-rank-main.${COMPILED ? 'js' : 'ts'}`, import.meta.url)),
      env: {
        DITFORGE_RANK_MODULE: l.module,
        DITFORGE_RANK_EXPORT: l.exportName ?? 'default',
        DITFORGE_RANK_ARGS_FILE: argsFile,
        DITFORGE_RANK_RESULT_DIR: argsDir,
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
    return Array.from({ length: world }, (_, rank) => {
      const f = path.join(argsDir, `rank-${rank}.json`);
      if (!fs.existsSync(f)) throw new Error(`mpi job of ${world} ranks: rank ${rank} wrote no result`);
      return JSON.parse(fs.readFileSync(f, 'utf8')) as T;
    });
  } finally {
    fs.rmSync(argsDir, { recursive: true, force: true });
  }
}
