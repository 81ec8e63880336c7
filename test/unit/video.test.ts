// runtime/video.ts: format from the path, up-front checks (extension, ffmpeg, ENOTDIR / EACCES), PNG frames
// round-trip exactly, animated GIF / WebP via sharp, .mp4 via ffmpeg (checked with ffprobe), no partial files.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { readPng } from '../../runtime/image.ts';
import { UserError } from '../../runtime/model-dir.ts';
import { mulberry32 } from '../../runtime/seeded-random.ts';
import { checkVideoOutput, writeVideo, type VideoTarget } from '../../runtime/video.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-video-'));
fs.chmodSync(tmp, 0o755); // traversable by the unprivileged child of the EACCES test
afterAll(() => {
  for (const d of fs.readdirSync(tmp)) fs.chmodSync(path.join(tmp, d), 0o755);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const F = 5, H = 18, W = 34, FPS = 16;

function randomFrames(f: number, h: number, w: number, seed: number): Uint8Array {
  const r = mulberry32(seed);
  const a = new Uint8Array(f * h * w * 3);
  for (let i = 0; i < a.length; i++) a[i] = Math.floor(r() * 256);
  return a;
}
const frames = randomFrames(F, H, W, 7);

const has = (cmd: string): boolean => spawnSync(cmd, ['-version'], { stdio: 'ignore' }).status === 0;
const hasFfmpeg = has('ffmpeg') && has('ffprobe');
if (!hasFfmpeg) console.log('video.test: ffmpeg/ffprobe not on PATH, skipping the .mp4 tests (install with scripts/install-system-deps.sh)');

/** every file under dir (relative), to check nothing else was left behind */
function tree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

function expectUserError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  for (const p of parts) expect((err as Error).message).toMatch(p);
}

describe('checkVideoOutput: the format from the path', () => {
  it('.mp4 / .webp / .gif (any case) and directories; nothing is created', () => {
    expect(checkVideoOutput(path.join(tmp, 'a.webp')).format).toBe('webp');
    expect(checkVideoOutput(path.join(tmp, 'a.GIF')).format).toBe('gif');
    const dirs = [path.join(tmp, 'new', 'frames') + '/', path.join(tmp, 'noext'), tmp, path.join(tmp, 'x.d') + '/'];
    for (const d of dirs) expect(checkVideoOutput(d)).toMatchObject({ format: 'frames', path: path.resolve(d) });
    fs.mkdirSync(path.join(tmp, 'isdir.gif'));
    expect(checkVideoOutput(path.join(tmp, 'isdir.gif')).format).toBe('frames'); // an existing directory wins
    if (hasFfmpeg) expect(checkVideoOutput(path.join(tmp, 'a.mp4'))).toMatchObject({ format: 'mp4', ffmpeg: { bin: 'ffmpeg' } });
    expect(fs.existsSync(path.join(tmp, 'new'))).toBe(false);
    expect(fs.existsSync(path.join(tmp, 'noext'))).toBe(false);
  });

  it('refuses other extensions, listing the valid ones', () => {
    for (const ext of ['.avi', '.png', '.mp4.tmp']) expectUserError(() => checkVideoOutput(path.join(tmp, `v${ext}`)), '.mp4, .webp, .gif', /directory/);
  });

  it('.mp4 without ffmpeg on PATH names scripts/install-system-deps.sh', () => {
    const saved = process.env.PATH;
    process.env.PATH = path.join(tmp, 'empty-path');
    try {
      expectUserError(() => checkVideoOutput(path.join(tmp, 'a.mp4')), /ffmpeg is not on PATH/, 'scripts/install-system-deps.sh');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('a parent that is a file: ENOTDIR', () => {
    const file = path.join(tmp, 'plain-file');
    fs.writeFileSync(file, 'x');
    expectUserError(() => checkVideoOutput(path.join(file, 'v.gif')), 'ENOTDIR', file);
    expectUserError(() => checkVideoOutput(path.join(file, 'deeper', 'v.webp')), 'ENOTDIR');
    expectUserError(() => checkVideoOutput(path.join(file, 'frames') + '/'), 'ENOTDIR');
    expectUserError(() => checkVideoOutput(file), 'ENOTDIR'); // no extension -> frames dir, but it is a file
    expectUserError(() => checkVideoOutput(file + '/'), 'ENOTDIR');
  });

  it('an unwritable directory: EACCES', () => {
    const ro = path.join(tmp, 'readonly');
    fs.mkdirSync(ro, { mode: 0o555 });
    fs.chmodSync(ro, 0o555);
    const outs = [path.join(ro, 'v.gif'), path.join(ro, 'sub', 'v.webp'), path.join(ro, 'frames') + '/', ro];
    if (process.getuid?.() !== 0) {
      for (const o of outs) expectUserError(() => checkVideoOutput(o), 'EACCES', 'not writable');
      return;
    }
    // root writes anywhere: check as an unprivileged user (nobody) in a child process, when nobody can read
    // this checkout (a private temp clone, as CI makes, it cannot): else a directory root cannot write
    // either, /sys (EPERM: the OS reason is named all the same)
    const nobodyReads = spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(path.join(ROOT, 'node_modules', 'tsx', 'package.json'))})`], { uid: 65534, gid: 65534, stdio: 'ignore' }).status === 0;
    if (!nobodyReads) {
      expectUserError(() => checkVideoOutput('/sys/kernel/v.gif'), 'EPERM', 'not writable');
      return;
    }
    const code = `import { checkVideoOutput } from ${JSON.stringify(path.join(ROOT, 'runtime/video.ts'))};
      for (const o of ${JSON.stringify(outs)}) { try { checkVideoOutput(o); console.log('ok'); } catch (e) { console.log(e.name + ': ' + e.message); } }`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, uid: 65534, gid: 65534, encoding: 'utf8', env: { ...process.env, HOME: tmp } });
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(outs.length);
    for (const l of lines) expect(l).toMatch(/^UserError: .*not writable \(EACCES\)/);
  });
});

describe('writeVideo', () => {
  it('PNG frames round-trip exactly (new nested directory, no leftovers)', async () => {
    const out = path.join(tmp, 'png', 'nested', 'frames') + '/';
    await writeVideo(checkVideoOutput(out), frames, F, H, W, FPS);
    const names = Array.from({ length: F }, (_, i) => `frame_000${i}.png`);
    expect(tree(path.join(tmp, 'png'))).toEqual(['nested', path.join('nested', 'frames'), ...names.map((n) => path.join('nested', 'frames', n))].sort());
    const n = H * W * 3;
    for (let i = 0; i < F; i++) {
      const png = readPng(path.join(out, names[i]!));
      expect([png.width, png.height]).toEqual([W, H]);
      expect(Buffer.from(png.pixels).equals(Buffer.from(frames.subarray(i * n, (i + 1) * n)))).toBe(true);
    }
    // again into the now existing directory, other contents: overwritten in place, still nothing else
    const frames2 = randomFrames(F, H, W, 8);
    await writeVideo(checkVideoOutput(out.slice(0, -1)), frames2, F, H, W, FPS);
    expect(tree(out)).toEqual(names);
    expect(Buffer.from(readPng(path.join(out, names[4]!)).pixels).equals(Buffer.from(frames2.subarray(4 * n)))).toBe(true);
  });

  for (const format of ['gif', 'webp'] as const) {
    it(`animated ${format}: F pages of W x H, ${FPS} fps`, async () => {
      const out = path.join(tmp, format, `v.${format}`);
      await writeVideo(checkVideoOutput(out), frames, F, H, W, FPS);
      expect(tree(path.dirname(out))).toEqual([`v.${format}`]);
      const m = await sharp(out).metadata();
      expect(m.format).toBe(format);
      expect(m.pages).toBe(F);
      expect(m.width).toBe(W);
      expect(m.pageHeight ?? m.height).toBe(H);
      expect(m.delay).toHaveLength(F);
      for (const d of m.delay!) expect(Math.abs(d - 1000 / FPS)).toBeLessThan(format === 'gif' ? 10 : 1); // GIF: centiseconds
      expect(Math.abs(m.delay!.reduce((a, b) => a + b, 0) - (F * 1000) / FPS)).toBeLessThanOrEqual(5);
      expect(m.loop).toBe(0);
      const all = await sharp(out, { animated: true }).raw().toBuffer({ resolveWithObject: true });
      expect([all.info.width, all.info.height]).toEqual([W, F * H]);
    });
  }

  const probe = (file: string) => {
    const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,pix_fmt,width,height,nb_read_frames,r_frame_rate', '-of', 'json', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { streams: Record<string, unknown>[] }).streams[0]!;
  };

  it.skipIf(!hasFfmpeg)('mp4 via ffmpeg: ffprobe sees F frames of W x H at the fps', async () => {
    const out = path.join(tmp, 'mp4', 'v.mp4');
    const target = checkVideoOutput(out);
    await writeVideo(target, frames, F, H, W, FPS);
    expect(tree(path.dirname(out))).toEqual(['v.mp4']);
    const s = probe(out);
    expect(s).toMatchObject({ width: W, height: H, nb_read_frames: String(F), r_frame_rate: `${FPS}/1`, pix_fmt: 'yuv420p' });
    if (target.ffmpeg!.codec === 'libx264') expect(s.codec_name).toBe('h264');
  });

  it.skipIf(!hasFfmpeg)('mp4 of odd size: the last row / column repeated to even (yuv420p)', async () => {
    const out = path.join(tmp, 'mp4-odd.mp4');
    await writeVideo(checkVideoOutput(out), randomFrames(3, 17, 33, 9), 3, 17, 33, 24);
    expect(probe(out)).toMatchObject({ width: 34, height: 18, nb_read_frames: '3', r_frame_rate: '24/1' });
  });

  it('a failing ffmpeg leaves no file and removes the directories it created', async () => {
    const base = path.join(tmp, 'fail-mp4');
    fs.mkdirSync(base);
    const target: VideoTarget = { format: 'mp4', path: path.join(base, 'a', 'b', 'v.mp4'), out: 'v.mp4', ffmpeg: { bin: process.execPath, codec: 'libx264' } }; // node: exits 9 on ffmpeg's flags
    await expect(writeVideo(target, frames, F, H, W, FPS)).rejects.toThrow(/ffmpeg failed/);
    expect(tree(base)).toEqual([]);
  });

  it('a frame that cannot be moved into place: the frames already moved are removed, no staging left', async () => {
    const dir = path.join(tmp, 'fail-frames');
    fs.mkdirSync(path.join(dir, 'frame_0002.png'), { recursive: true }); // a non-empty directory in the way
    fs.writeFileSync(path.join(dir, 'frame_0002.png', 'keep'), 'x');
    await expect(writeVideo(checkVideoOutput(dir), frames, F, H, W, FPS)).rejects.toThrow();
    expect(tree(dir)).toEqual(['frame_0002.png', path.join('frame_0002.png', 'keep')]);
  });

  it('checks the frame buffer and fps', async () => {
    const t = checkVideoOutput(path.join(tmp, 'bad.gif'));
    await expect(writeVideo(t, frames, F, H, W + 1, FPS)).rejects.toThrow(/expected 5x18x35x3/);
    await expect(writeVideo(t, frames, F, H, W, 0)).rejects.toThrow(UserError);
    await expect(writeVideo(t, frames, 0, H, W, FPS)).rejects.toThrow(/positive integer/);
    expect(fs.existsSync(path.join(tmp, 'bad.gif'))).toBe(false);
  });
});
