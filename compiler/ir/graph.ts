// The compiler's IR: a graph of single-output nodes in trace (= topological) order, with inferred
// shapes, the model-file location of the DSL call that recorded each node, and the segment/block it
// belongs to. Every value is float32 (ids and masks travel as float32, see docs/architecture.md §1).
import { inferShape } from './shape.ts';

export type Attrs = Record<string, unknown>;

export interface Node {
  id: number;
  op: string;
  inputs: number[];
  attrs: Attrs;
  shape: number[];
  /** file:line:col of the DSL call in the model file ('' if unknown) */
  src: string;
  /** segment name: 'embed' | 'head' | 'forward' | ... or a block list segment */
  segment: string;
  /** block name (`transformer_blocks.3`) for nodes inside a block of a block list */
  block?: string;
  /** debugging name */
  name?: string;
  /** removed by a pass */
  dead?: boolean;
}

export interface GraphIO {
  name: string;
  node: number;
}

export interface BlockInfo {
  name: string;
  pattern: number;
}

export interface BlockListInfo {
  /** Cache-DiT block list name, e.g. `transformer_blocks` */
  list: string;
  /** plan segment name */
  segment: string;
  pattern: number;
  blocks: BlockInfo[];
  /** ports the list threads through its blocks: hidden and (patterns 0/1/2/4/5) encoder */
  ports: ('hidden' | 'encoder')[];
}

export class CompileError extends Error {
  constructor(message: string, readonly src?: string) {
    super(src ? `${src}: ${message}` : message);
    this.name = 'CompileError';
  }
}

export class Graph {
  nodes: Node[] = [];
  inputs: GraphIO[] = [];
  outputs: GraphIO[] = [];
  /** checkpoint name -> node id */
  weights = new Map<string, number>();
  lists: BlockListInfo[] = [];
  /** segment names in execution order */
  segments: string[] = [];

  node(id: number): Node {
    const n = this.nodes[id];
    if (!n) throw new Error(`internal: no IR node ${id}`);
    return n;
  }

  /** Appends a node after inferring its shape; shape errors carry `src`. */
  add(op: string, inputs: number[], attrs: Attrs, ctx: { src: string; segment: string; block?: string; name?: string }): Node {
    let shape: number[];
    try {
      shape = inferShape(op, inputs.map((i) => (i < 0 ? [] : this.node(i).shape)), attrs, inputs.map((i) => i >= 0));
    } catch (e) {
      if (e instanceof CompileError) throw e;
      throw new CompileError((e as Error).message, ctx.src || undefined);
    }
    const n: Node = { id: this.nodes.length, op, inputs, attrs, shape, src: ctx.src, segment: ctx.segment };
    if (ctx.block !== undefined) n.block = ctx.block;
    if (ctx.name !== undefined) n.name = ctx.name;
    this.nodes.push(n);
    return n;
  }

  live(): Node[] {
    return this.nodes.filter((n) => !n.dead);
  }

  /** consumers of each live node (node id -> consumer ids, in order, duplicates kept once) */
  users(): Map<number, number[]> {
    const u = new Map<number, number[]>();
    for (const n of this.nodes) {
      if (n.dead) continue;
      for (const i of n.inputs) {
        if (i < 0) continue;
        const l = u.get(i) ?? [];
        if (l[l.length - 1] !== n.id) l.push(n.id);
        u.set(i, l);
      }
    }
    return u;
  }

  isOutput(id: number): boolean {
    return this.outputs.some((o) => o.node === id);
  }

  /** Counts live nodes per op (for tests and `inspect`). */
  opCounts(): Record<string, number> {
    const c: Record<string, number> = {};
    for (const n of this.live()) c[n.op] = (c[n.op] ?? 0) + 1;
    return c;
  }
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function fmtShape(s: number[]): string {
  return `[${s.join(', ')}]`;
}
