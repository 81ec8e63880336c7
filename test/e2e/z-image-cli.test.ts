// `ditforge generate --model <Z-Image directory>` as a user runs it: --latents in diffusers' [B, 16, H/8, W/8]
// layout reproducing diffusers' image, --save-latents in the same layout, --guidance-scale 0 (Z-Image-Turbo's
// setting), 2 ranks, and clear errors before any work.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { readPng } from '../../runtime/image.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { cliInTmp, expectCleanError, ROOT } from './cli-harness.ts';

const Z = path.join(ROOT, 'test/fixtures/z-image-random');
const PROMPT = 'a large red circle at the center on a black background';
const { tmp, cli } = cliInTmp('ditforge-z-cli-', ['generate', '--model', Z, '--threads', '2']);

describe('generate --model <Z-Image directory>', () => {
  it('--latents reproduces diffusers image and final latents, on 1 and 2 ranks; --json names the pipeline', () => {
    const ref = openSafetensorsSync(path.join(Z, 'reference/golden_0_s4.safetensors'));
    const init = ref.tensor('initial_latents');
    writeSafetensors(path.join(tmp, 'init.safetensors'), { latents: { dtype: 'F32', shape: init.shape, data: Float32Array.from(init.data) } });
    for (const world of [[], ['--world', '2']]) {
      const r = cli(['--prompt', PROMPT, '--height', '128', '--width', '128', '--steps', '4', '--latents', 'init.safetensors', '--save-latents', 'final.safetensors', '--out', 'z.png', '--json', ...world]);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { pipeline: string; guidanceScale: number; steps: number };
      expect([j.pipeline, j.guidanceScale, j.steps]).toEqual(['ZImagePipeline', 5, 4]);
      const png = readPng(path.join(tmp, 'z.png'));
      expect(maxAbsDiff(png.pixels, ref.tensor('image_uint8').data)).toBeLessThanOrEqual(2);
      const got = openSafetensorsSync(path.join(tmp, 'final.safetensors')).tensor('latents');
      expect(got.shape).toEqual([1, 16, 16, 16]);
      expect(relL2(got.data, ref.tensor('final_latents').data)).toBeLessThan(1e-3);
    }
  });
  it('--guidance-scale 0 runs without CFG; bad sizes and flags of other families are clear errors', () => {
    const r = cli(['--prompt', PROMPT, '--height', '64', '--width', '64', '--steps', '2', '--guidance-scale', '0', '--out', 't.png']);
    expect(r.code, r.stderr).toBe(0);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '72', '--width', '64', '--steps', '1']), /--height must be a positive multiple of 16/);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '64', '--width', '64', '--true-cfg-scale', '4']), /--true-cfg-scale is not supported for ZImagePipeline/);
  });
});
