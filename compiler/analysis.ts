// FLOP and parameter counting on the (unfused) IR.
import { numel, type Graph, type Node } from './ir/graph.ts';

/** multiply-adds x 2 (plus elementwise/normalisation work counted as ~1 flop per element and op) */
export function nodeFlops(g: Graph, n: Node): number {
  const sh = (i: number): number[] => g.node(n.inputs[i]!).shape;
  switch (n.op) {
    case 'linear': {
      const K = sh(0)[sh(0).length - 1]!;
      return 2 * numel(n.shape) * K;
    }
    case 'attention':
    case 'attention_bias': {
      const [B, Sq, C] = n.shape as [number, number, number];
      const Sk = sh(1)[1]!;
      return 4 * B * Sq * Sk * C;
    }
    case 'conv2d': {
      const w = sh(1);
      return 2 * numel(n.shape) * w[1]! * w[2]! * w[3]!;
    }
    case 'conv3d': {
      const w = sh(1);
      return 2 * numel(n.shape) * w[1]! * w[2]! * w[3]! * w[4]!;
    }
    case 'input':
    case 'weight':
    case 'slice':
    case 'reshape':
    case 'block_in':
    case 'block_out':
      return 0;
    default:
      return numel(n.shape);
  }
}

export function graphFlops(g: Graph, filter?: (n: Node) => boolean): number {
  let f = 0;
  for (const n of g.live()) if (!filter || filter(n)) f += nodeFlops(g, n);
  return f;
}

export function paramCount(g: Graph, prefix?: string): number {
  let p = 0;
  for (const [name, id] of g.weights) if (!prefix || name.startsWith(prefix)) p += numel(g.node(id).shape);
  return p;
}
