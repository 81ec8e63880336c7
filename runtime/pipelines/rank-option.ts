// What a pipeline family takes and gives for a multi-rank run (runtime/pipelines/multi-rank.ts): on a rank,
// its transformer plans of a parallel lowering (one per text length the request uses) run on rank
// executors; the launcher gets the compile requests, the other components' plans and the resolved request.
import type { Communicator } from '../comm/communicator.ts';
import type { ComponentExecutor } from '../component-runners.ts';
import type { ComponentWeights } from '../io/weights.ts';
import { rankExecutor } from '../parallel/rank-executor.ts';
import type { Component, Plan } from '../plan.ts';

export interface RankOption {
  comm: Communicator;
  /** this rank's transformer plan per text token count */
  transformerPlans: Record<number, Plan>;
}

export interface RankPrep {
  /** the transformer compile requests by text token count */
  transformer: Record<number, { model: string; dims: Record<string, number>; config?: Record<string, unknown> }>;
  /** the other components' plans, the same on every rank */
  plans: Partial<Record<Component, Plan | Plan[]>>;
  /** the request with the pipeline's defaults filled in (plain data) */
  opts: Record<string, unknown>;
}

/** the rank executor of the rank's transformer plan for `tokens` text tokens, made once */
export async function rankTransformer(
  made: Map<number, ComponentExecutor>,
  rank: RankOption,
  tokens: number,
  weights: () => Promise<ComponentWeights>,
  threads: number | undefined,
): Promise<ComponentExecutor> {
  let ex = made.get(tokens);
  if (ex) return ex;
  const plan = rank.transformerPlans[tokens];
  if (!plan) throw new Error(`rank ${rank.comm.rank}: no transformer plan for ${tokens} text tokens (have ${Object.keys(rank.transformerPlans).join(', ')})`);
  // a rank's plan may hold its split of the inputs: its ParallelExecutor checks the full sizes it is given
  ex = rankExecutor(rank.comm, plan, await weights(), threads ? { threads } : {});
  made.set(tokens, ex);
  return ex;
}
