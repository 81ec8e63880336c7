// Context-parallel lowering (Ulysses, Cache-DiT §4.1-§4.5) of a component into one plan per rank.
//
// 1. Entry split (the model's CP plan, FLUX: hidden_states / encoder_hidden_states / img_ids / txt_ids):
//    every split input's axis is a plan dim (imageTokens, textTokens); rank r is traced and compiled with
//    its local token counts (even: chunk; UAA: tensor_split, first ranks get +1).
// 2. Every attention op of a rank plan becomes comm points around a head-sharded attention over the
//    full sequence: `comm.all_to_all_qkv` for q, k, v (scatter heads, gather sequence, head padding,
//    FP8 for q and v), `attention` with hReal heads over S_global, `comm.all_to_all_o` (inverse, FP8).
//    Per-rank sequence lengths come from the other ranks' plans (the same attention, by order).
//    ulysses_async: V, Q, K comm ops move right after their last producer (not before an earlier comm op,
//    e.g. a TP all-reduce under CP x TP), issued without waiting; a `comm.wait` precedes the attention.
// 3. Exit gather (`output` on axis 1 for FLUX): recorded in `plan.parallel.gather`.
// Ring / USP (`ring_size` > 1): each attention becomes one `comm.ring_attention` / `comm.usp_attention` op run
// by the TS runtime; a key mask (Qwen-Image) is its fifth tensor and travels with the K/V blocks.
// Internal points (`cp.internal`, Wan: `rope_ids` rows and the stream entering `blocks.0` split, `proj_out`
// gathered): the rank's trace is replayed by cp-points.ts with a slice / an all-gather at those values, so the
// ops before a split run on full tensors. Attention whose keys are whole on every rank (Wan's cross attention
// to the unsplit text) stays local. CN-P: `controlnet_cp` outputs stay sharded, the transformer's
// `cp.residuals` inputs take those shards.
// The gathered q/k/v/o live in four scratch tensors at the end of the arena shared by all attentions
// (each is live only between its attention's comm ops).
// Format: docs/architecture.md §3c.
import type { PlanComponent, Plan, PlanCommInfo, PlanOp, PlanParallel, PlanTensor } from '../../runtime/plan.ts';
import { headPadding, realHeads, type HeadPadPolicy } from '../../runtime/parallel/ulysses.ts';
import { tensorSplitSizes } from '../../runtime/parallel/attention-ref.ts';
import type { CpPlan, ParallelPlan } from '../dsl/plans.ts';
import { CompileError, type Graph } from '../ir/graph.ts';
import { applyCpPoints, findPoint, pointValue } from './cp-points.ts';
import { traceComponent } from '../frontend.ts';
import { KERNEL_IO } from './lower.ts';
import { getModel } from '../registry.ts';

export interface UlyssesRequest {
  component: PlanComponent;
  dims?: Record<string, number>;
  config?: Record<string, unknown>;
  parallel: ParallelPlan;
}

/**
 * compiles one (unlowered) plan for a rank's local dims, with an optional pass over each traced graph
 * (internal CP points); injected so this file does not import index.ts
 */
export type RankCompiler = (dimsOverride: Record<string, number>, graphPass?: (g: Graph) => Graph) => Plan;

interface SplitInfo {
  name: string;
  axis: number;
  /** plan dim of the axis */
  dim: string;
  full: number;
  /** entry split of an input fed from a context-parallel controlnet's sharded output (CN-P) */
  residual?: boolean;
}

interface CpInfo {
  /** entry splits (inputs; the rank is traced with local dims) */
  splits: SplitInfo[];
  /** internal split points (sliced inside the plan, cp-points.ts) */
  internal: SplitInfo[];
  /** internal gather points: name -> axis, full extent */
  internalGather: { name: string; axis: number; full: number }[];
  joints: { name: string; axis: number; dims: string[] }[];
  gather: Record<string, number>;
  sharded: Record<string, number>;
  dims: Record<string, number>;
  /** full-size trace: every attention's heads and key count (trace order), output shapes */
  attn: { heads: number; keys: number }[];
  outputShapes: Map<string, number[]>;
}

/** the CP plan of a component: the request's, else the model's (`cp` / `controlnet_cp`) */
function cpPlanOf(model: string, req: UlyssesRequest): CpPlan | undefined {
  const def = getModel(model);
  if (req.component === 'controlnet') return req.parallel.controlnet_cp ?? def.parallel?.controlnet_cp;
  return req.parallel.cp ?? def.parallel?.cp;
}

/** Entry splits, internal points and gathers of the model's CP plan for the traced full-size component. */
function cpSplits(model: string, req: UlyssesRequest): CpInfo {
  const def = getModel(model);
  const cp = cpPlanOf(model, req);
  const where = `${model} ${req.component}`;
  const field = req.component === 'controlnet' ? 'parallel.controlnet_cp' : 'parallel.cp';
  if (!cp || Object.keys(cp.split).length + Object.keys(cp.residuals ?? {}).length + Object.keys(cp.internal?.split ?? {}).length === 0) {
    throw new CompileError(`${where}: no context-parallel plan (${field}.split or ${field}.internal.split) in the model definition; Ulysses needs one`);
  }
  const traced = traceComponent(def, req.component, { ...(req.dims ? { dims: req.dims } : {}), ...(req.config ? { config: req.config } : {}) });
  const g = traced.graph;
  /** the plan dim of `name`'s axis of extent `full` (cp.dims, else the one *tokens dim of that size) */
  const dimOf = (name: string, axis: number, full: number): string => {
    let dim = cp.dims?.[name];
    if (!dim) {
      const cands = Object.entries(traced.dims).filter(([k, v]) => v === full && /tokens$/i.test(k));
      if (cands.length !== 1) {
        throw new CompileError(`${where}: cannot tell which plan dim '${name}' axis ${axis} (${full}) is; name it in ${field}.dims`);
      }
      dim = cands[0]![0];
    }
    if (traced.dims[dim] !== full) throw new CompileError(`${where}: CP plan says '${name}' axis ${axis} is dim '${dim}' (${traced.dims[dim]}), but it has ${full}`);
    return dim;
  };
  const extent = (name: string, shape: number[], axis: number): number => {
    const full = shape[axis < 0 ? axis + shape.length : axis];
    if (full === undefined) throw new CompileError(`${where}: CP plan splits '${name}' on axis ${axis}, but it has shape [${shape.join(', ')}]`);
    return full;
  };
  const splits: SplitInfo[] = [];
  for (const [entries, residual] of [
    [cp.split, false],
    [cp.residuals ?? {}, true],
  ] as const) {
    for (const [name, axis] of Object.entries(entries)) {
      const inp = g.inputs.find((i) => i.name === name);
      if (!inp) throw new CompileError(`${where}: CP plan splits input '${name}', which the component does not have (inputs: ${g.inputs.map((i) => i.name).join(', ')})`);
      const full = extent(name, g.node(inp.node).shape, axis);
      splits.push({ name, axis, dim: dimOf(name, axis, full), full, ...(residual ? { residual } : {}) });
    }
  }
  const internal: SplitInfo[] = [];
  for (const [name, axis] of Object.entries(cp.internal?.split ?? {})) {
    const v = pointValue(g, findPoint(g, name, 'split', where));
    const full = extent(name, v.shape, axis);
    internal.push({ name, axis, dim: dimOf(name, axis, full), full });
  }
  const internalGather = Object.entries(cp.internal?.gather ?? {}).map(([name, axis]) => {
    const v = pointValue(g, findPoint(g, name, 'gather', where));
    return { name, axis, full: extent(name, v.shape, axis) };
  });
  const joints: CpInfo['joints'] = [];
  for (const [name, j] of Object.entries(cp.joint ?? {})) {
    const inp = g.inputs.find((i) => i.name === name);
    if (!inp) throw new CompileError(`${where}: CP plan splits joint input '${name}', which the component does not have`);
    const ext = g.node(inp.node).shape[j.axis];
    const sum = j.dims.reduce((a, d) => a + (traced.dims[d] ?? NaN), 0);
    if (ext !== sum) throw new CompileError(`${where}: joint input '${name}' axis ${j.axis} has ${ext}, dims ${j.dims.join(' + ')} sum to ${sum}`);
    joints.push({ name, axis: j.axis, dims: j.dims });
  }
  const attn = g
    .live()
    .filter((n) => n.op === 'attention')
    .map((n) => ({ heads: n.attrs.heads as number, keys: g.node(n.inputs[1]!).shape[1]! }));
  const outputShapes = new Map(g.outputs.map((o) => [o.name, g.node(o.node).shape]));
  return { splits, internal, internalGather, joints, gather: cp.gather, sharded: cp.sharded ?? {}, dims: traced.dims, attn, outputShapes };
}

/** module (block) an attention op belongs to, for messages */
function moduleOf(where: { seg: string; block?: string }, op: PlanOp): string {
  return `${where.block ?? where.seg} attention${op.src ? ` (${op.src})` : ''}`;
}

interface AttnSite {
  seg: number;
  block: number; // -1: segment ops
  index: number;
  op: PlanOp;
  where: { seg: string; block?: string };
}

function attentionSites(plan: Plan): AttnSite[] {
  const out: AttnSite[] = [];
  plan.segments.forEach((s, si) => {
    if (s.ops) s.ops.forEach((op, oi) => op.k === 'attention' && out.push({ seg: si, block: -1, index: oi, op, where: { seg: s.name } }));
    s.blocks?.forEach((b, bi) => b.ops.forEach((op, oi) => op.k === 'attention' && out.push({ seg: si, block: bi, index: oi, op, where: { seg: s.name, block: b.name } })));
  });
  return out;
}

/** Whether the sizes need UAA (uneven token splits or a head count Cache-DiT's padding rule rejects). */
export function ulyssesNeedsAnything(model: string, req: Omit<UlyssesRequest, 'parallel'>, world: number): boolean {
  const { splits, internal, attn } = cpSplits(model, { ...req, parallel: {} });
  if ([...splits, ...internal].some((s) => s.full % world !== 0)) return true;
  for (const a of attn) {
    try {
      headPadding(a.heads, world, 'cache-dit');
    } catch {
      return true;
    }
  }
  return false;
}

/** every `comm.all_gather` op of a plan (internal gather points) in plan order, with its point's name */
function allGatherOps(plan: Plan): { op: PlanOp; point: string }[] {
  return plan.segments
    .flatMap((s) => [...(s.ops ?? []), ...(s.blocks ?? []).flatMap((b) => b.ops)])
    .filter((o) => o.k === 'comm.all_gather')
    .map((op) => ({ op, point: op.comm?.module ?? '' }));
}

/**
 * Per-rank context-parallel plans (index = rank): Ulysses (`ulysses_size`), ring (`ring_size`) or USP
 * (both; mesh [ring, ulysses]). Errors (CompileError): no CP plan, a split that is not divisible without
 * `ulysses_anything` (Ulysses only), a head count that cannot be padded (Cache-DiT's rule without UAA),
 * attention whose keys are split but queries are not, an output split but neither gathered nor sharded,
 * tp_size > 1 (compiler/passes/tp-lower.ts lowers TP and calls this per TP rank with tp_size 1).
 * Attention whose keys / values are whole on every rank (Wan's cross attention to the unsplit text) stays
 * a local attention of the rank's queries: exact, no comm (Cache-DiT passes cp_config=None for it).
 */
export function lowerContextParallel(model: string, req: UlyssesRequest, compileRank: RankCompiler): Plan[] {
  const p = req.parallel;
  const U = p.ulysses_size ?? 1;
  const Rg = p.ring_size ?? 1;
  for (const [k, v] of [['ulysses_size', U], ['ring_size', Rg]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new CompileError(`parallel plan: ${k} must be a positive integer, got ${v}`);
  }
  if ((p.tp_size ?? 1) > 1) {
    throw new CompileError(`parallel plan: tp_size > 1 is not lowered to multi-rank plans yet (Ulysses, ring and USP are); got tp ${p.tp_size}`);
  }
  if (p.ulysses_anything && Rg > 1) throw new CompileError('parallel plan: ulysses_anything cannot be combined with ring_size > 1 (Cache-DiT UAA is Ulysses-only)');
  // Cache-DiT's async Ulysses patches the Ulysses attention only; ring / USP would silently run synchronous
  if (p.ulysses_async && Rg > 1) throw new CompileError('parallel plan: ulysses_async cannot be combined with ring_size > 1 (async Ulysses overlaps Ulysses all-to-alls only; ring and USP attention run synchronously)');
  const W = U * Rg;
  const kind: PlanParallel['kind'] = Rg === 1 ? 'ulysses' : U === 1 ? 'ring' : 'usp';
  const anything = !!p.ulysses_anything;
  const float8 = !!p.ulysses_float8 && U > 1;
  const async = !!p.ulysses_async && kind === 'ulysses';
  const policy: HeadPadPolicy = anything ? 'any' : 'cache-dit';
  const cp = cpSplits(model, req);
  const { splits, internal, joints, gather } = cp;
  const where = `${model} ${req.component}`;

  // per-rank local sizes of every split dim
  const dimSizes = new Map<string, number[]>();
  for (const s of [...splits, ...internal]) {
    if (dimSizes.has(s.dim)) continue;
    const what0 = internal.includes(s) ? `split point '${s.name}'` : `input '${s.name}'`;
    if (!anything && s.full % W !== 0) {
      const what = kind === 'ulysses' ? `ulysses=${W}` : `${W} context-parallel ranks (${kind}: ulysses ${U} x ring ${Rg})`;
      const fix = kind === 'ulysses' ? 'set ulysses_anything (UAA, uneven splits) or use a world size that divides it' : 'use a world size that divides it (UAA is Ulysses-only)';
      throw new CompileError(`${where}: ${what0} has ${s.full} tokens (${s.dim}), not divisible by ${what}: ${fix}`);
    }
    if (s.full < W) throw new CompileError(`${where}: ${what0} has ${s.full} tokens (${s.dim}), fewer than the ${W} ranks`);
    dimSizes.set(s.dim, tensorSplitSizes(s.full, W));
  }
  for (const s of internal) {
    if (splits.some((e) => e.dim === s.dim)) throw new CompileError(`${where}: dim '${s.dim}' is split both at entry ('${splits.find((e) => e.dim === s.dim)!.name}') and at internal point '${s.name}'; use one`);
  }
  const plans: Plan[] = [];
  for (let r = 0; r < W; r++) {
    const over: Record<string, number> = {};
    for (const s of splits) over[s.dim] = dimSizes.get(s.dim)![r]!;
    const points = { split: internal.map((s) => ({ name: s.name, axis: s.axis, sizes: dimSizes.get(s.dim)! })), gather: cp.internalGather };
    const pass = W > 1 && internal.length ? (g: Graph) => applyCpPoints(g, points, r, where) : undefined;
    plans.push(W === 1 ? compileRank({}) : compileRank(over, pass));
  }
  const sites = plans.map(attentionSites);
  for (let r = 1; r < W; r++) {
    if (sites[r]!.length !== sites[0]!.length) throw new CompileError(`${where}: rank plans disagree on the number of attentions (${sites[0]!.length} vs ${sites[r]!.length})`);
  }
  if (sites[0]!.length !== cp.attn.length) throw new Error(`internal: ${where}: ${sites[0]!.length} attention ops in the rank plans, ${cp.attn.length} in the trace`);
  // keys whole on every rank (cross attention to unsplit states): a local attention, no comm
  const local = sites[0]!.map((_, k) => sites.every((rs) => rs[k]!.op.i[2] === cp.attn[k]!.keys));
  // checks on rank 0's ops (the same modules on every rank)
  sites[0]!.forEach((s, k) => {
    if (local[k] || W === 1) return;
    const [, Sq, Sk, H] = s.op.i as [number, number, number, number];
    if (Sq !== Sk) throw new CompileError(`${model}: ${moduleOf(s.where, s.op)} is cross attention (${Sq} queries, ${Sk} keys) with split keys, which the Ulysses lowering does not split yet`);
    try {
      headPadding(H, U, policy);
    } catch (e) {
      throw new CompileError(
        `${model}: ${moduleOf(s.where, s.op)} with ${H} heads cannot be split over ulysses=${U}: ${(e as Error).message.replace(/^Ulysses: /, '')}${anything || Rg > 1 ? '' : '; set ulysses_anything (UAA) to allow it'}`,
      );
    }
  });

  const splitRec: PlanParallel['split'] = {};
  for (const s of splits) splitRec[s.name] = { axis: s.axis, sizes: dimSizes.get(s.dim)!, ...(s.residual ? { residual: true } : {}) };
  for (const j of joints) {
    const parts = j.dims.map((d) => {
      const sz = dimSizes.get(d);
      if (!sz) throw new CompileError(`${where}: joint input '${j.name}' uses dim '${d}', which no split input has`);
      return sz;
    });
    splitRec[j.name] = { axis: j.axis, sizes: parts[0]!.map((_, r) => parts.reduce((a, p) => a + p[r]!, 0)), parts };
  }
  const outRec = (what: string, entries: Record<string, number>): Record<string, { axis: number; sizes: number[] }> => {
    const rec: Record<string, { axis: number; sizes: number[] }> = {};
    for (const [name, axis] of Object.entries(entries)) {
      if (!plans[0]!.outputs.some((o) => o.name === name)) throw new CompileError(`${where}: CP plan ${what} output '${name}', which the component does not have`);
      rec[name] = { axis, sizes: plans.map((pl) => pl.outputs.find((o) => o.name === name)!.shape[axis]!) };
    }
    return rec;
  };
  const gatherRec = outRec('gathers', gather);
  const shardedRec = outRec('shards', cp.sharded);
  // an output that is token-split on a rank must be gathered or declared sharded (never silently local)
  for (const o of plans[0]!.outputs) {
    const full = cp.outputShapes.get(o.name)!;
    if (W > 1 && full.join() !== o.shape.join() && !gatherRec[o.name] && !shardedRec[o.name]) {
      throw new CompileError(`${where}: output '${o.name}' is token-split on a rank ([${o.shape.join(', ')}] of [${full.join(', ')}]); gather it (cp.gather / cp.internal.gather) or declare it sharded (cp.sharded)`);
    }
  }
  // internal gather points: per-rank local sizes from the rank plans (same order on every rank)
  const gOps = plans.map(allGatherOps);
  const gatherSizes = gOps[0]!.map((_, k) => gOps.map((ops) => ops[k]!.op.i[1]!));
  const internalRec: NonNullable<PlanParallel['internal']> = { split: {}, gather: {} };
  for (const s of internal) internalRec.split[s.name] = { axis: s.axis, sizes: dimSizes.get(s.dim)! };
  for (const g of cp.internalGather) {
    const k = gOps[0]!.findIndex((x) => x.point === g.name);
    if (k < 0) throw new Error(`internal: ${where}: no comm.all_gather for gather point '${g.name}'`);
    internalRec.gather[g.name] = { axis: g.axis, sizes: gatherSizes[k]! };
  }

  return plans.map((plan, r) =>
    rewriteRank(plan, r, W, sites, local, gatherSizes, {
      kind,
      ulysses: U,
      ring: Rg,
      anything,
      float8,
      async,
      policy,
      split: splitRec,
      gather: gatherRec,
      sharded: shardedRec,
      internal: internalRec,
    }),
  );
}

function rewriteRank(
  plan: Plan,
  rank: number,
  W: number,
  sites: AttnSite[][],
  /** per attention (index k): keys whole on every rank, left a local attention */
  local: boolean[],
  /** per `comm.all_gather` op (plan order): every rank's local size */
  gatherSizes: number[][],
  o: {
    kind: PlanParallel['kind'];
    ulysses: number;
    ring: number;
    anything: boolean;
    float8: boolean;
    async: boolean;
    policy: HeadPadPolicy;
    split: PlanParallel['split'];
    gather: PlanParallel['gather'];
    sharded: NonNullable<PlanParallel['sharded']>;
    internal: NonNullable<PlanParallel['internal']>;
  },
): Plan {
  const out: Plan = structuredClone(plan);
  out.tag = `${plan.tag}-${o.kind === 'ulysses' ? 'u' : o.kind === 'ring' ? 'r' : `u${o.ulysses}r`}${W}r${rank}`;
  out.parallel = {
    kind: o.kind,
    world: W,
    rank,
    ulysses: o.ulysses,
    ring: o.ring,
    anything: o.anything,
    float8: o.float8,
    async: o.async,
    headPadPolicy: o.policy,
    split: o.split,
    gather: o.gather,
    ...(Object.keys(o.sharded).length ? { sharded: o.sharded } : {}),
    ...(Object.keys(o.internal.split).length + Object.keys(o.internal.gather).length ? { internal: o.internal } : {}),
  };
  // internal gather points: the comm info the runtime's all-gather needs
  allGatherOps(out).forEach(({ op, point }, k) => {
    op.comm = { group: 'cp', sizes: gatherSizes[k]!, hLocal: 0, hPad: 0, hReal: 0, float8: false, wait: true, stream: 'o', module: point };
  });
  // the native executor never sees comm ops (nativeStagePlan), so they are no kernels
  out.kernels = out.kernels.filter((k) => !k.startsWith('comm.'));
  if (W === 1) return out;
  const tensors = new Map<number, PlanTensor>(out.tensors.map((t) => [t.id, t]));
  let nextId = Math.max(...out.tensors.map((t) => t.id)) + 1;
  const base = Math.ceil(out.arenaFloats / 16) * 16;
  let maxScratch = 0;
  const mySites = sites[rank]!;
  // scratch views are created per size; 4 regions at the arena end
  const scratchViews = new Map<string, number>();
  const view = (slot: number, numel: number, shape: number[]): number => {
    const key = `${slot}:${numel}`;
    let id = scratchViews.get(key);
    if (id === undefined) {
      id = nextId++;
      scratchViews.set(key, id);
      const t: PlanTensor = { id, base: 'arena', offset: -1 - slot, numel: Math.max(1, numel), shape, name: `ulysses.${['q', 'k', 'v', 'o', 'mask'][slot]}g` };
      out.tensors.push(t);
      tensors.set(id, t);
    }
    return id;
  };

  // group sites by op list, rewrite back to front so indices stay valid
  const lists = new Map<string, { ops: PlanOp[]; items: { s: AttnSite; k: number }[] }>();
  mySites.forEach((s, k) => {
    if (local[k]) return;
    const seg = out.segments[s.seg]!;
    const ops = s.block < 0 ? seg.ops! : seg.blocks![s.block]!.ops;
    const key = `${s.seg}:${s.block}`;
    if (!lists.has(key)) lists.set(key, { ops, items: [] });
    lists.get(key)!.items.push({ s, k });
  });

  const range = (id: number): [number, number] | null => {
    const t = tensors.get(id);
    if (!t || t.base !== 'arena' || t.offset < 0) return null;
    return [t.offset, t.offset + t.numel];
  };
  const touches = (op: PlanOp, r: [number, number]): boolean =>
    op.t.some((id) => {
      if (id < 0) return false;
      const x = range(id);
      return !!x && x[0] < r[1] && r[0] < x[1];
    });

  for (const { ops, items } of lists.values()) {
    for (const { s, k } of [...items].reverse()) {
      const op = ops[s.index]!;
      const [B, Sq, , H, D, qS, kS, vS, oS] = op.i as number[];
      const sizes = sites.map((rs) => rs[k]!.op.i[1]!);
      if (sizes[rank] !== Sq) throw new Error(`internal: ulysses sizes mismatch at ${s.where.block}`);
      if (o.kind !== 'ulysses') {
        // ring / USP: one host op (K/V around the ring with LSE merge; USP: Ulysses all-to-alls inside); a key
        // mask [B, S_local] (t[4]) travels with its K/V block, so no gather op (USP gathers it in the runtime)
        const [q0, k0, v0, m0, o0] = op.t as number[];
        const hu = o.kind === 'usp' ? headPadding(H!, o.ulysses, o.policy) : { hPad: 0, hLocal: H! };
        ops.splice(s.index, 1, {
          k: o.kind === 'ring' ? 'comm.ring_attention' : 'comm.usp_attention',
          t: [q0!, k0!, v0!, o0!, ...(m0! >= 0 ? [m0!] : [])],
          i: [B!, H!, D!, qS!, kS!, vS!, oS!],
          f: [...op.f],
          ...(op.src ? { src: op.src } : {}),
          comm: { group: o.kind, sizes, hLocal: hu.hLocal, hPad: hu.hPad, hReal: H!, float8: o.float8, wait: true, stream: 'o', module: s.where.block ?? s.where.seg },
        });
        continue;
      }
      const { hPad, hLocal } = headPadding(H!, W, o.policy);
      const hReal = realHeads(H!, hLocal, rank);
      const sG = sizes.reduce((a, b) => a + b, 0);
      const numel = B! * sG * hReal * D!;
      maxScratch = Math.max(maxScratch, B! * sG * Math.max(hReal, 1) * D!);
      const shape = [B!, sG, hReal * D!];
      const [q, kk, v, mask, oo] = op.t as number[];
      const [qg, kg, vg, og] = [0, 1, 2, 3].map((slot) => view(slot, numel, shape)) as [number, number, number, number];
      // a key mask [B, S_local] is all-gathered into [B, S_global] (slot 4; every rank joins the collective)
      const maskg = mask! >= 0 ? view(4, B! * sG, [B!, sG]) : -1;
      if (mask! >= 0) maxScratch = Math.max(maxScratch, B! * sG);
      const module = s.where.block ?? s.where.seg;
      const info = (stream: PlanCommInfo['stream'], wait: boolean): PlanCommInfo => ({
        group: 'ulysses',
        sizes,
        hLocal,
        hPad,
        hReal,
        float8: o.float8 && stream !== 'k',
        wait,
        stream,
        module,
      });
      const a2a = (stream: 'q' | 'k' | 'v', x: number, xg: number, stride: number, wait: boolean): PlanOp => ({
        k: 'comm.all_to_all_qkv',
        t: [x, xg],
        i: [B!, H!, D!, stride],
        f: [],
        ...(op.src ? { src: op.src } : {}),
        comm: info(stream, wait),
      });
      const gatherMask: PlanOp[] =
        mask! >= 0 ? [{ k: 'comm.all_gather_mask', t: [mask!, maskg], i: [B!], f: [], ...(op.src ? { src: op.src } : {}), comm: info('k', true) }] : [];
      const attn: PlanOp[] =
        hReal > 0 ? [{ k: 'attention', t: [qg, kg, vg, maskg, og], i: [B!, sG, sG, hReal, D!, hReal * D!, hReal * D!, hReal * D!, hReal * D!], f: [...op.f], ...(op.src ? { src: op.src } : {}) }] : [];
      const oOp: PlanOp = { k: 'comm.all_to_all_o', t: [og, oo], i: [B!, H!, D!, oS!], f: [], ...(op.src ? { src: op.src } : {}), comm: info('o', true) };
      if (!o.async) {
        ops.splice(s.index, 1, ...gatherMask, a2a('q', q, qg, qS!, true), a2a('k', kk, kg, kS!, true), a2a('v', v, vg, vS!, true), ...attn, oOp);
        continue;
      }
      // async: each of V, Q, K right after its last producer (Cache-DiT order V, Q, K when tied), but never
      // before an earlier comm op or attention of the list (`floor`): a TP collective (`comm.all_reduce`,
      // `comm.all_gather_tp` on the tp group) is then never issued while an all-to-all of
      // the cp group is in flight, so each group sees one collective at a time in plan order on every rank
      // (no interleaving of the two groups inside a backend that serialises all calls, e.g. MPI without
      // MPI_THREAD_MULTIPLE), and an earlier attention's all-to-alls (sharing the scratch slots) come first.
      // Producers may be comm ops too (a TP all-reduce or all-gather writing q, k or v).
      let floor = -1;
      for (let j = s.index - 1; j >= 0 && floor < 0; j--) if (ops[j]!.k.startsWith('comm.') || ops[j]!.k === 'attention') floor = j;
      ops.splice(s.index, 1, { k: 'comm.wait', t: [], i: [], f: [] }, ...gatherMask, ...attn, oOp);
      const lastTouch = (id: number): number => {
        const r = range(id)!;
        for (let j = s.index - 1; j > floor; j--) if (touches(ops[j]!, r)) return j;
        return floor;
      };
      const place = [
        { stream: 'v' as const, x: v, xg: vg, st: vS! },
        { stream: 'q' as const, x: q, xg: qg, st: qS! },
        { stream: 'k' as const, x: kk, xg: kg, st: kS! },
      ].map((c) => ({ ...c, at: lastTouch(c.x) }));
      // insert back to front (ties keep V, Q, K order)
      for (const c of [...place].sort((a, b) => b.at - a.at || 'kqv'.indexOf(a.stream) - 'kqv'.indexOf(b.stream))) {
        ops.splice(c.at + 1, 0, a2a(c.stream, c.x, c.xg, c.st, false));
      }
    }
  }
  // place the scratch regions
  for (const t of out.tensors) if (t.base === 'arena' && t.offset < 0) t.offset = base + (-1 - t.offset) * maxScratch;
  const slots = [...scratchViews.keys()].some((k) => k.startsWith('4:')) ? 5 : 4;
  if (maxScratch > 0) out.arenaFloats = base + slots * maxScratch;
  if (o.async) for (const { ops } of lists.values()) overlapOutputAllToAll(ops, range);
  return out;
}

type Range = [number, number];

/** arena ranges an op reads and writes (kernel catalogue slots; comm ops: t[0] read, t[1] written) */
function opIO(op: PlanOp, range: (id: number) => Range | null): { reads: Range[]; writes: Range[] } | null {
  let outs: number[];
  if (op.k === 'comm.wait') return { reads: [], writes: [] };
  if (op.k === 'comm.all_to_all_qkv' || op.k === 'comm.all_to_all_o' || op.k === 'comm.all_gather_mask') outs = [1];
  else if (op.k.startsWith('comm.')) return null;
  else outs = KERNEL_IO[op.k]?.outs ?? (op.k.startsWith('ew_') ? [op.t.length - 1] : []);
  if (!outs.length) return null; // unknown kernel: never moved across
  const reads: Range[] = [];
  const writes: Range[] = [];
  op.t.forEach((id, slot) => {
    if (id < 0) return;
    const r = range(id);
    if (!r) return; // weights
    (outs.includes(slot) ? writes : reads).push(r);
  });
  return { reads, writes };
}

const meets = (a: Range[], b: Range[]): boolean => a.some((x) => b.some((y) => x[0] < y[1] && y[0] < x[1]));

/**
 * ulysses_async: the output all-to-all is issued without waiting (a `comm.wait` goes right before the first
 * op that touches o), and ops before the attention that nothing up to there depends on (FLUX single block:
 * proj_mlp) move behind the issue, so they compute while O is in flight (Cache-DiT's async single blocks).
 * A move is made only when no op it jumps over reads what it writes or writes what it reads or writes
 * (arena ranges after memory planning), and it does not touch o.
 */
function overlapOutputAllToAll(ops: PlanOp[], range: (id: number) => Range | null): void {
  for (let io = 0; io < ops.length; io++) {
    const oOp = ops[io]!;
    if (oOp.k !== 'comm.all_to_all_o' || !oOp.comm || !oOp.comm.wait) continue;
    const oRange = range(oOp.t[1]!);
    if (!oRange) continue;
    oOp.comm = { ...oOp.comm, wait: false };
    // the region of this attention: back to the previous O all-to-all (or the list start)
    let start = io - 1;
    while (start >= 0 && ops[start]!.k !== 'comm.all_to_all_o') start--;
    start++;
    let dest = io; // moved ops go right after index `dest`
    for (let i = io - 1; i >= start; i--) {
      const x = ops[i]!;
      const xio = opIO(x, range);
      if (!xio || x.k.startsWith('comm.')) continue;
      if (meets(xio.reads, [oRange]) || meets(xio.writes, [oRange])) continue;
      let ok = true;
      for (let j = i + 1; j <= io && ok; j++) {
        const y = opIO(ops[j]!, range);
        if (!y || meets(y.reads, xio.writes) || meets(y.writes, xio.reads) || meets(y.writes, xio.writes)) ok = false;
      }
      if (!ok) continue;
      ops.splice(i, 1);
      io--;
      dest--;
      ops.splice(dest + 1, 0, x);
    }
    // wait before the first later op that touches o (or at the end of the list)
    let w = dest + 1;
    while (w < ops.length) {
      const y = opIO(ops[w]!, range);
      if (!y || meets(y.reads, [oRange]) || meets(y.writes, [oRange]) || ops[w]!.k.startsWith('comm.')) break;
      w++;
    }
    ops.splice(w, 0, { k: 'comm.wait', t: [], i: [], f: [] });
    io = w;
  }
}
