// `ditforge serve` over real HTTP on loopback (the server in this process, tiny-flux; Wan 2.1 for video):
// every endpoint, schema errors naming the field (400), an oversized body (413), a full queue (429 with
// Retry-After), a timeout (504), a client that goes away (its work is dropped, the next request runs), and
// two requests with different step counts and cache options giving exactly what the library gives alone.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { compileRequest } from '../../compiler/index.ts';
import { loadCacheOptions } from '../../runtime/cache/config.ts';
import { encodePng, readPng } from '../../runtime/image.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadPipeline, type Pipeline } from '../../runtime/pipeline.ts';
import { createServer } from '../../runtime/serve/server.ts';
import fs from 'node:fs';
import os from 'node:os';

const PROMPT = 'a large red circle at the center on a black background';
const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);

let pipe: Pipeline;
let app: FastifyInstance;
let base: string;

const post = (p: string, body: unknown, init: RequestInit = {}) => fetch(`${base}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });
const pngOf = (b64: string) => {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-test-')), 'x.png');
  fs.writeFileSync(f, Buffer.from(b64, 'base64'));
  return readPng(f);
};

describe.skipIf(!nativeAvailable())('ditforge serve (tiny-flux)', () => {
  beforeAll(async () => {
    pipe = await loadPipeline('tiny-flux', { threads: 1, planProvider });
    ({ app } = createServer(pipe, { modelName: 'tiny-flux', maxQueue: 1, maxBodyMb: 0.01, requestTimeoutS: 30 }));
    base = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app?.close();
  });

  it('/health, /get_model_info, /v1/models, /flush_cache, /metrics', async () => {
    expect(await (await fetch(`${base}/health`)).text()).toBe('OK');
    expect(await (await fetch(`${base}/get_model_info`)).json()).toMatchObject({ model: 'tiny-flux', pipeline_class: 'FluxPipeline', output: 'image' });
    expect(((await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string }[] }).data[0]!.id).toBe('tiny-flux');
    expect((await post('/flush_cache', {})).status).toBe(200);
    expect(await (await fetch(`${base}/v1/list_loras`)).json()).toEqual({ loras: [], loaded: [] });
    const sl = await post('/v1/set_lora', { lora_path: 'x.safetensors' });
    expect(sl.status).toBe(400);
    expect(((await sl.json()) as { error: string }).error).toMatch(/body\.lora_nickname/);
    const m = await (await fetch(`${base}/metrics`)).text();
    expect(m).toMatch(/ditforge_queue_depth 0/);
    expect(m).toMatch(/ditforge_requests_total\{route="\/health",status="200"\} 1/);
  });

  it('two requests with different step counts and cache options back to back == the library alone (bit for bit), each with its own cache context', async () => {
    const a = { prompt: PROMPT, num_inference_steps: 12, seed: 3, include_stats: true, cache_config: { Fn_compute_blocks: 1, residual_diff_threshold: 0.2, max_warmup_steps: 2 } };
    const b = { prompt: PROMPT, num_inference_steps: 6, seed: 4 };
    const ra = (await (await post('/generate', a)).json()) as { images: string[]; stats: { summary: { cached_steps: number[] }[] } };
    const rb = (await (await post('/generate', b)).json()) as { images: string[]; stats?: unknown };
    const la = await pipe.generate({ prompt: PROMPT, steps: 12, seed: 3, cache: { cache: loadCacheOptions(a.cache_config).cache_config } });
    const lb = await pipe.generate({ prompt: PROMPT, steps: 6, seed: 4 });
    expect(Buffer.from(pngOf(ra.images[0]!).pixels).equals(Buffer.from(la.image))).toBe(true);
    expect(Buffer.from(pngOf(rb.images[0]!).pixels).equals(Buffer.from(lb.image))).toBe(true);
    expect(ra.stats.summary[0]!.cached_steps).toEqual(la.cache!.summary[0]!.cached_steps);
    expect(ra.stats.summary[0]!.cached_steps.length).toBeGreaterThan(0);
    expect(rb.stats).toBeUndefined();
  });

  it('/v1/images/generations (b64_json and data URLs); /v1/videos on an image model is a 400', async () => {
    const r = (await (await post('/v1/images/generations', { prompt: PROMPT, size: '32x48', num_inference_steps: 2, n: 2 })).json()) as { data: { b64_json: string }[]; size: string };
    expect(r.size).toBe('32x48');
    expect(r.data).toHaveLength(2);
    expect(pngOf(r.data[1]!.b64_json).height).toBe(48);
    const u = (await (await post('/v1/images/generations', { prompt: PROMPT, num_inference_steps: 1, response_format: 'url' })).json()) as { data: { url: string }[] };
    expect(u.data[0]!.url).toMatch(/^data:image\/png;base64,/);
    const v = await post('/v1/videos', { prompt: PROMPT });
    expect(v.status).toBe(400);
    expect(((await v.json()) as { error: string }).error).toMatch(/FluxPipeline makes images; use \/v1\/images\/generations/);
  });

  it('bad input: 400 naming the field, 413 for a large body, 400 for editing fields the model cannot take', async () => {
    const cases: [unknown, RegExp][] = [
      [{ prompt: PROMPT, bogus: 1 }, /body\.bogus is not a field of this endpoint/],
      [{}, /body\.prompt/],
      [{ prompt: PROMPT, num_inference_steps: '4' }, /body\.num_inference_steps must be integer/],
      [{ prompt: PROMPT, num_inference_steps: 0 }, /body\.num_inference_steps must be >= 1/],
      [{ prompt: PROMPT, height: 30 }, /--height must be a positive multiple of 8/],
      [{ prompt: PROMPT, image_urls: ['x.png'] }, /image_urls\[0\]: neither a file here, an http\(s\) URL, nor base64 image data/],
      [{ prompt: PROMPT, image_urls: ['data:image/png;base64,@@@'] }, /image_urls\[0\]: not valid base64/],
      [{ prompt: PROMPT, image_urls: ['data:image/png;base64,aGVsbG8gd29ybGQ='] }, /image_urls\[0\]: not a PNG or JPEG image/],
      [{ prompt: PROMPT, image_urls: ['a.png', 'b.png'] }, /image_urls: FluxPipeline takes one image \(image-to-image\); got 2/],
      [{ prompt: PROMPT, strength: 0.5 }, /strength: is for image-to-image \(give image_urls\)/],
      [{ prompt: PROMPT, cache_config: { Fn_compute_blocks: 'one' } }, /cache_config: /],
      [{ prompt: PROMPT, cache_config: { no_such_option: 1 } }, /cache_config: .*unknown option 'no_such_option'/],
      [{ prompt: PROMPT, output_format: 'path', output_dir: '/proc/ditforge-nope' }, /output_dir: \/proc\/ditforge-nope is not a writable directory/],
    ];
    for (const [body, re] of cases) {
      const r = await post('/generate', body);
      const j = (await r.json()) as { error: string };
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(j.error).toMatch(re);
    }
    expect((await post('/generate', { prompt: 'x'.repeat(20000) })).status).toBe(413);
    expect((await post('/generate', '{ not json')).status).toBe(400);
  });

  it('image-to-image: /generate image_urls (a data URI) and /v1/images/edits (a multipart file, JSON with a path) == the library', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-i2i-'));
    const src = await pipe.generate({ prompt: PROMPT, steps: 4, seed: 9, width: 40, height: 24 });
    const file = path.join(dir, 'in.png');
    fs.writeFileSync(file, encodePng(src.image, 40, 24));
    const png = fs.readFileSync(file);
    // a 40x24 input resized to 32x32 (PIL Lanczos), strength 0.5 of 6 steps: 3 steps run
    const want = await pipe.generate({ prompt: 'a blue square', steps: 6, seed: 2, strength: 0.5, image: file });
    expect(want.steps).toBe(3);
    const same = (b64: string) => Buffer.from(pngOf(b64).pixels).equals(Buffer.from(want.image));

    const g = await post('/generate', { prompt: 'a blue square', num_inference_steps: 6, seed: 2, strength: 0.5, image_urls: [`data:image/png;base64,${png.toString('base64')}`] });
    expect(g.status).toBe(200);
    expect(same(((await g.json()) as { images: string[] }).images[0]!)).toBe(true);

    const form = new FormData();
    form.append('prompt', 'a blue square');
    form.append('num_inference_steps', '6');
    form.append('seed', '2');
    form.append('strength', '0.5');
    form.append('image', new Blob([png], { type: 'image/png' }), 'in.png');
    const m = await fetch(`${base}/v1/images/edits`, { method: 'POST', body: form });
    expect(m.status).toBe(200);
    expect(same(((await m.json()) as { data: { b64_json: string }[] }).data[0]!.b64_json)).toBe(true);

    const j = await post('/v1/images/edits', { prompt: 'a blue square', num_inference_steps: 6, seed: 2, strength: 0.5, url: file });
    expect(j.status).toBe(200);
    expect(same(((await j.json()) as { data: { b64_json: string }[] }).data[0]!.b64_json)).toBe(true);

    const bad: [FormData | Record<string, unknown>, RegExp][] = [
      [{ prompt: PROMPT }, /image: \/v1\/images\/edits needs an image/],
      [{ prompt: PROMPT, url: file, mask: file }, /mask: FluxPipeline does not inpaint \(a FluxFillPipeline directory, FLUX.1-Fill, does\)/],
      [{ prompt: PROMPT, url: file, strength: 2 }, /body\.strength must be <= 1/],
      [{ prompt: PROMPT, url: path.join(dir, 'missing.png') }, /url\[0\]: neither a file here/],
    ];
    const f2 = new FormData();
    f2.append('prompt', PROMPT);
    f2.append('num_inference_steps', 'four');
    f2.append('image', new Blob([png], { type: 'image/png' }), 'in.png');
    bad.push([f2, /body\.num_inference_steps must be integer/]);
    for (const [body, re] of bad) {
      const r = body instanceof FormData ? await fetch(`${base}/v1/images/edits`, { method: 'POST', body }) : await post('/v1/images/edits', body);
      expect(r.status, String(re)).toBe(400);
      expect(((await r.json()) as { error: string }).error).toMatch(re);
    }
    const s = await post('/v1/images/generations', { prompt: PROMPT, strength: 0.5 });
    expect(s.status).toBe(400);
    expect(((await s.json()) as { error: string }).error).toMatch(/strength: is for image-to-image \(POST \/v1\/images\/edits\)/);
  });

  it('a full queue is 429 with Retry-After; a client that goes away is dropped and the next request runs', async () => {
    // one running (60 steps), one waiting (max-queue 1): the third is refused at once
    const slow = post('/generate', { prompt: PROMPT, num_inference_steps: 60, seed: 1 });
    await new Promise((r) => setTimeout(r, 50));
    const ctl = new AbortController();
    const waiting = post('/generate', { prompt: PROMPT, num_inference_steps: 60, seed: 2 }, { signal: ctl.signal }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50));
    const full = await post('/generate', { prompt: PROMPT, num_inference_steps: 2 });
    expect(full.status).toBe(429);
    expect(Number(full.headers.get('retry-after'))).toBeGreaterThan(0);
    // the waiting client goes away: its job leaves the queue; the next request gets its place and runs
    ctl.abort();
    expect(await waiting).toBeInstanceOf(Error);
    await new Promise((r) => setTimeout(r, 50));
    const next = post('/generate', { prompt: PROMPT, num_inference_steps: 2 });
    expect((await slow).status).toBe(200);
    expect((await next).status).toBe(200);
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/ditforge_queue_depth 0/);
  });
});

describe.skipIf(!nativeAvailable())('ditforge serve: inpainting on a FLUX.1-Fill directory', () => {
  it('/v1/images/edits with an image and a mask (multipart files) == the library; no mask is a 400', async () => {
    const dir = path.resolve(import.meta.dirname, '../fixtures/flux1-fill-random');
    const ref = path.join(dir, 'reference');
    const p = await loadPipeline(dir, { threads: 1, planProvider });
    const { app: a } = createServer(p, { modelName: 'flux1-fill-random' });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    try {
      const want = await p.generate({ prompt: PROMPT, steps: 3, seed: 7, height: 64, width: 64, image: path.join(ref, 'fill_s4_image.png'), mask: path.join(ref, 'fill_s4_mask.png') } as never);
      const form = new FormData();
      form.append('prompt', PROMPT);
      form.append('num_inference_steps', '3');
      form.append('seed', '7');
      form.append('size', '64x64');
      form.append('image', new Blob([fs.readFileSync(path.join(ref, 'fill_s4_image.png'))], { type: 'image/png' }), 'image.png');
      form.append('mask', new Blob([fs.readFileSync(path.join(ref, 'fill_s4_mask.png'))], { type: 'image/png' }), 'mask.png');
      const r = await fetch(`${url}/v1/images/edits`, { method: 'POST', body: form });
      expect(r.status).toBe(200);
      const got = pngOf(((await r.json()) as { data: { b64_json: string }[] }).data[0]!.b64_json);
      expect(Buffer.from(got.pixels).equals(Buffer.from((want as { image: Uint8Array }).image))).toBe(true);
      const noMask = await fetch(`${url}/v1/images/edits`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT, url: path.join(ref, 'fill_s4_image.png') }) });
      expect(noMask.status).toBe(400);
      expect(((await noMask.json()) as { error: string }).error).toMatch(/mask: FluxFillPipeline inpaints: give a mask with the image/);
    } finally {
      await a.close();
    }
  });
});

describe.skipIf(!nativeAvailable())('ditforge serve: timeouts and video', () => {
  it('a request past its timeout is stopped at its next step (504) and the server goes on', async () => {
    const p = await loadPipeline('tiny-flux', { threads: 1, planProvider });
    const { app: a } = createServer(p, { modelName: 'tiny-flux', requestTimeoutS: 0.2 });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    try {
      const r = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT, num_inference_steps: 200 }) });
      expect(r.status).toBe(504);
      expect(((await r.json()) as { error: string }).error).toMatch(/longer than 0.2 s/);
      const ok = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT, num_inference_steps: 1 }) });
      expect(ok.status).toBe(200);
    } finally {
      await a.close();
    }
  });

  it('/v1/videos on a Wan 2.1 directory returns an mp4; /v1/images/generations there is a 400', async () => {
    const p = await loadPipeline(path.resolve(import.meta.dirname, '../fixtures/wan2.1-random'), { threads: 2, planProvider });
    const { app: a } = createServer(p, { modelName: 'wan2.1-random' });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    try {
      const r = await fetch(`${url}/v1/videos`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT, size: '64x64', num_frames: 5, num_inference_steps: 2, max_sequence_length: 16 }) });
      expect(r.status, await r.clone().text()).toBe(200);
      const j = (await r.json()) as { data: { b64_json: string; format: string; num_frames: number }[] };
      expect([j.data[0]!.format, j.data[0]!.num_frames]).toEqual(['mp4', 5]);
      // an ISO BMFF file: 'ftyp' at byte 4
      expect(Buffer.from(j.data[0]!.b64_json, 'base64').subarray(4, 8).toString()).toBe('ftyp');
      const bad = await fetch(`${url}/v1/images/generations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT }) });
      expect(bad.status).toBe(400);
    } finally {
      await a.close();
    }
  });
});

describe.skipIf(!nativeAvailable())('ditforge serve: multi-image editing on a FLUX.2-Klein directory', () => {
  it('/v1/images/edits with two image[] files and /generate with two image_urls == the library; two images on a one-image model are a 400', async () => {
    const dir = path.resolve(import.meta.dirname, '../fixtures/flux2-klein-random');
    const files = ['ref-a.png', 'ref-b.png'].map((f) => path.join(dir, 'reference', f));
    const p = await loadPipeline(dir, { threads: 1, planProvider });
    const { app: a } = createServer(p, { modelName: 'flux2-klein-random' });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    try {
      const want = (await p.generate({ prompt: 'make the circle blue', steps: 2, seed: 4, guidanceScale: 3, maxSequenceLength: 16, image: files } as never)) as { image: Uint8Array; width: number; height: number };
      const form = new FormData();
      for (const [k, v] of Object.entries({ prompt: 'make the circle blue', num_inference_steps: '2', seed: '4', guidance_scale: '3', max_sequence_length: '16' })) form.append(k, v);
      for (const f of files) form.append('image[]', new Blob([fs.readFileSync(f)], { type: 'image/png' }), path.basename(f));
      const r = await fetch(`${url}/v1/images/edits`, { method: 'POST', body: form });
      expect(r.status, await r.clone().text()).toBe(200);
      const j = (await r.json()) as { data: { b64_json: string }[]; size: string };
      expect(j.size).toBe(`${want.width}x${want.height}`);
      expect(Buffer.from(pngOf(j.data[0]!.b64_json).pixels).equals(Buffer.from(want.image))).toBe(true);
      const g = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'make the circle blue', num_inference_steps: 2, seed: 4, guidance_scale: 3, max_sequence_length: 16, image_urls: files }) });
      expect(g.status).toBe(200);
      expect(Buffer.from(pngOf(((await g.json()) as { images: string[] }).images[0]!).pixels).equals(Buffer.from(want.image))).toBe(true);
    } finally {
      await a.close();
    }
    const tiny = await loadPipeline('tiny-flux', { threads: 1, planProvider });
    const { app: t } = createServer(tiny, { modelName: 'tiny-flux' });
    const turl = await t.listen({ host: '127.0.0.1', port: 0 });
    try {
      const r = await fetch(`${turl}/v1/images/edits`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: PROMPT, url: files }) });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: string }).error).toMatch(/url: FluxPipeline takes one image .*got 2 \(multi-image editing runs on FLUX.2-Klein directories\)/);
    } finally {
      await t.close();
    }
  });
});

describe.skipIf(!nativeAvailable())('ditforge serve --max-batch: requests that wait together run as one batch', () => {
  it('a running request, then three waiting (two batchable alike, one with cache options): 3 generations for 4 requests, each image what the request gives alone', async () => {
    const p = await loadPipeline('tiny-flux', { threads: 1, planProvider });
    const { app: a } = createServer(p, { modelName: 'tiny-flux', maxBatch: 4 });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    try {
      const bodies = [
        { prompt: PROMPT, num_inference_steps: 80, seed: 1 },
        { prompt: 'a blue square', num_inference_steps: 6, seed: 2 },
        { prompt: 'a green triangle on white', num_inference_steps: 6, seed: 3 },
        { prompt: 'a blue square', num_inference_steps: 6, seed: 4, cache_config: { Fn_compute_blocks: 1, max_warmup_steps: 2 } },
      ];
      // the first starts at once; the others arrive while it runs and wait together
      const first = post2(url, bodies[0]!);
      await new Promise((r) => setTimeout(r, 30));
      const rest = bodies.slice(1).map((b) => post2(url, b));
      const got = await Promise.all([first, ...rest]);
      for (const [i, b] of bodies.entries()) {
        const cache = b.cache_config ? { cache: loadCacheOptions(b.cache_config) } : {};
        const alone = (await p.generate({ prompt: b.prompt, steps: b.num_inference_steps, seed: b.seed, ...(cache.cache ? { cache: { cache: cache.cache.cache_config } } : {}) } as never)) as { image: Uint8Array };
        expect(Buffer.from(pngOf(got[i]!.images[0]!).pixels).equals(Buffer.from(alone.image)), `request ${i}`).toBe(true);
      }
      const m = await (await fetch(`${url}/metrics`)).text();
      expect(m).toMatch(/ditforge_batches_total 3\b/);
      expect(m).toMatch(/ditforge_batched_requests_total 4\b/);
    } finally {
      await a.close();
    }
  });
});

async function post2(url: string, body: unknown): Promise<{ images: string[] }> {
  const r = await fetch(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(r.status, await r.clone().text()).toBe(200);
  return (await r.json()) as { images: string[] };
}
