// Cache + context parallelism (issue 4): the cache engine's probe sums are all-reduced over the ranks
// (float64, rank-order sum, bit-identical everywhere), so every rank takes the same cache decision on
// its own sequence shard, as Cache-DiT does with its all-reduced residual diff.
import type { Communicator } from '../comm/communicator.ts';
import type { ProbeSums } from '../cache/context.ts';
import { ExecutorBlockListRunner, type ExecutorLike } from '../cache/executor-runner.ts';
import type { Stream } from '../cache/engine.ts';
import type { Plan, PlanSegment } from '../plan.ts';

export class ParallelBlockListRunner extends ExecutorBlockListRunner {
  /** probes issued (each one all-reduce of 3 float64) */
  probes = 0;

  constructor(
    private readonly comm: Communicator,
    exec: ExecutorLike,
    plan: Pick<Plan, 'tensors'>,
    segment: PlanSegment,
  ) {
    super(exec, plan, segment);
  }

  override async probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null> {
    const local = await super.probe(prev, cur);
    const buf = Float64Array.of(local?.num ?? 0, local?.den ?? 0, local ? 0 : 1);
    await this.comm.allReduceSum(buf);
    this.probes++;
    // a size mismatch on any rank means no comparison on every rank
    return buf[2]! > 0 ? null : { num: buf[0]!, den: buf[1]! };
  }
}
