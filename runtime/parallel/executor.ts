// Runs one rank's plan of a parallel lowering (docs/architecture.md §3c): native kernel stages on the
// plan executor, comm ops (`comm.all_to_all_qkv`, `comm.all_to_all_o`, `comm.wait`) in TS through the
// Communicator between them, the CP entry split of full inputs and the exit all-gather of outputs.
//
// The native executor never sees comm ops: every segment becomes a native block segment whose blocks
// are the stages between comm ops (a plan block = a run of stages); consecutive native stages run as
// one `run()` call. Implements the cache engine's ExecutorLike (`run(segment, b0, b1)`,
// readTensor/writeTensor on the plan's own tensor ids), so ExecutorBlockListRunner works unchanged.
import type { Communicator } from '../comm/communicator.ts';
import type { NativeExecutor } from '../native.ts';
import type { Plan, PlanOp, PlanSegment, PlanTensor } from '../plan.ts';
import { nativeFp8Kernels } from './fp8-native.ts';
import { ringAttention, uspAttention } from './ring.ts';
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
  return { native: { ...base, segments }, programs };
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
  }

  bindWeight(name: string, data: Float32Array): void {
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
    const rank = this.plan.parallel!.rank;
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
    const outer = product(io.shape.slice(0, g.axis));
    const inner = product(io.shape.slice(g.axis + 1));
    const counts = g.sizes.map((n) => outer * n * inner);
    const all = new Float32Array(counts.reduce((a, b) => a + b, 0));
    await this.comm.allGather(local, all, counts);
    const S = g.sizes.reduce((a, b) => a + b, 0);
    const out = new Float32Array(all.length);
    let off = 0;
    let start = 0;
    g.sizes.forEach((n, r) => {
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

  /** Reads `rows` rows of `C` floats with row stride `stride` from a view into a contiguous array. */
  private readRows(id: number, rows: number, C: number, stride: number): Float32Array {
    const t = this.view(id);
    const span = new Float32Array(t.numel);
    this.exec.readTensor(id, span);
    if (stride === C) return span.length === rows * C ? span : span.slice(0, rows * C);
    const out = new Float32Array(rows * C);
    for (let r = 0; r < rows; r++) out.set(span.subarray(r * stride, r * stride + C), r * C);
    return out;
  }

  /** Writes contiguous rows into a (possibly strided) view, keeping the floats between rows. */
  private writeRows(id: number, data: Float32Array, rows: number, C: number, stride: number): void {
    const t = this.view(id);
    if (stride === C && t.numel === data.length) {
      this.exec.writeTensor(id, data);
      return;
    }
    const span = new Float32Array(t.numel);
    this.exec.readTensor(id, span);
    for (let r = 0; r < rows; r++) span.set(data.subarray(r * C, (r + 1) * C), r * stride);
    this.exec.writeTensor(id, span);
  }

  private layout(op: PlanOp): UlyssesLayout {
    const c = op.comm!;
    const [B, H, D] = op.i as [number, number, number];
    const offsets: number[] = [];
    let s = 0;
    for (const n of c.sizes) {
      offsets.push(s);
      s += n;
    }
    const W = this.comm.worldSize;
    if (c.sizes.length !== W) throw new Error(`${this.plan.tag}: ${op.k} in ${c.module} is for ${c.sizes.length} ranks, the communicator has ${W}`);
    return { world: W, rank: this.comm.rank, B, H, D, hPad: c.hPad, hLocal: c.hLocal, hReal: c.hReal, sizes: c.sizes, sLocal: c.sizes[this.comm.rank]!, sGlobal: s, offsets };
  }

  private finishQKV(op: PlanOp, data: Float32Array): void {
    if (data.length) this.exec.writeTensor(op.t[1]!, data);
  }

  private async commOp(op: PlanOp): Promise<void> {
    const t0 = performance.now();
    this.stats.commOps++;
    try {
      if (op.k === 'comm.wait') {
        await this.drain();
        return;
      }
      if (!op.comm) throw new Error(`${this.plan.tag}: ${op.k} has no comm info`);
      if (op.k === 'comm.ring_attention' || op.k === 'comm.usp_attention') {
        await this.drain();
        await this.ringOrUsp(op);
        return;
      }
      if (op.k === 'comm.all_gather_mask') {
        const B = op.i[0]!;
        const sizes = op.comm.sizes;
        const sL = sizes[this.comm.rank]!;
        const local = this.readRows(op.t[0]!, B, sL, sL);
        const all = new Float32Array(B * sizes.reduce((a, b) => a + b, 0));
        await this.comm.allGather(local, all, sizes.map((x) => x * B));
        const S = all.length / B;
        const out = new Float32Array(all.length);
        let off = 0;
        let start = 0;
        for (const n of sizes) {
          for (let b = 0; b < B; b++) out.set(all.subarray(off + b * n, off + (b + 1) * n), b * S + start);
          off += n * B;
          start += n;
        }
        this.exec.writeTensor(op.t[1]!, out);
        return;
      }
      const L = this.layout(op);
      const [B, H, D, stride] = op.i as [number, number, number, number];
      if (op.k === 'comm.all_to_all_qkv') {
        const x = this.readRows(op.t[0]!, B * L.sLocal, H * D, stride);
        const p = allToAllQKV(this.comm, L, x, op.comm.float8, this.fp8);
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
        const p = allToAllO(this.comm, L, og, op.comm.float8, this.fp8);
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

  /** ring attention (K/V around the ring, LSE merge) or USP, on the host (float64 attention reference) */
  private async ringOrUsp(op: PlanOp): Promise<void> {
    const c = op.comm!;
    const [B, H, D, qS, kS, vS, oS] = op.i as [number, number, number, number, number, number, number];
    const sLocal = c.sizes[this.comm.rank]!;
    const rows = B * sLocal;
    const q = this.readRows(op.t[0]!, rows, H * D, qS);
    const k = this.readRows(op.t[1]!, rows, H * D, kS);
    const v = this.readRows(op.t[2]!, rows, H * D, vS);
    const dims = { B, sLocal, H, D, ...(op.f.length ? { scale: op.f[0]! } : {}) };
    let o: Float32Array;
    if (op.k === 'comm.ring_attention') o = (await ringAttention(this.comm, q, k, v, dims, { sizes: c.sizes })).o;
    else {
      const par = this.plan.parallel!;
      o = await uspAttention(this.comm, q, k, v, dims, { ulysses: par.ulysses, ring: par.ring, float8: c.float8, headPadPolicy: par.headPadPolicy });
    }
    this.writeRows(op.t[3]!, o, rows, H * D, oS);
  }

  private async drain(): Promise<void> {
    while (this.pending.length) {
      const { p, finish } = this.pending.shift()!;
      finish(await p);
    }
  }
}
