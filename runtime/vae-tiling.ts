// Tiled VAE decode with diffusers AutoencoderKL semantics (`enable_tiling` -> `tiled_decode`), the
// host half of it: the tile grid, the tile extraction and the blend + stitch. The tiles themselves are
// decoded by the caller (the native VAE plan compiled for the tile's size), so the same code serves the
// 1-rank decode (runtime/pipeline.ts) and VAE-P (runtime/pipeline-parallel.ts: tile #c on rank c % W,
// rank 0 blends, Cache-DiT's `extra_parallel_modules=['vae']` adapted from ParaAttention).
//
// diffusers (models/autoencoders/autoencoder_kl.py):
//   tile_sample_min_size = sample_size, tile_latent_min_size = int(sample_size / 2^(len(block_out_channels)-1)),
//   tile_overlap_factor = 0.25; `_decode` tiles only when z is larger than tile_latent_min_size in h or w;
//   overlap_size = int(tile_latent_min_size * 0.75), blend_extent = int(tile_sample_min_size * 0.25),
//   row_limit = tile_sample_min_size - blend_extent; tiles z[i:i+tl, j:j+tl] for i in range(0, h, overlap_size)
//   (edge tiles are smaller); then, in row-major order, tile = blend_v(rows[i-1][j], tile); tile =
//   blend_h(row[j-1], tile); keep tile[:row_limit, :row_limit]. blend_v/blend_h write into the current tile
//   IN PLACE, so the tile above / to the left is the already-blended one; that order is reproduced here.

import type { Communicator } from './comm/communicator.ts';

export interface VaeTilingConfig {
  /** tile_latent_min_size */
  tileLatent: number;
  /** tile_sample_min_size */
  tileSample: number;
  /** tile_overlap_factor */
  overlapFactor: number;
}

/** diffusers' tiling sizes from a VAE config.json (`sample_size` may be an int or [h, w]: diffusers uses [0]). */
export function vaeTilingConfig(config: Record<string, unknown>, file = 'vae/config.json'): VaeTilingConfig {
  const raw = config.sample_size ?? 32; // diffusers' AutoencoderKL default
  const sample = Array.isArray(raw) ? raw[0] : raw;
  if (typeof sample !== 'number' || !Number.isInteger(sample) || sample <= 0) {
    throw new Error(`${file}: sample_size must be a positive integer (or [h, w]), got ${JSON.stringify(raw)}`);
  }
  const boc = config.block_out_channels;
  if (!Array.isArray(boc) || boc.length === 0) throw new Error(`${file}: block_out_channels must be a non-empty list`);
  // tile_sample_min_size keeps the raw config value; a list would make diffusers' slicing fail, so we take [0] there too
  const tileLatent = Math.trunc(sample / 2 ** (boc.length - 1));
  if (tileLatent < 1) throw new Error(`${file}: sample_size ${sample} gives a latent tile of 0 (block_out_channels has ${boc.length} levels)`);
  return { tileLatent, tileSample: sample, overlapFactor: 0.25 };
}

/** One tile of the grid: latent window [y0, y0+h) x [x0, x0+w), `index` in row-major order (the VAE-P count). */
export interface VaeTile {
  index: number;
  row: number;
  col: number;
  y0: number;
  x0: number;
  h: number;
  w: number;
}

export interface VaeTileGrid {
  latentHeight: number;
  latentWidth: number;
  /** VAE scale factor: decoded tile = latent tile x scale */
  scale: number;
  rows: number;
  cols: number;
  tiles: VaeTile[];
  overlapSize: number;
  blendExtent: number;
  rowLimit: number;
}

/** diffusers `_decode`: tiling runs only when z is larger than one latent tile in either dimension. */
export function needsTiling(latentHeight: number, latentWidth: number, t: VaeTilingConfig): boolean {
  return latentWidth > t.tileLatent || latentHeight > t.tileLatent;
}

export function tileGrid(latentHeight: number, latentWidth: number, scale: number, t: VaeTilingConfig): VaeTileGrid {
  for (const [k, v] of [
    ['latent height', latentHeight],
    ['latent width', latentWidth],
    ['VAE scale', scale],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`tiled VAE decode: ${k} must be a positive integer, got ${v}`);
  }
  const overlapSize = Math.trunc(t.tileLatent * (1 - t.overlapFactor));
  if (overlapSize < 1) throw new Error(`tiled VAE decode: tile_latent_min_size ${t.tileLatent} is too small to tile (overlap stride 0)`);
  const blendExtent = Math.trunc(t.tileSample * t.overlapFactor);
  const rowLimit = t.tileSample - blendExtent;
  const ys: number[] = [];
  const xs: number[] = [];
  for (let i = 0; i < latentHeight; i += overlapSize) ys.push(i);
  for (let j = 0; j < latentWidth; j += overlapSize) xs.push(j);
  // the kept parts (tile[:row_limit], edge tiles whole) must cover the image exactly; diffusers would return a
  // differently sized image when sample_size is not tile_latent_min_size x the VAE scale: refuse that up front
  const covered = (starts: number[], n: number) => starts.reduce((s, p) => s + Math.min(rowLimit, Math.min(t.tileLatent, n - p) * scale), 0);
  if (covered(ys, latentHeight) !== latentHeight * scale || covered(xs, latentWidth) !== latentWidth * scale) {
    throw new Error(
      `tiled VAE decode: sample_size ${t.tileSample} (tile_sample_min_size) is not tile_latent_min_size ${t.tileLatent} x the VAE scale ${scale}: ` +
        `the blended tiles would not cover the ${latentHeight * scale}x${latentWidth * scale} image`,
    );
  }
  const tiles: VaeTile[] = [];
  ys.forEach((y0, row) =>
    xs.forEach((x0, col) =>
      tiles.push({ index: tiles.length, row, col, y0, x0, h: Math.min(t.tileLatent, latentHeight - y0), w: Math.min(t.tileLatent, latentWidth - x0) }),
    ),
  );
  return { latentHeight, latentWidth, scale, rows: ys.length, cols: xs.length, tiles, overlapSize, blendExtent, rowLimit };
}

/** The distinct latent tile shapes of a grid ([h, w]), e.g. to compile one VAE plan per shape up front. */
export function tileShapes(g: VaeTileGrid): [number, number][] {
  const seen = new Map<string, [number, number]>();
  for (const t of g.tiles) seen.set(`${t.h}x${t.w}`, [t.h, t.w]);
  return [...seen.values()];
}

/** z[:, :, y0:y0+h, x0:x0+w] of latents z [B, C, H, W] (a copy, contiguous). */
export function extractTile(z: Float32Array, batch: number, channels: number, g: VaeTileGrid, t: VaeTile): Float32Array {
  const { latentHeight: H, latentWidth: W } = g;
  if (z.length !== batch * channels * H * W) throw new Error(`tiled VAE decode: latents have ${z.length} values, [${batch}, ${channels}, ${H}, ${W}] needs ${batch * channels * H * W}`);
  const out = new Float32Array(batch * channels * t.h * t.w);
  let o = 0;
  for (let bc = 0; bc < batch * channels; bc++) {
    for (let y = 0; y < t.h; y++) {
      const src = (bc * H + t.y0 + y) * W + t.x0;
      out.set(z.subarray(src, src + t.w), o);
      o += t.w;
    }
  }
  return out;
}

/** A decoded tile [planes, h, w] (planes = batch x out channels), blended in place. */
interface Img {
  data: Float32Array;
  planes: number;
  h: number;
  w: number;
}

// diffusers computes `a * (1 - y / e) + b * (y / e)` on float32 tensors with Python-float weights: each
// weight is a float64 quotient rounded to float32 (torch casts the scalar to the op's float32 opmath), then
// two float32 products and a float32 sum, with no fused multiply-add; Math.fround reproduces that.
const f32 = Math.fround;

/** diffusers `blend_v(a, b, extent)`: the first rows of b fade in from the last rows of a (b written in place). */
export function blendV(a: Img, b: Img, extent: number): void {
  const e = Math.min(a.h, b.h, extent);
  for (let y = 0; y < e; y++) {
    const wa = f32(1 - y / e);
    const wb = f32(y / e);
    for (let p = 0; p < b.planes; p++) {
      const ra = (p * a.h + a.h - e + y) * a.w;
      const rb = (p * b.h + y) * b.w;
      for (let x = 0; x < b.w; x++) b.data[rb + x] = f32(f32(a.data[ra + x]! * wa) + f32(b.data[rb + x]! * wb));
    }
  }
}

/** diffusers `blend_h(a, b, extent)`: the first columns of b fade in from the last columns of a (in place). */
export function blendH(a: Img, b: Img, extent: number): void {
  const e = Math.min(a.w, b.w, extent);
  for (let x = 0; x < e; x++) {
    const wa = f32(1 - x / e);
    const wb = f32(x / e);
    for (let p = 0; p < b.planes; p++) {
      for (let y = 0; y < b.h; y++) {
        const i = (p * b.h + y) * b.w + x;
        b.data[i] = f32(f32(a.data[(p * a.h + y) * a.w + a.w - e + x]! * wa) + f32(b.data[i]! * wb));
      }
    }
  }
}

/**
 * Blends and stitches the decoded tiles (row-major, tile c = `decoded[c]` of shape [batch, outChannels,
 * h*scale, w*scale]) into the image [batch, outChannels, H*scale, W*scale]. The tiles are blended in place.
 */
export function stitchTiles(decoded: Float32Array[], g: VaeTileGrid, batch: number, outChannels: number): Float32Array {
  if (decoded.length !== g.tiles.length) throw new Error(`tiled VAE decode: ${decoded.length} decoded tiles for a grid of ${g.tiles.length}`);
  const planes = batch * outChannels;
  const imgs: Img[] = g.tiles.map((t, c) => {
    const img = { data: decoded[c]!, planes, h: t.h * g.scale, w: t.w * g.scale };
    if (img.data.length !== planes * img.h * img.w) {
      throw new Error(`tiled VAE decode: tile ${c} has ${img.data.length} values, [${batch}, ${outChannels}, ${img.h}, ${img.w}] needs ${planes * img.h * img.w}`);
    }
    return img;
  });
  const H = g.latentHeight * g.scale;
  const W = g.latentWidth * g.scale;
  const out = new Float32Array(planes * H * W);
  let oy = 0;
  for (let r = 0; r < g.rows; r++) {
    let ox = 0;
    let keptH = 0;
    for (let c = 0; c < g.cols; c++) {
      const tile = imgs[r * g.cols + c]!;
      if (r > 0) blendV(imgs[(r - 1) * g.cols + c]!, tile, g.blendExtent);
      if (c > 0) blendH(imgs[r * g.cols + c - 1]!, tile, g.blendExtent);
      // tile[:, :, :row_limit, :row_limit], concatenated along w, then the rows along h
      const kh = Math.min(g.rowLimit, tile.h);
      const kw = Math.min(g.rowLimit, tile.w);
      if (oy + kh > H || ox + kw > W) throw new Error(`tiled VAE decode: the kept tiles overflow the ${H}x${W} image (tile_sample_min_size vs VAE scale mismatch)`);
      for (let p = 0; p < planes; p++) {
        for (let y = 0; y < kh; y++) {
          const src = (p * tile.h + y) * tile.w;
          out.set(tile.data.subarray(src, src + kw), (p * H + oy + y) * W + ox);
        }
      }
      ox += kw;
      keptH = kh;
    }
    if (ox !== W) throw new Error(`tiled VAE decode: tile row ${r} covers ${ox} of ${W} columns (tile_sample_min_size vs VAE scale mismatch)`);
    oy += keptH;
  }
  if (oy !== H) throw new Error(`tiled VAE decode: the tile rows cover ${oy} of ${H} rows (tile_sample_min_size vs VAE scale mismatch)`);
  return out;
}

/**
 * The whole tiled decode on one process: every tile through `decodeTile` (latent tile [B, C, h, w] ->
 * decoded [B, outChannels, h*scale, w*scale]), in row-major order, then blend + stitch.
 */
export async function tiledDecode(...args: TiledDecodeArgs): Promise<Float32Array> {
  const [, batch, , outChannels, g] = args;
  return stitchTiles((await decodeTiles(args, () => true)) as Float32Array[], g, batch, outChannels);
}

/** The positional arguments of `tiledDecode` (and of `tiledDecodeParallel` after its communicator). */
type TiledDecodeArgs = [
  z: Float32Array,
  batch: number,
  channels: number,
  outChannels: number,
  g: VaeTileGrid,
  decodeTile: (tile: Float32Array, t: VaeTile) => Promise<Float32Array>,
];

/** Decodes the tiles `mine` picks, one at a time in row-major order; null in the other tiles' places. */
async function decodeTiles(args: TiledDecodeArgs, mine: (t: VaeTile) => boolean): Promise<(Float32Array | null)[]> {
  const [z, batch, channels, , g, decodeTile] = args;
  const decoded: (Float32Array | null)[] = [];
  for (const t of g.tiles) decoded.push(mine(t) ? await decodeTile(extractTile(z, batch, channels, g, t), t) : null);
  return decoded;
}

/**
 * VAE-P (Cache-DiT `extra_parallel_modules=['vae']`, ParaAttention's parallel tiled_decode): tile #c is
 * decoded by rank c % W; ranks != 0 send their tiles to rank 0 (point-to-point, in tile order, so the
 * per-pair FIFO matches rank 0's receives in tile order), rank 0 blends and stitches, and the image is
 * passed down the chain 0 -> 1 -> ... -> W-1 so every rank returns it. Same tiles, same kernels, same
 * blend as `tiledDecode`: the result is bit-identical to the 1-rank tiled decode.
 */
export async function tiledDecodeParallel(
  comm: Pick<Communicator, 'rank' | 'worldSize' | 'send' | 'recv'>,
  ...args: TiledDecodeArgs
): Promise<Float32Array> {
  const [, batch, , outChannels, g] = args;
  const { rank, worldSize: W } = comm;
  const planes = batch * outChannels;
  const decoded = await decodeTiles(args, (t) => t.index % W === rank);
  const out = new Float32Array(planes * g.latentHeight * g.scale * g.latentWidth * g.scale);
  if (rank === 0) {
    for (const t of g.tiles) {
      if (decoded[t.index]) continue;
      const buf = new Float32Array(planes * t.h * g.scale * t.w * g.scale);
      await comm.recv(buf, t.index % W);
      decoded[t.index] = buf;
    }
    out.set(stitchTiles(decoded as Float32Array[], g, batch, outChannels));
  } else {
    for (const d of decoded) if (d) await comm.send(d, 0);
    await comm.recv(out, rank - 1);
  }
  if (rank < W - 1) await comm.send(out, rank + 1);
  return out;
}
