// Tensor-parallel lowering (Cache-DiT §4.7, TE-P §4.9) of a component into one plan per rank.
//
// Each rank is traced with a TpTraceHook (compiler/dsl/trace.ts) built from the TP plan (module pattern
// -> colwise / rowwise / colwise_replicate):
// * colwise `linear`: N/tp outputs, weight rows (and bias) [r*N/tp, (r+1)*N/tp) of the checkpoint tensor;
//   the output is channel-sharded.
// * ops with `heads` on a sharded tensor (per-head RMSNorm, RoPE, attention) run heads/tp heads: the
//   rank's channels are whole heads, so attention needs no communication.
// * an RMSNorm over a sharded tensor (Wan's norm_q / norm_k span all heads) becomes a distributed RMSNorm
//   (IR `dist_rms_norm`, Cache-DiT's DistributedRMSNorm; lower.ts emits native `rms_sumsq`, a float64
//   `comm.all_reduce` of the [M] sums over the group, native `rms_norm_apply` with the rank's weight slice).
// * rowwise `linear`: takes the sharded input (K/tp columns of the weight: for each sharded channel group
//   of the input, that group's rank slice; FLUX single blocks' `proj_out` gets `[attn shard | mlp shard]`
//   this way), then an `all_reduce` IR node (plan op `comm.all_reduce`, sum over the TP group) *before*
//   anything that consumes the result, so gated-residual epilogues apply to the reduced sum. The bias is
//   added by rank 0's GEMM only, so the sum holds it once.
// * colwise_replicate (adaLN `norm1.linear`, Colwise with output Replicate in Cache-DiT): a colwise GEMM
//   on the rank's weight rows, then `tp_all_gather` (plan op `comm.all_gather_tp`) of the channels over the
//   TP group, as Cache-DiT does. Computing it replicated from the full weight would skip a (tiny) collective
//   but keep every adaLN weight whole on every rank (about a quarter of FLUX.1's parameters).
// Everything else (embeddings, norms, the head) is replicated, as in Cache-DiT; every rank ends with the
// full, bit-identical output (the all-reduce sums in rank order on every rank).
// Uneven splits: Cache-DiT's shard_div_attr needs tp_size to divide the heads. Here a colwise output is
// split in units (whole heads where a per-head op consumes it, single channels elsewhere), the first
// `units % T` ranks one unit more (3 heads on 2 ranks: 2 + 1), so any head count runs on any tp_size up to
// it; a rowwise input and a distributed RMSNorm take the same shares. Grouped-query attention and the CP x TP
// hybrids still need tp_size to divide the heads.
// Weight shards are slice descriptors on PlanWeight (`slice`), cut by the runtime from the unchanged
// checkpoint. Format: docs/architecture.md §3c.
import type { Plan, PlanWeightSlice } from '../../runtime/plan.ts';
import type { TpStyle } from '../dsl/plans.ts';
import type { TpLinear, TpTraceHook } from '../dsl/trace.ts';
import { traceComponent } from '../frontend.ts';
import { CompileError, type Graph, type Node } from '../ir/graph.ts';
import { BINARY_EW, UNARY_EW } from '../ir/shape.ts';
import { getModel } from '../registry.ts';
import { lowerContextParallel, type UlyssesRequest } from './parallel-lower.ts';

/**
 * compiles one rank's (unlowered) plan with a TP trace hook (and a CP rank's local dims for the hybrid);
 * injected so this file does not import index.ts
 */
export type TpRankCompiler = (tp: (g: Graph) => TpTraceHook, dimsOverride?: Record<string, number>, graphPass?: (g: Graph) => Graph) => Plan;

interface StyleRule {
  pattern: string;
  re: RegExp;
  style: TpStyle;
}

const STYLES: readonly TpStyle[] = ['colwise', 'rowwise', 'colwise_replicate'];

/** `transformer_blocks.*.attn.to_q`: `*` matches one dotted name segment */
function compileRules(tp: Record<string, TpStyle>, where: string): StyleRule[] {
  return Object.entries(tp).map(([pattern, style]) => {
    if (!STYLES.includes(style)) throw new CompileError(`${where}: TP plan entry '${pattern}' has style '${String(style)}'; valid: ${STYLES.join(', ')}`);
    const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]+')}$`);
    return { pattern, re, style };
  });
}

/** The TP plan of a component: the request's, else the model's (transformer) or the component's (TE-P). */
export function tpRules(model: string, req: Pick<UlyssesRequest, 'component' | 'parallel'>): StyleRule[] {
  const def = getModel(model);
  const inst = def.components[req.component];
  const plan = req.parallel.tp ?? (req.component === 'transformer' ? def.parallel?.tp : undefined) ?? inst?.def.tp;
  if (!plan || Object.keys(plan).length === 0) {
    throw new CompileError(`${model} ${req.component}: no tensor-parallel plan (the model's parallel.tp for the transformer, the component's tp for others); tp_size > 1 needs one`);
  }
  return compileRules(plan, `${model} ${req.component}`);
}

/** a channel group of a sharded tensor's last axis: its full width and the unit its split keeps whole */
interface Part {
  F: number;
  unit: number;
}

const key = (p: Part[]): string => p.map((x) => `${x.F}/${x.unit}`).join(',');

/** rank r's [offset, length] of F channels split over T ranks in whole units (the first F/unit % T ranks one unit more) */
export function tpShare(F: number, unit: number, T: number, r: number): [number, number] {
  const units = F / unit;
  const base = Math.floor(units / T);
  const extra = units % T;
  return [(r * base + Math.min(r, extra)) * unit, (base + (r < extra ? 1 : 0)) * unit];
}

/** ops whose `heads` attr splits their first input's channels into heads */
const HEAD_OPS = new Set(['head_rms_norm', 'rope', 'attention', 'attention_bias']);
/** ops a colwise output passes through on its way to a per-head op */
const PASS_OPS = new Set([...UNARY_EW, ...BINARY_EW, 'rms_norm', 'dist_rms_norm', 'concat', 'slice']);

/**
 * The split unit of every linear's output in an unlowered trace: the head width where the output reaches a
 * per-head op through elementwise ops and norms (Wan's q -> norm_q -> RoPE -> attention), else 1.
 */
function splitUnits(g: Graph): Map<string, number> {
  const users = g.users();
  const units = new Map<string, number>();
  for (const n of g.live()) {
    if (n.op !== 'linear' || typeof n.attrs.name !== 'string') continue;
    const seen = new Set<number>();
    const todo = [n.id];
    let unit = 1;
    while (todo.length && unit === 1) {
      const id = todo.pop()!;
      for (const u of users.get(id) ?? []) {
        if (seen.has(u)) continue;
        seen.add(u);
        const c = g.node(u);
        if (HEAD_OPS.has(c.op)) {
          const C = g.node(c.inputs[0]!).shape.at(-1)!;
          unit = C / (c.attrs.heads as number);
          break;
        }
        if (PASS_OPS.has(c.op)) todo.push(u);
      }
    }
    units.set(n.attrs.name, unit);
  }
  return units;
}

/** The trace hook of rank `rank` of `T` (see the file comment). */
export class TpHook implements TpTraceHook {
  /** node id -> the channel groups the node's last axis holds a rank shard of */
  readonly parts = new Map<number, Part[]>();
  /** linear module -> the parts of its output (colwise) or null (rowwise / colwise_replicate: replicated after the reduce / gather) */
  private readonly outParts = new Map<string, Part[] | null>();

  constructor(
    readonly g: Graph,
    readonly T: number,
    readonly rank: number,
    readonly rules: StyleRule[],
    /** checkpoint weight name -> this rank's slice (filled while tracing) */
    readonly slices: Map<string, PlanWeightSlice>,
    readonly what: string,
    /** linear module -> the unit its output splits in (splitUnits) */
    readonly units: Map<string, number> = new Map(),
  ) {}

  private styleOf(module: string): TpStyle | undefined {
    return this.rules.find((r) => r.re.test(module))?.style;
  }

  private fail(msg: string, src: string): never {
    throw new CompileError(`${this.what}: tensor parallel (tp_size ${this.T}): ${msg}`, src || undefined);
  }

  linear(module: string, x: number, out: number, hasBias: boolean, src: string, packed?: number[], loraRank?: number): TpLinear | undefined {
    const r = this.linearShards(module, x, out, hasBias, src, packed);
    // an unfused LoRA branch follows its weight: B's rows as the weight's (colwise), A's columns as the weight's (rowwise)
    const w = this.slices.get(`${module}.weight`);
    if (loraRank && w) {
      if (w.axis === 0) this.slices.set(`${module}.lora_B.weight`, { full: [w.full[0]!, loraRank], axis: 0, ranges: w.ranges });
      else this.slices.set(`${module}.lora_A.weight`, { full: [loraRank, w.full[1]!], axis: 1, ranges: w.ranges });
    }
    return r;
  }

  private linearShards(module: string, x: number, out: number, hasBias: boolean, src: string, packed?: number[]): TpLinear | undefined {
    const style = this.styleOf(module);
    const xp = this.parts.get(x);
    const K = this.g.node(x).shape.at(-1)!;
    const T = this.T;
    const r = this.rank;
    if (style === undefined) {
      if (xp) this.fail(`linear '${module}' takes a channel-sharded input (the output of a colwise linear) but is not in the TP plan; make it 'rowwise'`, src);
      return undefined; // replicated on every rank
    }
    if (style === 'colwise' && packed && packed.length > 1) {
      if (xp) this.fail(`colwise linear '${module}' takes a channel-sharded input; it needs a replicated one`, src);
      return this.packedColwise(module, packed, K, hasBias, src);
    }
    if (style === 'colwise' || style === 'colwise_replicate') {
      if (xp) this.fail(`${style} linear '${module}' takes a channel-sharded input; it needs a replicated one`, src);
      if (packed && packed.length > 1 && style === 'colwise_replicate') this.fail(`colwise_replicate linear '${module}' is a packed projection (parts [${packed.join(', ')}]); its all-gather would interleave the parts`, src);
      const gather = style === 'colwise_replicate'; // replicated again after the all-gather
      // the all-gather of colwise_replicate takes equal shares
      // a split that is even in channels is the same whatever the unit: unit 1 (parts compare alike)
      const u = gather ? 1 : (this.units.get(module) ?? 1);
      const unit = (out / u) % T === 0 ? 1 : u;
      if (gather && out % T !== 0) this.fail(`${style} linear '${module}' has ${out} output features, not divisible by ${T}`, src);
      if (out % unit !== 0 || out / unit < T) this.fail(`${style} linear '${module}' has ${out} output features in ${out / unit} unit(s) of ${unit}: fewer than tp_size ${T}`, src);
      const share = tpShare(out, unit, T, r);
      this.slices.set(`${module}.weight`, { full: [out, K], axis: 0, ranges: [share] });
      if (hasBias) this.slices.set(`${module}.bias`, { full: [out], axis: 0, ranges: [share] });
      this.outParts.set(module, gather ? null : [{ F: out, unit }]);
      return { out: share[1], bias: hasBias, reduce: false, gather, inFull: K };
    }
    // rowwise: the rank's columns of every sharded input group
    if (!xp) this.fail(`rowwise linear '${module}' takes a replicated input; it must follow colwise linears (check the TP plan)`, src);
    const ranges: [number, number][] = [];
    let off = 0;
    for (const p of xp) {
      const [o, n] = tpShare(p.F, p.unit, T, r);
      ranges.push([off + o, n]);
      off += p.F;
    }
    this.slices.set(`${module}.weight`, { full: [out, off], axis: 1, ranges });
    this.outParts.set(module, null);
    return { out, bias: hasBias && r === 0, reduce: true, gather: false, inFull: off };
  }

  /**
   * PackedColwiseParallel: every block of a fused projection split on its own (whole heads for the q / k / v
   * blocks), the rank's rows of each block side by side; its output holds one sharded group per block
   */
  private packedColwise(module: string, packed: number[], K: number, hasBias: boolean, src: string): TpLinear {
    const u = this.units.get(module) ?? 1;
    const parts: Part[] = packed.map((F) => ({ F, unit: F % u === 0 && (F / u) % this.T !== 0 ? u : 1 }));
    const ranges: [number, number][] = [];
    let off = 0;
    for (const p of parts) {
      if (p.F / p.unit < this.T) this.fail(`colwise linear '${module}' has a block of ${p.F} output features in ${p.F / p.unit} unit(s) of ${p.unit}: fewer than tp_size ${this.T}`, src);
      const [o, n] = tpShare(p.F, p.unit, this.T, this.rank);
      ranges.push([off + o, n]);
      off += p.F;
    }
    this.slices.set(`${module}.weight`, { full: [off, K], axis: 0, ranges });
    if (hasBias) this.slices.set(`${module}.bias`, { full: [off], axis: 0, ranges });
    this.outParts.set(module, parts);
    return { out: ranges.reduce((a, r) => a + r[1], 0), bias: hasBias, reduce: false, gather: false, inFull: K };
  }

  /** the rank's widths of a tensor's sharded groups */
  private localWidths(xp: Part[]): number[] {
    return xp.map((p) => tpShare(p.F, p.unit, this.T, this.rank)[1]);
  }

  localSizes(x: number, sizes: number[]): number[] | undefined {
    const xp = this.parts.get(x);
    if (!xp) return undefined;
    const widths = this.localWidths(xp);
    const out: number[] = [];
    let i = 0;
    for (const size of sizes) {
      let full = 0;
      let local = 0;
      while (i < xp.length && full < size) {
        full += xp[i]!.F;
        local += widths[i]!;
        i++;
      }
      if (full !== size) break;
      out.push(local);
    }
    if (out.length !== sizes.length || i !== xp.length) {
      this.fail(`split [${sizes.join(', ')}] of a channel-sharded tensor does not follow its sharded blocks [${xp.map((p) => p.F).join(', ')}] (declare the linear's parts)`, '');
    }
    return out;
  }

  norm(module: string | null, x: number, src: string): { full: number } | undefined {
    const xp = this.parts.get(x);
    if (!xp) return undefined;
    if (xp.length !== 1) this.fail(`RMSNorm '${module ?? ''}' runs on a concatenation of sharded channel groups`, src);
    const { F, unit } = xp[0]!;
    if (module !== null) this.slices.set(`${module}.weight`, { full: [F], axis: 0, ranges: [tpShare(F, unit, this.T, this.rank)] });
    return { full: F };
  }

  headParam(name: string, shape: number[], axis: number, src: string): number[] {
    const H = shape[axis]!;
    if (H < this.T) this.fail(`'${name}' has ${H} heads along axis ${axis}, fewer than tp_size ${this.T}`, src);
    // the same shares as the heads of the attention it biases
    const share = tpShare(H, 1, this.T, this.rank);
    this.slices.set(name, { full: [...shape], axis, ranges: [share] });
    const local = [...shape];
    local[axis] = share[1];
    return local;
  }

  heads(x: number, heads: number, what: string, src: string): number {
    const xp = this.parts.get(x);
    if (!xp) return heads;
    if (xp.length !== 1) this.fail(`${what} runs on a concatenation of sharded channel groups; per-head ops need one group`, src);
    const { F, unit } = xp[0]!;
    const where = `${what} in ${this.g.nodes.at(-1)?.block ?? 'the component'}`;
    if (unit === 1) {
      // channels split evenly: whole heads only when T divides the heads
      if (heads % this.T !== 0) this.fail(`${where} has ${heads} heads, not divisible by ${this.T}, on channels split evenly (no per-head op follows their linear)`, src);
      return heads / this.T;
    }
    if (unit * heads !== F) this.fail(`${where} splits ${F} channels into ${heads} heads, but they were sharded in units of ${unit}`, src);
    return tpShare(heads, 1, this.T, this.rank)[1];
  }

  failed(op: string, inputs: number[], e: Error): Error {
    const sh = inputs.filter((i) => i >= 0 && this.parts.has(i));
    if (!sh.length) return e;
    return new CompileError(
      `${this.what}: tensor parallel (tp_size ${this.T}): ${op} on a rank trace where ${sh.length} of its inputs are channel-sharded (the TP plan must shard every branch that meets here alike): ${e.message}`,
    );
  }

  recorded(n: Node): void {
    const ins = n.inputs.map((i) => (i < 0 ? undefined : this.parts.get(i)));
    const sharded = ins.filter((p): p is Part[] => !!p);
    const set = (p: Part[] | undefined): void => {
      if (p) this.parts.set(n.id, p);
    };
    const bad = (why: string): never =>
      this.fail(`${n.op}${n.block ? ` in ${n.block}` : ''} ${why}; only linears, per-head ops, elementwise ops and token-axis concat/split may see sharded channels`, n.src);
    const rank = n.shape.length;
    const lastAxis = (a: unknown): boolean => ((a as number) < 0 ? (a as number) + rank : (a as number)) === rank - 1;
    if (n.op === 'linear' && n.attrs.lora) {
      // a LoRA branch: its down projection is replicated (or, on a row-parallel input, a partial sum like the
      // weight's own product); its up projection is sharded as the weight's output
      if (n.attrs.lora === 'B') set(this.outParts.get(n.attrs.module as string) ?? undefined);
      return;
    }
    if (n.op === 'linear') {
      const name = n.attrs.name as string | undefined;
      if (name !== undefined && this.outParts.has(name)) set(this.outParts.get(name) ?? undefined);
      else if (sharded.length) bad('(no TP style) takes a channel-sharded input');
      return;
    }
    if (n.op === 'all_reduce' || n.op === 'tp_all_gather' || sharded.length === 0) return;
    if (UNARY_EW.has(n.op)) return set(ins[0]);
    if (BINARY_EW.has(n.op)) {
      if (sharded.some((p) => key(p) !== key(sharded[0]!))) bad('mixes tensors sharded differently');
      n.inputs.forEach((id, j) => {
        if (!ins[j] && id >= 0 && (this.g.node(id).shape.at(-1) ?? 1) !== 1) bad('mixes a channel-sharded tensor with a replicated one');
      });
      return set(sharded[0]);
    }
    switch (n.op) {
      case 'head_rms_norm':
      case 'dist_rms_norm':
      case 'rope':
        if (!ins[0]) bad('has a sharded weight or table');
        return set(ins[0]);
      case 'attention':
        if (!ins[0] || !ins[1] || !ins[2] || key(ins[0]) !== key(ins[1]) || key(ins[0]) !== key(ins[2])) bad('needs q, k and v sharded alike');
        if (ins[3]) bad('key mask is sharded');
        return set(ins[0]);
      case 'attention_bias':
        // the text encoders' attention on the rank's heads: q by query heads, k and v by key/value heads (GQA)
        if (!ins[0] || !ins[1] || !ins[2] || key(ins[1]) !== key(ins[2])) bad('needs q, k and v sharded by heads');
        if (ins[3] || ins[4]) bad('bias / key mask is sharded');
        return set(ins[0]);
      case 'concat':
        if (sharded.length !== n.inputs.length) bad('mixes channel-sharded and replicated inputs');
        if (lastAxis(n.attrs.axis)) return set(sharded.flat());
        if (sharded.some((p) => key(p) !== key(sharded[0]!))) bad('mixes tensors sharded differently');
        return set(sharded[0]);
      case 'slice': {
        if (!lastAxis(n.attrs.axis)) return set(ins[0]);
        // a run of whole sharded groups (a block of a packed linear) keeps its groups
        const xp = ins[0]!;
        const widths = this.localWidths(xp);
        const start = n.attrs.start as number;
        const len = n.attrs.len as number;
        let off = 0;
        for (let i = 0; i < xp.length; i++) {
          if (off === start) {
            let w = 0;
            for (let j = i; j < xp.length && w < len; j++) {
              w += widths[j]!;
              if (w === len) return set(xp.slice(i, j + 1));
            }
          }
          off += widths[i]!;
        }
        return bad('slices the sharded channel axis across its sharded blocks');
      }
      default:
        bad('takes a channel-sharded input');
    }
  }
}

/**
 * Checks every attention's heads fit T before tracing ranks (names the module): at least T heads; with
 * grouped-query attention or a CP x TP hybrid (C > 1 context-parallel ranks), T must divide them. Returns
 * the unlowered trace's split units (splitUnits).
 */
function checkHeads(model: string, req: UlyssesRequest, T: number, C: number): Map<string, number> {
  const g = traceComponent(getModel(model), req.component, { ...(req.dims ? { dims: req.dims } : {}), ...(req.config ? { config: req.config } : {}) }).graph;
  for (const n of g.live()) {
    if (n.op !== 'attention' && n.op !== 'attention_bias') continue;
    const H = n.attrs.heads as number;
    const Hk = (n.attrs.kvHeads as number | undefined) ?? H;
    const where = `${model} ${req.component}: tensor parallel: ${n.block ?? n.segment} attention (${n.src})`;
    if (Hk !== H && (Hk % T !== 0 || H % T !== 0)) throw new CompileError(`${where} has ${Hk} key/value heads, not divisible by tp_size ${T}: use a tp_size that divides ${Hk}`);
    if (H < T) throw new CompileError(`${where} has ${H} heads, fewer than tp_size ${T}: use a tp_size of at most ${H}`);
    if (C > 1 && H % T !== 0) throw new CompileError(`${where} has ${H} heads, not divisible by tp_size ${T}, which a CP x TP hybrid needs (Cache-DiT shard_div_attr): use a tp_size that divides ${H}`);
  }
  return splitUnits(g);
}

/**
 * Per-rank tensor-parallel plans (index = rank). With `ulysses_size` U and / or `ring_size` R > 1 too: the
 * CP x TP hybrid (Cache-DiT mesh (ring, ulysses, tp), TP innermost): rank = c * T + t runs TP rank t's
 * trace at CP rank c's local token counts (c = ringIdx * U + ulyssesIdx, parallel-lower.ts), its attentions
 * lowered to Ulysses / ring / USP comm ops over H/T heads within the CP group {t, T + t, ...}, its
 * all-reduces within the tp group {c*T, ..., c*T + T - 1}.
 * ulysses_async works unchanged: parallel-lower's async placement never issues an all-to-all before an earlier
 * comm op, so the TP collectives never overlap an in-flight all-to-all (one collective at a time per group).
 * Errors (CompileError): no TP plan, heads or features not divisible
 * by tp_size, an op the rank trace cannot run on sharded channels.
 */
export function lowerTensorParallel(model: string, req: UlyssesRequest, compileRank: TpRankCompiler): Plan[] {
  const T = req.parallel.tp_size ?? 1;
  const U = req.parallel.ulysses_size ?? 1;
  const R = req.parallel.ring_size ?? 1;
  const C = U * R; // context-parallel ranks
  if (!Number.isInteger(T) || T < 1) throw new CompileError(`parallel plan: tp_size must be a positive integer, got ${T}`);
  const rules = tpRules(model, req);
  const units = checkHeads(model, req, T, C);
  const what = `${model} ${req.component}`;
  const perT: Plan[][] = [];
  const slicesOf: Map<string, PlanWeightSlice>[] = [];
  for (let t = 0; t < T; t++) {
    const slices = new Map<string, PlanWeightSlice>();
    const hooks: TpHook[] = [];
    const factory = (g: Graph): TpTraceHook => {
      const h = new TpHook(g, T, t, rules, slices, what, units);
      hooks.push(h);
      return h;
    };
    const plans = C > 1 ? lowerContextParallel(model, { ...req, parallel: { ...req.parallel, tp_size: 1 } }, (over, graphPass) => compileRank(factory, over, graphPass)) : [compileRank(factory)];
    for (const hook of hooks) {
      for (const o of hook.g.outputs) {
        if (hook.parts.has(o.node)) throw new CompileError(`${what}: tensor parallel: output '${o.name}' is channel-sharded (a colwise linear feeds it); end with a rowwise linear`);
      }
    }
    perT.push(plans);
    slicesOf.push(slices);
  }
  const out: Plan[] = [];
  for (let c = 0; c < C; c++) {
    for (let t = 0; t < T; t++) {
      const plan = finishRank(perT[t]![c]!, slicesOf[t]!, T);
      const rank = c * T + t;
      const cp = plan.parallel;
      // parallel-lower's tag suffix (-u<U>r<rank>, -r<R>r<rank>, -u<U>r<W>r<rank>) -> the mesh's
      const mesh = `${U > 1 ? `u${U}` : ''}${R > 1 ? `r${R}` : ''}`;
      plan.tag = C > 1 ? `${plan.tag.replace(/-(?:u\d+r|u|r)\d+r\d+$/, '')}-${mesh}tp${T}r${rank}` : `${plan.tag}-tp${T}r${rank}`;
      plan.parallel = cp
        ? { ...cp, world: C * T, rank, tp: T }
        : { kind: 'tp', world: T, rank, ulysses: 1, ring: 1, tp: T, anything: false, float8: false, async: false, headPadPolicy: 'cache-dit', split: {}, gather: {} };
      out.push(plan);
    }
  }
  return out;
}

/** The TP parts of a rank plan: weight slices, comm info of the TP ops, no comm ops in `kernels`. */
function finishRank(plan: Plan, slices: Map<string, PlanWeightSlice>, T: number): Plan {
  const out: Plan = structuredClone(plan);
  out.kernels = out.kernels.filter((k) => !k.startsWith('comm.'));
  for (const w of out.weights) {
    const s = slices.get(w.name);
    if (s) w.slice = s;
  }
  for (const seg of out.segments) {
    const lists = seg.blocks ? seg.blocks.map((b) => ({ name: b.name, ops: b.ops })) : [{ name: seg.name, ops: seg.ops ?? [] }];
    for (const l of lists) {
      for (const op of l.ops) {
        if (op.k !== 'comm.all_reduce' && op.k !== 'comm.all_gather_tp') continue;
        // sizes: the all-gather's per-rank channel counts; hLocal..stream are Ulysses fields, unused here
        const sizes = op.k === 'comm.all_gather_tp' ? new Array<number>(T).fill(op.i[1]!) : [];
        op.comm = { group: 'tp', sizes, hLocal: 0, hPad: 0, hReal: 0, float8: false, wait: true, stream: 'o', module: l.name };
      }
    }
  }
  return out;
}
