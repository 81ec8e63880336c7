// Fusion passes over the IR (in place). Each returns how many times it fired.
//   bias + GELU/SiLU          -> linear epilogue 1/2
//   add(r, gate(g, v))        -> gate_residual (canonicalisation)
//   gate_residual(r, g, linear(x)) -> linear epilogue 3 (gate + residual in the GEMM epilogue)
//   LayerNorm(no affine) + modulate -> ln_modulate
//   per-head RMSNorm + RoPE   -> qk_norm_rope (RMSNorm alone -> qk_norm_rope without rope)
//   GroupNorm + SiLU          -> group_norm(silu)
//   remaining elementwise chains -> one `ew` node with a C expression
import { BINARY_EW, UNARY_EW } from '../ir/shape.ts';
import type { Graph, Node } from '../ir/graph.ts';

export interface FusionStats {
  linearAct: number;
  gateResidual: number;
  linearGateResidual: number;
  linearResidual: number;
  lnModulate: number;
  qkNormRope: number;
  groupNormSilu: number;
  ewChains: number;
}

function sameScope(a: Node, b: Node): boolean {
  return a.segment === b.segment && a.block === b.block;
}

/** `n` can be folded into its only consumer `u` */
function foldable(g: Graph, users: Map<number, number[]>, n: Node, u: Node): boolean {
  const us = users.get(n.id) ?? [];
  return us.length === 1 && us[0] === u.id && !g.isOutput(n.id) && sameScope(n, u) && u.inputs.filter((i) => i === n.id).length === 1;
}

function replace(u: Node, op: string, inputs: number[], attrs: Record<string, unknown>): void {
  u.op = op;
  u.inputs = inputs;
  u.attrs = attrs;
}

export function fuseLinearAct(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'silu' && u.op !== 'gelu_tanh') continue;
    const p = g.node(u.inputs[0]!);
    if (p.op !== 'linear' || p.attrs.epilogue !== 0 || !foldable(g, users, p, u)) continue;
    replace(u, 'linear', [...p.inputs], { ...p.attrs, epilogue: u.op === 'gelu_tanh' ? 1 : 2 });
    u.src = p.src;
    p.dead = true;
    n++;
  }
  return n;
}

export function canonicalizeGate(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'add') continue;
    for (const side of [0, 1]) {
      const gn = g.node(u.inputs[side]!);
      const r = g.node(u.inputs[1 - side]!);
      if (gn.op !== 'gate' || !foldable(g, users, gn, u) || r.shape.join() !== u.shape.join()) continue;
      replace(u, 'gate_residual', [r.id, gn.inputs[0]!, gn.inputs[1]!], {});
      gn.dead = true;
      n++;
      break;
    }
  }
  return n;
}

export function fuseLinearGateResidual(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'gate_residual') continue;
    const p = g.node(u.inputs[2]!);
    if (p.op !== 'linear' || p.attrs.epilogue !== 0 || !foldable(g, users, p, u) || u.shape.length !== 3) continue;
    if (u.inputs[0] === p.id) continue;
    const [x, W, b] = p.inputs;
    replace(u, 'linear', [x!, W!, b!, u.inputs[1]!, u.inputs[0]!], { ...p.attrs, epilogue: 3 });
    p.dead = true;
    n++;
  }
  return n;
}

/** residual + linear(x) -> linear epilogue 3 with a null gate (the kernel counts it as 1) */
export function fuseLinearResidual(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'add') continue;
    for (const side of [0, 1]) {
      const p = g.node(u.inputs[side]!);
      const r = g.node(u.inputs[1 - side]!);
      if (p.op !== 'linear' || p.attrs.epilogue !== 0 || !foldable(g, users, p, u) || r.id === p.id) continue;
      if (r.shape.join() !== u.shape.join() || p.shape.join() !== u.shape.join()) continue;
      const [x, W, b] = p.inputs;
      replace(u, 'linear', [x!, W!, b!, -1, r.id], { ...p.attrs, epilogue: 3 });
      p.dead = true;
      n++;
      break;
    }
  }
  return n;
}

export function fuseLnModulate(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'modulate') continue;
    const p = g.node(u.inputs[0]!);
    if (p.op !== 'layer_norm' || p.inputs[1]! >= 0 || p.inputs[2]! >= 0 || !foldable(g, users, p, u)) continue;
    replace(u, 'ln_modulate', [p.inputs[0]!, u.inputs[1]!, u.inputs[2]!], { eps: p.attrs.eps });
    p.dead = true;
    n++;
  }
  return n;
}

export function fuseQkNormRope(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op === 'rope') {
      const p = g.node(u.inputs[0]!);
      if (p.op !== 'head_rms_norm' || !foldable(g, users, p, u)) continue;
      replace(u, 'qk_norm_rope', [p.inputs[0]!, p.inputs[1]!, u.inputs[1]!], { heads: u.attrs.heads, row0: u.attrs.row0, eps: p.attrs.eps, ...(u.attrs.half ? { half: true } : {}) });
      u.src = p.src;
      p.dead = true;
      n++;
    }
  }
  // per-head RMSNorm without RoPE: the same kernel with cos = null
  for (const u of g.live()) {
    if (u.op === 'head_rms_norm') {
      replace(u, 'qk_norm_rope', [u.inputs[0]!, u.inputs[1]!, -1], { heads: u.attrs.heads, row0: 0, eps: u.attrs.eps });
    }
  }
  return n;
}

export function fuseGroupNormSilu(g: Graph): number {
  let n = 0;
  const users = g.users();
  for (const u of g.live()) {
    if (u.op !== 'silu') continue;
    const p = g.node(u.inputs[0]!);
    if (p.op !== 'group_norm' || p.attrs.silu || !foldable(g, users, p, u)) continue;
    replace(u, 'group_norm', [...p.inputs], { ...p.attrs, silu: true });
    u.src = p.src;
    p.dead = true;
    n++;
  }
  return n;
}

const EW = new Set([...UNARY_EW, ...BINARY_EW]);
/** single ops the catalogue has a kernel for (same-shape operands only) */
const CATALOGUE_EW = new Set(['add', 'mul', 'silu', 'gelu_tanh']);

/** FNV-1a 32-bit, hex */
export function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export function ewKernelName(arity: number, expr: string): string {
  return `ew_${fnv1a(`${arity}|${expr}`)}`;
}

function cFloat(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`non-finite constant ${v} in an elementwise chain`);
  let s = String(Math.fround(v));
  if (!/[.e]/.test(s)) s += '.0';
  return `${s}f`;
}

/** C expression of one elementwise op over operand expressions */
function opExpr(op: string, a: string[], c: () => string): string {
  const [x, y] = a;
  switch (op) {
    case 'add':
      return `(${x} + ${y})`;
    case 'sub':
      return `(${x} - ${y})`;
    case 'mul':
      return `(${x} * ${y})`;
    case 'div':
      return `(${x} / ${y})`;
    case 'neg':
      return `(-${x})`;
    case 'scale':
      return `(${x} * ${c()})`;
    case 'add_scalar':
      return `(${x} + ${c()})`;
    case 'silu':
      return `silu(${x})`;
    case 'gelu_tanh':
      return `gelu_tanh(${x})`;
    case 'gelu_erf':
      return `gelu_erf(${x})`;
    case 'sigmoid':
      return `sigmoid(${x})`;
    case 'tanh':
      return `tanhf(${x})`;
    case 'exp':
      return `expf(${x})`;
    case 'sqrt':
      return `sqrtf(${x})`;
    case 'rsqrt':
      return `(1.0f / sqrtf(${x}))`;
    case 'square':
      return `(${x} * ${x})`;
    case 'identity':
      return `${x}`;
    default:
      throw new Error(`internal: no C expression for '${op}'`);
  }
}

/**
 * Groups maximal trees of elementwise nodes (internal values used once, same shape, same scope)
 * into one `ew` node: attrs { expr, consts, arity, kernel }.
 */
export function fuseElementwise(g: Graph): number {
  let n = 0;
  const users = g.users();
  const internal = (id: number, consumer: Node): boolean => {
    const p = g.node(id);
    return EW.has(p.op) && EW.has(consumer.op) && foldable(g, users, p, consumer) && p.shape.join() === consumer.shape.join();
  };
  const live = g.live();
  const isRoot = (u: Node): boolean => {
    if (!EW.has(u.op)) return false;
    const us = users.get(u.id) ?? [];
    if (us.length === 1 && internal(u.id, g.node(us[0]!))) return false;
    return true;
  };
  for (const root of live) {
    if (!isRoot(root)) continue;
    const leaves: number[] = [];
    const consts: number[] = [];
    const members: Node[] = [];
    let inline = false;
    const build = (node: Node): string => {
      members.push(node);
      const args = node.inputs.map((i) => {
        if (internal(i, node)) return build(g.node(i));
        let k = leaves.indexOf(i);
        if (k < 0) {
          leaves.push(i);
          k = leaves.length - 1;
        }
        return `a${k}`;
      });
      return opExpr(node.op, args, () => {
        const v = node.attrs.c as number;
        if (consts.length < 8 && !inline) {
          consts.push(Math.fround(v));
          return `f${consts.length - 1}`;
        }
        inline = true;
        return cFloat(v);
      });
    };
    const expr = build(root);
    if (members.length === 1 && CATALOGUE_EW.has(root.op) && root.inputs.every((i) => g.node(i).shape.join() === root.shape.join())) continue;
    for (const m of members) if (m !== root) m.dead = true;
    const attrs = { expr, consts, arity: leaves.length, kernel: ewKernelName(leaves.length, expr), ops: members.map((m) => m.op).reverse(), shape: [...root.shape] };
    replace(root, 'ew', leaves, attrs);
    n++;
  }
  return n;
}

export function runFusion(g: Graph): FusionStats {
  const linearAct = fuseLinearAct(g);
  const gateResidual = canonicalizeGate(g);
  const linearGateResidual = fuseLinearGateResidual(g);
  const linearResidual = fuseLinearResidual(g);
  const lnModulate = fuseLnModulate(g);
  const qkNormRope = fuseQkNormRope(g);
  const groupNormSilu = fuseGroupNormSilu(g);
  const ewChains = fuseElementwise(g);
  return { linearAct, gateResidual, linearGateResidual, linearResidual, lnModulate, qkNormRope, groupNormSilu, ewChains };
}
