// Cache + context parallelism (issue 4): the cache engine's probe sums are all-reduced over the ranks
// (float64, rank-order sum, bit-identical everywhere), so every rank takes the same cache decision on
// its own sequence shard, as Cache-DiT does with its all-reduced residual diff.
// Under tensor parallelism the T ranks of a tp group hold the same replicated activations: only TP rank 0
// contributes its sums (the others add exact zeros), so the world all-reduce equals the reduction over the
// context-parallel group alone, in CP rank order, bit for bit (summing all T copies would scale both sums by
// T and could change the last bit of their ratio when T is not a power of 2).
import type { Communicator } from '../comm/communicator.ts';
import type { ProbeSums } from '../cache/context.ts';
import { ExecutorBlockListRunner, type ExecutorLike } from '../cache/executor-runner.ts';
import type { Stream } from '../cache/engine.ts';
import type { Plan, PlanSegment } from '../plan.ts';

export class ParallelBlockListRunner extends ExecutorBlockListRunner {
  /** probes issued (each one all-reduce of 3 float64) */
  probes = 0;
  /** whether this rank's sums enter the all-reduce (TP rank 0 of its tp group, see the file comment) */
  private readonly contributes: boolean;

  constructor(
    private readonly comm: Communicator,
    exec: ExecutorLike,
    plan: Pick<Plan, 'tensors' | 'parallel'>,
    segment: PlanSegment,
  ) {
    super(exec, plan, segment);
    const tp = plan.parallel?.tp ?? 1;
    this.contributes = (plan.parallel?.rank ?? 0) % tp === 0;
  }

  override async probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null> {
    const local = await super.probe(prev, cur);
    const own = this.contributes && local;
    const buf = Float64Array.of(own ? local.num : 0, own ? local.den : 0, local ? 0 : 1);
    await this.comm.allReduceSum(buf);
    this.probes++;
    // a size mismatch on any rank means no comparison on every rank
    return buf[2]! > 0 ? null : { num: buf[0]!, den: buf[1]! };
  }
}
