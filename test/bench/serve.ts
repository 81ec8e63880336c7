// A bounded load test of `ditforge serve` on loopback: the CLI server (tiny-flux, 32 x 32, 2 steps) in its
// own process, a fixed number of requests from a fixed number of concurrent clients (below the queue
// limit, so none may fail), /health polled throughout. Reports throughput, p50 / p99 latency, /health p99
// during the load, the server's RSS after warm-up and after the load (growth over the requests is a leak),
// and the failures. The peer: the same requests through the library in this process, back to back (what
// the HTTP layer, the queue and PNG encoding cost on top). Then the same load with --max-batch 4: requests
// that wait together run as one batch (the batching gain is its throughput over the unbatched one).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../../runtime/pipeline.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServeBench {
  requests: number;
  clients: number;
  steps: number;
  size: string;
  failed: number;
  throughputRps: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  healthP99Ms: number;
  healthPolls: number;
  rssAfterWarmupMiB: number;
  rssAfterLoadMiB: number;
  /** the server's RSS after every 100 requests (MiB): a leak grows it steadily, a warm-up once */
  rssEvery100MiB: number[];
  /** the same requests through the library, back to back, requests per second */
  libraryRps: number;
  /** the same load against `serve --max-batch 4` */
  batched: { maxBatch: number; throughputRps: number; latencyP50Ms: number; latencyP99Ms: number; failed: number; generations: number };
  /** batched throughput / unbatched throughput */
  batchingGain: number;
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface LoadResult {
  wall: number;
  latencies: number[];
  health: number[];
  failed: number;
  rssAfterWarmupMiB: number;
  rssAfterLoadMiB: number;
  rssTrace: number[];
  /** generations the server ran (/metrics ditforge_batches_total, warm-up included) */
  generations: number;
}

const PROMPT = 'a large red circle at the center on a black background';

/** `requests` from `clients` concurrent clients against a fresh `ditforge serve` (tiny-flux) with --max-batch `maxBatch` */
async function loadTest(o: { requests: number; clients: number; steps: number; threads: number; maxBatch: number }): Promise<LoadResult> {
  const { requests, clients, steps } = o;
  const port = 18000 + Math.floor(Math.random() * 2000);
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'ditforge.mjs'), 'serve', '--model', 'tiny-flux', '--port', String(port), '--threads', String(o.threads), '--max-queue', String(clients * 2), '--max-batch', String(o.maxBatch)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const base = `http://127.0.0.1:${port}`;
  const body = (i: number) => JSON.stringify({ prompt: PROMPT, width: 32, height: 32, num_inference_steps: steps, seed: i });
  const generate = (i: number) => fetch(`${base}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(i) });
  try {
    for (let t = 0; ; t++) {
      if (child.exitCode !== null) throw new Error(`the server exited: ${stderr}`);
      try {
        if ((await fetch(`${base}/health`)).ok) break;
      } catch {
        /* not listening yet */
      }
      if (t > 600) throw new Error(`the server did not come up in 60 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let i = 0; i < 5; i++) await (await generate(i)).arrayBuffer();
    // concurrent bursts too, so a batching server has compiled its batch plans before the timed load
    for (let k = 0; k < 3; k++) await Promise.all(Array.from({ length: clients }, async (_, i) => (await generate(100 + 10 * k + i)).arrayBuffer()));
    const rssAfterWarmupMiB = rssMiB(child.pid!);
    const warmGenerations = Number(/ditforge_batches_total (\d+)/.exec(await (await fetch(`${base}/metrics`)).text())?.[1] ?? 0);
    const latencies: number[] = [];
    const health: number[] = [];
    let failed = 0;
    const rssTrace: number[] = [];
    let next = 0;
    let loading = true;
    const poller = (async () => {
      while (loading) {
        const t = performance.now();
        const r = await fetch(`${base}/health`);
        await r.text();
        health.push(performance.now() - t);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (next < requests) {
          const i = next++;
          const t = performance.now();
          const r = await generate(1000 + i);
          await r.arrayBuffer();
          if (r.status !== 200) failed++;
          latencies.push(performance.now() - t);
          if (latencies.length % 100 === 0) rssTrace.push(Math.round(rssMiB(child.pid!)));
        }
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    loading = false;
    await poller;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const generations = Number(/ditforge_batches_total (\d+)/.exec(metrics)?.[1] ?? NaN) - warmGenerations;
    return { wall, latencies, health, failed, rssAfterWarmupMiB, rssAfterLoadMiB: rssMiB(child.pid!), rssTrace, generations };
  } finally {
    child.kill('SIGTERM');
  }
}

export async function benchServe(o: { requests?: number; clients?: number; threads: number; log: (s: string) => void }): Promise<ServeBench> {
  const requests = o.requests ?? 200;
  const clients = o.clients ?? 4;
  const steps = 2;
  const one = await loadTest({ requests, clients, steps, threads: o.threads, maxBatch: 1 });
  const four = await loadTest({ requests, clients, steps, threads: o.threads, maxBatch: 4 });
  const { wall, latencies, health, failed, rssAfterWarmupMiB, rssAfterLoadMiB, rssTrace } = one;
  {
    // the peer: the library in this process, the same requests back to back
    const pipe = await loadPipeline('tiny-flux', { threads: o.threads });
    await pipe.generate({ prompt: 'warm', height: 32, width: 32, steps } as never);
    const n = Math.min(requests, 50);
    const tl = performance.now();
    for (let i = 0; i < n; i++) await pipe.generate({ prompt: PROMPT, height: 32, width: 32, steps, seed: i } as never);
    const libraryRps = n / ((performance.now() - tl) / 1000);
    const r: ServeBench = {
      requests,
      clients,
      steps,
      size: '32x32',
      failed,
      throughputRps: requests / wall,
      latencyP50Ms: pct(latencies, 50),
      latencyP99Ms: pct(latencies, 99),
      healthP99Ms: pct(health, 99),
      healthPolls: health.length,
      rssAfterWarmupMiB,
      rssAfterLoadMiB,
      rssEvery100MiB: rssTrace,
      libraryRps,
      batched: { maxBatch: 4, throughputRps: requests / four.wall, latencyP50Ms: pct(four.latencies, 50), latencyP99Ms: pct(four.latencies, 99), failed: four.failed, generations: four.generations },
      batchingGain: one.wall / four.wall,
    };
    o.log(`  serve: ${r.throughputRps.toFixed(1)} req/s (library ${libraryRps.toFixed(1)}), p50 ${r.latencyP50Ms.toFixed(0)} ms, p99 ${r.latencyP99Ms.toFixed(0)} ms, /health p99 ${r.healthP99Ms.toFixed(1)} ms, RSS ${rssAfterWarmupMiB.toFixed(0)} -> ${rssAfterLoadMiB.toFixed(0)} MiB, ${failed} failed`);
    o.log(`  serve --max-batch 4: ${r.batched.throughputRps.toFixed(1)} req/s (x${r.batchingGain.toFixed(2)}), ${r.batched.generations} generations for ${requests} requests, p50 ${r.batched.latencyP50Ms.toFixed(0)} ms, p99 ${r.batched.latencyP99Ms.toFixed(0)} ms, ${r.batched.failed} failed`);
    return r;
  }
}
