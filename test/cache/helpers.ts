import {
  CacheEngine,
  ToyBlockListRunner,
  linearToyBlocks,
  type CacheConfig,
  type CalibratorConfig,
  type ForwardPattern,
  type ToyBlock,
} from '../../runtime/cache/index.ts';

export const HN = 24; // hidden numel
export const EN = 12; // encoder numel

export function baseInput(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(1 + ((i * 7919 + seed * 104729) % 97) / 97); // positive, deterministic
  return out;
}

/** inputs of step s: base * (1 + eps*s) (Cache-DiT's verified toy) */
export function stepInput(base: Float32Array, s: number, eps: number): Float32Array {
  return base.map((x) => Math.fround(x * (1 + eps * s)));
}

export interface ToyRun {
  engine: CacheEngine;
  runner: ToyBlockListRunner;
  outputs: { h: Float32Array; e: Float32Array | null }[];
}

export async function runToy(opts: {
  cache: CacheConfig | null;
  calibrator?: CalibratorConfig | null;
  steps: number;
  pattern?: ForwardPattern;
  nBlocks?: number;
  blocks?: ToyBlock[];
  eps?: number;
  /** transformer calls per step (2 = separate CFG: cond then uncond with a different input) */
  callsPerStep?: number;
  encoderNumel?: number;
  batch?: number;
  /** a ready runner (its pattern and sizes are used; blocks/encoderNumel/batch options are ignored) */
  runner?: ToyBlockListRunner;
}): Promise<ToyRun> {
  const pattern = opts.pattern ?? 1;
  const n = opts.nBlocks ?? 8;
  const runner =
    opts.runner ??
    new ToyBlockListRunner({
      pattern,
      blocks: opts.blocks ?? linearToyBlocks(n, pattern),
      hiddenNumel: HN,
      encoderNumel: pattern === 3 ? 0 : (opts.encoderNumel ?? (pattern >= 4 ? HN / 2 : EN)),
      batch: opts.batch,
    });
  const hn = runner.hidden.length;
  const en = runner.encoder?.length ?? 0;
  const engine = new CacheEngine({ lists: [{ name: 'transformer_blocks', runner }], cache: opts.cache, calibrator: opts.calibrator });
  const base = baseInput(hn);
  const ebase = baseInput(en, 2);
  const outputs: { h: Float32Array; e: Float32Array | null }[] = [];
  const eps = opts.eps ?? 0.02;
  for (let s = 0; s < opts.steps; s++) {
    for (let c = 0; c < (opts.callsPerStep ?? 1); c++) {
      const h = stepInput(base, s, eps).map((x) => Math.fround(x * (1 + 0.5 * c)));
      runner.setInputs(h, pattern <= 2 ? stepInput(ebase, s, eps) : null);
      await engine.runList(0);
      outputs.push({ h: runner.hidden.slice(), e: runner.encoder ? runner.encoder.slice() : null });
    }
  }
  return { engine, runner, outputs };
}

export const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
