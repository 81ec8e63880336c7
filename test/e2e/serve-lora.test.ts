// LoRA over `ditforge serve` (tiny-flux, loopback): the adapter given at start is in effect for requests
// that name none; a request's own `lora` (vLLM-Omni) applies to that request only; SGLang's set_lora /
// merge / unmerge / list_loras switch and show the server's; every image is exactly what a fresh pipeline
// loaded with those adapters gives; a missing file, an unknown name, an unfused mode, an adapter that does
// not fit are 400s that change nothing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { compileRequest } from '../../compiler/index.ts';
import { readPng } from '../../runtime/image.ts';
import { writeSafetensors } from '../../runtime/io/safetensors.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadPipeline } from '../../runtime/pipeline.ts';
import { createServer } from '../../runtime/serve/server.ts';
import { makeLora } from '../helpers/lora.ts';

const PROMPT = 'a large red circle at the center on a black background';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-serve-lora-'));
const A = makeLora(tmp, { targets: ['transformer_blocks.0.attn.to_q', 'single_transformer_blocks.0.proj_out'], rank: 2, alpha: 4, scale: 0.7, seed: 3, name: 'style-a.safetensors' }).file;
const B = makeLora(tmp, { targets: ['transformer_blocks.1.ff.net.0.proj', 'transformer_blocks.0.attn.to_q'], rank: 3, alpha: 3, scale: 1, seed: 4, name: 'style-b.safetensors' }).file;
const GEN = { prompt: PROMPT, steps: 3, seed: 7 };

let app: FastifyInstance;
let base: string;
const refs: Record<'a' | 'b' | 'plain', Uint8Array> = {} as never;

const post = (p: string, body: unknown) => fetch(`${base}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
async function image(p: string, body: Record<string, unknown>): Promise<Uint8Array> {
  const r = await post(p, { prompt: PROMPT, num_inference_steps: 3, seed: 7, ...body });
  expect(r.status).toBe(200);
  const j = (await r.json()) as { images?: string[]; data?: { b64_json: string }[] };
  const f = path.join(tmp, `${Math.random().toString(36).slice(2)}.png`);
  fs.writeFileSync(f, Buffer.from(j.images?.[0] ?? j.data![0]!.b64_json, 'base64'));
  return readPng(f).pixels;
}
const same = (x: Uint8Array, y: Uint8Array) => Buffer.from(x).equals(Buffer.from(y));

describe.skipIf(!nativeAvailable())('ditforge serve: LoRA', () => {
  beforeAll(async () => {
    refs.a = (await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: A, scale: 0.7 }] })).generate(GEN)).image;
    refs.b = (await (await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: B }] })).generate(GEN)).image;
    refs.plain = (await (await loadPipeline('tiny-flux', { threads: 1 })).generate(GEN)).image;
    expect(same(refs.a, refs.plain) || same(refs.b, refs.plain) || same(refs.a, refs.b)).toBe(false);
    const pipe = await loadPipeline('tiny-flux', { threads: 1, lora: [{ path: A, scale: 0.7 }] });
    ({ app } = createServer(pipe, { modelName: 'tiny-flux', loras: [{ path: A, scale: 0.7, nickname: 'a' }] }));
    base = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app?.close();
  });

  it('the start adapter by default; a request lora for that request only; by name, by path, on both endpoints', async () => {
    expect(await (await fetch(`${base}/v1/list_loras`)).json()).toMatchObject({ loras: [{ lora_nickname: 'a', lora_path: A, strength: 0.7, active: true, merged: true }] });
    expect(same(await image('/generate', {}), refs.a)).toBe(true);
    expect(same(await image('/generate', { lora: { path: B } }), refs.b)).toBe(true);
    expect(same(await image('/generate', {}), refs.a)).toBe(true);
    expect(same(await image('/v1/images/generations', { lora: { lora_path: B, scale: 1 } }), refs.b)).toBe(true);
    expect(same(await image('/v1/images/generations', { lora: { name: 'a' } }), refs.a)).toBe(true);
    expect(same(await image('/generate', { lora: [] }), refs.plain)).toBe(true);
  });

  it('set_lora switches the server adapter; unmerge runs the checkpoint, merge brings it back', async () => {
    const r = await post('/v1/set_lora', { lora_nickname: 'b', lora_path: B });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { loras: { lora_nickname: string; active: boolean }[] }).loras.map((l) => [l.lora_nickname, l.active])).toEqual([['a', false], ['b', true]]);
    expect(same(await image('/generate', {}), refs.b)).toBe(true);
    expect((await post('/v1/unmerge_lora_weights', {})).status).toBe(200);
    expect(same(await image('/generate', {}), refs.plain)).toBe(true);
    expect((await post('/v1/merge_lora_weights', {})).status).toBe(200);
    expect(same(await image('/generate', {}), refs.b)).toBe(true);
    // back to a by nickname alone, with its registered strength
    expect((await post('/v1/set_lora', { lora_nickname: 'a' })).status).toBe(200);
    expect(same(await image('/generate', {}), refs.a)).toBe(true);
  });

  it('400s that change nothing: a missing file, an unknown name, dynamic mode, an unregistered nickname, an adapter that does not fit', async () => {
    const err = async (p: string, body: unknown, re: RegExp) => {
      const r = await post(p, body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: string }).error).toMatch(re);
    };
    await err('/generate', { prompt: PROMPT, lora: { path: path.join(tmp, 'missing.safetensors') } }, /lora\.path: --lora-path .*missing\.safetensors: no such file/);
    await err('/generate', { prompt: PROMPT, lora: { name: 'nope' } }, /lora\.name: no LoRA named "nope" \(registered: a, b\)/);
    await err('/generate', { prompt: PROMPT, lora: { path: B, strength: 2 } }, /body\.lora\.strength is not a field/);
    await err('/v1/set_lora', { lora_nickname: 'c' }, /lora_path: "c" is not registered yet/);
    await err('/v1/set_lora', { lora_nickname: 'b', lora_path: B, merge_mode: 'dynamic' }, /merge_mode: "dynamic".*start it with --disable-fuse-lora/);
    const bad = path.join(tmp, 'bad.safetensors');
    writeSafetensors(bad, { 'transformer.transformer_blocks.0.attn.to_q.lora_A.weight': { dtype: 'F32', shape: [2, 7], data: new Float32Array(14).fill(0.1) }, 'transformer.transformer_blocks.0.attn.to_q.lora_B.weight': { dtype: 'F32', shape: [64, 2], data: new Float32Array(128).fill(0.1) } });
    await err('/v1/set_lora', { lora_nickname: 'bad', lora_path: bad }, /bad\.safetensors: module "transformer_blocks\.0\.attn\.to_q": the adapter is \[64, 7\]/);
    await err('/generate', { prompt: PROMPT, lora: { path: bad } }, /the adapter is \[64, 7\]/);
    const list = (await (await fetch(`${base}/v1/list_loras`)).json()) as { loras: { lora_nickname: string; active: boolean }[] };
    expect(list.loras.map((l) => [l.lora_nickname, l.active])).toEqual([['a', true], ['b', false]]);
    expect(same(await image('/generate', {}), refs.a)).toBe(true);
  });
});

describe.skipIf(!nativeAvailable())('ditforge serve --disable-fuse-lora: unfused LoRA branches', () => {
  it('a request\'s own lora and set_lora (merge_mode dynamic) switch the branches; images within float32 rounding of the fused ones; merge_mode merge is a 400', async () => {
    const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);
    const pipe = await loadPipeline('tiny-flux', { threads: 1, fuseLora: false, planProvider, lora: [{ path: A, scale: 0.7 }] });
    const { app: a } = createServer(pipe, { modelName: 'tiny-flux', loras: [{ path: A, scale: 0.7, nickname: 'a' }] });
    const url = await a.listen({ host: '127.0.0.1', port: 0 });
    const req = (p: string, body: unknown) => fetch(`${url}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const img = async (body: Record<string, unknown>) => {
      const r = await req('/generate', { prompt: PROMPT, num_inference_steps: 3, seed: 7, ...body });
      expect(r.status, await r.clone().text()).toBe(200);
      const f = path.join(tmp, `${Math.random().toString(36).slice(2)}.png`);
      fs.writeFileSync(f, Buffer.from(((await r.json()) as { images: string[] }).images[0]!, 'base64'));
      return readPng(f).pixels;
    };
    // pixels may differ by a rounding step where the unfused sum lands on a .5 boundary
    const close = (x: Uint8Array, y: Uint8Array) => x.every((v, i) => Math.abs(v - y[i]!) <= 1);
    try {
      expect(close(await img({}), refs.a)).toBe(true);
      expect(close(await img({ lora: { path: B } }), refs.b)).toBe(true);
      expect((await req('/v1/set_lora', { lora_nickname: 'b', lora_path: B, merge_mode: 'dynamic' })).status).toBe(200);
      expect(close(await img({}), refs.b)).toBe(true);
      const bad = await req('/v1/set_lora', { lora_nickname: 'a', merge_mode: 'merge' });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: string }).error).toMatch(/runs its LoRAs unfused \(--disable-fuse-lora\)/);
    } finally {
      await a.close();
    }
  });
});
