// One rank's ComponentExecutor (runtime/component-runners.ts) of a multi-rank run: the rank's plan of a
// parallel lowering on a ParallelExecutor (inputs split at entry, collectives inside, outputs gathered),
// its share of the checkpoint bound, and caching through the one-rank session over runners whose probe
// sums are all-reduced (Cache-DiT's multi-rank similarity is the one-rank code plus an all-reduce).
import type { Communicator } from '../comm/communicator.ts';
import type { ComponentExecutor } from '../component-runners.ts';
import { bindPlanWeights, type ComponentWeights } from '../io/weights.ts';
import { loadNative } from '../native.ts';
import type { Plan } from '../plan.ts';
import { TransformerCacheSession } from '../pipeline-cache.ts';
import { ParallelBlockListRunner } from './cache.ts';
import { ParallelExecutor } from './executor.ts';

export interface RankExecutor extends ComponentExecutor {
  /** the rank's executor (comm statistics) */
  readonly exec: ParallelExecutor;
}

export function rankExecutor(comm: Communicator, plan: Plan, weights: ComponentWeights, o: { threads?: number } = {}): RankExecutor {
  const pe = new ParallelExecutor(comm, plan, loadNative(), o.threads ? { threads: o.threads } : {});
  bindPlanWeights(pe, plan, weights); // TP: the rank's slices
  return {
    plan,
    exec: pe,
    setInputs(inputs) {
      for (const io of plan.inputs) {
        const v = inputs[io.name];
        if (!v) throw new Error(`${plan.model}/${plan.component} plan input "${io.name}" was not provided`);
        pe.setInput(io.name, v);
      }
    },
    forward: () => pe.forward(),
    output: (name) => pe.output(name),
    cacheSession(opts, request) {
      const s = new TransformerCacheSession<ParallelExecutor>((p, exec, seg) => new ParallelBlockListRunner(comm, exec, p, seg), opts, request);
      s.prepare(plan, pe);
      return { forward: () => s.forward(plan, pe), result: () => s.result() };
    },
  };
}
