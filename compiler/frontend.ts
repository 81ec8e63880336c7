// Frontend: resolves a component's config and dims, then traces its forward into an IR Graph.
import type { PlanComponent } from '../runtime/plan.ts';
import { Builder, Module, PATTERN_INFO, Tensor, type BlockListSpec, type ComponentInstance, type ModelDefinition, type Streams } from './dsl/index.ts';
import { DslError, Tracer, withTracer, type TpTraceHook } from './dsl/trace.ts';
import { CompileError, type BlockListInfo, type Graph } from './ir/graph.ts';

export interface TraceOptions {
  dims?: Record<string, number>;
  config?: Record<string, unknown>;
  /** plan dims replaced after `resolve` (context-parallel lowering: a rank's local token counts) */
  dimsOverride?: Record<string, number>;
  /** tensor-parallel rank trace: makes the hook for the trace's graph (compiler/passes/tp-lower.ts) */
  tp?: (g: Graph) => TpTraceHook;
}

export interface Traced {
  graph: Graph;
  config: Record<string, unknown>;
  dims: Record<string, number>;
  userDims: Record<string, number>;
  tag: string;
  component: PlanComponent;
  className: string;
}

export function componentOf(def: ModelDefinition, component: PlanComponent): ComponentInstance {
  const inst = def.components[component];
  if (!inst) {
    const have = Object.keys(def.components).join(', ');
    throw new CompileError(`model '${def.name}' has no ${component} component (it has: ${have})`);
  }
  return inst;
}

/**
 * The config key of unfused LoRA (any component): `{ module: rank }`, the linears that run a low-rank branch
 * beside their weight (`<module>.lora_A.weight` [rank, in], `<module>.lora_B.weight` [out, rank], the scale
 * folded into B by the runtime); absent: none
 */
export const LORA_BRANCHES = 'lora_branches';

function loraBranches(cfg: Record<string, unknown>, where: string): Record<string, number> | undefined {
  const v = cfg[LORA_BRANCHES];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new CompileError(`${where}: ${LORA_BRANCHES} must be an object of module -> rank, got ${JSON.stringify(v)}`);
  for (const [m, r] of Object.entries(v)) if (!Number.isInteger(r) || (r as number) < 1) throw new CompileError(`${where}: ${LORA_BRANCHES}['${m}'] must be a positive integer rank, got ${JSON.stringify(r)}`);
  return v as Record<string, number>;
}

export function resolveConfig(def: ModelDefinition, component: PlanComponent, overrides?: Record<string, unknown>): Record<string, unknown> {
  const inst = componentOf(def, component);
  const cfg: Record<string, unknown> = { ...(inst.def.config as Record<string, unknown>), ...inst.config };
  for (const [k, v] of Object.entries(overrides ?? {})) {
    if (!(k in cfg) && k !== LORA_BRANCHES) throw new CompileError(`${def.name} ${component}: unknown config key '${k}' (known: ${Object.keys(cfg).join(', ')}, ${LORA_BRANCHES})`);
    cfg[k] = v;
  }
  return cfg;
}

export function traceComponent(def: ModelDefinition, component: PlanComponent, opts: TraceOptions = {}): Traced {
  const inst = componentOf(def, component);
  const cdef = inst.def;
  const cfg = resolveConfig(def, component, opts.config);
  const userDims: Record<string, number> = { ...cdef.dims.defaults, ...(def.dims?.[component] ?? {}) };
  for (const [k, v] of Object.entries(opts.dims ?? {})) {
    if (!(k in userDims)) throw new CompileError(`${def.name} ${component}: unknown dim '${k}' (valid dims: ${Object.keys(userDims).join(', ')})`);
    if (!Number.isInteger(v) || v <= 0) throw new CompileError(`${def.name} ${component}: ${k} ${v} is not valid: must be a positive integer`);
    userDims[k] = v;
  }
  let resolved: { dims: Record<string, number>; tag: string };
  try {
    resolved = cdef.dims.resolve(cfg, userDims);
  } catch (e) {
    if (e instanceof DslError) throw new CompileError(`${def.name} ${component}: ${e.message}`);
    throw e;
  }
  if (opts.dimsOverride) resolved = { ...resolved, dims: { ...resolved.dims, ...opts.dimsOverride } };
  const tracer = new Tracer();
  const g = tracer.graph;
  if (opts.tp) tracer.tp = opts.tp(g);
  const branches = loraBranches(cfg, `${def.name} ${component}`);
  if (branches) tracer.lora = new Map(Object.entries(branches));
  const plainSegs: string[] = [];
  const segOrder: string[] = [];
  const noteSeg = (s: string): void => {
    if (!segOrder.includes(s)) segOrder.push(s);
  };
  const listCount = { n: 0 };

  const runList = (spec: BlockListSpec<any, any>, s: Streams, ctx: unknown, src: string): Streams => {
    const info = PATTERN_INFO[spec.pattern];
    if (!info) throw new DslError(`block list '${spec.name}': unknown pattern ${spec.pattern}`, src);
    if (info.encoderIn && !s.encoder) throw new DslError(`block list '${spec.name}' (Pattern_${spec.pattern}) takes encoder states: pass { hidden, encoder }`, src);
    if (!info.encoderIn && s.encoder) throw new DslError(`block list '${spec.name}' (Pattern_${spec.pattern}) takes hidden states only: drop 'encoder' or use Pattern 0/1/2`, src);
    const entrySegment = tracer.segment;
    plainSegs.push(entrySegment);
    noteSeg(entrySegment);
    const segName = `list#${listCount.n++}`;
    tracer.segment = segName;
    noteSeg(segName);
    const ports: ('hidden' | 'encoder')[] = info.encoderIn || info.encoderOut ? ['hidden', 'encoder'] : ['hidden'];
    const li: BlockListInfo = { list: spec.name, segment: segName, pattern: spec.pattern, blocks: [], ports };
    const counters = new Map<string, number>();
    let h = s.hidden;
    let e = s.encoder;
    let first = true;
    for (const r of spec.blocks) {
      const b = r.block;
      if (b.pattern !== spec.pattern) {
        throw new DslError(`block '${b.prefix}' has Pattern_${b.pattern} but block list '${spec.name}' is Pattern_${spec.pattern}: every block of a list must follow the list's pattern`, r.src);
      }
      const n = typeof r.count === 'number' ? r.count : typeof r.count === 'string' ? (cfg[r.count] as number) : r.count(cfg);
      if (!Number.isInteger(n) || n < 0) throw new DslError(`repeat('${b.prefix}'): block count ${String(n)} is not a non-negative integer`, r.src);
      for (let k = 0; k < n; k++) {
        const idx = counters.get(b.prefix) ?? 0;
        counters.set(b.prefix, idx + 1);
        const name = `${b.prefix}.${idx}`;
        tracer.block = name;
        li.blocks.push({ name, pattern: b.pattern });
        const bi = li.blocks.length - 1;
        const attrsBase = { list: spec.name, block: bi, ...(first ? { entrySegment } : {}) };
        const hin = tracer.record('block_in', [h.id], { ...attrsBase, port: 'hidden' }, `${name}.hidden_in`, b.src);
        let ein: number | undefined;
        if (info.encoderIn) ein = tracer.record('block_in', [e!.id], { ...attrsBase, port: 'encoder' }, `${name}.encoder_in`, b.src);
        const streams: Streams = { hidden: new Tensor(hin, g.node(hin).shape) };
        if (ein !== undefined) streams.encoder = new Tensor(ein, g.node(ein).shape);
        const res = b.fn(new Module(`${name}.`), streams, ctx, cfg);
        let oh: Tensor | undefined;
        let oe: Tensor | undefined;
        if (res instanceof Tensor) oh = res;
        else if (Array.isArray(res)) {
          if (res.length !== 2) throw new DslError(`block '${b.prefix}' returned ${res.length} tensors`, b.src);
          [oh, oe] = info.hiddenFirst ? [res[0], res[1]] : [res[1], res[0]];
        } else {
          oh = res.hidden;
          oe = res.encoder;
        }
        if (!(oh instanceof Tensor)) throw new DslError(`block '${b.prefix}' must return the hidden states`, b.src);
        if (info.encoderOut && !(oe instanceof Tensor)) {
          throw new DslError(`block '${b.prefix}' (Pattern_${b.pattern}) must return encoder states too: return { hidden, encoder }`, b.src);
        }
        if (!info.encoderOut && oe !== undefined) {
          throw new DslError(`block '${b.prefix}' (Pattern_${b.pattern}) returns hidden states only: drop 'encoder' from the result or use Pattern 0/1/4/5`, b.src);
        }
        if (oh.shape.join(',') !== h.shape.join(',')) {
          throw new DslError(`block '${name}' returns hidden states [${oh.shape.join(', ')}], expected [${h.shape.join(', ')}] (block lists keep shapes)`, b.src);
        }
        const hout = tracer.record('block_out', [oh.id], { list: spec.name, block: bi, port: 'hidden' }, `${name}.hidden_out`, b.src);
        h = new Tensor(hout, g.node(hout).shape);
        if (info.encoderOut) {
          if (e && oe!.shape.join(',') !== e.shape.join(',')) {
            throw new DslError(`block '${name}' returns encoder states [${oe!.shape.join(', ')}], expected [${e.shape.join(', ')}]`, b.src);
          }
          const eout = tracer.record('block_out', [oe!.id], { list: spec.name, block: bi, port: 'encoder' }, `${name}.encoder_out`, b.src);
          e = new Tensor(eout, g.node(eout).shape);
        }
        first = false;
      }
    }
    tracer.block = undefined;
    if (li.blocks.length === 0) throw new DslError(`block list '${spec.name}' has no blocks`, src);
    g.lists.push(li);
    tracer.nextPlainSegment();
    const out: Streams = { hidden: h };
    if (info.encoderOut) out.encoder = e!;
    else if (s.encoder) out.encoder = s.encoder;
    return out;
  };

  withTracer(tracer, () => {
    const shapes = cdef.inputs(cfg, resolved.dims);
    const ins: Record<string, Tensor> = {};
    for (const [name, shape] of Object.entries(shapes)) {
      const id = tracer.record('input', [], { name, shape }, name, cdef.src);
      g.inputs.push({ name, node: id });
      ins[name] = new Tensor(id, shape);
    }
    const outs = cdef.forward(new Builder(cfg, runList), ins, cfg, resolved.dims);
    for (const [name, t] of Object.entries(outs)) {
      if (!(t instanceof Tensor)) throw new DslError(`forward must return tensors; output '${name}' is not one`, cdef.src);
      g.outputs.push({ name, node: t.id });
    }
  });
  plainSegs.push(tracer.segment);
  noteSeg(tracer.segment);

  // name the segments: no lists -> 'forward'; else 'embed', list segments, 'head' (and 'mid<k>')
  const rename = new Map<string, string>();
  if (g.lists.length === 0) {
    for (const s of plainSegs) rename.set(s, 'forward');
  } else {
    const plain = segOrder.filter((s) => !s.startsWith('list#'));
    plain.forEach((s, i) => rename.set(s, i === 0 ? 'embed' : i === plain.length - 1 ? 'head' : `mid${i}`));
    const single = g.lists.length === 1;
    for (const li of g.lists) {
      const nm = single ? 'blocks' : `blocks:${li.list}`;
      rename.set(li.segment, nm);
      li.segment = nm;
    }
  }
  for (const n of g.nodes) {
    if (n.segment) n.segment = rename.get(n.segment) ?? n.segment;
    if (n.op === 'block_in' && n.attrs.entrySegment) n.attrs.entrySegment = rename.get(n.attrs.entrySegment as string) ?? n.attrs.entrySegment;
  }
  g.segments = segOrder.map((s) => rename.get(s) ?? s).filter((s, i, a) => a.indexOf(s) === i);
  // keep empty plain segments out, except the entry segment of a list (it holds the io copy)
  const used = new Set<string>(g.nodes.map((n) => n.segment));
  for (const n of g.nodes) if (n.op === 'block_in' && n.attrs.entrySegment) used.add(n.attrs.entrySegment as string);
  g.segments = g.segments.filter((s) => used.has(s));
  return { graph: g, config: cfg, dims: resolved.dims, userDims, tag: resolved.tag, component, className: cdef.className };
}
