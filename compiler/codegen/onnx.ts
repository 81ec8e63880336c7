// ONNX export (opset 21, standard ops only) of the UNFUSED IR: an independent cross-check of the
// plan (onnxruntime-node runs it). Weights are embedded as initializers when given, else graph inputs.
import onnxProto from 'onnx-proto';
import { CompileError, type Graph, type Node } from '../ir/graph.ts';

const { onnx } = onnxProto;
type INode = InstanceType<typeof onnx.NodeProto>;
type ITensor = InstanceType<typeof onnx.TensorProto>;
type IAttr = InstanceType<typeof onnx.AttributeProto>;

const FLOAT = 1;
const INT64 = 7;
const DOUBLE = 11;
const BOOL = 9;

type AttrVal = number | string | number[] | { floats: number[] } | { float: number };

function attr(name: string, v: AttrVal): IAttr {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: A.STRING, s: new TextEncoder().encode(v) });
  if (typeof v === 'number') return onnx.AttributeProto.create({ name, type: A.INT, i: v });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: A.INTS, ints: v });
  if ('float' in v) return onnx.AttributeProto.create({ name, type: A.FLOAT, f: v.float });
  return onnx.AttributeProto.create({ name, type: A.FLOATS, floats: v.floats });
}

class OnnxBuilder {
  nodes: INode[] = [];
  inits: ITensor[] = [];
  private n = 0;
  private consts = new Map<string, string>();

  fresh(p = 't'): string {
    return `${p}_${this.n++}`;
  }
  op(type: string, inputs: string[], attrs: Record<string, AttrVal> = {}, out?: string): string {
    const o = out ?? this.fresh(type.toLowerCase());
    this.nodes.push(
      onnx.NodeProto.create({ opType: type, input: inputs, output: [o], name: `${type}_${this.nodes.length}`, attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) }),
    );
    return o;
  }
  opMulti(type: string, inputs: string[], nOut: number, attrs: Record<string, AttrVal> = {}): string[] {
    const outs = Array.from({ length: nOut }, () => this.fresh(type.toLowerCase()));
    this.nodes.push(onnx.NodeProto.create({ opType: type, input: inputs, output: outs, name: `${type}_${this.nodes.length}`, attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) }));
    return outs;
  }
  tensor(name: string, dims: number[], type: number, raw: Uint8Array): ITensor {
    return onnx.TensorProto.create({ name, dims, dataType: type, rawData: raw });
  }
  private constant(key: string, make: (name: string) => ITensor): string {
    const hit = this.consts.get(key);
    if (hit) return hit;
    const name = `const_${this.consts.size}`;
    this.inits.push(make(name));
    this.consts.set(key, name);
    return name;
  }
  f32(vals: ArrayLike<number>, dims: number[]): string {
    const a = Float32Array.from(vals);
    return this.constant(`f|${dims.join(',')}|${Array.from(a).join(',')}`, (nm) => this.tensor(nm, dims, FLOAT, new Uint8Array(a.buffer)));
  }
  f64(vals: ArrayLike<number>, dims: number[]): string {
    const a = Float64Array.from(vals);
    return this.constant(`d|${dims.join(',')}|${Array.from(a).join(',')}`, (nm) => this.tensor(nm, dims, DOUBLE, new Uint8Array(a.buffer)));
  }
  i64(vals: number[], dims = [vals.length]): string {
    const a = BigInt64Array.from(vals.map((v) => BigInt(v)));
    return this.constant(`i|${dims.join(',')}|${vals.join(',')}`, (nm) => this.tensor(nm, dims, INT64, new Uint8Array(a.buffer)));
  }
  scalar(v: number): string {
    return this.f32([v], []);
  }
}

function valueInfo(name: string, shape: number[]): InstanceType<typeof onnx.ValueInfoProto> {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({ elemType: FLOAT, shape: onnx.TensorShapeProto.create({ dim: shape.map((d) => onnx.TensorShapeProto.Dimension.create({ dimValue: d })) }) }),
    }),
  });
}

export interface OnnxExportOptions {
  name: string;
  /** checkpoint tensors; when given, every weight is embedded as an initializer */
  weights?: Map<string, Float32Array>;
}

export function exportGraphOnnx(g: Graph, o: OnnxExportOptions): Uint8Array {
  const b = new OnnxBuilder();
  const names = new Map<number, string>();
  const graphInputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  const transposed = new Map<string, string>();
  const v = (id: number): string => {
    const s = names.get(id);
    if (s === undefined) throw new Error(`internal: ONNX export: value ${id} has no name`);
    return s;
  };
  const shapeOf = (id: number): number[] => g.node(id).shape;

  for (const inp of g.inputs) {
    names.set(inp.node, inp.name);
    graphInputs.push(valueInfo(inp.name, shapeOf(inp.node)));
  }
  for (const [wn, id] of g.weights) {
    names.set(id, wn);
    const shape = shapeOf(id);
    if (o.weights) {
      const data = o.weights.get(wn);
      if (!data) throw new CompileError(`ONNX export: weight '${wn}' is missing from the weights map`);
      const n = shape.reduce((a, c) => a + 0 * c, 0) + shape.reduce((a, c) => a * c, 1);
      if (data.length !== n) throw new CompileError(`ONNX export: weight '${wn}' has ${data.length} values, expected ${n} ([${shape.join(', ')}])`);
      const copy = new Float32Array(data);
      b.inits.push(b.tensor(wn, shape, FLOAT, new Uint8Array(copy.buffer)));
    } else {
      graphInputs.push(valueInfo(wn, shape));
    }
  }

  const unsq = (x: string, axes: number[]): string => b.op('Unsqueeze', [x, b.i64(axes)]);
  /** [B, C] or [B, 1, C] per-batch vector -> [B, 1, C] */
  const vec = (id: number): string => (shapeOf(id).length === 2 ? unsq(v(id), [1]) : v(id));
  const reshape = (x: string, shape: number[]): string => b.op('Reshape', [x, b.i64(shape)]);
  const rms = (x: string, eps: number): string => {
    const ms = b.op('ReduceMean', [b.op('Mul', [x, x]), b.i64([-1])], { keepdims: 1 });
    return b.op('Div', [x, b.op('Sqrt', [b.op('Add', [ms, b.scalar(eps)])])]);
  };
  const gelu = (x: string): string => {
    const x3 = b.op('Mul', [b.op('Mul', [x, x]), x]);
    const inner = b.op('Mul', [b.scalar(Math.sqrt(2 / Math.PI)), b.op('Add', [x, b.op('Mul', [b.scalar(0.044715), x3])])]);
    return b.op('Mul', [b.op('Mul', [b.scalar(0.5), x]), b.op('Add', [b.scalar(1), b.op('Tanh', [inner])])]);
  };
  const silu = (x: string): string => b.op('Mul', [x, b.op('Sigmoid', [x])]);
  const wT = (w: string): string => {
    let t = transposed.get(w);
    if (!t) {
      t = b.op('Transpose', [w], { perm: [1, 0] });
      transposed.set(w, t);
    }
    return t;
  };

  const lowerNode = (n: Node): string => {
    const I = n.inputs;
    const A = n.attrs as Record<string, any>;
    const x = (k: number): string => v(I[k]!);
    const has = (k: number): boolean => I[k] !== undefined && I[k]! >= 0;
    switch (n.op) {
      case 'block_in':
      case 'block_out':
      case 'identity':
        return x(0);
      case 'linear': {
        const y = b.op('MatMul', [x(0), wT(x(1))]);
        return has(2) ? b.op('Add', [y, x(2)]) : y;
      }
      case 'layer_norm': {
        const C = n.shape[n.shape.length - 1]!;
        const ins = [x(0), has(1) ? x(1) : b.f32(new Array(C).fill(1), [C])];
        if (has(2)) ins.push(x(2));
        return b.op('LayerNormalization', ins, { axis: -1, epsilon: { float: A.eps } });
      }
      case 'rms_norm': {
        const y = rms(x(0), A.eps);
        return has(1) ? b.op('Mul', [y, x(1)]) : y;
      }
      case 'head_rms_norm': {
        const [B, S, C] = n.shape as [number, number, number];
        const H = A.heads as number;
        const y = b.op('Mul', [rms(reshape(x(0), [B, S, H, C / H]), A.eps), x(1)]);
        return reshape(y, [B, S, C]);
      }
      case 'rope_table': {
        const axes = A.axes as number[];
        const cs: string[] = [];
        const ss: string[] = [];
        const S = n.shape[1]!;
        axes.forEach((d, a) => {
          const pos = b.op('Cast', [b.op('Slice', [x(0), b.i64([a]), b.i64([a + 1]), b.i64([1])])], { to: DOUBLE });
          const fr = Array.from({ length: d / 2 }, (_, j) => 1 / Math.pow(A.theta as number, (2 * j) / d));
          const m = b.op('Mul', [pos, b.f64(fr, [1, d / 2])]);
          for (const [fn, list] of [['Cos', cs], ['Sin', ss]] as const) {
            const t = unsq(b.op(fn, [m]), [2]);
            const rep = reshape(b.op('Concat', [t, t], { axis: 2 }), [S, d]);
            list.push(b.op('Cast', [rep], { to: FLOAT }));
          }
        });
        const cos = cs.length > 1 ? b.op('Concat', cs, { axis: 1 }) : cs[0]!;
        const sin = ss.length > 1 ? b.op('Concat', ss, { axis: 1 }) : ss[0]!;
        return b.op('Concat', [unsq(cos, [0]), unsq(sin, [0])], { axis: 0 });
      }
      case 'rope': {
        const [B, S, C] = n.shape as [number, number, number];
        const H = A.heads as number;
        const D = C / H;
        const r0 = A.row0 as number;
        if (A.half) {
          // rotate_half: (x1, x2) -> (-x2, x1); pair j's angle sits at table column 2j
          const x4 = reshape(x(0), [B, S, H, D]);
          const [h1, h2] = b.opMulti('Split', [x4, b.i64([D / 2, D / 2])], 2, { axis: 3 });
          const rot = b.op('Concat', [b.op('Neg', [h2!]), h1!], { axis: 3 });
          const cols = b.i64([...Array.from({ length: D / 2 }, (_, j) => 2 * j), ...Array.from({ length: D / 2 }, (_, j) => 2 * j)]);
          const tab = (k: number): string => reshape(b.op('Gather', [b.op('Slice', [x(1), b.i64([k, r0]), b.i64([k + 1, r0 + S]), b.i64([0, 1])]), cols], { axis: 2 }), [1, S, 1, D]);
          return reshape(b.op('Add', [b.op('Mul', [x4, tab(0)]), b.op('Mul', [rot, tab(1)])]), [B, S, C]);
        }
        const x5 = reshape(x(0), [B, S, H, D / 2, 2]);
        const [x0, x1] = b.opMulti('Split', [x5, b.i64([1, 1])], 2, { axis: 4 });
        const rot = reshape(b.op('Concat', [b.op('Neg', [x1!]), x0!], { axis: 4 }), [B, S, H, D]);
        const tab = (k: number): string => reshape(b.op('Slice', [x(1), b.i64([k, r0]), b.i64([k + 1, r0 + S]), b.i64([0, 1])]), [1, S, 1, D]);
        const x4 = reshape(x(0), [B, S, H, D]);
        const y = b.op('Add', [b.op('Mul', [x4, tab(0)]), b.op('Mul', [rot, tab(1)])]);
        return reshape(y, [B, S, C]);
      }
      case 'attention':
      case 'attention_bias': {
        const [B, Sq, C] = n.shape as [number, number, number];
        const Sk = shapeOf(I[1]!)[1]!;
        const H = A.heads as number;
        const D = C / H;
        const q = b.op('Transpose', [reshape(x(0), [B, Sq, H, D])], { perm: [0, 2, 1, 3] });
        // grouped-query attention: each of the kvHeads key/value heads repeated for its H / kvHeads query heads
        const Hk = (A.kvHeads as number | undefined) ?? H;
        const heads = (t: string): string =>
          Hk === H ? reshape(t, [B, Sk, H, D]) : reshape(b.op('Expand', [reshape(t, [B, Sk, Hk, 1, D]), b.i64([B, Sk, Hk, H / Hk, D])]), [B, Sk, H, D]);
        const k = b.op('Transpose', [heads(x(1))], { perm: [0, 2, 3, 1] });
        const vv = b.op('Transpose', [heads(x(2))], { perm: [0, 2, 1, 3] });
        let s = b.op('Mul', [b.op('MatMul', [q, k]), b.scalar(A.scale as number)]);
        const maskSlot = n.op === 'attention' ? 3 : 4;
        if (has(maskSlot)) {
          const keep = b.op('Greater', [reshape(x(maskSlot), [B, 1, 1, Sk]), b.scalar(0.5)]);
          s = b.op('Where', [keep, s, b.scalar(-Infinity)]);
        }
        if (has(3) && n.op === 'attention_bias') s = b.op('Add', [s, reshape(x(3), [1, H, Sq, Sk])]);
        if (A.causal) {
          const m = new Float32Array(Sq * Sk);
          for (let i = 0; i < Sq; i++) for (let j = i + 1; j < Sk; j++) m[i * Sk + j] = -Infinity;
          s = b.op('Add', [s, b.f32(m, [1, 1, Sq, Sk])]);
        }
        const p = b.op('Softmax', [s], { axis: -1 });
        const out = b.op('Transpose', [b.op('MatMul', [p, vv])], { perm: [0, 2, 1, 3] });
        return reshape(out, [B, Sq, C]);
      }
      case 't5_position_bias': {
        const Sq = A.queries as number;
        const Sk = A.keys as number;
        const idx: number[] = [];
        for (let i = 0; i < Sq; i++) for (let j = 0; j < Sk; j++) idx.push(t5RelativeBucket(j - i, A.numBuckets as number, A.maxDistance as number, A.bidirectional as boolean));
        return b.op('Transpose', [b.op('Gather', [x(0), b.i64(idx, [Sq, Sk])], { axis: 0 })], { perm: [2, 0, 1] });
      }
      case 'timestep_embedding': {
        const dim = A.dim as number;
        const half = dim / 2;
        const logP = Math.fround(-Math.log(A.maxPeriod as number));
        const fr = Array.from({ length: half }, (_, i) => Math.fround(Math.exp(Math.fround(Math.fround(logP * i) / (half - (A.shift as number))))));
        let e = b.op('Mul', [unsq(x(0), [1]), b.f32(fr, [1, half])]);
        if ((A.scale as number) !== 1) e = b.op('Mul', [e, b.scalar(A.scale as number)]);
        const sin = b.op('Sin', [e]);
        const cos = b.op('Cos', [e]);
        return b.op('Concat', A.flip ? [cos, sin] : [sin, cos], { axis: 1 });
      }
      case 'embedding':
        return b.op('Gather', [x(1), b.op('Cast', [x(0)], { to: INT64 })], { axis: 0 });
      case 'masked_mean': {
        const num = b.op('ReduceSum', [b.op('Mul', [x(0), unsq(x(1), [2])]), b.i64([1])], { keepdims: 0 });
        const den = b.op('ReduceSum', [x(1), b.i64([1])], { keepdims: 1 });
        return b.op('Div', [num, den]);
      }
      case 'conv2d': {
        const w = shapeOf(I[1]!);
        const [p, e] = [A.pad as number, A.padEnd as number];
        const ins = [x(0), x(1)];
        if (has(2)) ins.push(x(2));
        // ONNX pads: [top, left, bottom, right]
        return b.op('Conv', ins, { kernel_shape: [w[2]!, w[3]!], pads: [p, p, e, e], strides: [A.stride, A.stride] });
      }
      case 'conv3d': {
        // frame-major [T, C, H, W] <-> ONNX's [1, C, T, H, W]
        const w = shapeOf(I[1]!);
        const p = A.pad as number;
        const ins = [b.op('Unsqueeze', [b.op('Transpose', [x(0)], { perm: [1, 0, 2, 3] }), b.i64([0])]), x(1)];
        if (has(2)) ins.push(x(2));
        const y = b.op('Conv', ins, { kernel_shape: [w[2]!, w[3]!, w[4]!], pads: [0, p, p, 0, p, p], strides: [1, A.stride, A.stride] });
        return b.op('Transpose', [b.op('Squeeze', [y, b.i64([0])])], { perm: [1, 0, 2, 3] });
      }
      case 'group_norm': {
        const s = n.shape;
        const [N, C] = s as [number, number];
        const G = A.groups as number;
        const xg = reshape(x(0), [N, G, -1]);
        const d = b.op('Sub', [xg, b.op('ReduceMean', [xg, b.i64([2])], { keepdims: 1 })]);
        const varr = b.op('ReduceMean', [b.op('Mul', [d, d]), b.i64([2])], { keepdims: 1 });
        let y = reshape(b.op('Div', [d, b.op('Sqrt', [b.op('Add', [varr, b.scalar(A.eps as number)])])]), s);
        const bc = [1, C, ...s.slice(2).map(() => 1)];
        if (has(1)) y = b.op('Mul', [y, reshape(x(1), bc)]);
        if (has(2)) y = b.op('Add', [y, reshape(x(2), bc)]);
        return A.silu ? silu(y) : y;
      }
      case 'upsample_nearest2x':
        return b.op('Resize', [x(0), '', b.f32([1, 1, 2, 2], [4])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
      case 'transpose':
        return b.op('Transpose', [x(0)], { perm: [0, 2, 1] });
      case 'reshape':
        return reshape(x(0), n.shape);
      case 'slice': {
        const ax = (A.axis as number) < 0 ? (A.axis as number) + n.shape.length : (A.axis as number);
        return b.op('Slice', [x(0), b.i64([A.start as number]), b.i64([(A.start as number) + (A.len as number)]), b.i64([ax])]);
      }
      case 'concat':
        return b.op('Concat', I.map((i) => v(i)), { axis: A.axis as number });
      case 'modulate':
        return b.op('Add', [b.op('Mul', [x(0), b.op('Add', [vec(I[2]!), b.scalar(1)])]), vec(I[1]!)]);
      case 'gate':
        return b.op('Mul', [vec(I[0]!), x(1)]);
      case 'gate_residual':
        return b.op('Add', [x(0), b.op('Mul', [vec(I[1]!), x(2)])]);
      case 'add':
        return b.op('Add', [x(0), x(1)]);
      case 'sub':
        return b.op('Sub', [x(0), x(1)]);
      case 'mul':
        return b.op('Mul', [x(0), x(1)]);
      case 'div':
        return b.op('Div', [x(0), x(1)]);
      case 'scale':
        return b.op('Mul', [x(0), b.scalar(A.c as number)]);
      case 'add_scalar':
        return b.op('Add', [x(0), b.scalar(A.c as number)]);
      case 'neg':
        return b.op('Neg', [x(0)]);
      case 'silu':
        return silu(x(0));
      case 'gelu_tanh':
        return gelu(x(0));
      case 'gelu_erf':
        // 0.5 x (1 + erf(x / sqrt 2))
        return b.op('Mul', [b.op('Mul', [b.scalar(0.5), x(0)]), b.op('Add', [b.scalar(1), b.op('Erf', [b.op('Mul', [x(0), b.scalar(Math.SQRT1_2)])])])]);
      case 'sigmoid':
        return b.op('Sigmoid', [x(0)]);
      case 'tanh':
        return b.op('Tanh', [x(0)]);
      case 'exp':
        return b.op('Exp', [x(0)]);
      case 'sqrt':
        return b.op('Sqrt', [x(0)]);
      case 'rsqrt':
        return b.op('Reciprocal', [b.op('Sqrt', [x(0)])]);
      case 'square':
        return b.op('Mul', [x(0), x(0)]);
      default:
        throw new CompileError(`ONNX export: op '${n.op}' is not supported (export runs on the unfused IR)`, n.src);
    }
  };

  for (const n of g.nodes) {
    if (n.dead || n.op === 'input' || n.op === 'weight') continue;
    names.set(n.id, lowerNode(n));
  }
  const outputs = g.outputs.map((out) => {
    b.op('Identity', [v(out.node)], {}, out.name);
    return valueInfo(out.name, shapeOf(out.node));
  });
  void BOOL;
  const graph = onnx.GraphProto.create({ name: o.name, node: b.nodes, initializer: b.inits, input: graphInputs, output: outputs });
  const model = onnx.ModelProto.create({
    irVersion: 10,
    producerName: 'ditforge',
    producerVersion: '0.1.0',
    opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: 21 })],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * T5's relative position bucket (transformers T5Attention._relative_position_bucket) of rel = key - query
 * position, in torch's float32 arithmetic (the native kernel t5_position_bias computes the same).
 */
export function t5RelativeBucket(rel: number, numBuckets: number, maxDistance: number, bidirectional: boolean): number {
  const f = Math.fround;
  let nb = numBuckets;
  let bucket = 0;
  if (bidirectional) {
    nb = Math.floor(nb / 2);
    if (rel > 0) bucket += nb;
    rel = Math.abs(rel);
  } else {
    rel = rel < 0 ? -rel : 0;
  }
  const maxExact = Math.floor(nb / 2);
  if (rel < maxExact) return bucket + rel;
  const lg = f(f(Math.log(f(rel / maxExact))) / f(Math.log(maxDistance / maxExact)));
  return bucket + Math.min(maxExact + Math.trunc(f(lg * (nb - maxExact))), nb - 1);
}
