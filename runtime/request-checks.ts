// The checks every pipeline family makes of a generate request before any work (the flag names are the CLI's).
import { UserError } from './model-dir.ts';

/** steps (default the family's), batch (default 1), the prompt, the seed (unless latents are given) */
export function checkRequest(opts: { prompt: unknown; steps?: number; batch?: number; seed?: number; latents?: Float32Array }, defaultSteps: number): { steps: number; batch: number; seed: number } {
  const steps = opts.steps ?? defaultSteps;
  if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be an integer >= 1, got ${opts.steps}`);
  const batch = opts.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) throw new UserError(`batch must be an integer >= 1, got ${batch}`);
  if (typeof opts.prompt !== 'string') throw new UserError('--prompt is required');
  const seed = opts.seed ?? 0;
  if (opts.latents === undefined && (!Number.isSafeInteger(seed) || seed < 0)) throw new UserError(`--seed must be a non-negative integer, got ${opts.seed}`);
  return { steps, batch, seed };
}

/** latents given by the caller must have the layout's element count (the shape is named in the error) */
export function checkLatents(latents: Float32Array | undefined, shape: readonly number[], what: string): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (latents && latents.length !== n) throw new UserError(`latents must have shape [${shape.join(', ')}] (${n} values) for ${what}, got ${latents.length} values`);
}

/**
 * Non-finite numbers never become an image: the first NaN / inf in `x` is an error naming `what` (the
 * tensor, or the step and the component that produced it). One pass over an array the caller holds anyway.
 */
export function assertFinite(x: Float32Array, what: string): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) throw new NonFiniteError(`${what} has a non-finite value (${x[i]}) at index ${i}`);
  }
}

export class NonFiniteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/**
 * A batched request's items (the server's batching), checked: prompts and seeds, with no latents, image or
 * mask beside them (those belong to one request); undefined for an ordinary request
 */
export function batchItems(opts: { items?: unknown; latents?: unknown; image?: unknown; mask?: unknown }): { prompt: string; seed: number }[] | undefined {
  if (opts.items === undefined) return undefined;
  const items = opts.items as { prompt?: unknown; seed?: unknown }[];
  if (!Array.isArray(items) || items.length < 1) throw new UserError('items must be a non-empty list of { prompt, seed }');
  if (opts.latents !== undefined || opts.image !== undefined || opts.mask !== undefined) throw new UserError('items (a batch of requests) cannot come with latents, an image or a mask');
  return items.map((it, i) => {
    if (typeof it?.prompt !== 'string') throw new UserError(`items[${i}].prompt must be a string`);
    if (!Number.isSafeInteger(it.seed) || (it.seed as number) < 0) throw new UserError(`items[${i}].seed must be a non-negative integer, got ${String(it.seed)}`);
    return { prompt: it.prompt, seed: it.seed as number };
  });
}

/** a CFG scale flag (`--guidance-scale`, ...): the family's default when absent, else a finite number */
export function cfgScaleOf(given: unknown, fallback: number, flag = '--guidance-scale'): number {
  const scale = given ?? fallback;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new UserError(`${flag} must be a number, got ${given}`);
  return scale;
}

/** `--max-sequence-length`: the family's default when absent, else an integer >= 1 */
export function maxSequenceLengthOf(given: unknown, fallback: number): number {
  const n = given ?? fallback;
  if (!Number.isInteger(n) || (n as number) < 1) throw new UserError(`--max-sequence-length must be an integer >= 1, got ${given}`);
  return n as number;
}
