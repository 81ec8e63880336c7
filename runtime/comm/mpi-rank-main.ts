// Generic per-rank program for launchRanks({ backend: 'mpi' }): imports the module named in
// DITFORGE_RANK_MODULE, calls its export DITFORGE_RANK_EXPORT with (comm, JSON args from
// DITFORGE_RANK_ARGS) and prints `DITFORGE_RESULT {"rank": r, "value": ...}`.
import { pathToFileURL } from 'node:url';
import { runMpiRank } from './mpi.ts';

const mod = process.env.DITFORGE_RANK_MODULE;
const exportName = process.env.DITFORGE_RANK_EXPORT ?? 'default';
const args: unknown = JSON.parse(process.env.DITFORGE_RANK_ARGS ?? 'null');
if (!mod) throw new Error('mpi-rank-main: DITFORGE_RANK_MODULE is not set');

await runMpiRank(async (comm) => {
  const m = (await import(mod.startsWith('file:') ? mod : pathToFileURL(mod).href)) as Record<string, unknown>;
  const fn = m[exportName];
  if (typeof fn !== 'function') throw new Error(`${mod} has no exported function '${exportName}'`);
  const value: unknown = await (fn as (c: typeof comm, a: unknown) => Promise<unknown>)(comm, args);
  process.stdout.write(`DITFORGE_RESULT ${JSON.stringify({ rank: comm.rank, value: value ?? null })}\n`);
});
