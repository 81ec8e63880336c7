// Tiled VAE decode (runtime/vae-tiling.ts) vs a float64 port of diffusers' AutoencoderKL.tiled_decode
// (nested tiles, blend_v/blend_h written into the current tile in place, crop, cat), the tile grid's loop
// bounds, VAE-P's tile exchange on shm coroutines, and tiled vs untiled decode of tiny-flux.
import { describe, expect, it } from 'vitest';
import { compilePlan } from '../../compiler/index.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { psnr } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { componentDims, loadFluxPipeline } from '../../runtime/pipeline.ts';
import {
  extractTile,
  needsTiling,
  stitchTiles,
  tileGrid,
  tiledDecode,
  tiledDecodeParallel,
  vaeTilingConfig,
  type VaeTile,
  type VaeTileGrid,
  type VaeTilingConfig,
} from '../../runtime/vae-tiling.ts';
import { randn, rng } from '../helpers/random.ts';

type Tile64 = number[][][]; // [plane][y][x]

/** diffusers tiled_decode's blend + stitch in float64, on nested arrays, in its loop order (in place). */
function stitchRef(tiles: Tile64[][], extent: number, rowLimit: number, inPlace = true): Tile64 {
  const blendV = (a: Tile64, b: Tile64): Tile64 => {
    const out = inPlace ? b : structuredClone(b);
    const e = Math.min(a[0]!.length, b[0]!.length, extent);
    for (let y = 0; y < e; y++) for (let p = 0; p < b.length; p++) for (let x = 0; x < b[0]![0]!.length; x++) out[p]![y]![x] = a[p]![a[0]!.length - e + y]![x]! * (1 - y / e) + b[p]![y]![x]! * (y / e);
    return out;
  };
  const blendH = (a: Tile64, b: Tile64): Tile64 => {
    const out = inPlace ? b : structuredClone(b);
    const e = Math.min(a[0]![0]!.length, b[0]![0]!.length, extent);
    for (let x = 0; x < e; x++) for (let p = 0; p < b.length; p++) for (let y = 0; y < b[0]!.length; y++) out[p]![y]![x] = a[p]![y]![a[0]![0]!.length - e + x]! * (1 - x / e) + b[p]![y]![x]! * (x / e);
    return out;
  };
  const resultRows: Tile64[] = [];
  tiles.forEach((row, i) => {
    const kept: Tile64[] = [];
    row.forEach((t0, j) => {
      let t = t0;
      if (i > 0) t = blendV(tiles[i - 1]![j]!, t);
      if (j > 0) t = blendH(row[j - 1]!, t);
      kept.push(t.map((plane) => plane.slice(0, rowLimit).map((r) => r.slice(0, rowLimit))));
    });
    // torch.cat(result_row, dim=3)
    resultRows.push(kept[0]!.map((plane, p) => plane.map((_, y) => kept.flatMap((k) => k[p]![y]!))));
  });
  // torch.cat(result_rows, dim=2)
  return resultRows[0]!.map((_, p) => resultRows.flatMap((r) => r[p]!));
}

function randomTiles(g: VaeTileGrid, planes: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return g.tiles.map((t) => Float32Array.from({ length: planes * t.h * g.scale * t.w * g.scale }, () => randn(r)));
}

function toNested(d: Float32Array, planes: number, h: number, w: number): Tile64 {
  return Array.from({ length: planes }, (_, p) => Array.from({ length: h }, (_, y) => Array.from(d.subarray((p * h + y) * w, (p * h + y + 1) * w))));
}

function maxAbsDiff(a: Float32Array, ref: Tile64): number {
  const flat = ref.flat(2);
  expect(a.length).toBe(flat.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - flat[i]!));
  return m;
}

// tiny-flux: sample_size 32, 3 VAE levels -> latent tiles of 8, scale 4
const TINY: VaeTilingConfig = { tileLatent: 8, tileSample: 32, overlapFactor: 0.25 };
// FLUX-like proportions (4 levels, scale 8) at a small sample size
const SCALE8: VaeTilingConfig = { tileLatent: 8, tileSample: 64, overlapFactor: 0.25 };

describe('VAE tiling: diffusers AutoencoderKL sizes and loop bounds', () => {
  it('tile sizes from config.json; errors name the field', () => {
    expect(vaeTilingConfig({ sample_size: 32, block_out_channels: [32, 64, 64] })).toEqual(TINY);
    expect(vaeTilingConfig({ sample_size: [1024, 1024], block_out_channels: [128, 256, 512, 512] })).toEqual({ tileLatent: 128, tileSample: 1024, overlapFactor: 0.25 });
    expect(vaeTilingConfig({ block_out_channels: [64] })).toEqual({ tileLatent: 32, tileSample: 32, overlapFactor: 0.25 }); // diffusers defaults
    expect(() => vaeTilingConfig({ sample_size: 'x', block_out_channels: [1] }, 'm/vae/config.json')).toThrow(/m\/vae\/config.json: sample_size must be a positive integer/);
    expect(() => vaeTilingConfig({ sample_size: 32 })).toThrow(/block_out_channels must be a non-empty list/);
  });

  it('range(0, h, overlap) with partial edge tiles; tiling only above one latent tile', () => {
    expect(needsTiling(8, 8, TINY)).toBe(false);
    expect(needsTiling(8, 10, TINY)).toBe(true);
    const g = tileGrid(16, 16, 4, TINY);
    expect([g.overlapSize, g.blendExtent, g.rowLimit]).toEqual([6, 8, 24]);
    expect(g.tiles.filter((t) => t.row === 0).map((t) => [t.x0, t.w])).toEqual([
      [0, 8],
      [6, 8],
      [12, 4],
    ]);
    const odd = tileGrid(13, 19, 4, TINY);
    expect([odd.rows, odd.cols]).toEqual([3, 4]);
    expect(odd.tiles.filter((t) => t.col === 0).map((t) => t.h)).toEqual([8, 7, 1]);
    expect(odd.tiles.map((t) => t.index)).toEqual([...Array(12).keys()]);
  });

  it('extractTile is z[:, :, y0:y0+h, x0:x0+w]', () => {
    const g = tileGrid(5, 7, 4, { tileLatent: 4, tileSample: 16, overlapFactor: 0.25 });
    const z = Float32Array.from({ length: 2 * 3 * 5 * 7 }, (_, i) => i);
    const t = g.tiles.find((x) => x.row === 1 && x.col === 1)!;
    const tile = extractTile(z, 2, 3, g, t);
    expect(tile.length).toBe(2 * 3 * t.h * t.w);
    // plane 4 (batch 1, channel 1), first row of the tile
    expect(Array.from(tile.subarray(4 * t.h * t.w, 4 * t.h * t.w + t.w))).toEqual(Array.from({ length: t.w }, (_, x) => (4 * 5 + t.y0) * 7 + t.x0 + x));
  });
});

describe('VAE tiling: blend + stitch vs the float64 diffusers port', () => {
  // float32 emulation vs float64: each output is a*wa + b*wb with |a|,|b| ~ N(0,1) (max ~5), three float32
  // roundings (two products, one sum) of relative error <= 2^-24 each -> |err| < 3 * 5 * 6e-8 ~ 1e-6.
  const TOL = 2e-6;
  for (const [name, cfg, scale, H, W, planes] of [
    ['tiny-flux 16x16 latents (3x3 tiles, 4-row edge tiles)', TINY, 4, 16, 16, 3],
    ['odd 13x19 latents (1-row/1-col edge tiles, extent clipped to 4), batch 2', TINY, 4, 13, 19, 6],
    ['scale 8, 11x20 latents', SCALE8, 8, 11, 20, 3],
  ] as const) {
    it(name, () => {
      const g = tileGrid(H, W, scale, cfg);
      const tiles = randomTiles(g, planes, 7 + H);
      const nested: Tile64[][] = [];
      for (const t of g.tiles) (nested[t.row] ??= [])[t.col] = toNested(tiles[t.index]!, planes, t.h * scale, t.w * scale);
      const ref = stitchRef(structuredClone(nested), g.blendExtent, g.rowLimit);
      const out = stitchTiles(tiles.map((t) => Float32Array.from(t)), g, planes / 3, 3);
      expect(out.length).toBe(planes * H * scale * W * scale);
      const err = maxAbsDiff(out, ref);
      console.log(`${name}: ${g.tiles.length} tiles, max |stitch - float64 ref| ${err.toExponential(2)}`);
      expect(err).toBeLessThan(TOL);
      // the test sees the in-place order: blending with the un-blended neighbours differs far beyond TOL
      expect(maxAbsDiff(out, stitchRef(structuredClone(nested), g.blendExtent, g.rowLimit, false))).toBeGreaterThan(1e-3);
    });
  }

  it('tiledDecode = extract + decode + stitch; VAE-P on 2, 3, 4 shm ranks is bit-identical on every rank', async () => {
    const g = tileGrid(13, 19, 4, TINY);
    const B = 2;
    const C = 4;
    const r = rng(3);
    const z = Float32Array.from({ length: B * C * 13 * 19 }, () => randn(r));
    // a stand-in decoder with a per-tile nonlinearity: nearest 4x upsample of channels 0..2, squashed
    const decode = async (tile: Float32Array, t: VaeTile): Promise<Float32Array> => {
      const out = new Float32Array(B * 3 * t.h * 4 * t.w * 4);
      for (let b = 0; b < B; b++)
        for (let c = 0; c < 3; c++)
          for (let y = 0; y < t.h * 4; y++)
            for (let x = 0; x < t.w * 4; x++) out[((b * 3 + c) * t.h * 4 + y) * t.w * 4 + x] = Math.tanh(tile[((b * C + c) * t.h + (y >> 2)) * t.w + (x >> 2)]! + 0.01 * t.index);
      return out;
    };
    const one = await tiledDecode(z, B, C, 3, g, decode);
    const nested: Tile64[][] = [];
    for (const t of g.tiles) (nested[t.row] ??= [])[t.col] = toNested(await decode(extractTile(z, B, C, g, t), t), B * 3, t.h * 4, t.w * 4);
    expect(maxAbsDiff(one, stitchRef(nested, g.blendExtent, g.rowLimit))).toBeLessThan(2e-6);
    for (const W of [2, 3, 4]) {
      const owners: number[][] = [];
      const outs = await runShm(W, async (comm) => {
        owners[comm.rank] = [];
        return tiledDecodeParallel(comm, z, B, C, 3, g, (tile, t) => {
          owners[comm.rank]!.push(t.index);
          return decode(tile, t);
        });
      });
      for (const o of outs) expect(Buffer.from(o.buffer).equals(Buffer.from(one.buffer))).toBe(true);
      owners.forEach((idx, rank) => expect(idx.every((c) => c % W === rank)).toBe(true));
    }
  });

  it('stitch errors name the mismatch', () => {
    const g = tileGrid(16, 16, 4, TINY);
    expect(() => stitchTiles([new Float32Array(3)], g, 1, 3)).toThrow(/1 decoded tiles for a grid of 9/);
    const tall = Float32Array.from(randomTiles(g, 3, 1)[0]!);
    expect(() => stitchTiles([tall, ...randomTiles(g, 3, 2).slice(1)], { ...g, tiles: g.tiles.map((t) => (t.index === 0 ? { ...t, h: 4 } : t)) }, 1, 3)).toThrow(/tile 0 has 3072 values, \[1, 3, 16, 32\] needs 1536/);
    expect(() => tileGrid(16, 16, 4, { tileLatent: 8, tileSample: 40, overlapFactor: 0.25 })).toThrow(
      /sample_size 40 \(tile_sample_min_size\) is not tile_latent_min_size 8 x the VAE scale 4: the blended tiles would not cover the 64x64 image/,
    );
  });
});

describe.skipIf(!nativeAvailable())('tiny-flux: tiled vs untiled decode', () => {
  it('48x80 (2x4 tiles, tile plans compiled on the fly): PSNR of the tiled image vs the untiled one', async () => {
    const pipe = await loadFluxPipeline('tiny-flux', {
      threads: 1,
      planProvider: (component, dims) => compilePlan('tiny-flux', { component, dims: componentDims(component, dims) }),
    });
    const [height, width] = [48, 80];
    const r = await pipe.generate({ prompt: 'a large red circle at the center on a black background', steps: 6, seed: 1, height, width, vaeTiling: true });
    const grid = pipe.spec.vaeTileGrid(height, width)!;
    expect([grid.rows, grid.cols]).toEqual([2, 4]);
    const z = pipe.spec.toVaeSpace(r.latents, 1, height, width);
    const tiled = await pipe.spec.decodeVaeSpace(z, 1, height, width, { tiling: true });
    expect(Buffer.from(tiled.buffer).equals(Buffer.from(r.decoded.buffer))).toBe(true); // generate({ vaeTiling }) decodes the same
    const full = await pipe.spec.decodeVaeSpace(z, 1, height, width);
    const p = psnr(tiled, full, 2);
    console.log(`tiny-flux ${height}x${width}: ${grid.tiles.length} tiles, tiled vs untiled decode PSNR ${p.toFixed(2)} dB (peak 2: range [-1, 1])`);
    // tiling changes the image (each tile sees only its own context, as in diffusers) but stays close
    expect(p).toBeGreaterThan(15);
    expect(p).toBeLessThan(Infinity);
  });
});
