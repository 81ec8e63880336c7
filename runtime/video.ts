// Video output for text-to-video pipelines. Frames come as [F, H, W, 3] uint8 RGB (diffusers'
// `output_type='np'` frames, `(x * 255).round()`); the output path picks the container:
//   .mp4   ffmpeg (libx264 yuv420p when the ffmpeg build has it, else its built-in mpeg4), raw RGB on stdin
//   .webp  animated WebP via sharp
//   .gif   animated GIF via sharp
//   dir/   (trailing slash, an existing directory or a path without extension) PNG frames frame_0000.png, ...
// checkVideoOutput() decides and checks all of that before any compute (format, ffmpeg, writability);
// writeVideo() writes to a temporary name in the destination directory and renames it into place, so a
// failed write leaves nothing behind (not even the directories it had to create).
// WanPipeline's example export uses fps=16; fps is a parameter here.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { encodePng } from './image.ts';
import { UserError } from './model-dir.ts';

export type VideoFormat = 'mp4' | 'webp' | 'gif' | 'frames';

export interface VideoTarget {
  format: VideoFormat;
  /** absolute path: the file, or the frames directory */
  path: string;
  /** the path as given (for messages) */
  out: string;
  /** mp4 only: the ffmpeg binary and the video encoder it will use */
  ffmpeg?: { bin: string; codec: 'libx264' | 'mpeg4' };
}

/** the extensions checkVideoOutput accepts, for messages */
export const VIDEO_EXTENSIONS = ['.mp4', '.webp', '.gif'] as const;
const INSTALL_HINT = 'scripts/install-system-deps.sh (apt-get install ffmpeg)';

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/**
 * The nearest existing ancestor of `dir` (or `dir` itself), checked to be a writable directory; every
 * error names the path and the OS reason (ENOTDIR, EACCES, EROFS, ...).
 */
export function checkWritableDir(out: string, dir: string, what = 'video'): string {
  let p = dir;
  for (;;) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENOENT' && path.dirname(p) !== p) {
        p = path.dirname(p);
        continue;
      }
      throw new UserError(`cannot write ${what} to ${out}: ${p}: ${code === 'ENOTDIR' ? 'a parent is not a directory' : 'cannot stat'} (${code})`);
    }
    if (!st.isDirectory()) throw new UserError(`cannot write ${what} to ${out}: ${p} is not a directory (ENOTDIR)`);
    // a real probe, not access(2): root passes W_OK everywhere, and a pseudo-filesystem (/proc, /sys)
    // or a read-only mount refuses the write itself
    try {
      fs.rmdirSync(fs.mkdtempSync(path.join(p, '.ditforge-probe-')));
    } catch (e) {
      throw new UserError(`cannot write ${what} to ${out}: directory ${p} is not writable (${errCode(e)})`);
    }
    return p;
  }
}

function findFfmpeg(out: string): NonNullable<VideoTarget['ffmpeg']> {
  const bin = 'ffmpeg';
  const r = spawnSync(bin, ['-hide_banner', '-encoders'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0) {
    const why = r.error ? ((r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'ffmpeg is not on PATH' : `ffmpeg cannot run (${errCode(r.error)})`) : `ffmpeg -encoders exited with ${r.status}`;
    throw new UserError(`${out}: .mp4 output needs ffmpeg, but ${why}; install it with ${INSTALL_HINT}, or write .webp, .gif or a directory of PNG frames instead`);
  }
  return { bin, codec: /^\s*V\S*\s+libx264\s/m.test(r.stdout) ? 'libx264' : 'mpeg4' };
}

/**
 * Decides the output format from `out` and checks it can be written, before any compute. Throws
 * UserError for an unknown extension, a missing ffmpeg (.mp4) or an unwritable destination.
 */
export function checkVideoOutput(out: string): VideoTarget {
  if (!out) throw new UserError('the video output path is empty');
  const abs = path.resolve(out);
  let existing: fs.Stats | null = null;
  try {
    existing = fs.statSync(abs);
  } catch (e) {
    if (errCode(e) !== 'ENOENT') {
      // ENOTDIR (a parent is a file), EACCES (a parent is not searchable), ...
      checkWritableDir(out, path.dirname(abs));
      throw new UserError(`cannot write video to ${out} (${errCode(e)})`);
    }
  }
  const ext = path.extname(abs).toLowerCase();
  const isDir = out.endsWith('/') || out.endsWith(path.sep) || existing?.isDirectory() === true || ext === '';
  if (isDir) {
    if (existing && !existing.isDirectory()) throw new UserError(`cannot write PNG frames to ${out}: it exists and is not a directory (ENOTDIR)`);
    checkWritableDir(out, abs);
    return { format: 'frames', path: abs, out };
  }
  const format = ({ '.mp4': 'mp4', '.webp': 'webp', '.gif': 'gif' } as const)[ext as (typeof VIDEO_EXTENSIONS)[number]];
  if (!format) {
    throw new UserError(
      `${out}: unsupported video output extension "${path.extname(abs)}"; use one of ${VIDEO_EXTENSIONS.join(', ')}, or a directory (a path ending in "/" or without extension) for PNG frames frame_0000.png, ...`,
    );
  }
  checkWritableDir(out, path.dirname(abs));
  return format === 'mp4' ? { format, path: abs, out, ffmpeg: findFfmpeg(out) } : { format, path: abs, out };
}

/** mkdir -p that returns the directories it created (outermost first), for cleanup */
function makeDirs(dir: string): string[] {
  const missing: string[] = [];
  for (let p = dir; !fs.existsSync(p); p = path.dirname(p)) missing.unshift(p);
  for (const p of missing) fs.mkdirSync(p);
  return missing;
}

function removeDirs(created: string[]): void {
  for (const p of [...created].reverse()) {
    try {
      fs.rmdirSync(p);
    } catch {
      /* not empty or gone: leave it */
    }
  }
}

const tmpName = (dir: string, base: string): string => path.join(dir, `.${base}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);

/** writes `file` through a temporary file in its directory (renamed into place when complete) */
async function atomicFile(file: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const created = makeDirs(path.dirname(file));
  const tmp = tmpName(path.dirname(file), path.basename(file));
  try {
    await write(tmp);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    removeDirs(created);
    throw e;
  }
}

/** frames [F, H, W, 3] -> one RGB frame of `n` bytes as a Buffer view (no copy) */
function frameView(frames: Uint8Array, i: number, n: number): Buffer {
  return Buffer.from(frames.buffer, frames.byteOffset + i * n, n);
}

async function writeFrames(target: VideoTarget, frames: Uint8Array, F: number, H: number, W: number): Promise<void> {
  const dir = target.path;
  const digits = Math.max(4, String(F - 1).length);
  const names = Array.from({ length: F }, (_, i) => `frame_${String(i).padStart(digits, '0')}.png`);
  const n = H * W * 3;
  const existed = fs.existsSync(dir);
  // stage every frame in a temporary directory (inside the target when it exists, else beside it)
  const created = makeDirs(existed ? dir : path.dirname(dir));
  let stage: string | null = null;
  const moved: string[] = [];
  try {
    stage = fs.mkdtempSync(path.join(existed ? dir : path.dirname(dir), `.${path.basename(dir)}.tmp-`));
    for (let i = 0; i < F; i++) fs.writeFileSync(path.join(stage, names[i]!), encodePng(frames.subarray(i * n, (i + 1) * n), W, H, 3));
    if (!existed) {
      fs.renameSync(stage, dir);
      stage = null;
    } else {
      for (const name of names) {
        fs.renameSync(path.join(stage, name), path.join(dir, name));
        moved.push(path.join(dir, name));
      }
    }
  } catch (e) {
    for (const f of moved) fs.rmSync(f, { force: true });
    removeDirs(created);
    throw e;
  } finally {
    if (stage) fs.rmSync(stage, { recursive: true, force: true });
  }
}

async function writeAnimated(target: VideoTarget, frames: Uint8Array, F: number, H: number, W: number, fps: number): Promise<void> {
  const { default: sharp } = await import('sharp');
  // ms per frame, spread so the running total stays on the fps clock (GIF stores centiseconds: whole 10 ms)
  const unit = target.format === 'gif' ? 10 : 1;
  const at = (i: number): number => Math.round((1000 * i) / fps / unit) * unit;
  const delay = Array.from({ length: F }, (_, i) => Math.min(65535, Math.max(unit, at(i + 1) - at(i))));
  const img = sharp(Buffer.from(frames.buffer, frames.byteOffset, F * H * W * 3), { raw: { width: W, height: F * H, channels: 3, pageHeight: H } });
  const enc = target.format === 'gif'
    ? img.gif({ loop: 0, delay, keepDuplicateFrames: true })
    : img.webp({ loop: 0, delay, quality: 90 });
  const bytes = await enc.toBuffer();
  await atomicFile(target.path, async (tmp) => fs.writeFileSync(tmp, bytes));
}

/** frame with its last column / row repeated to even sizes (yuv420p needs them); the frame itself when even */
function padEven(frame: Buffer, H: number, W: number): Buffer {
  const W2 = W + (W % 2), H2 = H + (H % 2);
  if (W2 === W && H2 === H) return frame;
  const out = Buffer.alloc(H2 * W2 * 3);
  for (let y = 0; y < H2; y++) {
    const sy = Math.min(y, H - 1);
    frame.copy(out, y * W2 * 3, sy * W * 3, (sy + 1) * W * 3);
    if (W2 !== W) frame.copy(out, (y * W2 + W) * 3, (sy * W + W - 1) * 3, (sy * W + W) * 3);
  }
  return out;
}

async function writeMp4(target: VideoTarget, frames: Uint8Array, F: number, H: number, W: number, fps: number): Promise<void> {
  const ff = target.ffmpeg ?? findFfmpeg(target.out);
  const W2 = W + (W % 2), H2 = H + (H % 2);
  const n = H * W * 3;
  const codec = ff.codec === 'libx264' ? ['-c:v', 'libx264', '-preset', 'medium', '-crf', '18'] : ['-c:v', 'mpeg4', '-q:v', '2'];
  await atomicFile(target.path, (tmp) =>
    new Promise<void>((resolve, reject) => {
      const args = ['-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
        '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${W2}x${H2}`, '-framerate', String(fps), '-i', 'pipe:0',
        ...codec, '-pix_fmt', 'yuv420p', '-r', String(fps), '-movflags', '+faststart', '-f', 'mp4', tmp];
      const p = spawn(ff.bin, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.setEncoding('utf8');
      p.stderr.on('data', (d: string) => { stderr = (stderr + d).slice(-4000); });
      p.stdin.on('error', () => { /* EPIPE when ffmpeg exits early: reported by 'close' */ });
      p.on('error', (e) => reject(new UserError(`${target.out}: cannot run ffmpeg (${errCode(e)}); install it with ${INSTALL_HINT}`)));
      p.on('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new Error(`${target.out}: ffmpeg failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
      });
      let closed = false;
      const done = new Promise<void>((r) => p.once('close', () => { closed = true; r(); }));
      (async () => {
        for (let i = 0; i < F && !closed; i++) {
          if (!p.stdin.write(padEven(frameView(frames, i, n), H, W))) await Promise.race([new Promise<void>((r) => p.stdin.once('drain', r)), done]);
        }
        if (!closed) p.stdin.end();
      })().catch(() => p.stdin.destroy());
    }),
  );
}

/**
 * Writes frames [F, H, W, 3] uint8 RGB (row-major, frame-major) to `target` at `fps` frames per second.
 * .mp4 frames with an odd height or width get their last row / column repeated (yuv420p needs even sizes).
 * PNG frames in an existing directory overwrite frame_NNNN.png of the same names; others are left alone.
 */
export async function writeVideo(target: VideoTarget, frames: Uint8Array, f: number, h: number, w: number, fps: number): Promise<void> {
  for (const [k, v] of [['frames', f], ['height', h], ['width', w]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`writeVideo: ${k} must be a positive integer, got ${v}`);
  }
  if (frames.length !== f * h * w * 3) throw new Error(`writeVideo: expected ${f}x${h}x${w}x3 = ${f * h * w * 3} bytes of RGB frames, got ${frames.length}`);
  if (typeof fps !== 'number' || !Number.isFinite(fps) || fps <= 0) throw new UserError(`fps must be a positive number, got ${fps}`);
  switch (target.format) {
    case 'frames':
      return writeFrames(target, frames, f, h, w);
    case 'gif':
    case 'webp':
      return writeAnimated(target, frames, f, h, w, fps);
    case 'mp4':
      return writeMp4(target, frames, f, h, w, fps);
  }
}
