// `ditforge serve`: HTTP serving of one pipeline (any family) with Cache-DiT's server API (GET /health,
// GET /get_model_info, POST /generate, POST /flush_cache) and the OpenAI-style endpoints SGLang Diffusion and
// vLLM-Omni expose (POST /v1/images/generations, POST /v1/images/edits, POST /v1/videos), plus GET /metrics
// (Prometheus text). An image in (image_urls, the edits endpoint's image / url) is image-to-image on the
// families that have it (FluxImg2ImgPipeline).
// Every request runs the pipeline's generate, whose cache session is made for that request: its own step
// count and, when given, its own cache options (no state carried between requests). A bounded queue: at most
// `maxConcurrency` generations at once (the pipeline runs one at a time: its executors share arenas), at most
// `maxQueue` waiting, beyond that 429 with Retry-After; a request past its timeout, or whose client went away,
// is dropped from the queue or stopped at its next denoising step. The forwards run on the native executor's
// threads, so /health answers while a generation runs. LoRA: the server's adapters (runtime/serve/loras.ts)
// or a request's own, put in effect between generations.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { loadCacheOptions } from '../cache/config.ts';
import { encodePng } from '../image.ts';
import { isFluxFamily, UserError } from '../model-dir.ts';
import type { Pipeline } from '../pipeline.ts';
import type { PipelineCacheOptions, PipelineCacheResult } from '../pipeline-cache.ts';
import { summaryJson } from '../pipeline-cache.ts';
import { checkVideoOutput, checkWritableDir, writeVideo } from '../video.ts';
import type { LoraSpec } from '../lora.ts';
import type { RgbImage } from '../image-input.ts';
import { imageFromSource } from './images.ts';
import { acceptMultipart, typedFormFields } from './multipart.ts';
import { localServed, type ServedPipeline } from './ranks.ts';
import { ServerLoras, type LoraRequest, type SetLoraBody } from './loras.ts';
import { GenerationQueue, QueueFullError, RequestCancelled } from './queue.ts';

export interface ServeOptions {
  /** the model name shown by /get_model_info and /v1/models */
  modelName: string;
  /** 1 (the pipeline runs one generation at a time) */
  maxConcurrency?: number;
  /** requests waiting beyond the running ones (default 16) */
  maxQueue?: number;
  /**
   * requests that wait together with the same options but prompt and seed run as one batch, up to this many
   * (default 1: no batching); FLUX pipelines only, and never a request with cache options (a cached batch's
   * decisions would differ from its requests' alone), an image or several images
   */
  maxBatch?: number;
  /** seconds from arrival until a request is cancelled (queued: dropped; running: stopped at its next step); default 600 */
  requestTimeoutS?: number;
  /** request body limit in MiB (default 32) */
  maxBodyMb?: number;
  /** cache options of requests that give none (the server's --cache flags), or null */
  defaultCache?: PipelineCacheOptions | null;
  /** fastify's logger (default off) */
  logger?: boolean;
  /** the LoRAs the pipeline was loaded with (--lora-path): registered under their nicknames, in effect by default */
  loras?: (LoraSpec & { nickname?: string })[];
}

/** the fields of a generate request every endpoint maps to (the pipeline family reads its own) */
interface Job {
  prompt: string;
  negativePrompt?: string;
  height?: number;
  width?: number;
  steps?: number;
  seed?: number;
  batch?: number;
  guidanceScale?: number;
  guidanceScale2?: number;
  trueCfgScale?: number;
  numFrames?: number;
  maxSequenceLength?: number;
  cache?: PipelineCacheOptions;
  /** the request's own adapters (vLLM-Omni's per-request lora); absent: the server's (set_lora) */
  lora?: LoraSpec[];
  /** image-to-image: the image to start from, and how much noise it gets; inpainting: its mask; multi-image editing: the images */
  image?: RgbImage | RgbImage[];
  strength?: number;
  mask?: RgbImage;
}

interface GenOut {
  images?: Uint8Array[];
  videos?: Uint8Array[];
  width: number;
  height: number;
  numFrames?: number;
  steps: number;
  cache?: PipelineCacheResult;
}

const num = (min: number, max: number) => ({ type: 'number', minimum: min, maximum: max });

/** vLLM-Omni's per-request LoRA: `{name | lora_name, path | lora_path, scale, int_id}` (a name alone: one set by /v1/set_lora) */
const LORA_REQUEST = {
  type: 'object',
  additionalProperties: false,
  properties: { name: { type: 'string' }, lora_name: { type: 'string' }, path: { type: 'string' }, lora_path: { type: 'string' }, scale: { type: 'number', minimum: -100, maximum: 100 }, int_id: { type: 'integer' } },
} as const;
const stringOrList = { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, maxItems: 8, items: { type: 'string' } }] };
/** SGLang's POST /v1/set_lora */
const SET_LORA_SCHEMA = {
  type: 'object',
  required: ['lora_nickname'],
  additionalProperties: false,
  properties: {
    lora_nickname: stringOrList,
    lora_path: stringOrList,
    target: { type: 'string', enum: ['all', 'transformer', 'transformer_2'] },
    strength: { anyOf: [{ type: 'number' }, { type: 'array', items: { type: 'number' } }] },
    merge_mode: { type: 'string', enum: ['auto', 'merge', 'dynamic'] },
  },
} as const;
const int = (min: number, max: number) => ({ type: 'integer', minimum: min, maximum: max });

/** the diffusion fields every endpoint takes (the pipeline family reads its own) */
const COMMON_FIELDS = {
  prompt: { type: 'string' },
  negative_prompt: { type: 'string' },
  num_inference_steps: int(1, 200),
  guidance_scale: num(0, 20),
  seed: int(0, Number.MAX_SAFE_INTEGER),
  max_sequence_length: int(1, 4096),
  strength: num(0, 1),
  cache_config: { anyOf: [{ type: 'object' }, { type: 'boolean' }] },
  lora: { anyOf: [LORA_REQUEST, { type: 'array', minItems: 0, maxItems: 8, items: LORA_REQUEST }] },
} as const;

/** a strict body schema: `prompt` required, nothing beyond the listed fields */
const bodySchema = (fields: Record<string, unknown>) => ({ type: 'object', required: ['prompt'], additionalProperties: false, properties: { ...COMMON_FIELDS, ...fields } });
const SIZE = { type: 'string', pattern: '^[0-9]+x[0-9]+$' };

/** Cache-DiT's GenerateRequestAPI (bounds as its server has them), plus true_cfg_scale, guidance_scale_2, max_sequence_length, cache_config */
const GENERATE_SCHEMA = bodySchema({
  width: int(16, 4096),
  height: int(16, 4096),
  guidance_scale_2: num(0, 20),
  true_cfg_scale: num(0, 20),
  sigmas: { type: 'array', items: { type: 'number' } },
  num_images: int(1, 4),
  image_urls: { type: 'array', maxItems: 8, items: { type: 'string' } },
  num_frames: int(1, 200),
  fps: int(1, 120),
  include_stats: { type: 'boolean' },
  output_format: { type: 'string', enum: ['base64', 'path'] },
  output_dir: { type: 'string' },
});

/** OpenAI's images API as SGLang / vLLM-Omni take it (their diffusion extensions included) */
const IMAGES_SCHEMA = bodySchema({
  model: { type: 'string' },
  n: int(1, 10),
  size: SIZE,
  response_format: { type: 'string', enum: ['b64_json', 'url'] },
  output_format: { type: 'string', enum: ['png'] },
  user: { type: 'string' },
  true_cfg_scale: num(0, 20),
});

/** OpenAI's images/edits (SGLang / vLLM-Omni): `image` / `image[]` files or `url` / `url[]`, JSON or multipart */
const EDITS_SCHEMA = bodySchema({
  ...IMAGES_SCHEMA.properties,
  image: stringOrList,
  url: stringOrList,
  mask: { type: 'string' },
});

const VIDEOS_SCHEMA = bodySchema({ model: { type: 'string' }, size: SIZE, num_frames: int(1, 1000), fps: int(1, 120), guidance_scale_2: num(0, 20) });

/** a request's cache_config: an object of Cache-DiT's cache options (flat, as cache_dit's load_options), false for none, absent for the server's */
function requestCache(v: unknown, fallback: PipelineCacheOptions | null): PipelineCacheOptions | null {
  if (v === undefined) return fallback;
  if (v === false) return null;
  if (v === true) return fallback ?? { cache: loadCacheOptions({}).cache_config };
  let r;
  try {
    r = loadCacheOptions(v as Record<string, unknown>);
  } catch (e) {
    throw new UserError(`cache_config: ${(e as Error).message}`);
  }
  return { cache: r.cache_config, calibrator: r.calibrator_config };
}

function sizeOf(s: string | undefined): { width?: number; height?: number } {
  if (!s) return {};
  const [w, h] = s.split('x').map(Number);
  return { width: w!, height: h! };
}

export function createServer(given: Pipeline | ServedPipeline, o: ServeOptions): { app: FastifyInstance; queue: GenerationQueue } {
  const pipe: ServedPipeline = 'failure' in given ? given : localServed(given);
  const family = pipe.family;
  const video = family.output === 'video';
  const queue = new GenerationQueue(o.maxConcurrency ?? 1, o.maxQueue ?? 16, o.maxBatch ?? 1);
  const timeoutMs = (o.requestTimeoutS ?? 600) * 1000;
  const loras = new ServerLoras(pipe, o.loras ?? []);
  const metrics = { requests: new Map<string, number>(), latency: [] as number[], cachedSteps: 0, failed: 0, batches: 0, batchedRequests: 0 };
  /** the batch a job may join: every option but its prompt and seed; null where batching is off or the job is not batchable */
  const batchKey = (job: Job): string | null => {
    if ((o.maxBatch ?? 1) <= 1 || !pipe.batching || job.cache || job.image || job.mask || (job.batch ?? 1) > 1) return null;
    const { prompt: _p, seed: _s, ...rest } = job;
    return JSON.stringify(rest);
  };
  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit: Math.round((o.maxBodyMb ?? 32) * 1024 * 1024),
    // strict bodies: an unknown field is an error (not dropped), a string is never taken as a number
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    // a schema error names the field and what is wrong with it
    schemaErrorFormatter: (errors, where) => {
      const e = errors[0]!;
      const field = (e.params as { additionalProperty?: string; missingProperty?: string }).additionalProperty ?? (e.params as { missingProperty?: string }).missingProperty;
      const at = `${where}${e.instancePath.replace(/\//g, '.')}${field ? `.${field}` : ''}`;
      return new Error(field && e.keyword === 'additionalProperties' ? `${at} is not a field of this endpoint` : `${at} ${e.message}`);
    },
  });
  acceptMultipart(app);
  const maxImageBytes = Math.round((o.maxBodyMb ?? 32) * 1024 * 1024);

  /** a request's input images -> the job's image (image-to-image) or images (multi-image editing); `field` names them in errors */
  const inputImage = async (srcs: string[], field: string): Promise<RgbImage | RgbImage[] | undefined> => {
    if (!srcs.length) return undefined;
    if (!pipe.imageToImage) throw new UserError(`${field}: ${family.pipelineClass} here is text-to-${video ? 'video' : 'image'} only (image-to-image runs on FLUX, Z-Image and FLUX.2-Klein directories)`);
    if (srcs.length > 1 && !pipe.multiImage) throw new UserError(`${field}: ${family.pipelineClass} takes one image (image-to-image); got ${srcs.length} (multi-image editing runs on FLUX.2-Klein directories)`);
    const images = await Promise.all(srcs.map((src, i) => imageFromSource(src, `${field}[${i}]`, maxImageBytes)));
    return pipe.multiImage ? images : images[0];
  };
  const list = (v: unknown): string[] => (v === undefined ? [] : Array.isArray(v) ? (v as string[]) : [v as string]);

  /** the OpenAI images response of a generation */
  const imagesResponse = (b: Record<string, unknown>, { r, start, end }: { r: GenOut; start: Date; end: Date }) => {
    const pngs = r.images!.map((img) => encodePng(img, r.width, r.height).toString('base64'));
    const url = b.response_format === 'url';
    return {
      created: Math.floor(start.getTime() / 1000),
      data: pngs.map((p) => (url ? { url: `data:image/png;base64,${p}` } : { b64_json: p })),
      output_format: 'png',
      size: `${r.width}x${r.height}`,
      inference_time_s: (end.getTime() - start.getTime()) / 1000,
      ...(r.cache ? { cache: { tag: r.cache.tag, cached_steps: r.cache.summary[0]?.cached_steps ?? [] } } : {}),
    };
  };

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, _req, reply) => {
    if (err instanceof QueueFullError) return reply.code(429).header('Retry-After', String(err.retryAfterS)).send({ error: err.message });
    if (err instanceof RequestCancelled) return reply.code(err.timeout ? 504 : 499).send({ error: err.message });
    if (err instanceof UserError || err.validation) return reply.code(400).send({ error: err.message });
    if (err.statusCode && err.statusCode < 500) return reply.code(err.statusCode).send({ error: err.message });
    metrics.failed++;
    // the ranks are gone: this and every later generation is refused until the server restarts
    const failure = pipe.failure();
    if (failure) return reply.code(503).send({ error: failure });
    return reply.code(500).send({ error: err.message });
  });
  app.addHook('onResponse', async (req, reply) => {
    const k = `${req.routeOptions.url ?? req.url}|${reply.statusCode}`;
    metrics.requests.set(k, (metrics.requests.get(k) ?? 0) + 1);
  });

  /** runs one job through the queue; cancelled when the client goes away or the timeout passes */
  const run = async (req: FastifyRequest, job: Job): Promise<{ r: GenOut; start: Date; end: Date }> => {
    const failure = pipe.failure();
    if (failure) throw new Error(failure);
    const ctl = new AbortController();
    const onClose = (): void => {
      if (!req.raw.complete || req.raw.destroyed) ctl.abort(new RequestCancelled('the client closed the connection', false));
    };
    req.raw.socket.on('close', onClose);
    const timer = setTimeout(() => ctl.abort(new RequestCancelled(`the request took longer than ${timeoutMs / 1000} s (--request-timeout)`, true)), timeoutMs);
    try {
      return await queue.runBatched(ctl.signal, batchKey(job), job, async (jobs, signal) => {
        const start = new Date();
        const t0 = performance.now();
        // the request's adapters, or the server's as they are when it starts (switched between generations);
        // a cancelled request stops before its next step (a batch when all its requests have gone)
        const first = { ...jobs[0]!, lora: jobs[0]!.lora ?? loras.inEffect() };
        const batched = jobs.length > 1 ? { ...first, items: jobs.map((j) => ({ prompt: j.prompt, seed: j.seed ?? 0 })) } : first;
        const r = (await pipe.generate(batched, signal)) as GenOut;
        metrics.latency.push((performance.now() - t0) / 1000);
        metrics.batches += 1;
        metrics.batchedRequests += jobs.length;
        metrics.cachedSteps += r.cache?.summary.reduce((a, s) => a + s.cached_steps.length, 0) ?? 0;
        const end = new Date();
        // one result per request: its image of the batch
        return jobs.map((_, i) => ({ r: jobs.length > 1 ? { ...r, images: [r.images![i]!] } : r, start, end }));
      });
    } finally {
      clearTimeout(timer);
      req.raw.socket.off('close', onClose);
    }
  };

  /** a Cache-DiT /generate or OpenAI body -> the pipeline's options (only what the client set; the family's defaults otherwise) */
  const jobOf = (b: Record<string, unknown>, extra: Partial<Job>): Job => {
    const job: Job = { prompt: b.prompt as string, ...extra };
    const set = <K extends keyof Job>(k: K, v: unknown): void => {
      if (v !== undefined) job[k] = v as Job[K];
    };
    set('negativePrompt', b.negative_prompt);
    set('steps', b.num_inference_steps);
    set('seed', b.seed);
    set('trueCfgScale', b.true_cfg_scale);
    set('guidanceScale2', b.guidance_scale_2);
    set('maxSequenceLength', b.max_sequence_length);
    // FLUX.1's guidance_scale is its distilled guidance; the others' is CFG: each family reads its own
    set('guidanceScale', b.guidance_scale);
    set('strength', b.strength);
    const cache = requestCache(b.cache_config, o.defaultCache ?? null);
    if (cache) job.cache = pipe.alignCache(cache);
    const lora = loras.ofRequest(b.lora as LoraRequest | LoraRequest[] | undefined);
    if (lora) job.lora = lora;
    return job;
  };

  app.get('/health', async (_req, reply) => {
    const failure = pipe.failure();
    return failure ? reply.code(503).send(failure) : reply.send('OK');
  });

  app.get('/get_model_info', async () => ({
    model: o.modelName,
    pipeline_class: family.pipelineClass,
    output: family.output,
    world: pipe.world,
    max_concurrency: queue.maxConcurrency,
    max_queue: queue.maxQueue,
    cache: o.defaultCache ? { tag_default: 'server', enabled: true } : { enabled: false },
    loras: loras.inEffect(),
  }));

  app.get('/v1/models', async () => ({ object: 'list', data: [{ id: o.modelName, object: 'model', owned_by: 'ditforge', pipeline_class: family.pipelineClass, task_type: video ? 'T2V' : 'T2I' }] }));

  app.post('/flush_cache', async () => ({ message: 'cache contexts are made per request; nothing to flush' }));

  // SGLang's LoRA management (a request's own `lora` is vLLM-Omni's and applies to that request only)
  app.get('/v1/list_loras', async () => loras.list());
  app.post('/v1/set_lora', { schema: { body: SET_LORA_SCHEMA } }, async (req) => {
    await loras.set(req.body as SetLoraBody);
    return { message: 'ok', ...loras.list() };
  });
  app.post('/v1/merge_lora_weights', async () => {
    await loras.merge(true);
    return { message: 'ok', ...loras.list() };
  });
  app.post('/v1/unmerge_lora_weights', async () => {
    await loras.merge(false);
    return { message: 'ok', ...loras.list() };
  });

  app.post('/generate', { schema: { body: GENERATE_SCHEMA } }, async (req, reply) => {
    const b = req.body as Record<string, unknown>;
    if (b.sigmas !== undefined) throw new UserError('sigmas: custom sigmas are not supported yet (the pipeline computes its own schedule)');
    if (!video && (b.num_frames !== undefined || b.fps !== undefined)) throw new UserError(`num_frames / fps: ${family.pipelineClass} makes images`);
    const job = jobOf(b, { ...(b.width !== undefined ? { width: b.width as number } : {}), ...(b.height !== undefined ? { height: b.height as number } : {}), ...(b.num_images !== undefined ? { batch: b.num_images as number } : {}), ...(b.num_frames !== undefined ? { numFrames: b.num_frames as number } : {}) });
    const image = await inputImage(list(b.image_urls), 'image_urls');
    if (image) job.image = image;
    else if (b.strength !== undefined) throw new UserError('strength: is for image-to-image (give image_urls)');
    if ((job.batch ?? 1) > 1 && !isFluxFamily(family)) throw new UserError(`num_images > 1 is supported for FLUX pipelines only here`);
    const pathOut = b.output_format === 'path';
    const dir = pathOut ? path.resolve((b.output_dir as string | undefined) ?? os.tmpdir()) : null;
    if (dir) checkDirWritable(dir);
    const { r, start, end } = await run(req, job);
    const stamp = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const out: Record<string, unknown> = { time_cost: (end.getTime() - start.getTime()) / 1000, inference_start_time: isoLocal(start), inference_end_time: isoLocal(end) };
    if (r.images) {
      const pngs = r.images.map((img) => encodePng(img, r.width, r.height));
      out.images = dir ? pngs.map((p, i) => writeFile(path.join(dir, `ditforge-${stamp}-${i}.png`), p)) : pngs.map((p) => p.toString('base64'));
    }
    if (r.videos?.length) {
      const file = dir ? path.join(dir, `ditforge-${stamp}.mp4`) : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-')), 'video.mp4');
      await writeVideo(checkVideoOutput(file), r.videos[0]!, r.numFrames!, r.height, r.width, (b.fps as number | undefined) ?? 16);
      out.video = dir ? file : fs.readFileSync(file).toString('base64');
      if (!dir) fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
    if (b.include_stats && r.cache) out.stats = { tag: r.cache.tag, summary: r.cache.summary.map(summaryJson) };
    return reply.send(out);
  });

  app.post('/v1/images/generations', { schema: { body: IMAGES_SCHEMA } }, async (req) => {
    const b = req.body as Record<string, unknown>;
    if (video) throw new UserError(`/v1/images/generations: ${family.pipelineClass} makes videos; use /v1/videos`);
    const n = (b.n as number | undefined) ?? 1;
    if (n > 1 && !isFluxFamily(family)) throw new UserError(`n: n > 1 is supported for FLUX pipelines only here`);
    if (b.strength !== undefined) throw new UserError('strength: is for image-to-image (POST /v1/images/edits)');
    return imagesResponse(b, await run(req, jobOf(b, { ...sizeOf(b.size as string | undefined), ...(n > 1 ? { batch: n } : {}) })));
  });

  app.post(
    '/v1/images/edits',
    {
      schema: { body: EDITS_SCHEMA },
      // a multipart form's text fields in the schema's types (JSON bodies are validated as they are)
      preValidation: async (req) => {
        if (/^multipart\/form-data/i.test(req.headers['content-type'] ?? '')) typedFormFields(req.body as Record<string, unknown>, EDITS_SCHEMA.properties as never);
      },
    },
    async (req) => {
      const b = req.body as Record<string, unknown>;
      if (video) throw new UserError(`/v1/images/edits: ${family.pipelineClass} makes videos`);
      if (b.mask !== undefined && !pipe.inpainting) throw new UserError(`mask: ${family.pipelineClass} does not inpaint (a FluxFillPipeline directory, FLUX.1-Fill, does); without a mask the image is image-to-image`);
      if (b.mask === undefined && pipe.inpainting) throw new UserError(`mask: ${family.pipelineClass} inpaints: give a mask with the image (white repaints)`);
      const srcs = [...list(b.image), ...list(b.url)];
      if (!srcs.length) throw new UserError('image: /v1/images/edits needs an image (image / image[] files, or url / url[])');
      const n = (b.n as number | undefined) ?? 1;
      if (n > 1 && !isFluxFamily(family)) throw new UserError(`n: n > 1 is supported for FLUX pipelines only here`);
      const job = jobOf(b, { ...sizeOf(b.size as string | undefined), ...(n > 1 ? { batch: n } : {}) });
      job.image = (await inputImage(srcs, b.image !== undefined ? 'image' : 'url'))!;
      if (b.mask !== undefined) job.mask = await imageFromSource(b.mask as string, 'mask', maxImageBytes);
      return imagesResponse(b, await run(req, job));
    },
  );

  app.post('/v1/videos', { schema: { body: VIDEOS_SCHEMA } }, async (req) => {
    const b = req.body as Record<string, unknown>;
    if (!video) throw new UserError(`/v1/videos: ${family.pipelineClass} makes images; use /v1/images/generations`);
    const { r, start, end } = await run(req, jobOf(b, { ...sizeOf(b.size as string | undefined), ...(b.num_frames !== undefined ? { numFrames: b.num_frames as number } : {}) }));
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-'));
    try {
      const file = path.join(tmp, 'video.mp4');
      await writeVideo(checkVideoOutput(file), r.videos![0]!, r.numFrames!, r.height, r.width, (b.fps as number | undefined) ?? 16);
      return { created: Math.floor(start.getTime() / 1000), data: [{ b64_json: fs.readFileSync(file).toString('base64'), format: 'mp4', num_frames: r.numFrames, size: `${r.width}x${r.height}` }], inference_time_s: (end.getTime() - start.getTime()) / 1000 };
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  app.get('/metrics', async (_req, reply) => {
    const lines = ['# HELP ditforge_requests_total HTTP requests by route and status', '# TYPE ditforge_requests_total counter'];
    for (const [k, v] of metrics.requests) {
      const [route, status] = k.split('|');
      lines.push(`ditforge_requests_total{route="${route}",status="${status}"} ${v}`);
    }
    lines.push('# HELP ditforge_queue_depth generations waiting', '# TYPE ditforge_queue_depth gauge', `ditforge_queue_depth ${queue.waiting}`);
    lines.push('# HELP ditforge_running generations running', '# TYPE ditforge_running gauge', `ditforge_running ${queue.running}`);
    lines.push('# HELP ditforge_generation_seconds generation latency', '# TYPE ditforge_generation_seconds histogram');
    let acc = 0;
    for (const le of [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]) {
      acc = metrics.latency.filter((x) => x <= le).length;
      lines.push(`ditforge_generation_seconds_bucket{le="${le}"} ${acc}`);
    }
    lines.push(`ditforge_generation_seconds_bucket{le="+Inf"} ${metrics.latency.length}`, `ditforge_generation_seconds_sum ${metrics.latency.reduce((a, x) => a + x, 0)}`, `ditforge_generation_seconds_count ${metrics.latency.length}`);
    lines.push('# HELP ditforge_batches_total generations run (a batch counts once)', '# TYPE ditforge_batches_total counter', `ditforge_batches_total ${metrics.batches}`);
    lines.push('# HELP ditforge_batched_requests_total requests those generations served', '# TYPE ditforge_batched_requests_total counter', `ditforge_batched_requests_total ${metrics.batchedRequests}`);
    lines.push('# HELP ditforge_cached_steps_total denoising steps served from the cache', '# TYPE ditforge_cached_steps_total counter', `ditforge_cached_steps_total ${metrics.cachedSteps}`);
    return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n');
  });

  return { app, queue };
}

function writeFile(file: string, data: Buffer): string {
  fs.writeFileSync(file, data);
  return file;
}

/**
 * output_dir must be a writable directory, checked before the request is queued by a real write probe (a
 * pseudo-filesystem such as /proc refuses it; no recursive mkdir, which loops there); created when missing
 */
function checkDirWritable(dir: string): void {
  try {
    checkWritableDir(dir, dir, 'images');
    if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`output_dir: ${dir} is not a writable directory: ${(e as Error).message}`);
  }
}

/** ISO 8601 with the local timezone offset, as Cache-DiT's server reports its times */
function isoLocal(d: Date): string {
  const off = -d.getTimezoneOffset();
  const pad = (n: number) => String(Math.floor(Math.abs(n))).padStart(2, '0');
  const local = new Date(d.getTime() + off * 60000).toISOString().slice(0, -1);
  return `${local}${off >= 0 ? '+' : '-'}${pad(off / 60)}:${pad(off % 60)}`;
}

export type { FastifyReply };
