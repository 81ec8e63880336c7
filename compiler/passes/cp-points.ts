// Context-parallel internal split / gather points (CpPlan.internal, docs/architecture.md §3c).
//
// Cache-DiT's Wan plan splits inside the model (`rope` outputs, `blocks.0` hidden_states) and gathers after
// `proj_out`: the patch embedding and the unpatchify run on full tensors on every rank. Here a rank's plan
// comes from the full-size trace replayed into a new graph: a split point's value is followed by a `slice`
// to the rank's token shard (UAA sizes: first ranks +1), a gather point's by an `all_gather` node (lowered to
// `comm.all_gather`), and every op in between is re-inferred on the local shapes.
//
// Only ops that treat tokens independently may consume a token-split value (per-token linears, norms,
// modulation, RoPE, attention queries, elementwise math); anything else (a reshape or a reduction over the
// split axis, a RoPE table that was not split with the tokens) is a CompileError naming the op's model-file
// location, never a silently wrong plan.
import { CompileError, Graph, type Node } from '../ir/graph.ts';
import { BINARY_EW, UNARY_EW } from '../ir/shape.ts';

/** A split point of one rank: `sizes` per rank along `axis` of the point's value. */
export interface CpSplitPoint {
  name: string;
  axis: number;
  sizes: number[];
}

/** A gather point: the value is all-gathered along `axis` to `full` (the full-size trace's extent). */
export interface CpGatherPoint {
  name: string;
  axis: number;
  full: number;
}

export interface CpPoints {
  split: CpSplitPoint[];
  gather: CpGatherPoint[];
}

/** where a point sits in a graph: the value node, or (block streams) the block_in whose input is split */
export interface PointSite {
  node: number;
  /** the stream entering a block list: slice the block_in's input in the list's entry segment */
  stream: boolean;
}

const VALID = '`<block>.hidden` / `<block>.encoder` (the first block of a block list), a component input, a linear / conv module name, or an IR value name';

/** Finds a named point in a traced graph (errors list what names are valid). */
export function findPoint(g: Graph, name: string, what: 'split' | 'gather', where: string): PointSite {
  const live = g.live();
  const m = /^(.*)\.(hidden|encoder)$/.exec(name);
  if (m) {
    const bin = live.find((n) => n.op === 'block_in' && n.name === `${m[1]}.${m[2]}_in`);
    if (bin) {
      if (what === 'gather') throw new CompileError(`${where}: CP gather point '${name}' is a block stream; gather a module output or value instead (e.g. 'proj_out')`);
      if (bin.attrs.entrySegment === undefined) {
        const li = g.lists.find((l) => l.list === bin.attrs.list);
        throw new CompileError(`${where}: CP split point '${name}' is inside block list '${String(bin.attrs.list)}'; only the stream entering its first block (${li?.blocks[0]?.name ?? '?'}) can be split`);
      }
      return { node: bin.id, stream: true };
    }
  }
  const inp = g.inputs.find((i) => i.name === name);
  if (inp) return { node: inp.node, stream: false };
  const mods = live.filter((n) => (n.op === 'linear' || n.op === 'conv2d') && n.attrs.name === name);
  const named = mods.length ? mods : live.filter((n) => n.name === name && n.op !== 'weight');
  if (named.length === 1) return { node: named[0]!.id, stream: false };
  if (named.length > 1) throw new CompileError(`${where}: CP ${what} point '${name}' names ${named.length} values (at ${named.map((n) => n.src).join(', ')}); it must name one`);
  throw new CompileError(`${where}: CP ${what} point '${name}' is not in the component; valid points: ${VALID}`);
}

/** the value a point refers to (block streams: the block_in's input, i.e. the stream before the list) */
export function pointValue(g: Graph, site: PointSite): Node {
  const n = g.node(site.node);
  return site.stream ? g.node(n.inputs[0]!) : n;
}

/** ops that map token rows independently (a token-split input keeps its axis in the output) */
const PER_TOKEN = new Set([
  ...UNARY_EW,
  ...BINARY_EW,
  'linear',
  'layer_norm',
  'rms_norm',
  // tensor parallel ops (tp-lower.ts): per token (a sum over the TP ranks / a row norm over sharded channels)
  'all_reduce',
  'dist_rms_norm',
  'head_rms_norm',
  'ln_modulate',
  'modulate',
  'gate',
  'gate_residual',
  'block_in',
  'block_out',
  'embedding',
  'all_reduce',
]);

/**
 * Replays `g` for `rank`: split points sliced to the rank's shard, gather points all-gathered. `where`
 * prefixes errors (model + component).
 */
export function applyCpPoints(g: Graph, pts: CpPoints, rank: number, where: string): Graph {
  const out = new Graph();
  const map = new Map<number, number>();
  /** new node id -> its token-split axis */
  const splitAxis = new Map<number, number>();
  const splits = new Map<number, { p: CpSplitPoint; stream: boolean }>();
  const gathers = new Map<number, CpGatherPoint>();
  // a point inside a block would change a block list's stream shapes mid-list (one io buffer per list)
  const outsideBlocks = (s: PointSite, name: string, what: string): PointSite => {
    const n = g.node(s.node);
    if (!s.stream && n.block !== undefined) throw new CompileError(`${where}: CP ${what} point '${name}' is inside block '${n.block}'; split the stream entering the list (e.g. '${n.block.replace(/\.\d+$/, '.0')}.hidden') or gather after it`, n.src || undefined);
    return s;
  };
  for (const p of pts.split) {
    const s = outsideBlocks(findPoint(g, p.name, 'split', where), p.name, 'split');
    splits.set(s.node, { p, stream: s.stream });
  }
  for (const p of pts.gather) gathers.set(outsideBlocks(findPoint(g, p.name, 'gather', where), p.name, 'gather').node, p);

  const ctxOf = (n: Node, over: { segment?: string; block?: string | undefined; name?: string } = {}) => {
    const c: { src: string; segment: string; block?: string; name?: string } = { src: n.src, segment: over.segment ?? n.segment };
    const blk = 'block' in over ? over.block : n.block;
    if (blk !== undefined) c.block = blk;
    const nm = over.name ?? n.name;
    if (nm !== undefined) c.name = nm;
    return c;
  };
  const slice = (x: number, p: CpSplitPoint, n: Node, over: { segment?: string; block?: string | undefined } = {}): number => {
    const shape = out.node(x).shape;
    const ax = p.axis < 0 ? p.axis + shape.length : p.axis;
    const full = p.sizes.reduce((a, b) => a + b, 0);
    if (shape[ax] !== full) {
      throw new CompileError(`${where}: CP split point '${p.name}' has ${shape[ax] ?? 'no'} rows on axis ${p.axis} (shape [${shape.join(', ')}]), the split expects ${full}`, n.src || undefined);
    }
    if (splitAxis.has(x)) throw new CompileError(`${where}: CP split point '${p.name}' is already token-split (by an earlier split point)`, n.src || undefined);
    const start = p.sizes.slice(0, rank).reduce((a, b) => a + b, 0);
    const id = out.add('slice', [x], { axis: ax, start, len: p.sizes[rank]! }, ctxOf(n, { ...over, name: `cp.split.${p.name}` })).id;
    splitAxis.set(id, ax);
    return id;
  };
  const bad = (n: Node, why: string): never => {
    throw new CompileError(`${where}: ${n.op} on a token-split value (CP split points ${pts.split.map((p) => `'${p.name}'`).join(', ')}): ${why}`, n.src || undefined);
  };

  for (const n of g.nodes) {
    if (n.dead) continue;
    const ins = n.inputs.map((i) => (i < 0 ? -1 : map.get(i)!));
    const sp = splits.get(n.id);
    if (sp?.stream) ins[0] = slice(ins[0]!, sp.p, n, { segment: n.attrs.entrySegment as string, block: undefined });
    // the token axis of the output, if any input is token-split
    const ax = ins.map((i) => (i >= 0 ? splitAxis.get(i) : undefined));
    let outAxis: number | undefined;
    if (ax.some((a) => a !== undefined)) outAxis = splitAxisOf(n, ins, ax, out, bad);
    const m = out.add(n.op, ins, n.attrs, ctxOf(n));
    let id = m.id;
    if (outAxis !== undefined) splitAxis.set(id, outAxis);
    if (sp && !sp.stream) id = slice(id, sp.p, n);
    const ga = gathers.get(n.id);
    if (ga) {
      const a = splitAxis.get(id);
      const gax = ga.axis < 0 ? ga.axis + m.shape.length : ga.axis;
      if (a === undefined) throw new CompileError(`${where}: CP gather point '${ga.name}' is not token-split (no split point before it)`, n.src || undefined);
      if (a !== gax) throw new CompileError(`${where}: CP gather point '${ga.name}' gathers axis ${ga.axis}, but its tokens are split on axis ${a}`, n.src || undefined);
      id = out.add('all_gather', [id], { axis: gax, full: ga.full, point: ga.name }, ctxOf(n, { name: `cp.gather.${ga.name}` })).id;
    }
    map.set(n.id, id);
  }
  out.inputs = g.inputs.map((i) => ({ name: i.name, node: map.get(i.node)! }));
  out.outputs = g.outputs.map((o) => ({ name: o.name, node: map.get(o.node)! }));
  for (const [k, v] of g.weights) out.weights.set(k, map.get(v)!);
  out.lists = g.lists.map((l) => ({ ...l, blocks: l.blocks.map((b) => ({ ...b })), ports: [...l.ports] }));
  out.segments = [...g.segments];
  return out;
}

/** token axis of `n`'s output given its inputs' token axes; `bad` throws for ops that cannot take split tokens */
function splitAxisOf(n: Node, ins: number[], ax: (number | undefined)[], g: Graph, bad: (n: Node, why: string) => never): number | undefined {
  const shapeOf = (i: number): number[] => g.node(i).shape;
  const a0 = ax[0];
  switch (n.op) {
    case 'all_gather':
      return undefined;
    case 'slice': {
      const rank = shapeOf(ins[0]!).length;
      const sa = (n.attrs.axis as number) < 0 ? (n.attrs.axis as number) + rank : (n.attrs.axis as number);
      if (sa === a0) bad(n, `it slices the split axis ${sa}; move the split point after it`);
      return a0;
    }
    case 'concat':
      // on the split axis: a joint sequence of shards ([text_r | image_r], as FLUX); else per token
      if (new Set(ax).size !== 1) bad(n, 'it joins token-split and unsplit values; split both or neither');
      return a0;
    case 'transpose':
      return a0 === 1 ? 2 : a0 === 2 ? 1 : a0;
    case 'rope_table':
      if (a0 !== 0) bad(n, 'the ids must be split on their row axis 0');
      return 1;
    case 'rope':
    case 'qk_norm_rope': {
      const t = n.op === 'rope' ? 1 : 2;
      const xa = ax[0];
      const ta = ins[t]! >= 0 ? ax[t] : undefined;
      if (ins[t]! >= 0 && (xa === undefined) !== (ta === undefined)) {
        bad(n, xa === undefined ? 'the RoPE table is split but the tokens are not' : 'the tokens are split but the RoPE table is not: add its ids / table to the CP plan internal splits');
      }
      if (ta !== undefined && ((n.attrs.row0 as number) ?? 0) !== 0) bad(n, 'RoPE rows start at row0 > 0 of a split table');
      if (ta !== undefined && ta !== 1) bad(n, 'the RoPE table must be split on its row axis 1');
      return xa;
    }
    case 'attention': {
      // queries carry the output's tokens; keys / values split (Ulysses) or whole (cross attention: exact locally)
      if (ax[1] !== ax[2]) bad(n, 'keys and values must be split alike');
      if (ax[0] === undefined) bad(n, 'the keys are token-split but the queries are not');
      if (ins[3]! >= 0 && ax[3] !== (ax[1] === undefined ? undefined : 1)) bad(n, 'the key mask must be split like the keys');
      return ax[0];
    }
    default:
      break;
  }
  if (!PER_TOKEN.has(n.op)) bad(n, `'${n.op}' does not treat tokens independently (a reshape or reduction over the split axis); move the split point after it or gather before it`);
  const outRank = n.shape.length;
  let res: number | undefined;
  ins.forEach((i, k) => {
    if (i < 0) return;
    const s = shapeOf(i);
    const a = ax[k];
    if (a === undefined) return;
    const aligned = BINARY_EW.has(n.op) ? a + (outRank - s.length) : a;
    if (n.op === 'linear' && a === s.length - 1) bad(n, 'the split axis is the channel axis');
    if (res !== undefined && res !== aligned) bad(n, 'its inputs are split on different axes');
    res = aligned;
  });
  // an unsplit operand must broadcast along the split axis (extent 1 or absent), e.g. a per-batch vector
  if (BINARY_EW.has(n.op) && res !== undefined) {
    ins.forEach((i, k) => {
      if (i < 0 || ax[k] !== undefined) return;
      const s = shapeOf(i);
      const j = res! - (outRank - s.length);
      if (j >= 0 && s[j] !== 1) bad(n, `its other operand [${s.join(', ')}] is not split along axis ${res}`);
    });
  }
  return res;
}
