// Latent packing (FluxPipeline `_pack_latents` / `_unpack_latents`) and RoPE position ids
// (models/tiny-flux/README.md §4).

/** Checks the geometry and yields, in packed order, the unpacked index of every packed element. */
function* packedOrder(what: string, n: number, B: number, C: number, H: number, W: number): Generator<number> {
  if (H % 2 || W % 2) throw new Error(`${what}: latent height/width must be even, got ${H}x${W}`);
  if (n !== B * C * H * W) throw new Error(`${what}: expected ${B * C * H * W} values, got ${n}`);
  for (let b = 0; b < B; b++)
    for (let y = 0; y < H / 2; y++)
      for (let x = 0; x < W / 2; x++)
        for (let c = 0; c < C; c++)
          for (let dy = 0; dy < 2; dy++)
            for (let dx = 0; dx < 2; dx++) yield ((b * C + c) * H + 2 * y + dy) * W + 2 * x + dx;
}

/** [B, C, H, W] -> [B, (H/2)*(W/2), C*4]: packed[b, y*(W/2)+x, c*4+dy*2+dx] = lat[b, c, 2y+dy, 2x+dx] */
export function packLatents(lat: Float32Array, B: number, C: number, H: number, W: number): Float32Array {
  const out = new Float32Array(lat.length);
  let o = 0;
  for (const i of packedOrder('packLatents', lat.length, B, C, H, W)) out[o++] = lat[i]!;
  return out;
}

/** exact inverse of packLatents: [B, (H/2)*(W/2), C*4] -> [B, C, H, W] */
export function unpackLatents(packed: Float32Array, B: number, C: number, H: number, W: number): Float32Array {
  const out = new Float32Array(packed.length);
  let o = 0;
  for (const i of packedOrder('unpackLatents', packed.length, B, C, H, W)) out[i] = packed[o++]!;
  return out;
}

/** img_ids [h2*w2, 3]: row y*w2+x = [0, y, x] (h2, w2 = packed grid) */
export function imageIds(h2: number, w2: number): Float32Array {
  const ids = new Float32Array(h2 * w2 * 3);
  for (let y = 0; y < h2; y++)
    for (let x = 0; x < w2; x++) {
      const r = (y * w2 + x) * 3;
      ids[r + 1] = y;
      ids[r + 2] = x;
    }
  return ids;
}

/**
 * Wan's rope_ids [f*h*w, 3]: (frame, row, column) of every token of an f x h x w patch grid, row-major (the
 * positions WanRotaryPosEmbed gives the patch tokens)
 */
export function videoRopeIds(f: number, h: number, w: number): Float32Array {
  const ids = new Float32Array(f * h * w * 3);
  let r = 0;
  for (let a = 0; a < f; a++)
    for (let i = 0; i < h; i++)
      for (let j = 0; j < w; j++) {
        ids[r++] = a;
        ids[r++] = i;
        ids[r++] = j;
      }
  return ids;
}

/**
 * QwenEmbedRope(theta 10000, scale_rope=True) positions, text rows first: image token (i, j) of an
 * h x w grid gets (0, i - ceil(h/2), j - ceil(w/2)) (centred); text token t gets m + t on all three
 * axes with m = max(floor(h/2), floor(w/2)). Returns { txt [T*3], img [h*w*3] } (row-major [S, 3]).
 */
export function qwenImageRopeIds(h: number, w: number, textTokens: number): { txt: Float32Array; img: Float32Array } {
  const m = Math.max(Math.floor(h / 2), Math.floor(w / 2));
  const txt = new Float32Array(textTokens * 3);
  for (let t = 0; t < textTokens; t++) txt.fill(m + t, t * 3, t * 3 + 3);
  const img = new Float32Array(h * w * 3);
  const h0 = h - Math.floor(h / 2);
  const w0 = w - Math.floor(w / 2);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const r = (i * w + j) * 3;
      img[r] = 0;
      img[r + 1] = i - h0;
      img[r + 2] = j - w0;
    }
  }
  return { txt, img };
}

/** txt_ids [T, 3]: zeros */
export function textIds(T: number): Float32Array {
  return new Float32Array(T * 3);
}

/** Geometry of a FLUX image: pixel size -> VAE latent size -> packed token grid. */
export interface LatentGeometry {
  height: number;
  width: number;
  /** VAE latent size (height / vaeScale) */
  latentHeight: number;
  latentWidth: number;
  latentChannels: number;
  /** packed tokens and channels */
  tokens: number;
  packedChannels: number;
}

export function latentGeometry(height: number, width: number, vaeScale: number, latentChannels: number): LatentGeometry {
  const lh = 2 * Math.floor(height / (vaeScale * 2));
  const lw = 2 * Math.floor(width / (vaeScale * 2));
  return {
    height,
    width,
    latentHeight: lh,
    latentWidth: lw,
    latentChannels,
    tokens: (lh / 2) * (lw / 2),
    packedChannels: latentChannels * 4,
  };
}

/**
 * FluxPipeline before vae.decode: `unpack(x) / scaling_factor + shift_factor` in float32
 * ([B, tokens, C*4] -> [B, C, H, W]).
 */
export function latentsToVaeSpace(
  packed: Float32Array,
  B: number,
  C: number,
  H: number,
  W: number,
  scalingFactor: number,
  shiftFactor: number,
): Float32Array {
  return toVaeScale(unpackLatents(packed, B, C, H, W), scalingFactor, shiftFactor);
}

/** `z / scaling_factor + shift_factor` in float32, in place (AutoencoderKL's latent scale; the pipelines call it before vae.decode) */
export function toVaeScale(z: Float32Array, scalingFactor: number, shiftFactor: number): Float32Array {
  const s = Math.fround(scalingFactor);
  const sh = Math.fround(shiftFactor);
  for (let i = 0; i < z.length; i++) z[i] = Math.fround(z[i]! / s) + sh;
  return z;
}
