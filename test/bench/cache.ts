// Cache benchmark: tiny-flux (32x32) at 28 and 50 steps, DBCache / TaylorSeer / SCM / DBPrune at several
// thresholds: wall-clock speed-up of the denoising loop over uncached (median over BENCH_CACHE_REPS paired
// uncached/cached runs, same process, BENCH_CACHE_THREADS threads, default 1) and image quality against the uncached image (PSNR and SSIM on the uint8
// RGB images). Writes bench/cache.svg (speed-up vs PSNR, one curve per method) and bench/cache.json.
// `npx tsx test/bench/cache.ts` runs it standalone; `benchCache()` returns the rows for `npm run bench`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadFluxPipeline, type GenerateResult, type FluxPipeline } from '../../runtime/pipeline.ts';
import { dbCacheConfig, dbPruneConfig, dmdConfig, focaConfig, taylorSeerConfig, type CacheConfig, type CalibratorConfig } from '../../runtime/cache/config.ts';
import { stepsMask } from '../../runtime/cache/steps-mask.ts';
import { psnr, ssimRgb } from '../../runtime/metrics.ts';
import { median } from './plan-data.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PROMPT = 'a large red circle at the center on a black background';

export interface CacheBenchRow {
  steps: number;
  method: string;
  /** threshold (residual_diff_threshold) */
  rdt: number;
  tag: string;
  cachedSteps: number;
  /** median denoise ms (cached) / median denoise ms (uncached) */
  denoiseMs: number;
  speedup: number;
  /** end-to-end generate() total (text encoder + denoise + VAE) */
  speedupTotal: number;
  psnr: number;
  ssim: number;
  /** one of the headline configurations of issue 3 */
  headline: boolean;
}

interface Method {
  name: string;
  points: number[];
  headline: number;
  make(rdt: number, steps: number): { cache: CacheConfig; calibrator?: CalibratorConfig | null };
}

const W4MC3 = { Fn_compute_blocks: 1, Bn_compute_blocks: 0, max_warmup_steps: 4, max_continuous_cached_steps: 3 };
const METHODS: Method[] = [
  { name: 'DBCache F1B0 W4 MC3', points: [0.04, 0.08, 0.12, 0.2, 0.3, 0.5], headline: 0.12, make: (r) => ({ cache: dbCacheConfig({ ...W4MC3, residual_diff_threshold: r }) }) },
  {
    name: 'DBCache F1B0 W4 MC3 + TaylorSeer',
    points: [0.04, 0.08, 0.12, 0.2, 0.3, 0.5],
    headline: 0.12,
    make: (r) => ({ cache: dbCacheConfig({ ...W4MC3, residual_diff_threshold: r }), calibrator: taylorSeerConfig({ taylorseer_order: 1 }) }),
  },
  {
    name: 'DBCache F1B0 W4 MC3 + FoCa',
    points: [0.08, 0.12, 0.2, 0.3],
    headline: 0.12,
    make: (r) => ({ cache: dbCacheConfig({ ...W4MC3, residual_diff_threshold: r }), calibrator: focaConfig() }),
  },
  {
    name: 'DBCache F1B0 W4 MC3 + DMD',
    points: [0.08, 0.12, 0.2, 0.3],
    headline: 0.12,
    make: (r) => ({ cache: dbCacheConfig({ ...W4MC3, residual_diff_threshold: r }), calibrator: dmdConfig() }),
  },
  {
    name: 'DBCache F1B0 W4 MC-1 + TaylorSeer',
    points: [0.12, 0.2, 0.3, 0.5, 0.8],
    headline: -1,
    make: (r) => ({ cache: dbCacheConfig({ ...W4MC3, max_continuous_cached_steps: -1, residual_diff_threshold: r }), calibrator: taylorSeerConfig({ taylorseer_order: 1 }) }),
  },
  {
    name: 'SCM fast dynamic (F1B0 W8 MC3)',
    points: [0.04, 0.08, 0.12, 0.2, 0.5],
    headline: 0.12,
    make: (r, T) => ({ cache: dbCacheConfig({ ...W4MC3, max_warmup_steps: 8, residual_diff_threshold: r, steps_computation_mask: stepsMask({ totalSteps: T, policy: 'fast' }), steps_computation_policy: 'dynamic' }) }),
  },
  {
    name: 'SCM ultra + TaylorSeer (F1B0 W8 MC3)',
    points: [0.04, 0.08, 0.12, 0.2, 0.5],
    headline: 0.12,
    make: (r, T) => ({
      cache: dbCacheConfig({ ...W4MC3, max_warmup_steps: 8, residual_diff_threshold: r, steps_computation_mask: stepsMask({ totalSteps: T, policy: 'ultra' }), steps_computation_policy: 'dynamic' }),
      calibrator: taylorSeerConfig({ taylorseer_order: 1 }),
    }),
  },
  { name: 'DBPrune F1B0 W4 MC3', points: [0.04, 0.08, 0.12, 0.2, 0.3], headline: 0.12, make: (r) => ({ cache: dbPruneConfig({ ...W4MC3, residual_diff_threshold: r }) }) },
];

async function timed(pipe: FluxPipeline, steps: number, reps: number, cache?: ReturnType<Method['make']>): Promise<{ r: GenerateResult; denoise: number; total: number }> {
  const d: number[] = [];
  const t: number[] = [];
  let r: GenerateResult | undefined;
  for (let k = 0; k < reps; k++) {
    r = await pipe.generate({ prompt: PROMPT, steps, seed: 0, ...(cache ? { cache } : {}) });
    d.push(r.timings.denoise);
    t.push(r.timings.total);
  }
  return { r: r!, denoise: median(d), total: median(t) };
}

export async function benchCache(
  opts: { threads?: number; reps?: number; stepsList?: number[]; log?: (s: string) => void; svg?: string; methods?: string[] } = {},
): Promise<CacheBenchRow[]> {
  const reps = opts.reps ?? Number(process.env.BENCH_CACHE_REPS ?? 5);
  // 1 thread by default: a 32x32 tiny-flux step is ~3 ms, where thread wake-ups on a shared machine are noise
  const pipe = await loadFluxPipeline('tiny-flux', { threads: opts.threads ?? Number(process.env.BENCH_CACHE_THREADS ?? 1) });
  const rows: CacheBenchRow[] = [];
  for (const steps of opts.stepsList ?? [28, 50]) {
    await timed(pipe, steps, 2); // warm up
    const base = (await timed(pipe, steps, 1)).r;
    for (const m of METHODS.filter((x) => !opts.methods || opts.methods.some((w) => x.name.includes(w)))) {
      for (const rdt of m.points) {
        // paired runs: uncached then cached, `reps` times; speed-up = median of the per-pair ratios
        // (load drifts of a shared machine cancel within a pair)
        const ratio: number[] = [];
        const ratioTotal: number[] = [];
        const den: number[] = [];
        let c: GenerateResult | undefined;
        const cache = m.make(rdt, steps);
        for (let k = 0; k < reps; k++) {
          const b = await pipe.generate({ prompt: PROMPT, steps, seed: 0 });
          c = await pipe.generate({ prompt: PROMPT, steps, seed: 0, cache });
          ratio.push(b.timings.denoise / c.timings.denoise);
          ratioTotal.push(b.timings.total / c.timings.total);
          den.push(c.timings.denoise);
        }
        const s = c!.cache!.summary[0]!;
        const row: CacheBenchRow = {
          steps,
          method: m.name,
          rdt,
          tag: c!.cache!.tag,
          cachedSteps: s.cached_steps.length,
          denoiseMs: median(den),
          speedup: median(ratio),
          speedupTotal: median(ratioTotal),
          psnr: psnr(c!.image, base.image, 255),
          ssim: ssimRgb(c!.image, base.image, base.width, base.height),
          headline: rdt === m.headline,
        };
        rows.push(row);
        opts.log?.(`  ${steps} steps ${m.name} R${rdt}: ${row.speedup.toFixed(2)}x, PSNR ${row.psnr.toFixed(2)} dB, SSIM ${row.ssim.toFixed(4)} (${row.tag})`);
      }
    }
  }
  const svg = opts.svg ?? path.join(ROOT, 'bench/cache.svg');
  fs.mkdirSync(path.dirname(svg), { recursive: true });
  fs.writeFileSync(svg, cacheSvg(rows));
  return rows;
}

const COLORS = ['#1f77b4', '#d62728', '#9467bd', '#2ca02c', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** hand-written SVG: one panel per step count, x = speed-up, y = PSNR (dB, identical images drawn at the top) */
export function cacheSvg(rows: CacheBenchRow[]): string {
  const stepsList = [...new Set(rows.map((r) => r.steps))];
  const W = 460, H = 340, M = { l: 52, r: 14, t: 30, b: 44 };
  const PMAX = 80;
  const xMax = Math.max(3, Math.ceil(Math.max(...rows.map((r) => r.speedup)) + 0.2));
  const methods = [...new Set(rows.map((r) => r.method))];
  const out: string[] = [];
  const width = W * stepsList.length, height = H + 24 + 18 * Math.ceil(methods.length / 2);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  stepsList.forEach((T, p) => {
    const ox = p * W;
    const X = (s: number) => ox + M.l + ((s - 1) / (xMax - 1)) * (W - M.l - M.r);
    const Y = (db: number) => M.t + (1 - (Math.min(db, PMAX) - 20) / (PMAX - 20)) * (H - M.t - M.b);
    out.push(`<text x="${ox + W / 2}" y="18" text-anchor="middle" font-size="13">tiny-flux, ${T} steps: PSNR vs uncached image</text>`);
    for (let s = 1; s <= xMax; s += 0.5) {
      out.push(`<line x1="${X(s)}" y1="${Y(PMAX)}" x2="${X(s)}" y2="${Y(20)}" stroke="#eee"/>`);
      if (Number.isInteger(s)) out.push(`<text x="${X(s)}" y="${Y(20) + 14}" text-anchor="middle">${s}x</text>`);
    }
    for (let db = 20; db <= PMAX; db += 10) {
      out.push(`<line x1="${X(1)}" y1="${Y(db)}" x2="${X(xMax)}" y2="${Y(db)}" stroke="${db === 30 ? '#f99' : '#eee'}"/>`);
      out.push(`<text x="${X(1) - 4}" y="${Y(db) + 4}" text-anchor="end">${db === PMAX ? `>=${db}` : db}</text>`);
    }
    out.push(`<text x="${ox + W / 2}" y="${H - 8}" text-anchor="middle">wall-clock speed-up of the denoising loop</text>`);
    out.push(`<text transform="translate(${ox + 14},${H / 2}) rotate(-90)" text-anchor="middle">PSNR (dB)</text>`);
    methods.forEach((m, k) => {
      const pts = rows.filter((r) => r.steps === T && r.method === m).sort((a, b) => a.speedup - b.speedup);
      if (!pts.length) return;
      out.push(`<polyline fill="none" stroke="${COLORS[k % COLORS.length]}" stroke-width="1.5" points="${pts.map((r) => `${X(r.speedup).toFixed(1)},${Y(r.psnr).toFixed(1)}`).join(' ')}"/>`);
      for (const r of pts) {
        out.push(`<circle cx="${X(r.speedup).toFixed(1)}" cy="${Y(r.psnr).toFixed(1)}" r="${r.headline ? 4 : 2.5}" fill="${COLORS[k % COLORS.length]}"><title>${r.tag}: ${r.speedup.toFixed(2)}x, ${r.psnr.toFixed(2)} dB, SSIM ${r.ssim.toFixed(4)}</title></circle>`);
      }
    });
  });
  methods.forEach((m, k) => {
    const x = 20 + (k % 2) * (width / 2), y = H + 20 + 18 * Math.floor(k / 2);
    out.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 20}" y2="${y - 4}" stroke="${COLORS[k % COLORS.length]}" stroke-width="2"/><text x="${x + 26}" y="${y}">${m} (thresholds ${[...new Set(rows.filter((r) => r.method === m).map((r) => r.rdt))].join(', ')}; big dot R0.12)</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export function cacheTable(rows: CacheBenchRow[]): string {
  const head = ['steps', 'method', 'R', 'cached', 'speed-up', 'e2e', 'PSNR dB', 'SSIM', 'tag'];
  const body = rows.map((r) => [String(r.steps), r.method, String(r.rdt), String(r.cachedSteps), `${r.speedup.toFixed(2)}x`, `${r.speedupTotal.toFixed(2)}x`, Number.isFinite(r.psnr) ? r.psnr.toFixed(2) : 'inf', r.ssim.toFixed(4), r.tag]);
  const all = [head, ...body];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  return all.map((r) => r.map((v, c) => (c === 1 || c === 8 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  ')).join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // BENCH_CACHE_METHODS=TaylorSeer,FoCa (substrings of method names) and BENCH_CACHE_STEPS=28 run a subset,
  // printed only (bench/cache.json and .svg hold the full run)
  const methods = process.env.BENCH_CACHE_METHODS?.split(',').filter(Boolean);
  const stepsList = process.env.BENCH_CACHE_STEPS?.split(',').map(Number);
  const subset = Boolean(methods || stepsList);
  const rows = await benchCache({ log: (s) => process.stderr.write(s + '\n'), methods, stepsList, ...(subset ? { svg: path.join(os.tmpdir(), 'ditforge-cache-subset.svg') } : {}) });
  if (!subset) fs.writeFileSync(path.join(ROOT, 'bench/cache.json'), JSON.stringify(rows, null, 2) + '\n');
  console.log(cacheTable(rows));
  console.log(subset ? 'subset: bench/cache.json not written' : 'wrote bench/cache.svg, bench/cache.json');
  process.stdout.write('', () => process.exit(0));
}
