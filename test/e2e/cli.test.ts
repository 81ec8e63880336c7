// End-to-end: the `ditforge` CLI as a user runs it (node bin/ditforge.mjs ...).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { readPng } from '../../runtime/image.ts';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { ROOT, cliInTmp, expectCleanError } from './cli-harness.ts';

const FIX = path.join(ROOT, 'test/fixtures/tiny-flux-reference');
const { tmp, cli } = cliInTmp('ditforge-e2e-');

const PROMPT = 'a large red circle at the center on a black background';

describe('ditforge generate', () => {
  it('--json: one JSON object on stdout, a PNG that decodes, timings and peak RSS', () => {
    const out = path.join(tmp, 'red.png');
    const r = cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--seed', '0', '--out', out, '--json', '--threads', '2']);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(1);
    const j = JSON.parse(lines[0]!);
    expect(j.output).toBe(out);
    expect(j.steps).toBe(28);
    expect(j.seed).toBe(0);
    for (const k of ['tokenize', 'textEncoder', 'denoise', 'perStep', 'vae', 'total']) expect(typeof j.timings[k]).toBe('number');
    expect(j.peakRssMB).toBeGreaterThan(10);
    const png = readPng(out);
    expect([png.width, png.height]).toEqual([32, 32]);
    // seed 0 draws diffusers' noise for seed 0, so the image is the reference image (within 2/255)
    const refPx = openSafetensorsSync(path.join(FIX, 'prompt0.safetensors')).ints('image_uint8');
    let worst = 0;
    for (let i = 0; i < refPx.length; i++) worst = Math.max(worst, Math.abs(png.pixels[i]! - refPx[i]!));
    expect(worst).toBeLessThanOrEqual(2);
    // the centre is red, the corner black
    const px = (x: number, y: number) => Array.from(png.pixels.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3));
    const [cr, cg, cb] = px(16, 16);
    expect(cr).toBeGreaterThan(150);
    expect(cg).toBeLessThan(100);
    expect(cb).toBeLessThan(100);
    expect(Math.max(...px(1, 1))).toBeLessThan(60);
  });

  it('--latents / --save-latents round trip reproduces the diffusers final latents', () => {
    const ref = openSafetensorsSync(path.join(FIX, 'prompt1.safetensors'));
    const noise = path.join(tmp, 'noise.safetensors');
    writeSafetensors(noise, { latents: { dtype: 'F32', shape: [1, 16, 16], data: ref.tensor('noise_latents').data } });
    const saved = path.join(tmp, 'final.safetensors');
    const r = cli(['generate', '--model', 'tiny-flux', '--prompt', ref.metadata.prompt!, '--latents', noise, '--save-latents', saved, '--out', 'p1.png', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.seed).toBeNull();
    expect(j.latents).toBe(noise);
    const f = openSafetensorsSync(saved);
    const t = f.tensor('latents');
    expect(t.shape).toEqual([1, 16, 16]);
    expect(f.metadata.steps).toBe('28');
    const want = ref.tensor('final_latents').data;
    let num = 0, den = 0;
    for (let i = 0; i < want.length; i++) {
      num += (t.data[i]! - want[i]!) ** 2;
      den += want[i]! ** 2;
    }
    expect(Math.sqrt(num / den)).toBeLessThan(1e-3);
    expect(fs.existsSync(path.join(tmp, 'p1.png'))).toBe(true);
    // feeding saved latents back in with 1 step works (shape accepted)
    const again = cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', saved, '--steps', '1', '--out', 'again.png', '--json']);
    expect(again.code).toBe(0);
  });

  it('--image / --strength (FluxImg2ImgPipeline): 1 rank == 2 ranks == the library, bad inputs name the flag', async () => {
    const src = path.join(tmp, 'i2i-src.png');
    expect(cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '4', '--out', src]).code).toBe(0);
    const one = path.join(tmp, 'i2i-1.png');
    const two = path.join(tmp, 'i2i-2.png');
    const args = ['generate', '--model', 'tiny-flux', '--prompt', 'a blue square', '--steps', '8', '--seed', '5', '--image', src, '--strength', '0.7', '--json'];
    const r1 = cli([...args, '--out', one]);
    expect(r1.code, r1.stderr).toBe(0);
    // of 8 steps, strength 0.7 skips int(8 - 8 * 0.7) = 2 and runs the last 6
    expect(JSON.parse(r1.stdout).steps).toBe(6);
    expect(cli([...args, '--out', two, '--world', '2']).code).toBe(0);
    expect(Buffer.from(readPng(one).pixels).equals(Buffer.from(readPng(two).pixels))).toBe(true);
    const { loadFluxPipeline } = await import('../../runtime/pipeline.ts');
    const lib = await (await loadFluxPipeline('tiny-flux')).generate({ prompt: 'a blue square', steps: 8, seed: 5, image: src, strength: 0.7 });
    expect(Buffer.from(readPng(one).pixels).equals(Buffer.from(lib.image))).toBe(true);
    // the result is not the text-to-image one: the image conditions it
    const t2i = await (await loadFluxPipeline('tiny-flux')).generate({ prompt: 'a blue square', steps: 6, seed: 5 });
    expect(Buffer.from(lib.image).equals(Buffer.from(t2i.image))).toBe(false);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--image', path.join(tmp, 'nope.png'), '--out', one]), /--image: no such file: .*nope\.png/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--image', src, '--strength', '1.5', '--out', one]), /--strength must be a number in \[0, 1\], got 1.5/);
    fs.writeFileSync(path.join(tmp, 'text.png'), 'not an image');
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--image', path.join(tmp, 'text.png'), '--out', one]), /--image .*text\.png: not a PNG or JPEG image/);
  });

  it('--lora-path with and without --disable-fuse-lora: the same image within a rounding step; --world 2 with it is a clear error', async () => {
    const { makeLora } = await import('../helpers/lora.ts');
    const { file } = makeLora(tmp, { targets: ['transformer_blocks.0.attn.to_q', 'single_transformer_blocks.0.proj_out'], rank: 2, alpha: 4, scale: 1, seed: 9, name: 'cli-lora.safetensors' });
    const run = (extra: string[], out: string) => cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '4', '--lora-path', file, '--out', path.join(tmp, out), '--threads', '2', ...extra]);
    expect(run([], 'fused.png').code).toBe(0);
    const r = run(['--disable-fuse-lora'], 'unfused.png');
    expect(r.code, r.stderr).toBe(0);
    const a = readPng(path.join(tmp, 'fused.png')).pixels;
    const b = readPng(path.join(tmp, 'unfused.png')).pixels;
    expect(a.every((v, i) => Math.abs(v - b[i]!) <= 1)).toBe(true);
    expectCleanError(run(['--disable-fuse-lora', '--world', '2'], 'x.png'), /--disable-fuse-lora runs on one rank here/);
  });

  it('--out: the extension decides the format (PNG, JPEG, WebP); another extension or an unwritable place is refused before any work', async () => {
    const { default: sharp } = await import('sharp');
    for (const [file, format] of [['o.png', 'png'], ['o.jpg', 'jpeg'], ['o.jpeg', 'jpeg'], ['o.webp', 'webp']] as const) {
      const r = cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '2', '--out', path.join(tmp, file), '--threads', '2']);
      expect(r.code, r.stderr).toBe(0);
      const meta = await sharp(path.join(tmp, file)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual([format, 32, 32]);
    }
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--out', path.join(tmp, 'o.bmp')]), /unsupported image output extension "\.bmp"; use one of \.png, \.jpg, \.jpeg, \.webp/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--out', '/proc/nope/o.png']), /cannot write the image to \/proc\/nope\/o\.png: directory \/proc is not writable/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--out', tmp + '/']), /unsupported image output extension ""/);
  });

  it('without a terminal: progress lines on stderr (JSON events with --json), stdout keeps its one object', () => {
    const out = path.join(tmp, 'prog.png');
    const r = cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '3', '--out', out, '--threads', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^denoising: step 1\/3, [\d.]+ ms\/step$/m);
    expect(r.stderr).toMatch(/^denoising: step 3\/3/m);
    const j = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'ditforge.mjs'), 'generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '3', '--out', out, '--json', '--threads', '2'], { encoding: 'utf8', env: { ...process.env, DITFORGE_PROGRESS_SECONDS: '0' } });
    expect(j.status, j.stderr).toBe(0);
    const events = j.stderr.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { event: string; step: number; steps: number });
    expect(events.map((e) => [e.event, e.step, e.steps])).toEqual([['step', 1, 3], ['step', 2, 3], ['step', 3, 3]]);
    expect(j.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('--max-memory: a request whose plans need more is refused before any work, naming the estimate and the limit', () => {
    const r = cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '1', '--out', path.join(tmp, 'mem.png'), '--max-memory', '0.01']);
    expectCleanError(r, /this request needs about [\d.]+ GiB more \(weights [\d.]+ GiB, activations [\d.]+ GiB\) beside the [\d.]+ GiB the process holds, over the --max-memory limit of 0\.01 GiB/);
    expect(fs.existsSync(path.join(tmp, 'mem.png'))).toBe(false);
    expect(cli(['generate', '--model', 'tiny-flux', '--prompt', PROMPT, '--steps', '1', '--out', path.join(tmp, 'mem.png'), '--max-memory', '8']).code).toBe(0);
  });

  it('unknown model: lists the known models', () => {
    expectCleanError(cli(['generate', '--model', 'nope', '--prompt', 'x']), /unknown model "nope".*known models: .*tiny-flux/);
  });

  it('--steps 0 / bad --height / bad --width / bad --seed', () => {
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--steps', '0']), /--steps must be an integer >= 1, got "0"/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--steps', '2.5']), /--steps must be an integer >= 1/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--height', '30']), /--height must be a positive multiple of 8/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--width', '-32']), /--width must be a positive integer, got "-32"/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--seed', 'abc']), /--seed must be a non-negative integer/);
  });

  it('missing --prompt', () => {
    expectCleanError(cli(['generate', '--model', 'tiny-flux']), /required option '--prompt <text>' not specified/);
  });

  it('truncated --latents file', () => {
    const p = path.join(tmp, 'trunc.safetensors');
    writeSafetensors(p, { latents: { dtype: 'F32', shape: [1, 16, 16], data: new Float32Array(256) } });
    const full = fs.readFileSync(p);
    fs.writeFileSync(p, full.subarray(0, full.length - 100));
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', p]), /--latents: .*trunc\.safetensors: tensor "latents".*out of range/);
  });

  it('--latents with a wrong tensor name, shape or dtype, or a missing file', () => {
    const wrongName = path.join(tmp, 'name.safetensors');
    writeSafetensors(wrongName, { noise: { dtype: 'F32', shape: [1, 16, 16], data: new Float32Array(256) } });
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', wrongName]), /has no tensor "latents" \(it has: noise\)/);
    const wrongShape = path.join(tmp, 'shape.safetensors');
    writeSafetensors(wrongShape, { latents: { dtype: 'F32', shape: [1, 4, 8, 8], data: new Float32Array(256) } });
    expectCleanError(
      cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', wrongShape]),
      /tensor "latents" has shape \[1, 4, 8, 8\], expected \[batch, 16, 16\] \(tokens, channels\) for a 32x32 image/,
    );
    const wrongDtype = path.join(tmp, 'dtype.safetensors');
    writeSafetensors(wrongDtype, { latents: { dtype: 'I64', shape: [1, 16, 16], data: new Array(256).fill(0) } });
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', wrongDtype]), /tensor "latents" is I64, expected F32/);
    expectCleanError(cli(['generate', '--model', 'tiny-flux', '--prompt', 'x', '--latents', path.join(tmp, 'missing.safetensors')]), /--latents: .*missing\.safetensors: cannot open \(ENOENT\)/);
  });

  it('--help exits 0', () => {
    const r = cli(['generate', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--save-latents/);
  });
});

describe('ditforge compile / inspect', () => {
  it('inspect tiny-flux prints the components', () => {
    const r = cli(['inspect', 'tiny-flux']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/transformer \(FluxTransformer2DModel\)/);
  });

  it('compile / inspect of an unknown model list the known ones', () => {
    expectCleanError(cli(['compile', 'nope', '--out', path.join(tmp, 'c')]), /unknown model 'nope'; known models: .*tiny-flux/);
    expectCleanError(cli(['inspect', 'nope']), /unknown model 'nope'; known models: .*tiny-flux/);
  });

  it('compile --target must be cpu or cuda', () => {
    expectCleanError(cli(['compile', 'tiny-flux', '--target', 'tpu']), /Allowed choices are cpu, cuda/);
  });
});
