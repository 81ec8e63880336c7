// What the server generates on: this process's pipeline, or `world` ranks started once and kept (shm worker
// threads). Multi-rank: the server's thread holds a host pipeline that resolves each request and compiles the
// plans it needs (each need's plans are sent to the ranks once); every rank holds the one Pipeline with its
// share of the parallel components, waits for jobs on a message channel (not inside a collective, so an idle
// rank has nothing to time out on: the reason Cache-DiT heartbeats NCCL), runs each job, and rank 0 posts
// the result. Cancellation is agreed at every step by an all-reduce of a shared flag, so every rank stops
// at the same step. A rank that dies or fails outside a request's own error takes the world down within the
// communicator's wait bound, and the server answers 503 from then on.
import { BroadcastChannel } from 'node:worker_threads';
import { decodeRequestImages } from '../image-input.ts';
import type { PipelineCacheOptions } from '../pipeline-cache.ts';
import type { Communicator } from '../comm/communicator.ts';
import { launchRanks } from '../comm/index.ts';
import type { LoraLibrary, LoraSpec } from '../lora.ts';
import { UserError, type PipelineFamily } from '../model-dir.ts';
import { loadPipeline, type Pipeline, type PlanProvider } from '../pipeline.ts';
import { parallelRequest, planRanks, type ParallelOptions, type ParallelPlanProvider } from '../pipeline-parallel.ts';
import type { Component, Plan } from '../plan.ts';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

/** The pipeline a server drives: generate one request (stopped when `signal` aborts), switch LoRAs. */
export interface ServedPipeline {
  readonly name: string;
  readonly family: PipelineFamily;
  readonly loraLibrary: LoraLibrary;
  readonly world: number;
  /** the family starts from an input image (image-to-image) */
  readonly imageToImage: boolean;
  /** the family takes a mask with the image (FLUX.1-Fill) */
  readonly inpainting: boolean;
  /** the family edits from several images (FLUX.2-Klein's reference images) */
  readonly multiImage: boolean;
  /** the family runs several requests as one batch (the spec's `batching`) */
  readonly batching: boolean;
  /** LoRAs fused into the weights (false: unfused branches, --disable-fuse-lora) */
  readonly fuseLora: boolean;
  /** Cache-DiT's per-family alignment of a request's cache options (its serving examples) */
  alignCache(opts: PipelineCacheOptions): PipelineCacheOptions;
  generate(opts: Record<string, unknown>, signal: AbortSignal): Promise<unknown>;
  setLoras(specs: LoraSpec[]): Promise<void>;
  /** why the ranks are gone (the server answers 503), or null */
  failure(): string | null;
  close(): Promise<void>;
}

/** this process's pipeline: a cancelled request stops before its next step */
export function localServed(pipe: Pipeline): ServedPipeline {
  return {
    name: pipe.name,
    family: pipe.family,
    loraLibrary: pipe.loraLibrary,
    world: 1,
    imageToImage: pipe.spec.imageToImage === true,
    inpainting: pipe.spec.inpainting === true,
    multiImage: pipe.spec.multiImage === true,
    batching: pipe.spec.batching === true,
    fuseLora: pipe.fuseLora,
    alignCache: (c) => pipe.spec.alignCache?.(c) ?? c,
    generate: (opts, signal) =>
      pipe.generate({
        ...opts,
        beforeStep: () => {
          if (signal.aborted) throw signal.reason;
        },
      } as never),
    setLoras: (specs) => pipe.setLoras(specs),
    failure: () => null,
    close: async () => undefined,
  };
}

export interface RankServingOptions extends ParallelOptions {
  threads?: number;
  planProvider: PlanProvider;
  parallelPlanProvider: ParallelPlanProvider;
  parallelText?: boolean;
  lora?: LoraSpec[];
  loraLibrary?: LoraLibrary;
  /** tests: rank `rank` exits abruptly (its worker dies) when job `job` (1, 2, ...) arrives */
  faultInjection?: { rank: number; job: number };
}

interface ServeRankArgs {
  modelDir: string;
  threads: number;
  channel: string;
  /** Int32 [the id of the job to cancel] */
  cancel: SharedArrayBuffer;
  lora: LoraSpec[] | null;
  die: { rank: number; job: number } | null;
}

type ToRanks = { type: 'job'; id: number; request: Record<string, unknown>; plans: Partial<Record<Component, Plan[]>>; rankPlans: Record<string, Plan>[]; lora: LoraSpec[] | null } | { type: 'stop' };
type FromRanks = { type: 'ready'; rank: number } | { type: 'result'; id: number; result: unknown } | { type: 'error'; id: number; rank: number; message: string; user: boolean; cancelled: boolean };

/** a request stopped by the server's cancel flag (every rank throws it at the same step) */
class JobCancelled extends Error {}

let channels = 0;

/** Starts `world` shm ranks that serve `model` until close(). */
export async function startRankServing(model: string, o: RankServingOptions): Promise<ServedPipeline> {
  if ((o.comm ?? 'shm') !== 'shm') throw new UserError(`serve --world ${o.world} runs shm ranks (worker threads of the server); --comm ${o.comm} is not supported by serve yet`);
  const preq = parallelRequest(o);
  const host = await loadPipeline(model, { planProvider: o.planProvider, ...(o.lora ? { lora: o.lora } : {}), ...(o.loraLibrary ? { loraLibrary: o.loraLibrary } : {}) });
  const channel = `ditforge-serve-${process.pid}-${++channels}`;
  const cancel = new SharedArrayBuffer(4);
  const flag = new Int32Array(cancel);
  const ch = new BroadcastChannel(channel);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; signal: AbortSignal }>();
  let failure: string | null = null;
  let seq = 0;
  const sent = new Set<string>();
  // a message posted before a rank opened its channel never reaches it: jobs wait until every rank is ready
  let readyCount = 0;
  let onReady: () => void = () => undefined;
  const allReady = new Promise<void>((resolve) => (onReady = resolve));
  ch.onmessage = (ev: unknown) => {
    const m = (ev as { data: FromRanks | ToRanks }).data;
    if (m.type === 'job' || m.type === 'stop') return;
    if (m.type === 'ready') {
      if (++readyCount === o.world) onReady();
      return;
    }
    const p = pending.get(m.id);
    if (!p) return;
    // any other error takes the world down: the request waits for that and fails with the ranks' failure
    if (m.type === 'error' && !m.user && !m.cancelled) return;
    pending.delete(m.id);
    if (m.type === 'result') p.resolve(m.result);
    else if (m.cancelled) p.reject(p.signal.reason);
    else p.reject(new UserError(m.message));
  };
  const args: ServeRankArgs = { modelDir: host.dir, threads: o.threads ?? Math.max(1, Math.floor(os.availableParallelism() / o.world)), channel, cancel, lora: o.lora ?? null, die: o.faultInjection ?? null };
  const ranks = launchRanks<null>(o.world, { backend: 'shm', module: fileURLToPath(import.meta.url), exportName: 'servingRank', args });
  const stopped = ranks.then(
    () => {
      failure ??= 'the ranks stopped';
    },
    (e: Error) => {
      failure = `rank failure: ${e.message}`;
      for (const p of pending.values()) p.reject(new Error(failure));
      pending.clear();
    },
  );
  await Promise.race([allReady, stopped]);
  if (failure) {
    ch.close();
    throw new Error(`serve could not start ${o.world} ranks: ${failure}`);
  }
  let tail: Promise<unknown> = Promise.resolve();
  return {
    name: host.name,
    family: host.family,
    loraLibrary: host.loraLibrary,
    world: o.world,
    imageToImage: host.spec.imageToImage === true,
    inpainting: host.spec.inpainting === true,
    multiImage: host.spec.multiImage === true,
    batching: host.spec.batching === true,
    fuseLora: true,
    alignCache: (c) => host.spec.alignCache?.(c) ?? c,
    failure: () => failure,
    setLoras: (specs) => host.setLoras(specs),
    generate(opts, signal) {
      // one job at a time: plans for a job are compiled after the one before was sent
      const run = async (): Promise<unknown> => {
        if (failure) throw new Error(failure);
        const { lora, ...given } = opts as Record<string, unknown> & { lora?: LoraSpec[] };
        // image files decoded here once; the ranks get the pixels
        const request = await decodeRequestImages(given);
        const q = host.spec.resolve(request);
        const planned = await planRanks(host, q, { world: o.world, preq, parallelText: o.parallelText === true, parallelVae: false, parallelPlanProvider: o.parallelPlanProvider, skip: (k) => sent.has(k) });
        // the ranks keep every plan they were sent (by need: component and shape key)
        for (const n of host.spec.needs(q, 'local')) sent.add(`${n.component}:${n.key}`);
        const id = ++seq;
        const onAbort = (): void => {
          Atomics.store(flag, 0, id);
        };
        if (signal.aborted) throw signal.reason;
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          return await new Promise((resolve, reject) => {
            pending.set(id, { resolve, reject, signal });
            ch.postMessage({ type: 'job', id, request, plans: planned.plans, rankPlans: planned.rankPlans, lora: lora ?? null } satisfies ToRanks);
          });
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
      };
      const r = tail.then(run, run);
      tail = r.catch(() => undefined);
      return r;
    },
    async close() {
      ch.postMessage({ type: 'stop' } satisfies ToRanks);
      await ranks.catch(() => undefined);
      ch.close();
    },
  };
}

/** One serving rank (launchRanks entry): the one Pipeline, a job at a time, until the server stops it. */
export async function servingRank(comm: Communicator, a: ServeRankArgs): Promise<null> {
  const given: Partial<Record<Component, Plan[]>> = {};
  const mine: Record<string, Plan> = {};
  const pipe = await loadPipeline(a.modelDir, { threads: a.threads, plans: given, rank: { comm, plans: mine }, ...(a.lora ? { lora: a.lora } : {}) });
  const flag = new Int32Array(a.cancel);
  const ch = new BroadcastChannel(a.channel);
  const ready = new Promise<null>((resolve, reject) => {
    let tail: Promise<void> = Promise.resolve();
    ch.onmessage = (ev: unknown) => {
      // the channel also carries the other ranks' messages to the server
      const m = (ev as { data: ToRanks | FromRanks }).data;
      if (m.type !== 'job' && m.type !== 'stop') return;
      if (m.type === 'stop') {
        void tail.then(() => {
          ch.close();
          resolve(null);
        });
        return;
      }
      tail = tail.then(async () => {
        if (a.die && a.die.rank === comm.rank && a.die.job === m.id) process.exit(3);
        for (const [c, ps] of Object.entries(m.plans) as [Component, Plan[]][]) (given[c] ??= []).push(...ps);
        Object.assign(mine, m.rankPlans[comm.rank]);
        const stop = new Float64Array(1);
        try {
          const r = await pipe.generate({
            ...m.request,
            ...(m.lora ? { lora: m.lora } : {}),
            decode: comm.rank === 0 ? 'local' : 'none',
            // every rank agrees on the step to stop at
            beforeStep: async () => {
              stop[0] = Atomics.load(flag, 0) === m.id ? 1 : 0;
              await comm.allReduceSum(stop);
              if (stop[0]! > 0) throw new JobCancelled('cancelled');
            },
          } as never);
          if (comm.rank === 0) ch.postMessage({ type: 'result', id: m.id, result: r } satisfies FromRanks);
        } catch (e) {
          const user = e instanceof UserError;
          const cancelled = e instanceof JobCancelled;
          ch.postMessage({ type: 'error', id: m.id, rank: comm.rank, message: (e as Error).message, user, cancelled } satisfies FromRanks);
          // anything else may have left a collective half done: the world goes down (503s), never a hang
          if (!user && !cancelled) {
            ch.close();
            reject(e);
          }
        }
      });
    };
  });
  ch.postMessage({ type: 'ready', rank: comm.rank } satisfies FromRanks);
  return ready;
}
