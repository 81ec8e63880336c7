// Runs one rank's plan of a parallel lowering (docs/architecture.md §3c): native kernel stages on the
// plan executor, comm ops (`comm.all_to_all_qkv`, `comm.all_to_all_o`, `comm.wait`, tensor parallel's
// `comm.all_reduce` / `comm.all_gather_tp`) in TS through the
// Communicator between them, the CP entry split of full inputs and the exit all-gather of outputs.
//
// The native executor never sees comm ops: every segment becomes a native block segment whose blocks
// are the stages between comm ops (a plan block = a run of stages); consecutive native stages run as
// one `run()` call. Implements the cache engine's ExecutorLike (`run(segment, b0, b1)`,
// readTensor/writeTensor on the plan's own tensor ids), so ExecutorBlockListRunner works unchanged.
import type { Communicator } from '../comm/communicator.ts';
import { subgroup } from '../comm/group.ts';
import type { NativeExecutor } from '../native.ts';
import type { Plan, PlanOp, PlanSegment, PlanTensor } from '../plan.ts';
import { nativeFp8Kernels } from './fp8-native.ts';
import { type KernelRunner, type Rows, type UspGroups, allGatherKeyMask, checkRingKernels, ringAttentionNative, uspAttention, uspGroups } from './ring.ts';
import { planWeightData } from './tp.ts';
import { allToAllO, allToAllQKV, type Fp8Kernels, type UlyssesLayout } from './ulysses.ts';

type Item = { native: number } | { comm: PlanOp };

interface SegProgram {
  name: string;
  /** per plan block (or one entry for an op segment): its items */
  blocks: Item[][];
}

export interface NativeLike {
  Executor: new (plan: string, opts: { threads?: number }) => NativeExecutor;
  kernels?(): string[];
  runKernel?(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
}

function product(a: readonly number[]): number {
  return a.reduce((x, y) => x * y, 1);
}

/** Splits a plan's segments at comm ops: the native plan (comm ops removed) and the per-block programs. */
export function nativeStagePlan(plan: Plan): { native: Plan; programs: Map<string, SegProgram> } {
  const programs = new Map<string, SegProgram>();
  const segments: PlanSegment[] = plan.segments.map((s) => {
    const lists = s.blocks ? s.blocks.map((b) => ({ name: b.name, ops: b.ops })) : [{ name: s.name, ops: s.ops ?? [] }];
    const hasComm = lists.some((l) => l.ops.some((o) => o.k.startsWith('comm.')));
    if (!hasComm) {
      programs.set(s.name, { name: s.name, blocks: lists.map((_, i) => [{ native: i }]) });
      return s;
    }
    const stages: { name: string; ops: PlanOp[] }[] = [];
    const blocks: Item[][] = lists.map((l) => {
      const items: Item[] = [];
      let cur: PlanOp[] = [];
      const flush = () => {
        if (cur.length) {
          items.push({ native: stages.length });
          stages.push({ name: `${l.name}#${stages.length}`, ops: cur });
        }
        cur = [];
      };
      for (const op of l.ops) {
        if (op.k.startsWith('comm.')) {
          flush();
          items.push({ comm: op });
        } else cur.push(op);
      }
      flush();
      return items;
    });
    programs.set(s.name, { name: s.name, blocks });
    const { ops: _o, blocks: _b, ...rest } = s;
    void _o;
    void _b;
    return { ...rest, blocks: stages.length ? stages : [{ name: `${s.name}#empty`, ops: [] }] };
  });
  const { parallel: _p, ...base } = plan;
  void _p;
  // comm ops never reach the native executor, so they are no kernels of the native plan
  return { native: { ...base, segments, kernels: base.kernels.filter((k) => !k.startsWith('comm.')) }, programs };
}

export interface ParallelExecutorOptions {
  threads?: number;
  /** FP8 payload kernels: 'native' (default when the addon has them) or 'host' (runtime/comm/fp8.ts) */
  fp8?: 'native' | 'host';
}

/** Statistics of one rank's comm ops (for benchmarks). */
export interface ParallelExecStats {
  commMs: number;
  commOps: number;
}

export class ParallelExecutor {
  readonly exec: NativeExecutor;
  readonly programs: Map<string, SegProgram>;
  readonly stats: ParallelExecStats = { commMs: 0, commOps: 0 };
  private readonly tensors: Map<number, PlanTensor>;
  private pending: { p: Promise<Float32Array>; finish: (data: Float32Array) => void }[] = [];
  /** FP8 kernels in use (undefined: the host reference) */
  readonly fp8: Fp8Kernels | undefined;
  /** the addon's runKernel (ring/USP attention kernels), null for an addon-like without it */
  private readonly kernels: KernelRunner | null;
  /** zero-copy arena views of comm op tensors (the arena never moves) */
  private readonly views = new Map<number, Float32Array>();
  private usp: Promise<UspGroups> | undefined;
  /** Ulysses x TP: the cp / tp subgroups (groups()) */
  private meshGroups: Promise<{ cp: Communicator; tp: Communicator }> | undefined;

  constructor(
    readonly comm: Communicator,
    readonly plan: Plan,
    native: NativeLike,
    opts: ParallelExecutorOptions = {},
  ) {
    const par = plan.parallel;
    if (par && (par.world !== comm.worldSize || par.rank !== comm.rank)) {
      throw new Error(`${plan.model}/${plan.component} (${plan.tag}): plan is for rank ${par.rank} of ${par.world}, the communicator is rank ${comm.rank} of ${comm.worldSize}`);
    }
    const { native: np, programs } = nativeStagePlan(plan);
    this.programs = programs;
    this.tensors = new Map(plan.tensors.map((t) => [t.id, t]));
    this.exec = new native.Executor(JSON.stringify(np), opts.threads ? { threads: opts.threads } : {});
    const nk = native.kernels && native.runKernel ? { kernels: native.kernels.bind(native), runKernel: native.runKernel.bind(native) } : null;
    this.fp8 = opts.fp8 !== 'host' && nk ? (nativeFp8Kernels(nk) ?? undefined) : undefined;
    // ring/USP kernels on this rank's own executor threads when the addon offers it (else the global pool)
    const ex = this.exec;
    this.kernels = nk && ex.runKernel ? { kernels: nk.kernels, runKernel: ex.runKernel.bind(ex) } : nk;
  }

  /**
   * Binds a weight: the plan's own data, or for a tensor-parallel shard (`slice`) also the full
   * checkpoint tensor, which is cut here (runtime/parallel/tp.ts planWeightData).
   */
  bindWeight(name: string, data: Float32Array): void {
    const w = this.plan.weights.find((x) => x.name === name);
    if (w?.slice && data.length === product(w.slice.full) && data.length !== product(w.shape)) {
      data = planWeightData(w, { data, shape: w.slice.full }, `${this.plan.model}/${this.plan.component} (${this.plan.tag})`);
    }
    this.exec.bindWeight(name, data);
  }

  /** Sets an input: a full-size tensor is split per the plan's CP plan; a local-size one is set as is. */
  setInput(name: string, data: Float32Array): void {
    const io = this.plan.inputs.find((i) => i.name === name);
    if (!io) throw new Error(`${this.plan.component} plan has no input "${name}"`);
    const sp = this.plan.parallel?.split[name];
    const local = product(io.shape);
    if (!sp || data.length === local) {
      this.exec.setInput(name, data);
      return;
    }
    const full = io.shape.slice();
    full[sp.axis] = sp.sizes.reduce((a, b) => a + b, 0);
    if (data.length !== product(full)) throw new Error(`${this.plan.component} input "${name}": ${data.length} values, expected [${full.join(', ')}] (full) or [${io.shape.join(', ')}] (this rank)`);
    const outer = product(full.slice(0, sp.axis));
    const inner = product(full.slice(sp.axis + 1));
    const rank = this.cpRank();
    const n = sp.sizes[rank]!;
    const F = full[sp.axis]!;
    // (source offset, length) runs along the axis: one per stream when the axis joins several
    const runs: [number, number][] = [];
    let partBase = 0;
    for (const part of sp.parts ?? [sp.sizes]) {
      runs.push([partBase + part.slice(0, rank).reduce((a, b) => a + b, 0), part[rank]!]);
      partBase += part.reduce((a, b) => a + b, 0);
    }
    const out = new Float32Array(local);
    for (let o = 0; o < outer; o++) {
      let dst = o * n * inner;
      for (const [start, len] of runs) {
        out.set(data.subarray((o * F + start) * inner, (o * F + start + len) * inner), dst);
        dst += len * inner;
      }
    }
    this.exec.setInput(name, out);
  }

  /** This rank's local output. */
  localOutput(name: string): Float32Array {
    const io = this.plan.outputs.find((o) => o.name === name);
    if (!io) throw new Error(`${this.plan.component} plan has no output "${name}"`);
    const out = new Float32Array(product(io.shape));
    this.exec.getOutput(name, out);
    return out;
  }

  /** The full output: all-gathered over ranks on the CP plan's axis (collective on every rank). */
  async output(name: string): Promise<Float32Array> {
    const local = this.localOutput(name);
    const g = this.plan.parallel?.gather[name];
    if (!g) return local;
    const io = this.plan.outputs.find((o) => o.name === name)!;
    return this.gatherAxis(local, product(io.shape.slice(0, g.axis)), product(io.shape.slice(g.axis + 1)), g.sizes);
  }

  /**
   * A token-sharded output (CN-P: a controlnet's per-block residual, `parallel.sharded`): this rank's shard
   * and the split it follows, to be fed to the transformer's residual input with `setInputShard`.
   */
  shardedOutput(name: string): { data: Float32Array; axis: number; sizes: number[] } {
    const sh = this.plan.parallel?.sharded?.[name];
    if (!sh) throw new Error(`${this.plan.model}/${this.plan.component} (${this.plan.tag}): output "${name}" is not token-sharded (parallel.sharded has ${Object.keys(this.plan.parallel?.sharded ?? {}).join(', ') || 'nothing'})`);
    return { data: this.localOutput(name), axis: sh.axis, sizes: sh.sizes };
  }

  /**
   * Sets a residual input from a context-parallel controlnet's sharded output (no gather): the shard must
   * follow this plan's split of the input (same axis, same per-rank sizes).
   */
  setInputShard(name: string, shard: { data: Float32Array; axis: number; sizes: number[] }): void {
    const sp = this.plan.parallel?.split[name];
    const what = `${this.plan.model}/${this.plan.component} (${this.plan.tag}) input "${name}"`;
    if (!sp) throw new Error(`${what} is not split (parallel.split), so it cannot take a sharded controlnet output`);
    if (sp.axis !== shard.axis || sp.sizes.join() !== shard.sizes.join()) {
      throw new Error(`${what} is split on axis ${sp.axis} as [${sp.sizes.join(', ')}], the controlnet shard on axis ${shard.axis} as [${shard.sizes.join(', ')}]: compile both with the same world size and UAA setting`);
    }
    this.exec.setInput(name, shard.data);
  }

  /** All-gathers `[outer, n_r, inner]` shards (n_r = sizes[r]) into `[outer, sum(sizes), inner]`, rank order. */
  private async gatherAxis(local: Float32Array, outer: number, inner: number, sizes: number[], group: 'cp' | 'tp' = 'cp'): Promise<Float32Array> {
    const counts = sizes.map((n) => outer * n * inner);
    const all = new Float32Array(counts.reduce((a, b) => a + b, 0));
    await (await this.groups())[group].allGather(local, all, counts);
    const S = sizes.reduce((a, b) => a + b, 0);
    const out = new Float32Array(all.length);
    let off = 0;
    let start = 0;
    sizes.forEach((n, r) => {
      for (let o = 0; o < outer; o++) out.set(all.subarray(off + o * n * inner, off + (o + 1) * n * inner), (o * S + start) * inner);
      off += counts[r]!;
      start += n;
    });
    return out;
  }

  readTensor(id: number, into: Float32Array): void {
    this.exec.readTensor(id, into);
  }

  writeTensor(id: number, data: Float32Array): void {
    this.exec.writeTensor(id, data);
  }

  /** Runs every segment in order. */
  async forward(): Promise<void> {
    for (const s of this.plan.segments) await this.run(s.name);
  }

  /** Runs a segment (blocks [b0, b1) of a block segment), comm ops included. */
  async run(segment: string, b0?: number, b1?: number): Promise<void> {
    const prog = this.programs.get(segment);
    if (!prog) throw new Error(`${this.plan.model}/${this.plan.component}: no segment '${segment}'`);
    const begin = b0 ?? 0;
    const end = b1 ?? prog.blocks.length;
    let runStart = -1;
    let runEnd = -1;
    const flush = async () => {
      if (runStart >= 0) await this.exec.run(segment, runStart, runEnd);
      runStart = runEnd = -1;
    };
    for (let b = begin; b < end; b++) {
      for (const it of prog.blocks[b]!) {
        if ('native' in it) {
          if (runStart >= 0 && it.native === runEnd) runEnd++;
          else {
            await flush();
            runStart = it.native;
            runEnd = it.native + 1;
          }
        } else {
          await flush();
          await this.commOp(it.comm);
        }
      }
    }
    await flush();
    await this.drain();
  }

  private view(id: number): PlanTensor {
    const t = this.tensors.get(id);
    if (!t) throw new Error(`${this.plan.tag}: comm op tensor ${id} is not in the plan`);
    return t;
  }

  /** Zero-copy view of an arena tensor (cached); only touched between native runs. */
  private arenaView(id: number): Float32Array {
    let v = this.views.get(id);
    if (!v) {
      this.view(id); // a clear error for an id outside the plan
      v = this.exec.tensorView(id);
      this.views.set(id, v);
    }
    return v;
  }

  /**
   * `rows` rows of `C` floats at row stride `stride` of a view, contiguous: the arena view itself when the
   * rows are contiguous (no copy: consume it before the next native run), else a compact copy of the rows.
   */
  private readRows(id: number, rows: number, C: number, stride: number): Float32Array {
    const t = this.arenaView(id);
    if (stride === C) return t.subarray(0, rows * C);
    const out = new Float32Array(rows * C);
    for (let r = 0; r < rows; r++) out.set(t.subarray(r * stride, r * stride + C), r * C);
    return out;
  }

  /** Writes contiguous rows into a (possibly strided) view in place, leaving the floats between rows alone. */
  private writeRows(id: number, data: Float32Array, rows: number, C: number, stride: number): void {
    const t = this.arenaView(id);
    if (data.length !== rows * C || (rows > 0 && (rows - 1) * stride + C > t.length))
      throw new Error(`${this.plan.tag}: comm op result of ${data.length} floats does not fit tensor ${id} (${rows} rows of ${C} at stride ${stride}, ${t.length} floats)`);
    if (stride === C) t.set(data);
    else for (let r = 0; r < rows; r++) t.set(data.subarray(r * C, (r + 1) * C), r * stride);
  }

  /**
   * This rank's context-parallel and tensor-parallel groups. CP x TP hybrid (plan.parallel.tp T < world):
   * TP innermost (Cache-DiT's (ring, ulysses, tp) device mesh): rank = c*T + t with c the rank in the CP
   * (ulysses / ring / USP) group {t, T + t, ...}, tp group {c*T, ..., c*T + T - 1}; otherwise both are the
   * whole world. Every rank creates them at its first comm op (the same point of the same plan everywhere).
   */
  private groups(): Promise<{ cp: Communicator; tp: Communicator }> {
    this.meshGroups ??= (async () => {
      const par = this.plan.parallel;
      const T = par?.tp ?? 1;
      if (!par || T <= 1 || T === par.world) return { cp: this.comm, tp: this.comm };
      const U = par.world / T;
      const t = this.comm.rank % T;
      const u = Math.floor(this.comm.rank / T);
      const cp = await subgroup(this.comm, Array.from({ length: U }, (_, i) => i * T + t));
      const tp = await subgroup(this.comm, Array.from({ length: T }, (_, j) => u * T + j));
      return { cp, tp };
    })();
    return this.meshGroups;
  }

  /** index of this rank in its context-parallel group (entry split / exit gather sizes) */
  private cpRank(): number {
    const par = this.plan.parallel;
    return par ? Math.floor(par.rank / (par.tp ?? 1)) : 0;
  }

  private layout(op: PlanOp, cp: Communicator): UlyssesLayout {
    const c = op.comm!;
    const [B, H, D] = op.i as [number, number, number];
    const offsets: number[] = [];
    let s = 0;
    for (const n of c.sizes) {
      offsets.push(s);
      s += n;
    }
    const W = cp.worldSize;
    if (c.sizes.length !== W) throw new Error(`${this.plan.tag}: ${op.k} in ${c.module} is for ${c.sizes.length} ranks, the communicator has ${W}`);
    return { world: W, rank: cp.rank, B, H, D, hPad: c.hPad, hLocal: c.hLocal, hReal: c.hReal, sizes: c.sizes, sLocal: c.sizes[cp.rank]!, sGlobal: s, offsets };
  }

  private finishQKV(op: PlanOp, data: Float32Array): void {
    const n = this.arenaView(op.t[1]!).length;
    if (data.length) this.writeRows(op.t[1]!, data, 1, n, n);
  }

  private async commOp(op: PlanOp): Promise<void> {
    const t0 = performance.now();
    this.stats.commOps++;
    try {
      if (op.k === 'comm.wait') {
        await this.drain();
        return;
      }
      if (op.k === 'comm.all_reduce') {
        // tensor parallel: sum over the TP group (rank order, identical bits on every rank); i[1] = 1: the
        // floats hold float64 values (the distributed RMSNorm's per-row sums of squares)
        const x = new Float32Array(this.view(op.t[0]!).numel);
        this.exec.readTensor(op.t[0]!, x);
        await (await this.groups()).tp.allReduceSum(op.i[1] === 1 ? new Float64Array(x.buffer, 0, x.length >> 1) : x);
        this.exec.writeTensor(op.t[1]!, x);
        return;
      }
      if (!op.comm) throw new Error(`${this.plan.tag}: ${op.k} has no comm info`);
      if (op.k === 'comm.all_gather' || op.k === 'comm.all_gather_tp') {
        // CP internal gather point: [outer, n_local, inner] -> [outer, sum(sizes), inner] over the CP group;
        // tensor parallel colwise_replicate (i = [rows, n], inner 1): channels in rank order over the TP group
        const [outer, n, inner = 1] = op.i as [number, number, number?];
        const x = this.readRows(op.t[0]!, 1, outer * n * inner, outer * n * inner);
        this.exec.writeTensor(op.t[1]!, await this.gatherAxis(x, outer, inner, op.comm.sizes, op.k === 'comm.all_gather_tp' ? 'tp' : 'cp'));
        return;
      }
      if (op.k === 'comm.ring_attention' || op.k === 'comm.usp_attention') {
        await this.drain();
        await this.ringOrUsp(op);
        return;
      }
      if (op.k === 'comm.all_gather_mask') {
        const B = op.i[0]!;
        const sizes = op.comm.sizes;
        const { cp } = await this.groups();
        const sL = sizes[cp.rank]!;
        const out = this.arenaView(op.t[1]!);
        const n = B * sizes.reduce((a, b) => a + b, 0);
        if (out.length !== n) throw new Error(`${this.plan.tag}: comm.all_gather_mask output tensor ${op.t[1]} holds ${out.length} floats, the gathered mask ${n}`);
        await allGatherKeyMask(cp, this.readRows(op.t[0]!, B, sL, sL), B, sizes, out);
        return;
      }
      const { cp } = await this.groups();
      const L = this.layout(op, cp);
      const [B, H, D, stride] = op.i as [number, number, number, number];
      if (op.k === 'comm.all_to_all_qkv') {
        const x = this.readRows(op.t[0]!, B * L.sLocal, H * D, stride);
        const p = allToAllQKV(cp, L, x, op.comm.float8, this.fp8);
        if (op.comm.wait) this.finishQKV(op, await p);
        else {
          p.catch(() => undefined); // awaited in drain()
          this.pending.push({ p, finish: (d) => this.finishQKV(op, d) });
        }
        return;
      }
      if (op.k === 'comm.all_to_all_o') {
        await this.drain();
        const og = L.hReal > 0 ? this.readRows(op.t[0]!, B * L.sGlobal, L.hReal * D, L.hReal * D) : new Float32Array(0);
        const p = allToAllO(cp, L, og, op.comm.float8, this.fp8);
        const finish = (o: Float32Array) => this.writeRows(op.t[1]!, o, B * L.sLocal, H * D, stride);
        if (op.comm.wait) finish(await p);
        else {
          p.catch(() => undefined); // awaited in drain()
          this.pending.push({ p, finish });
        }
        return;
      }
      throw new Error(`${this.plan.tag}: unknown comm op '${op.k}'`);
    } finally {
      this.stats.commMs += performance.now() - t0;
    }
  }

  /**
   * Ring attention (K/V around the ring, native attention_lse + attn_merge per step, runtime/parallel/ring.ts)
   * on zero-copy arena views, o written in place; USP: Ulysses all-to-alls inside the ulysses group around
   * the native ring over the ring group. A key mask (t[4], `[B, S_local]`) travels with its keys.
   */
  private async ringOrUsp(op: PlanOp): Promise<void> {
    const c = op.comm!;
    const [B, H, D, qS, kS, vS, oS] = op.i as [number, number, number, number, number, number, number];
    if (!this.kernels) throw new Error(`${this.plan.tag}: ${op.k} in ${c.module} needs the addon's runKernel (native attention_lse / attn_merge)`);
    checkRingKernels(this.kernels);
    const { cp } = await this.groups(); // the whole world, or this rank's ring / USP group under TP
    const sLocal = c.sizes[cp.rank]!;
    const rows = B * sLocal;
    const dims = { B, sLocal, H, D, ...(op.f.length ? { scale: op.f[0]! } : {}) };
    const maskId = op.t[4] ?? -1;
    const mask = maskId >= 0 ? this.readRows(maskId, B, sLocal, sLocal) : undefined; // zero-copy view
    if (op.k === 'comm.ring_attention') {
      const r = (id: number, stride: number): Rows => ({ data: this.arenaView(id), stride });
      // o is written from the first ring step on while q, k, v (and the mask) are still read: go through a
      // scratch buffer if the memory plan let o share floats with one of them
      const direct = ![op.t[0]!, op.t[1]!, op.t[2]!, maskId].some((id) => id >= 0 && this.overlap(id, op.t[3]!));
      const o = direct ? r(op.t[3]!, oS) : { data: new Float32Array(rows * H * D), stride: H * D };
      await ringAttentionNative(cp, this.kernels, r(op.t[0]!, qS), r(op.t[1]!, kS), r(op.t[2]!, vS), o, dims, c.sizes, mask);
      if (!direct) this.writeRows(op.t[3]!, o.data, rows, H * D, oS);
      return;
    }
    const par = this.plan.parallel!;
    this.usp ??= uspGroups(cp, par.ulysses, par.ring);
    const groups = await this.usp;
    const q = this.readRows(op.t[0]!, rows, H * D, qS);
    const k = this.readRows(op.t[1]!, rows, H * D, kS);
    const v = this.readRows(op.t[2]!, rows, H * D, vS);
    const o = await uspAttention(cp, q, k, v, dims, { ulysses: par.ulysses, ring: par.ring, float8: c.float8, headPadPolicy: par.headPadPolicy, kernels: this.kernels, groups, ...(this.fp8 ? { fp8Kernels: this.fp8 } : {}), ...(mask ? { mask } : {}) });
    this.writeRows(op.t[3]!, o, rows, H * D, oS);
  }

  /** whether two plan tensors share arena floats */
  private overlap(a: number, b: number): boolean {
    const x = this.view(a);
    const y = this.view(b);
    return x.base === 'arena' && y.base === 'arena' && x.offset < y.offset + y.numel && y.offset < x.offset + x.numel;
  }

  private async drain(): Promise<void> {
    while (this.pending.length) {
      const { p, finish } = this.pending.shift()!;
      finish(await p);
    }
  }
}
