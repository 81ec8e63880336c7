// Validation of a ParallelPlan against a traced component (the lowering itself comes later): every
// error names the model-file location of the op that cannot be split and what to change.
import type { ParallelPlan } from '../dsl/plans.ts';
import { CompileError, type Graph } from '../ir/graph.ts';

export function validateParallel(g: Graph, p: ParallelPlan): void {
  const u = p.ulysses_size ?? 1;
  const r = p.ring_size ?? 1;
  const tp = p.tp_size ?? 1;
  for (const [k, v] of [['ulysses_size', u], ['ring_size', r], ['tp_size', tp]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new CompileError(`parallel plan: ${k} must be a positive integer, got ${v}`);
  }
  if (p.ulysses_anything && r > 1) throw new CompileError('parallel plan: ulysses_anything cannot be combined with ring_size > 1 (Cache-DiT UAA is Ulysses-only)');
  for (const n of g.live()) {
    if (n.op !== 'attention') continue;
    const H = n.attrs.heads as number;
    if (H % tp !== 0) throw new CompileError(`attention with ${H} heads cannot be split over tp=${tp}: use a tp_size that divides ${H}`, n.src || undefined);
    const Hl = H / tp;
    if (u > 1 && Hl % u !== 0) {
      const pad = u - (Hl % u);
      if (pad >= (Hl + pad) / u) throw new CompileError(`attention with ${Hl} heads per tp rank cannot be padded for ulysses=${u} (Cache-DiT needs H_PAD < (H + H_PAD) / W): use a smaller ulysses_size`, n.src || undefined);
    }
    const S = n.shape[1]!;
    const cp = u * r;
    if (cp > 1 && S % cp !== 0 && !p.ulysses_anything) {
      throw new CompileError(`attention over ${S} tokens cannot be split evenly over ${cp} context-parallel ranks: set ulysses_anything (uneven splits) or pick sizes that divide ${S}`, n.src || undefined);
    }
  }
}
