// Lowering: fused IR -> kernel launches over storages (arena buffers / weights) with views.
// Chunk/split/slice become views where the consumer takes strides (adaLN chunk rows, q/k/v rows),
// copies (`copy3d`) where it does not. Block lists read/write their io tensors; a block's final
// producer writes straight into the io tensor when liveness allows (no copy).
import { CompileError, numel, type Graph, type Node } from '../ir/graph.ts';

export interface Storage {
  id: number;
  numel: number;
  kind: 'arena' | 'weight';
  weight?: string;
  name: string;
  /** kept alive for the whole plan (inputs, outputs, block-list io, cross-segment values) */
  pinned: boolean;
  role?: 'input' | 'output' | 'io';
  /** arena offset in floats (memory plan) */
  offset?: number;
}

export interface Layout {
  st: number;
  off: number;
  shape: number[];
  strides: number[];
}

export interface TRef {
  st: number;
  off: number;
  numel: number;
  shape: number[];
  name?: string;
}

export interface LOp {
  k: string;
  t: (TRef | null)[];
  i: number[];
  f: number[];
  src: string;
  segment: string;
  block?: string;
  /** t slots this op writes */
  outs: number[];
  /** input t slots the output may alias */
  aliasOk: number[];
  /** copy into a block-list io tensor (candidate for elimination) */
  ioCopy?: boolean;
  /** comm.all_gather: the CP gather point it implements (the tensors' names can be a reused slot's) */
  point?: string;
  dead?: boolean;
}

export interface Lowered {
  storages: Storage[];
  ops: LOp[];
  inputs: { name: string; ref: TRef }[];
  outputs: { name: string; ref: TRef }[];
  weights: { name: string; shape: number[]; ref: TRef }[];
  /** io tensors of each block list */
  io: { list: string; segment: string; hidden: TRef; encoder?: TRef }[];
  elementwise: Map<string, { arity: number; expr: string }>;
}

export function contiguousStrides(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

export function isContiguous(l: Layout): boolean {
  const c = contiguousStrides(l.shape);
  return l.shape.every((d, i) => d === 1 || l.strides[i] === c[i]);
}

/** floats from the first to one past the last element of a view */
function span(l: Layout): number {
  if (l.shape.some((d) => d === 0)) return 0;
  return l.shape.reduce((a, d, i) => a + (d - 1) * l.strides[i]!, 0) + 1;
}

/** Merge a (src, dst) pair of same-shape layouts to <= 3 dims for copy3d. */
function copy3dDims(src: Layout, dst: Layout): { dims: number[]; xs: number[]; ys: number[] } | null {
  const idx = src.shape.map((_, i) => i).filter((i) => src.shape[i] !== 1);
  let dims = idx.map((i) => src.shape[i]!);
  let xs = idx.map((i) => src.strides[i]!);
  let ys = idx.map((i) => dst.strides[i]!);
  for (let i = dims.length - 2; i >= 0; i--) {
    if (xs[i] === dims[i + 1]! * xs[i + 1]! && ys[i] === dims[i + 1]! * ys[i + 1]!) {
      dims = [...dims.slice(0, i), dims[i]! * dims[i + 1]!, ...dims.slice(i + 2)];
      xs = [...xs.slice(0, i), xs[i + 1]!, ...xs.slice(i + 2)];
      ys = [...ys.slice(0, i), ys[i + 1]!, ...ys.slice(i + 2)];
    }
  }
  if (dims.length === 0) return { dims: [1, 1, 1], xs: [0, 0, 1], ys: [0, 0, 1] };
  if (xs[xs.length - 1] !== 1 || ys[ys.length - 1] !== 1 || dims.length > 3) return null;
  while (dims.length < 3) {
    dims = [1, ...dims];
    xs = [0, ...xs];
    ys = [0, ...ys];
  }
  return { dims, xs, ys };
}

export const KERNEL_IO: Record<string, { outs: number[]; alias: number[] }> = {
  linear: { outs: [3], alias: [5] },
  layer_norm: { outs: [3], alias: [0] },
  ln_modulate: { outs: [3], alias: [] },
  rms_norm: { outs: [2], alias: [0] },
  rms_sumsq: { outs: [1], alias: [] },
  rms_norm_apply: { outs: [3], alias: [0] },
  gate_residual: { outs: [3], alias: [0] },
  rope: { outs: [3], alias: [] },
  qk_norm_rope: { outs: [4], alias: [] },
  attention: { outs: [4], alias: [] },
  attention_bias: { outs: [5], alias: [] },
  t5_position_bias: { outs: [1], alias: [] },
  timestep_embedding: { outs: [1], alias: [] },
  rope_table: { outs: [1, 2], alias: [] },
  embedding: { outs: [2], alias: [] },
  masked_mean: { outs: [2], alias: [] },
  copy3d: { outs: [1], alias: [] },
  transpose: { outs: [1], alias: [] },
  conv2d: { outs: [3], alias: [] },
  conv3d: { outs: [3], alias: [] },
  group_norm: { outs: [3], alias: [] },
  upsample_nearest2x: { outs: [1], alias: [] },
  add: { outs: [2], alias: [0, 1] },
  mul: { outs: [2], alias: [0, 1] },
  silu: { outs: [1], alias: [0] },
  gelu_tanh: { outs: [1], alias: [0] },
  // tensor parallel (docs/architecture.md §3c): run by the TS runtime between native stages
  'comm.all_reduce': { outs: [1], alias: [0] },
  'comm.all_gather_tp': { outs: [1], alias: [] },
  // context parallel internal gather point (compiler/passes/cp-points.ts), run by the TS runtime
  'comm.all_gather': { outs: [1], alias: [] },
};

export function lower(g: Graph): Lowered {
  const storages: Storage[] = [];
  const ops: LOp[] = [];
  const layouts = new Map<number, Layout>();
  const elementwise = new Map<string, { arity: number; expr: string }>();
  const ioStorage = new Map<string, number>();
  const ioInfo: Lowered['io'] = [];

  const newStorage = (n: number, name: string, kind: 'arena' | 'weight' = 'arena', weight?: string): number => {
    const s: Storage = { id: storages.length, numel: n, kind, name, pinned: false };
    if (weight !== undefined) s.weight = weight;
    storages.push(s);
    return s.id;
  };
  const alloc = (shape: number[], name: string): Layout => ({ st: newStorage(numel(shape), name), off: 0, shape: [...shape], strides: contiguousStrides(shape) });
  const ref = (l: Layout, name?: string): TRef => {
    const r: TRef = { st: l.st, off: l.off, numel: span(l), shape: [...l.shape] };
    if (name !== undefined) r.name = name;
    return r;
  };
  const lay = (id: number): Layout => {
    const l = layouts.get(id);
    if (!l) throw new Error(`internal: IR value ${id} (${g.node(id).op}) has no layout`);
    return l;
  };

  let cur: Node;
  const emit = (k: string, t: (TRef | null)[], i: number[], f: number[], extra: Partial<LOp> = {}, where?: { segment: string; block?: string }): LOp => {
    const io = KERNEL_IO[k] ?? (k.startsWith('ew_') ? { outs: [t.length - 1], alias: t.slice(0, -1).map((_, j) => j) } : undefined);
    if (!io) throw new Error(`internal: unknown kernel ${k}`);
    for (const v of i) if (!Number.isSafeInteger(v)) throw new CompileError(`internal: non-integer kernel argument ${v} for ${k}`, cur.src);
    const op: LOp = { k, t, i, f, src: cur.src, segment: where?.segment ?? cur.segment, outs: io.outs, aliasOk: io.alias, ...extra };
    const blk = where ? where.block : cur.block;
    if (blk !== undefined) op.block = blk;
    ops.push(op);
    return op;
  };
  const copy = (src: Layout, dst: Layout, extra: Partial<LOp> = {}, where?: { segment: string; block?: string }): void => {
    const d = copy3dDims(src, dst);
    if (!d) throw new CompileError(`cannot express a copy of view [${src.shape.join(', ')}] strides [${src.strides.join(', ')}] as copy3d`, cur.src);
    emit('copy3d', [ref(src), ref(dst)], [d.dims[0]!, d.dims[1]!, d.dims[2]!, d.xs[0]!, d.xs[1]!, d.ys[0]!, d.ys[1]!], [], extra, where);
  };
  const materialize = (l: Layout, name: string): Layout => {
    if (isContiguous(l)) return l;
    const out = alloc(l.shape, name);
    copy(l, out);
    return out;
  };
  const contig = (id: number): Layout => materialize(lay(id), `${g.node(id).name ?? 'v' + id}.contig`);
  /** [B, S, C] view with unit channel stride and uniform token rows -> row stride */
  const rowStride = (l: Layout): number | null => {
    if (l.shape.length !== 3 || l.strides[2] !== 1) return null;
    const [B, S, C] = l.shape as [number, number, number];
    const rs = S > 1 ? l.strides[1]! : B > 1 ? l.strides[0]! : C;
    if (B > 1 && l.strides[0] !== S * rs) return null;
    return rs;
  };
  const rows = (id: number): { l: Layout; stride: number } => {
    const l = lay(id);
    const rs = rowStride(l);
    if (rs !== null) return { l, stride: rs };
    const m = materialize(l, `${g.node(id).name ?? 'v' + id}.rows`);
    return { l: m, stride: m.shape[2]! };
  };
  /** [B, C] per-batch vector view -> batch stride */
  const batchVec = (id: number): { l: Layout; stride: number } => {
    const l = lay(id);
    const C = l.shape[l.shape.length - 1]!;
    if (l.strides[l.shape.length - 1] === 1) return { l, stride: l.shape[0]! > 1 ? l.strides[0]! : C };
    const m = materialize(l, `v${id}.vec`);
    return { l: m, stride: C };
  };
  /** broadcast an input to `shape` (stride-0 view) and materialize it */
  const expandTo = (id: number, shape: number[]): Layout => {
    const l = lay(id);
    if (l.shape.join() === shape.join()) return materialize(l, `v${id}.contig`);
    const r = shape.length - l.shape.length;
    const strides = shape.map((d, i) => {
      const j = i - r;
      if (j < 0) return 0;
      return l.shape[j] === d ? l.strides[j]! : 0;
    });
    return materialize({ st: l.st, off: l.off, shape: [...shape], strides }, `v${id}.expand`);
  };
  /** per-batch vector [B, C] broadcast over the tokens of [B, S, C], materialized */
  const expandVec = (id: number, shape: number[]): Layout => {
    const l = lay(id);
    return materialize({ st: l.st, off: l.off, shape: [...shape], strides: [l.strides[0]!, 0, l.strides[l.strides.length - 1]!] }, `v${id}.expand`);
  };
  const opt = (id: number | undefined, f: (id: number) => Layout): TRef | null => (id === undefined || id < 0 ? null : ref(f(id)));
  // one io storage per block list: [encoder | hidden] (encoder first, like FLUX's joint sequence, so a
  // batch-1 concat([encoder, hidden], tokens) is a view and the split at a block's end needs no copy)
  const portShapes = new Map<string, number[]>();
  for (const n of g.nodes) if ((n.op === 'block_in' || n.op === 'block_out') && !n.dead) portShapes.set(`${n.attrs.list as string}:${n.attrs.port as string}`, n.shape);
  const ioFor = (list: string, port: string, shape: number[]): Layout => {
    let st = ioStorage.get(list);
    const encShape = portShapes.get(`${list}:encoder`);
    const hidShape = portShapes.get(`${list}:hidden`)!;
    const encN = encShape ? numel(encShape) : 0;
    if (st === undefined) {
      st = newStorage(encN + numel(hidShape), `${list}.io`);
      storages[st]!.pinned = true;
      storages[st]!.role = 'io';
      ioStorage.set(list, st);
      const li = g.lists.find((x) => x.list === list)!;
      const e: Lowered['io'][number] = { list, segment: li.segment, hidden: { st, off: encN, numel: numel(hidShape), shape: [...hidShape], name: `${list}.hidden` } };
      if (encShape) e.encoder = { st, off: 0, numel: encN, shape: [...encShape], name: `${list}.encoder` };
      ioInfo.push(e);
    }
    return { st, off: port === 'hidden' ? encN : 0, shape: [...shape], strides: contiguousStrides(shape) };
  };
  const ewOp = (expr: string, inputs: Layout[], consts: number[], out: Layout): void => {
    const name = `ew_${fnv(`${inputs.length}|${expr}`)}`;
    if (inputs.length > 7) throw new CompileError(`elementwise chain with ${inputs.length} inputs (at most 7)`, cur.src);
    elementwise.set(name, { arity: inputs.length, expr });
    emit(name, [...inputs.map((l) => ref(l)), ref(out)], [numel(out.shape)], consts);
  };

  const users = g.users();
  /** kernels that write token rows with an explicit row stride: t slot of y, i slot of yStride */
  const STRIDED_OUT: Record<string, { t: number; i: number }> = { attention: { t: 4, i: 8 }, attention_bias: { t: 5, i: 8 }, rope: { t: 3, i: 5 }, qk_norm_rope: { t: 4, i: 5 } };
  /** Lets the producer of concat input `id` write straight into its slice `dst` of the concat output. */
  const writeInPlace = (id: number, concat: Node, dst: Layout): boolean => {
    const src = lay(id);
    const pn = g.node(id);
    if ((users.get(id) ?? []).length !== 1 || g.isOutput(id) || pn.segment !== concat.segment || pn.block !== concat.block) return false;
    if (src.off !== 0 || !isContiguous(src) || storages[src.st]!.numel !== numel(src.shape) || storages[src.st]!.kind !== 'arena') return false;
    const rs = rowStride(dst);
    if (rs === null && !isContiguous(dst)) return false;
    let w = -1;
    for (let j = ops.length - 1; j >= 0; j--) {
      if (ops[j]!.t.some((r) => r && r.st === src.st)) {
        w = j;
        break;
      }
    }
    const op = ops[w];
    if (!op || ops.slice(0, w).some((o) => o.t.some((r) => r && r.st === src.st))) return false;
    // any single-output kernel can write a contiguous slice; strided ones any uniform-row slice
    if (isContiguous(dst) && op.outs.length === 1) {
      const slot = op.outs[0]!;
      if (op.t[slot]?.st !== src.st || op.t.some((r, k) => k !== slot && r && r.st === src.st)) return false;
      op.t[slot] = ref(dst);
      return true;
    }
    const so = STRIDED_OUT[op.k];
    if (!so || op.t[so.t]?.st !== src.st || op.t.some((r, k) => k !== so.t && r && r.st === src.st)) return false;
    if (rs === null) return false;
    op.t[so.t] = ref(dst);
    op.i[so.i] = rs;
    return true;
  };

  /** concat whose inputs already tile one contiguous range of a storage, in order: a view */
  const concatView = (n: Node): Layout | null => {
    const ins = n.inputs.map((i) => lay(i));
    const st = ins[0]!.st;
    if (storages[st]!.kind !== 'arena') return null;
    const L: Layout = { st, off: ins[0]!.off, shape: [...n.shape], strides: contiguousStrides(n.shape) };
    const ax = (n.attrs.axis as number) < 0 ? (n.attrs.axis as number) + n.shape.length : (n.attrs.axis as number);
    let pos = 0;
    for (const l of ins) {
      if (l.st !== st || !isContiguous(l)) return null;
      if (l.off !== L.off + pos * L.strides[ax]!) return null;
      const sl: Layout = { st, off: l.off, shape: [...l.shape], strides: L.strides };
      if (!isContiguous(sl)) return null;
      pos += l.shape[ax]!;
    }
    return L;
  };

  const inputs: Lowered['inputs'] = [];
  const weights: Lowered['weights'] = [];

  for (const n of g.nodes) {
    if (n.dead) continue;
    cur = n;
    const A = n.attrs as Record<string, any>;
    const I = n.inputs;
    const nm = n.name ?? `${n.op}${n.id}`;
    const out = (): Layout => {
      const l = alloc(n.shape, nm);
      layouts.set(n.id, l);
      return l;
    };
    switch (n.op) {
      case 'input': {
        const l = out();
        storages[l.st]!.pinned = true;
        storages[l.st]!.role = 'input';
        inputs.push({ name: A.name as string, ref: ref(l, A.name as string) });
        break;
      }
      case 'weight': {
        const st = newStorage(numel(n.shape), A.name as string, 'weight', A.name as string);
        const l: Layout = { st, off: 0, shape: [...n.shape], strides: contiguousStrides(n.shape) };
        layouts.set(n.id, l);
        weights.push({ name: A.name as string, shape: [...n.shape], ref: ref(l, A.name as string) });
        break;
      }
      case 'slice': {
        const l = lay(I[0]!);
        const ax = (A.axis as number) < 0 ? (A.axis as number) + l.shape.length : (A.axis as number);
        const shape = [...l.shape];
        shape[ax] = A.len as number;
        layouts.set(n.id, { st: l.st, off: l.off + (A.start as number) * l.strides[ax]!, shape, strides: [...l.strides] });
        break;
      }
      case 'reshape': {
        const l = contig(I[0]!);
        layouts.set(n.id, { st: l.st, off: l.off, shape: [...n.shape], strides: contiguousStrides(n.shape) });
        break;
      }
      case 'concat': {
        const v = concatView(n);
        if (v) {
          layouts.set(n.id, v);
          break;
        }
        const o = out();
        const ax = (A.axis as number) < 0 ? (A.axis as number) + n.shape.length : (A.axis as number);
        let pos = 0;
        for (const i of I) {
          const src = lay(i);
          const shape = [...o.shape];
          shape[ax] = src.shape[ax]!;
          const dst: Layout = { st: o.st, off: o.off + pos * o.strides[ax]!, shape, strides: o.strides };
          // an input that appears more than once (repeat_kv's copies of one head) is copied each time: its
          // producer can write straight into one slice only
          const once = I.indexOf(i) === I.lastIndexOf(i);
          if (!(once && writeInPlace(i, n, dst))) copy(src, dst);
          pos += src.shape[ax]!;
        }
        break;
      }
      case 'block_in': {
        const io = ioFor(A.list as string, A.port as string, n.shape);
        if (A.entrySegment !== undefined) {
          const src = lay(I[0]!);
          if (src.st !== io.st) copy(src, io, { ioCopy: true }, { segment: A.entrySegment as string });
        }
        layouts.set(n.id, io);
        break;
      }
      case 'block_out': {
        const io = ioFor(A.list as string, A.port as string, n.shape);
        const src = lay(I[0]!);
        if (!(src.st === io.st && src.off === 0 && isContiguous(src))) copy(src, io, { ioCopy: true });
        layouts.set(n.id, io);
        break;
      }
      case 'linear': {
        const x = contig(I[0]!);
        const W = lay(I[1]!);
        const K = x.shape[x.shape.length - 1]!;
        const N = W.shape[0]!;
        const M = numel(x.shape) / K;
        const e = A.epilogue as number;
        if (e === 3) {
          const gv = I[3]! >= 0 ? batchVec(I[3]!) : null;
          const r = contig(I[4]!);
          const o = out();
          const S = gv ? numel(r.shape) / (r.shape[0]! * N) : 1;
          emit('linear', [ref(x), ref(W), opt(I[2], lay), ref(o), gv ? ref(gv.l) : null, ref(r)], [M, N, K, 3, S, gv ? gv.stride : 0], []);
        } else {
          const o = out();
          emit('linear', [ref(x), ref(W), opt(I[2], lay), ref(o), null, null], [M, N, K, e, 1, 0], []);
        }
        break;
      }
      case 'layer_norm': {
        const x = contig(I[0]!);
        const C = x.shape[x.shape.length - 1]!;
        emit('layer_norm', [ref(x), opt(I[1], lay), opt(I[2], lay), ref(out())], [numel(x.shape) / C, C], [A.eps as number]);
        break;
      }
      case 'rms_norm': {
        const x = contig(I[0]!);
        const C = x.shape[x.shape.length - 1]!;
        emit('rms_norm', [ref(x), opt(I[1], lay), ref(out())], [numel(x.shape) / C, C], [A.eps as number]);
        break;
      }
      case 'ln_modulate': {
        const x = contig(I[0]!);
        const sh = batchVec(I[1]!);
        const sc = batchVec(I[2]!);
        const [B, S, C] = x.shape as [number, number, number];
        emit('ln_modulate', [ref(x), ref(sh.l), ref(sc.l), ref(out())], [B * S, C, S, sh.stride, sc.stride], [A.eps as number]);
        break;
      }
      case 'modulate': {
        const x = contig(I[0]!);
        const shF = expandVec(I[1]!, n.shape);
        const scF = expandVec(I[2]!, n.shape);
        ewOp('((a0 * (1.0f + a2)) + a1)', [x, shF, scF], [], out());
        break;
      }
      case 'gate': {
        const gv = expandVec(I[0]!, n.shape);
        emit('mul', [ref(gv), ref(contig(I[1]!)), ref(out())], [numel(n.shape)], []);
        break;
      }
      case 'gate_residual': {
        const r = contig(I[0]!);
        const gv = batchVec(I[1]!);
        const x = contig(I[2]!);
        const [B, S, C] = r.shape as [number, number, number];
        emit('gate_residual', [ref(r), ref(gv.l), ref(x), ref(out())], [B * S, C, S, gv.stride], []);
        break;
      }
      case 'rope':
      case 'qk_norm_rope': {
        const x = rows(I[0]!);
        const [B, S, C] = n.shape as [number, number, number];
        const H = A.heads as number;
        const D = C / H;
        const tId = n.op === 'rope' ? I[1]! : I[2]!;
        let cos: TRef | null = null;
        let sin: TRef | null = null;
        if (tId >= 0) {
          const tl = contig(tId);
          const St = tl.shape[1]!;
          const r0 = (A.row0 as number) ?? 0;
          cos = { st: tl.st, off: tl.off + r0 * D, numel: S * D, shape: [S, D] };
          sin = { st: tl.st, off: tl.off + (St + r0) * D, numel: S * D, shape: [S, D] };
        }
        const o = out();
        // i[6] = 1: rotate-half pairs (absent = interleaved)
        const ints = [B, S, H, D, x.stride, C, ...(A.half ? [1] : [])];
        if (n.op === 'rope') emit('rope', [ref(x.l), cos, sin, ref(o)], ints, []);
        else emit('qk_norm_rope', [ref(x.l), ref(lay(I[1]!)), cos, sin, ref(o)], ints, [A.eps as number]);
        break;
      }
      case 'rope_table': {
        const ids = contig(I[0]!);
        const o = out();
        const [, S, D] = n.shape as [number, number, number];
        const axes = A.axes as number[];
        if (axes.length > 4) throw new CompileError(`rope_table supports at most 4 axes, got ${axes.length}`, n.src);
        const d = [0, 1, 2, 3].map((j) => axes[j] ?? 0);
        emit('rope_table', [ref(ids), { st: o.st, off: 0, numel: S * D, shape: [S, D] }, { st: o.st, off: S * D, numel: S * D, shape: [S, D] }], [S, ids.shape[1]!, ...d], [A.theta as number]);
        break;
      }
      case 'attention':
      case 'attention_bias': {
        // attention: t = [q, k, v, keyMask, o]; attention_bias: t = [q, k, v, bias, keyMask, o] and the causal
        // flag as a 10th int
        const q = rows(I[0]!);
        const k = rows(I[1]!);
        const v = rows(I[2]!);
        const [B, Sq, C] = n.shape as [number, number, number];
        const Sk = g.node(I[1]!).shape[1]!;
        const H = A.heads as number;
        const ints = [B, Sq, Sk, H, C / H, q.stride, k.stride, v.stride, C];
        const extra = [opt(I[3], contig)];
        if (n.op === 'attention_bias') {
          ints.push(A.causal ? 1 : 0);
          if (A.kvHeads) ints.push(A.kvHeads as number);
          extra.push(opt(I[4], contig));
        }
        emit(n.op, [ref(q.l), ref(k.l), ref(v.l), ...extra, ref(out())], ints, [A.scale as number]);
        break;
      }
      case 't5_position_bias': {
        const [H, Sq, Sk] = n.shape as [number, number, number];
        emit('t5_position_bias', [ref(contig(I[0]!)), ref(out())], [H, Sq, Sk, A.numBuckets as number, A.maxDistance as number, A.bidirectional ? 1 : 0], []);
        break;
      }
      case 'timestep_embedding': {
        const t = contig(I[0]!);
        emit('timestep_embedding', [ref(t), ref(out())], [n.shape[0]!, n.shape[1]!, A.flip ? 1 : 0], [A.scale as number, A.shift as number, A.maxPeriod as number]);
        break;
      }
      case 'embedding': {
        const ids = contig(I[0]!);
        const tb = lay(I[1]!);
        emit('embedding', [ref(ids), ref(tb), ref(out())], [numel(ids.shape), tb.shape[1]!, tb.shape[0]!], []);
        break;
      }
      case 'masked_mean': {
        const x = contig(I[0]!);
        const [B, S, C] = x.shape as [number, number, number];
        emit('masked_mean', [ref(x), ref(contig(I[1]!)), ref(out())], [B, S, C], []);
        break;
      }
      case 'conv2d': {
        const x = contig(I[0]!);
        const W = lay(I[1]!);
        const [N, Ci, H, Wd] = x.shape as [number, number, number, number];
        emit('conv2d', [ref(x), ref(W), opt(I[2], lay), ref(out())], [N, Ci, H, Wd, W.shape[0]!, W.shape[2]!, W.shape[3]!, A.stride as number, A.pad as number, A.padEnd as number], []);
        break;
      }
      case 'conv3d': {
        const x = contig(I[0]!);
        const W = lay(I[1]!);
        const [, Ci, H, Wd] = x.shape as [number, number, number, number];
        const [Co, , kt, kh, kw] = W.shape as [number, number, number, number, number];
        emit('conv3d', [ref(x), ref(W), opt(I[2], lay), ref(out())], [n.shape[0]!, Ci, H, Wd, Co, kt, kh, kw, A.stride as number, A.pad as number], []);
        break;
      }
      case 'group_norm': {
        const x = contig(I[0]!);
        const [N, C] = x.shape as [number, number];
        emit('group_norm', [ref(x), opt(I[1], lay), opt(I[2], lay), ref(out())], [N, C, numel(x.shape) / (N * C), A.groups as number, A.silu ? 1 : 0], [A.eps as number]);
        break;
      }
      case 'upsample_nearest2x': {
        const x = contig(I[0]!);
        const [N, C, H, W] = x.shape as [number, number, number, number];
        emit('upsample_nearest2x', [ref(x), ref(out())], [N * C, H, W], []);
        break;
      }
      case 'transpose': {
        const x = contig(I[0]!);
        const [B, R, C] = x.shape as [number, number, number];
        emit('transpose', [ref(x), ref(out())], [B, R, C], []);
        break;
      }
      case 'add':
      case 'mul':
        emit(n.op, [ref(contig(I[0]!)), ref(contig(I[1]!)), ref(out())], [numel(n.shape)], []);
        break;
      case 'silu':
      case 'gelu_tanh':
        emit(n.op, [ref(contig(I[0]!)), ref(out())], [numel(n.shape)], []);
        break;
      case 'all_gather': {
        // [outer, n_local, inner] -> [outer, full, inner]; parallel-lower attaches the per-rank sizes
        const x = contig(I[0]!);
        const ax = (A.axis as number) < 0 ? (A.axis as number) + x.shape.length : (A.axis as number);
        emit('comm.all_gather', [ref(x), ref(out())], [numel(x.shape.slice(0, ax)), x.shape[ax]!, numel(x.shape.slice(ax + 1))], [], { point: A.point as string });
        break;
      }
      case 'all_reduce':
        emit('comm.all_reduce', [ref(contig(I[0]!)), ref(out())], [numel(n.shape)], []);
        break;
      case 'tp_all_gather': {
        // [rows, n] per rank -> [rows, T*n] (rank r's channels at r*n)
        const x = contig(I[0]!);
        const nl = x.shape[x.shape.length - 1]!;
        emit('comm.all_gather_tp', [ref(x), ref(out())], [numel(x.shape) / nl, nl, 1], []);
        break;
      }
      case 'dist_rms_norm': {
        // Cache-DiT DistributedRMSNorm: native float64 per-row sums of squares of the rank's C channels,
        // all-reduced over the tp group (i[1] = 1: the floats hold float64; the only host work), then the
        // native normalise-and-scale with the rank's weight slice
        const x = contig(I[0]!);
        const C = x.shape[x.shape.length - 1]!;
        const M = numel(x.shape) / C;
        const ss = ref(alloc([2 * M], `${nm}.sumsq`));
        emit('rms_sumsq', [ref(x), ss], [M, C], []);
        emit('comm.all_reduce', [ss, ss], [2 * M, 1], []);
        emit('rms_norm_apply', [ref(x), ss, opt(I[1], lay), ref(out())], [M, C, A.full as number], [A.eps as number]);
        break;
      }
      case 'ew': {
        const ins = I.map((i) => expandTo(i, n.shape));
        ewOp(A.expr as string, ins, A.consts as number[], out());
        break;
      }
      default:
        throw new CompileError(`internal: cannot lower op '${n.op}'`, n.src);
    }
  }

  const outputs: Lowered['outputs'] = [];
  for (const o of g.outputs) {
    cur = g.node(o.node);
    let l = lay(o.node);
    const s = storages[l.st]!;
    if (!isContiguous(l) || s.kind !== 'arena' || s.role === 'input' || s.role === 'io' || outputs.some((x) => x.ref.st === l.st) || l.off !== 0 || numel(l.shape) !== s.numel) {
      const c = alloc(l.shape, o.name);
      copy(l, c, {}, { segment: g.segments[g.segments.length - 1]! });
      l = c;
    }
    storages[l.st]!.pinned = true;
    storages[l.st]!.role = 'output';
    outputs.push({ name: o.name, ref: ref(l, o.name) });
  }

  const lw: Lowered = { storages, ops, inputs, outputs, weights, io: ioInfo, elementwise };
  eliminateIoCopies(lw);
  lw.ops = lw.ops.filter((o) => !o.dead);
  return lw;
}

function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * Copies `S -> io` are removed when S's producers can write into io directly: S is an arena buffer of
 * its own, fully covered by io copies with one constant offset, all of its uses sit between its first
 * producer and the last copy, and that io range is neither read nor written in that window (except
 * in an operand the producer may alias).
 */
function eliminateIoCopies(lw: Lowered): void {
  const ops = lw.ops;
  const scopeKey = (o: LOp): string => `${o.segment}|${o.block ?? ''}`;
  const sources = new Set<number>();
  for (const o of ops) if (o.ioCopy && !o.dead) sources.add(o.t[0]!.st);
  for (const sId of [...sources].sort((a, b) => a - b)) {
    const S = lw.storages[sId]!;
    if (S.kind !== 'arena' || S.pinned) continue;
    const copies: number[] = [];
    ops.forEach((o, j) => {
      if (o.ioCopy && !o.dead && o.t[0]!.st === sId) copies.push(j);
    });
    const cps = copies.map((j) => ops[j]!);
    const D = cps[0]!.t[1]!.st;
    const delta = cps[0]!.t[1]!.off - cps[0]!.t[0]!.off;
    if (!cps.every((c) => c.t[1]!.st === D && c.t[1]!.off - c.t[0]!.off === delta && c.i[0] === 1 && c.i[1] === 1 && c.i[2] === c.t[0]!.numel && scopeKey(c) === scopeKey(cps[0]!))) continue;
    const ranges = cps.map((c) => [c.t[0]!.off, c.t[0]!.off + c.t[0]!.numel] as const).sort((a, b) => a[0] - b[0]);
    let cover = 0;
    let ok = true;
    for (const [a, b] of ranges) {
      if (a !== cover) ok = false;
      cover = b;
    }
    if (!ok || cover !== S.numel || delta < 0 || delta + S.numel > lw.storages[D]!.numel) continue;
    const last = copies[copies.length - 1]!;
    let first = -1;
    for (let j = 0; j < ops.length && ok; j++) {
      const o = ops[j]!;
      if (o.dead || copies.includes(j)) continue;
      o.t.forEach((r, slot) => {
        if (!r || r.st !== sId) return;
        if (j > last) ok = false;
        if (o.outs.includes(slot) && first < 0) first = j;
        if (first < 0) ok = false; // read before the first write
      });
    }
    if (!ok || first < 0) continue;
    const lo = delta;
    const hi = delta + S.numel;
    for (let j = first; j <= last && ok; j++) {
      const o = ops[j]!;
      if (o.dead || copies.includes(j)) continue;
      if (scopeKey(o) !== scopeKey(cps[0]!)) ok = false;
      o.t.forEach((r, slot) => {
        if (!r || r.st !== D || r.off + r.numel <= lo || r.off >= hi) return;
        if (o.outs.includes(slot)) ok = false;
        const writesS = o.t.some((w, ws) => w && w.st === sId && o.outs.includes(ws) && w.off === r.off - delta && w.numel === r.numel);
        if (!(writesS && o.aliasOk.includes(slot) && j === first)) ok = false;
      });
    }
    if (!ok) continue;
    for (const o of ops) {
      if (o.dead) continue;
      o.t = o.t.map((r) => (r && r.st === sId ? { ...r, st: D, off: r.off + delta } : r));
    }
    for (const c of cps) c.dead = true;
  }
}
