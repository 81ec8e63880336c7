// Tracing machinery behind the DSL: symbolic tensors record IR nodes into the active Tracer.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompileError, Graph, type Attrs } from '../ir/graph.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMPILER_DIR = path.join(REPO_ROOT, 'compiler') + path.sep;

/**
 * The model-file location (repo-relative `file:line:col`) of the first stack frame outside the
 * compiler, i.e. the DSL call in the model file. tsx and vitest keep TypeScript positions.
 */
export function callerLocation(): string {
  const stack = new Error().stack ?? '';
  for (const line of stack.split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?[^\s()]+):(\d+):(\d+)\)?\s*$/.exec(line.trim());
    if (!m) continue;
    let file = m[1]!;
    if (file.startsWith('file://')) file = fileURLToPath(file);
    if (!path.isAbsolute(file)) continue;
    if (file.startsWith(COMPILER_DIR) || file.includes(`${path.sep}node_modules${path.sep}`)) continue;
    const rel = path.relative(REPO_ROOT, file).split(path.sep).join('/');
    return `${rel.startsWith('..') ? file : rel}:${m[2]}:${m[3]}`;
  }
  return '';
}

/** Absolute path of the first stack frame outside the compiler (the file that called a DSL function). */
export function callerFile(): string | undefined {
  const loc = callerLocation();
  if (!loc) return undefined;
  const file = loc.replace(/:\d+:\d+$/, '');
  return path.isAbsolute(file) ? file : path.join(REPO_ROOT, file);
}

export class DslError extends CompileError {}

export class Tracer {
  graph = new Graph();
  segment = 'seg0';
  block: string | undefined;
  private segCounter = 0;

  record(op: string, inputs: number[], attrs: Attrs, name?: string, src?: string): number {
    const ctx: { src: string; segment: string; block?: string; name?: string } = { src: src ?? callerLocation(), segment: this.segment };
    if (this.block !== undefined) ctx.block = this.block;
    if (name !== undefined) ctx.name = name;
    return this.graph.add(op, inputs, attrs, ctx).id;
  }

  nextPlainSegment(): void {
    this.segCounter++;
    this.segment = `seg${this.segCounter}`;
  }
}

let active: Tracer | undefined;

export function currentTracer(): Tracer {
  if (!active) throw new DslError('DSL ops can only run while the compiler traces a model (inside forward / a block body)', callerLocation() || undefined);
  return active;
}

export function withTracer<T>(t: Tracer, fn: () => T): T {
  const prev = active;
  active = t;
  try {
    return fn();
  } finally {
    active = prev;
  }
}
