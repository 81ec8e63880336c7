// Generic per-rank program for launchRanks({ backend: 'mpi' }): imports the module named in
// DITFORGE_RANK_MODULE, calls its export DITFORGE_RANK_EXPORT with (comm, the JSON args in the file
// DITFORGE_RANK_ARGS_FILE) and writes its result to DITFORGE_RANK_RESULT_DIR/rank-<r>.json (mpirun splits
// long stdout lines, so results do not travel on stdout).
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runMpiRank } from './mpi.ts';

const mod = process.env.DITFORGE_RANK_MODULE;
const exportName = process.env.DITFORGE_RANK_EXPORT ?? 'default';
const argsFile = process.env.DITFORGE_RANK_ARGS_FILE;
const args: unknown = argsFile ? JSON.parse(fs.readFileSync(argsFile, 'utf8')) : null;
if (!mod) throw new Error('mpi-rank-main: DITFORGE_RANK_MODULE is not set');

await runMpiRank(async (comm) => {
  const m = (await import(mod.startsWith('file:') ? mod : pathToFileURL(mod).href)) as Record<string, unknown>;
  const fn = m[exportName];
  if (typeof fn !== 'function') throw new Error(`${mod} has no exported function '${exportName}'`);
  const value: unknown = await (fn as (c: typeof comm, a: unknown) => Promise<unknown>)(comm, args);
  const dir = process.env.DITFORGE_RANK_RESULT_DIR;
  if (!dir) throw new Error('mpi-rank-main: DITFORGE_RANK_RESULT_DIR is not set');
  fs.writeFileSync(path.join(dir, `rank-${comm.rank}.json`), JSON.stringify(value ?? null));
});
