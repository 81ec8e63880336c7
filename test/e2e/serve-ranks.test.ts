// `ditforge serve` on 2 shm ranks kept between requests (tiny-flux, loopback): requests with different step
// counts, cache options and a per-request LoRA give exactly what generateParallel gives on 2 ranks; a request
// past its timeout stops every rank at the same step and the next request runs; a rank that dies turns the
// request in flight and every later one into 503s and /health into 503, within the communicator's bound.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { loadCacheOptions } from '../../runtime/cache/config.ts';
import { readPng } from '../../runtime/image.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import type { PlanProvider } from '../../runtime/pipeline.ts';
import { startRankServing, type ServedPipeline } from '../../runtime/serve/ranks.ts';
import { createServer } from '../../runtime/serve/server.ts';
import { makeLora } from '../helpers/lora.ts';

const PROMPT = 'a large red circle at the center on a black background';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-ranks-'));
const planProvider: PlanProvider = (c, _d, req) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });
const LORA = makeLora(tmp, { targets: ['transformer_blocks.0.attn.to_q', 'single_transformer_blocks.0.proj_out'], rank: 2, alpha: 4, scale: 0.7, seed: 3 }).file;

const closers: (() => Promise<unknown>)[] = [];
async function serveRanks(o: { timeoutS?: number; faultInjection?: { rank: number; job: number }; maxBatch?: number } = {}): Promise<{ base: string; served: ServedPipeline }> {
  const served = await startRankServing('tiny-flux', { world: 2, threads: 1, planProvider, parallelPlanProvider, ...(o.faultInjection ? { faultInjection: o.faultInjection } : {}) });
  const { app } = createServer(served, { modelName: 'tiny-flux', requestTimeoutS: o.timeoutS ?? 60, ...(o.maxBatch ? { maxBatch: o.maxBatch } : {}) });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => app.close(), () => served.close());
  return { base, served };
}
const post = (base: string, p: string, body: unknown) => fetch(`${base}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
function pixels(b64: string): Uint8Array {
  const f = path.join(tmp, `${Math.random().toString(36).slice(2)}.png`);
  fs.writeFileSync(f, Buffer.from(b64, 'base64'));
  return readPng(f).pixels;
}
const same = (x: Uint8Array, y: Uint8Array) => Buffer.from(x).equals(Buffer.from(y));

describe.skipIf(!nativeAvailable())('ditforge serve on 2 ranks', () => {
  afterAll(async () => {
    for (const c of closers) await c().catch(() => undefined);
  });

  it('--max-batch on 2 ranks: two requests that wait together run as one batch, each image what generateParallel gives it alone', async () => {
    const { base } = await serveRanks({ maxBatch: 4 });
    const first = post(base, '/generate', { prompt: PROMPT, num_inference_steps: 60, seed: 1 });
    await new Promise((r) => setTimeout(r, 50));
    const bodies = [{ prompt: 'a blue square', seed: 2 }, { prompt: 'a green dot', seed: 3 }];
    const rest = bodies.map((b) => post(base, '/generate', { ...b, num_inference_steps: 4 }));
    const got = await Promise.all([first, ...rest].map(async (r) => (await r).json() as Promise<{ images: string[] }>));
    for (const [i, b] of bodies.entries()) {
      const want = await generateParallel<{ image: Uint8Array }>('tiny-flux', { ...b, steps: 4, world: 2, threads: 1, planProvider, parallelPlanProvider });
      expect(same(pixels(got[i + 1]!.images[0]!), want.image), b.prompt).toBe(true);
    }
    const m = await (await fetch(`${base}/metrics`)).text();
    expect(m).toMatch(/ditforge_batches_total 2\b/);
    expect(m).toMatch(/ditforge_batched_requests_total 3\b/);
  });

  it('== generateParallel on 2 ranks (steps, cache options, a per-request LoRA), the ranks kept between requests', async () => {
    const { base } = await serveRanks();
    const info = (await (await fetch(`${base}/get_model_info`)).json()) as { world: number };
    expect(info.world).toBe(2);
    const cacheConfig = { Fn_compute_blocks: 1, residual_diff_threshold: 0.2, max_warmup_steps: 2 };
    const reqs = [
      { http: { prompt: PROMPT, num_inference_steps: 8, seed: 3, cache_config: cacheConfig, include_stats: true }, lib: { prompt: PROMPT, steps: 8, seed: 3, cache: { cache: loadCacheOptions(cacheConfig).cache_config } } },
      { http: { prompt: PROMPT, num_inference_steps: 4, seed: 4, width: 48, height: 32 }, lib: { prompt: PROMPT, steps: 4, seed: 4, width: 48, height: 32 } },
      { http: { prompt: PROMPT, num_inference_steps: 4, seed: 5, lora: { path: LORA, scale: 0.7 } }, lib: { prompt: PROMPT, steps: 4, seed: 5, lora: [{ path: LORA, scale: 0.7 }] } },
      { http: { prompt: PROMPT, num_inference_steps: 4, seed: 5 }, lib: { prompt: PROMPT, steps: 4, seed: 5 } },
    ];
    const t0 = performance.now();
    const got = [];
    for (const r of reqs) {
      const res = await post(base, '/generate', r.http);
      expect(res.status).toBe(200);
      got.push((await res.json()) as { images: string[]; stats?: { summary: { cached_steps: number[] }[] } });
    }
    console.log(`4 requests on 2 kept ranks: ${(performance.now() - t0).toFixed(0)} ms (plans compiled once per shape)`);
    for (let i = 0; i < reqs.length; i++) {
      const want = await generateParallel<{ image: Uint8Array; cache?: { summary: { cached_steps: number[] }[] } }>('tiny-flux', { ...(reqs[i]!.lib as { prompt: string }), world: 2, threads: 1, planProvider, parallelPlanProvider });
      expect(same(pixels(got[i]!.images[0]!), want.image)).toBe(true);
      if (i === 0) {
        expect(got[0]!.stats!.summary[0]!.cached_steps).toEqual(want.cache!.summary[0]!.cached_steps);
        expect(want.cache!.summary[0]!.cached_steps.length).toBeGreaterThan(0);
      }
    }
    expect(same(pixels(got[2]!.images[0]!), pixels(got[3]!.images[0]!))).toBe(false);
  });

  it('a request past its timeout stops on every rank (504), and the next request runs', async () => {
    const { base } = await serveRanks({ timeoutS: 0.5 });
    const slow = await post(base, '/generate', { prompt: PROMPT, num_inference_steps: 200, width: 256, height: 256 });
    expect(slow.status).toBe(504);
    const ok = await post(base, '/generate', { prompt: PROMPT, num_inference_steps: 1 });
    expect(ok.status).toBe(200);
    expect(await (await fetch(`${base}/health`)).text()).toBe('OK');
  });

  it('a rank that dies: 503 for the request in flight and every later one, /health 503', async () => {
    const { base } = await serveRanks({ faultInjection: { rank: 1, job: 2 } });
    expect((await post(base, '/generate', { prompt: PROMPT, num_inference_steps: 1 })).status).toBe(200);
    const t0 = performance.now();
    const dead = await post(base, '/generate', { prompt: PROMPT, num_inference_steps: 2 });
    expect(dead.status).toBe(503);
    expect(((await dead.json()) as { error: string }).error).toMatch(/rank failure: .*rank 1/);
    console.log(`a dead rank answered 503 after ${(performance.now() - t0).toFixed(0)} ms`);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(503);
    expect((await post(base, '/generate', { prompt: PROMPT, num_inference_steps: 1 })).status).toBe(503);
  });
});
