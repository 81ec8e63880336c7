// Rank program for the MPI tests (started by mpirun through launchMpi). Modes (argv[2]):
//   run            collective checks + the distributed-attention scenarios for this world size
//   throw <r>      rank r throws after one collective        (expect: job aborted, rank r named)
//   die <r>        rank r exits abruptly (SIGKILL to itself)  (expect: mpirun reports rank r)
//   hang <r>       rank r never joins the next collective    (expect: watchdog aborts, bounded)
import { runMpiRank } from '../../runtime/comm/mpi.ts';
import { collectiveChecks, runScenario, scenariosFor } from './scenarios.ts';

const [mode = 'run', who = '-1'] = process.argv.slice(2);
const target = Number(who);

await runMpiRank(async (comm) => {
  if (mode === 'run') {
    const bad = await collectiveChecks(comm);
    const results: Record<string, unknown> = {};
    for (const { name, sc } of scenariosFor(comm.worldSize)) results[name] = await runScenario(comm, sc);
    if (comm.rank === 0) console.log('DITFORGE_RESULT ' + JSON.stringify({ world: comm.worldSize, bad, results, threadMultiple: comm.threadMultiple }));
    else if (bad.length) console.log('DITFORGE_RESULT ' + JSON.stringify({ rank: comm.rank, bad }));
    return;
  }
  await comm.barrier();
  if (comm.rank === target) {
    if (mode === 'throw') throw new Error(`deliberate failure on rank ${comm.rank}`);
    if (mode === 'die') process.kill(process.pid, 'SIGKILL');
    if (mode === 'hang') await new Promise((r) => setTimeout(r, 600_000));
  }
  const W = comm.worldSize;
  await comm.allToAll(new Float32Array(256 * W), new Array(W).fill(256), new Float32Array(256 * W), new Array(W).fill(256));
  await comm.barrier();
});
