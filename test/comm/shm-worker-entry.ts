// Rank entries for launchShm tests (each worker thread imports this module).
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { collectiveChecks, runScenario, type Scenario } from './scenarios.ts';

export async function checks(comm: Communicator): Promise<string[]> {
  return collectiveChecks(comm);
}

export async function scenario(comm: Communicator, sc: Scenario) {
  return runScenario(comm, sc);
}

/** Rank `die` exits its thread abruptly before the collective; the others must fail naming it. */
export async function dies(comm: Communicator, args: { die: number }): Promise<number> {
  await comm.barrier();
  if (comm.rank === args.die) process.exit(3);
  const x = Float32Array.of(comm.rank);
  await comm.allReduceSum(x);
  return x[0];
}

/** Rank `spin` busy-loops forever (never yields); rank `fail` throws. The launcher must still return. */
export async function spinsAfterFailure(comm: Communicator, args: { spin: number; fail: number }): Promise<number> {
  await comm.barrier();
  if (comm.rank === args.spin) for (;;);
  if (comm.rank === args.fail) throw new Error('failing while a peer spins');
  await comm.barrier();
  return 0;
}
