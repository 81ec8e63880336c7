// `ditforge generate --model <Wan 2.1 directory>` as a user runs it: frames out as a PNG directory or an
// animated GIF, --latents in diffusers' [B, C, F, H, W] layout reproducing diffusers' frames, --save-latents
// in the same layout, the pipeline's own defaults, and clear errors before any work.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { readPng } from '../../runtime/image.ts';
import { maxAbsDiff } from '../../runtime/metrics.ts';
import { cliInTmp, expectCleanError, ROOT, withoutProgress } from './cli-harness.ts';

const WAN = path.join(ROOT, 'test/fixtures/wan2.1-random');
const PROMPT = 'a large red circle at the center on a black background';
const { tmp, cli } = cliInTmp('ditforge-wan-cli-', ['generate', '--model', WAN, '--threads', '2']);
const small = ['--height', '64', '--width', '64', '--num-frames', '5'];

describe('generate --model <Wan 2.1 directory>', () => {
  it('--latents [B, C, F, H, W] reproduces diffusers frames (PNG directory) and --save-latents keeps the layout', () => {
    const ref = openSafetensorsSync(path.join(WAN, 'reference/golden_0_s4.safetensors'));
    const init = ref.tensor('initial_latents');
    writeSafetensors(path.join(tmp, 'init.safetensors'), { latents: { dtype: 'F32', shape: init.shape, data: Float32Array.from(init.data) } });
    const r = cli(['--prompt', PROMPT, ...small, '--steps', '4', '--latents', 'init.safetensors', '--save-latents', 'final.safetensors', '--out', 'frames/', '--json']);
    expect(withoutProgress(r.stderr)).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { numFrames: number; steps: number; output: string; guidanceScale: number };
    expect([j.numFrames, j.steps, j.guidanceScale]).toEqual([5, 4, 5]);
    const want = ref.tensor('video_uint8').data;
    for (let t = 0; t < 5; t++) {
      const png = readPng(path.join(tmp, 'frames', `frame_${String(t).padStart(4, '0')}.png`));
      expect([png.width, png.height]).toEqual([64, 64]);
      expect(maxAbsDiff(png.pixels, want.subarray(t * 64 * 64 * 3, (t + 1) * 64 * 64 * 3))).toBeLessThanOrEqual(2);
    }
    expect(openSafetensorsSync(path.join(tmp, 'final.safetensors')).info('latents').shape).toEqual([1, 16, 2, 8, 8]);
  });
  it('an animated GIF with one page per frame; DBCache names the file by its run tag', async () => {
    const r = cli(['--prompt', PROMPT, ...small, '--steps', '3', '--cache', '--out', 'v.gif']);
    expect(r.code).toBe(0);
    const file = path.join(tmp, 'v_DBCache_F1B0_W8I1M0MC3_R0.12_CFG1_T0O0.gif');
    expect(fs.existsSync(file), r.stderr).toBe(true);
    const meta = await sharp(file, { animated: true }).metadata();
    expect([meta.pages, meta.width, meta.pageHeight]).toEqual([5, 64, 64]);
  });
  it('--world 2 (Ulysses) writes the same frames as one rank', () => {
    const one = cli(['--prompt', PROMPT, ...small, '--steps', '3', '--out', 'one/', '--json']);
    const two = cli(['--prompt', PROMPT, ...small, '--steps', '3', '--world', '2', '--out', 'two/', '--json']);
    expect([one.code, two.code], two.stderr).toEqual([0, 0]);
    expect((JSON.parse(two.stdout) as { parallel: { world: number; parallel: string } }).parallel).toMatchObject({ world: 2, parallel: 'ulysses' });
    for (let t = 0; t < 5; t++) {
      const f = `frame_${String(t).padStart(4, '0')}.png`;
      expect(maxAbsDiff(readPng(path.join(tmp, 'one', f)).pixels, readPng(path.join(tmp, 'two', f)).pixels)).toBeLessThanOrEqual(1);
    }
  });
  it('refuses bad outputs, sizes and latents before any work', () => {
    expectCleanError(cli(['--prompt', PROMPT, ...small, '--out', 'v.avi']), /\.avi.*\.mp4, \.webp, \.gif/);
    const ro = cli(['--prompt', PROMPT, ...small, '--out', '/proc/nope/v.gif']);
    expectCleanError(ro, /cannot write video to \/proc\/nope\/v\.gif: directory \/proc is not writable/);
    expect(ro.stderr).not.toMatch(/compiling/);
    expectCleanError(cli(['--prompt', PROMPT, '--height', '64', '--width', '64', '--num-frames', '7']), /--num-frames must be 4k\+1/);
    writeSafetensors(path.join(tmp, 'flat.safetensors'), { latents: { dtype: 'F32', shape: [1, 16, 8, 8], data: new Float32Array(1024).fill(0.5) } });
    expectCleanError(cli(['--prompt', PROMPT, ...small, '--latents', 'flat.safetensors']), /tensor "latents" has shape \[1, 16, 8, 8\], expected \[batch, 16, 2, 8, 8\] \(channels, latent frames/);
    expectCleanError(cli(['--prompt', PROMPT, ...small, '--true-cfg-scale', '4']), /--true-cfg-scale is not an option of WanPipeline/);
  });
  it('--num-frames on an image pipeline is refused', () => {
    const r = cliInTmp('ditforge-wan-cli2-', ['generate', '--model', 'tiny-flux']).cli(['--prompt', 'red', '--num-frames', '5']);
    expectCleanError(r, /--num-frames is for video pipelines; FluxPipeline makes images/);
  });
});
