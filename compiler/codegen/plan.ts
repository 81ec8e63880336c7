// plan.json codegen (docs/architecture.md §3, runtime/plan.ts).
import { PLAN_FORMAT, type Plan, type PlanOp, type PlanSegment, type PlanTensor } from '../../runtime/plan.ts';
import type { Graph } from '../ir/graph.ts';
import type { LOp, Lowered, TRef } from '../passes/lower.ts';
import { planMemory, type MemoryPlan } from '../passes/memory.ts';

export interface PlanMeta {
  model: string;
  component: Plan['component'];
  tag: string;
  dims: Record<string, number>;
  config: Record<string, unknown>;
  flops: number;
}

/** Orders lowered ops as the plan lists them: segments in order, blocks in order within lists. */
export function orderOps(g: Graph, lw: Lowered): { segments: { name: string; list?: string; pattern?: number; ops?: LOp[]; blocks?: { name: string; ops: LOp[] }[] }[]; flat: LOp[] } {
  const segments: { name: string; list?: string; pattern?: number; ops?: LOp[]; blocks?: { name: string; ops: LOp[] }[] }[] = [];
  const flat: LOp[] = [];
  for (const s of g.segments) {
    const li = g.lists.find((l) => l.segment === s);
    if (li) {
      const blocks = li.blocks.map((b) => ({ name: b.name, ops: lw.ops.filter((o) => o.segment === s && o.block === b.name) }));
      const stray = lw.ops.filter((o) => o.segment === s && !li.blocks.some((b) => b.name === o.block));
      if (stray.length) throw new Error(`internal: ${stray.length} ops in block-list segment '${s}' outside any block`);
      segments.push({ name: s, list: li.list, pattern: li.pattern, blocks });
      for (const b of blocks) flat.push(...b.ops);
    } else {
      const ops = lw.ops.filter((o) => o.segment === s);
      segments.push({ name: s, ops });
      flat.push(...ops);
    }
  }
  if (flat.length !== lw.ops.length) {
    const lost = lw.ops.filter((o) => !flat.includes(o)).map((o) => `${o.k}@${o.segment}`);
    throw new Error(`internal: ops outside every segment: ${lost.slice(0, 5).join(', ')}`);
  }
  return { segments, flat };
}

export function emitPlan(g: Graph, lw: Lowered, meta: PlanMeta, opts: { reuse?: boolean } = {}): { plan: Plan; memory: MemoryPlan; lowered: Lowered } {
  const { segments, flat } = orderOps(g, lw);
  const memory = planMemory(lw, flat, opts);
  const tensors: PlanTensor[] = [];
  const ids = new Map<string, number>();
  const tid = (r: TRef | null): number => {
    if (!r) return -1;
    const s = lw.storages[r.st]!;
    const off = s.kind === 'arena' ? s.offset! + r.off : r.off;
    const key = `${s.kind}|${s.kind === 'weight' ? s.weight : ''}|${off}|${r.numel}|${r.shape.join('x')}`;
    let id = ids.get(key);
    if (id === undefined) {
      id = tensors.length;
      ids.set(key, id);
      const t: PlanTensor = { id, base: s.kind, offset: off, numel: r.numel, shape: [...r.shape] };
      if (s.kind === 'weight') t.weight = s.weight!;
      t.name = r.name ?? s.name;
      tensors.push(t);
    }
    return id;
  };
  const inputs = lw.inputs.map((x) => ({ name: x.name, tensor: tid(x.ref), shape: [...x.ref.shape] }));
  const weights = lw.weights.map((w) => ({ name: w.name, shape: [...w.shape], tensor: tid(w.ref) }));
  const kernels: string[] = [];
  const op = (o: LOp): PlanOp => {
    if (!kernels.includes(o.k)) kernels.push(o.k);
    const p: PlanOp = { k: o.k, t: o.t.map(tid), i: [...o.i], f: o.f.map((v) => Math.fround(v)) };
    if (o.src) p.src = o.src;
    // parallel-lower fills in the group sizes of a CP gather point; the point's name travels from here
    if (o.point) p.comm = { group: 'cp', sizes: [], hLocal: 0, hPad: 0, hReal: 0, float8: false, wait: true, stream: 'o', module: o.point };
    return p;
  };
  const planSegs: PlanSegment[] = segments.map((s) => {
    if (s.blocks) {
      const io = lw.io.find((x) => x.segment === s.name)!;
      const seg: PlanSegment = { name: s.name, list: s.list!, pattern: s.pattern!, blocks: s.blocks.map((b) => ({ name: b.name, ops: b.ops.map(op) })), io: { hidden: tid(io.hidden) } };
      if (io.encoder) seg.io!.encoder = tid(io.encoder);
      return seg;
    }
    return { name: s.name, ops: s.ops!.map(op) };
  });
  const outputs = lw.outputs.map((x) => ({ name: x.name, tensor: tid(x.ref), shape: [...x.ref.shape] }));
  const elementwise = [...lw.elementwise.entries()].filter(([k]) => kernels.includes(k)).map(([name, e]) => ({ name, arity: e.arity, expr: e.expr })).sort((a, b) => a.name.localeCompare(b.name));
  const plan: Plan = {
    format: PLAN_FORMAT,
    model: meta.model,
    component: meta.component,
    tag: meta.tag,
    dims: meta.dims,
    config: meta.config,
    inputs,
    outputs,
    weights,
    arenaFloats: memory.arenaFloats,
    tensors,
    segments: planSegs,
    kernels,
    elementwise,
    flops: meta.flops,
  };
  return { plan, memory, lowered: lw };
}
