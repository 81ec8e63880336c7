// The model registry (kept apart from compiler/index.ts so models/index.ts can register without a cycle).
import type { ModelDefinition } from './dsl/index.ts';
import { CompileError } from './ir/graph.ts';

const registry = new Map<string, ModelDefinition>();

export function registerModel(name: string, def: ModelDefinition): void {
  registry.set(name, def);
}

export function registeredModels(): string[] {
  return [...registry.keys()];
}

export function getModel(name: string): ModelDefinition {
  const d = registry.get(name);
  if (!d) throw new CompileError(`unknown model '${name}'; known models: ${[...registry.keys()].join(', ')}`);
  return d;
}
