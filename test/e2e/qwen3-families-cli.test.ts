// `ditforge generate --model <FLUX.2-Klein / Ovis-Image directory>` as a user runs it. Klein: the seed reproduces diffusers'
// Flux2KleinPipeline image (CFG 4, non-square), on 1 and 2 ranks; --save-latents in diffusers' packed layout;
// DBCache over the two block lists (the single-stream one at 3 x the threshold, as Cache-DiT's FLUX.2
// examples set it); clear errors before any work.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { readPng } from '../../runtime/image.ts';
import { maxAbsDiff } from '../../runtime/metrics.ts';
import { cliInTmp, expectCleanError, ROOT } from './cli-harness.ts';

const K = path.join(ROOT, 'test/fixtures/flux2-klein-random');
const PROMPT = 'a large red circle at the center on a black background';
const { tmp, cli } = cliInTmp('ditforge-klein-cli-', ['generate', '--model', K, '--threads', '2']);

describe('generate --model <FLUX.2-Klein directory>', () => {
  it("--seed reproduces diffusers' image on 1 and 2 ranks; --json names the pipeline; --save-latents is packed", () => {
    const ref = openSafetensorsSync(path.join(K, 'reference/cfg_s4.safetensors'));
    for (const world of [[], ['--world', '2', '--parallel', 'tp']]) {
      const r = cli(['--prompt', PROMPT, '--height', '48', '--width', '80', '--steps', '4', '--max-sequence-length', '40', '--seed', '3', '--save-latents', 'final.safetensors', '--out', 'k.png', '--json', ...world]);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { pipeline: string; guidanceScale: number; steps: number; distilled: boolean };
      expect([j.pipeline, j.guidanceScale, j.steps, j.distilled]).toEqual(['Flux2KleinPipeline', 4, 4, false]);
      expect(maxAbsDiff(readPng(path.join(tmp, 'k.png')).pixels, ref.tensor('image_uint8').data)).toBeLessThanOrEqual(1);
      expect(openSafetensorsSync(path.join(tmp, 'final.safetensors')).tensor('latents').shape).toEqual([1, 240, 32]);
    }
  });
  it("--image twice: multi-reference editing reproduces diffusers' image, the size from the first image", () => {
    const ref = openSafetensorsSync(path.join(K, 'reference/edit2_s3.safetensors'));
    const imgs = ['ref-a.png', 'ref-b.png'].flatMap((f) => ['--image', path.join(K, 'reference', f)]);
    const r = cli(['--prompt', 'make the circle blue', ...imgs, '--steps', '3', '--guidance-scale', '3', '--max-sequence-length', '32', '--seed', '7', '--out', 'e.png', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const png = readPng(path.join(tmp, 'e.png'));
    expect([png.width, png.height]).toEqual([68, 88]);
    expect(maxAbsDiff(png.pixels, ref.tensor('image_uint8').data)).toBeLessThanOrEqual(1);
    expectCleanError(cli(['--prompt', 'x', '--image', path.join(K, 'reference/ref-b.png'), '--strength', '0.5', '--steps', '1']), /--strength: Flux2KleinPipeline edits from reference images without a strength/);
  });
  it('--cache: one Cache-DiT summary per block list; bad sizes and flags of other families are clear errors', () => {
    const r = cli(['--prompt', PROMPT, '--height', '32', '--width', '32', '--steps', '6', '--max-sequence-length', '16', '--cache', '--rdt', '0.5', '--ws', '1', '--out', 'c.png', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { cache: { lists: { name: string; residual_diffs: Record<string, number>; cache_options: { cache_config: { residual_diff_threshold: number } } }[] } };
    expect(j.cache.lists.map((s) => s.name)).toEqual(['blocks:transformer_blocks', 'blocks:single_transformer_blocks']);
    // Cache-DiT's FLUX.2 examples: the single-stream list at 3 x --rdt
    expect(j.cache.lists.map((s) => s.cache_options.cache_config.residual_diff_threshold)).toEqual([0.5, 1.5]);
    // each list measures its own first block's residual change
    expect(j.cache.lists[0]!.residual_diffs).not.toEqual(j.cache.lists[1]!.residual_diffs);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '50', '--width', '64', '--steps', '1']), /--height must be a positive multiple of 4/);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '32', '--width', '32', '--true-cfg-scale', '4']), /--true-cfg-scale is not supported for Flux2KleinPipeline/);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '32', '--width', '32', '--negative-prompt', 'blurry']), /always uses the empty negative prompt/);
  });
});

describe('generate --model <Ovis-Image directory>', () => {
  const O = path.join(ROOT, 'test/fixtures/ovis-image-random');
  const ovis = cliInTmp('ditforge-ovis-cli-', ['generate', '--model', O, '--threads', '2']);
  it("--seed reproduces diffusers' image (CFG 5, the empty negative prompt) on 1 and 2 ranks; --image is refused", () => {
    const ref = openSafetensorsSync(path.join(O, 'reference/cfg_s4.safetensors'));
    for (const world of [[], ['--world', '2']]) {
      const r = ovis.cli(['--prompt', PROMPT, '--height', '48', '--width', '80', '--steps', '4', '--max-sequence-length', '24', '--seed', '3', '--out', 'o.png', '--json', ...world]);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { pipeline: string; guidanceScale: number };
      expect([j.pipeline, j.guidanceScale]).toEqual(['OvisImagePipeline', 5]);
      expect(maxAbsDiff(readPng(path.join(ovis.tmp, 'o.png')).pixels, ref.tensor('image_uint8').data)).toBeLessThanOrEqual(1);
    }
    expectCleanError(ovis.cli(['--prompt', PROMPT, '--image', path.join(K, 'reference/ref-b.png'), '--steps', '1']), /--image: image-to-image runs on FLUX, Z-Image and FLUX.2-Klein directories here; OvisImagePipeline has none yet/);
  });
});
