// Float64 reference forwards of diffusers' QwenImageTransformer2DModel and WanTransformer3DModel,
// written from the diffusers source (transformer_qwenimage.py / transformer_wan.py) with plain loops
// and explicit index arithmetic (Conv3d, unpatchify, QwenEmbedRope's pos/neg tables, Wan's RoPE
// split), independent of the DSL and the compiler. For small random-weight configs only.
import { dot, gelu, layerNormStats, rmsScale, silu, softmaxWeights } from './ref-math.ts';

type W = Map<string, Float32Array>;
type Cfg = Record<string, any>;
type Arr = Float64Array<ArrayBuffer>;

function wt(w: W, name: string): Float32Array {
  const a = w.get(name);
  if (!a) throw new Error(`reference: no weight '${name}'`);
  return a;
}

/** y[M, N] = x[M, K] W[N, K]^T + b */
function linear(w: W, name: string, x: Arr, M: number, K: number, N: number): Arr {
  const Wt = wt(w, `${name}.weight`);
  const b = wt(w, `${name}.bias`);
  if (Wt.length !== N * K) throw new Error(`reference: ${name}.weight has ${Wt.length} values, want ${N}x${K}`);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b[n]!;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * Wt[n * K + k]!;
      y[m * N + n] = s;
    }
  }
  return y;
}

const map = (x: Arr, f: (v: number) => number): Arr => Float64Array.from(x, f);

function layerNorm(x: Arr, M: number, C: number, eps: number, wgt?: Float32Array, bias?: Float32Array): Arr {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const [mu, r] = layerNormStats(x, m * C, C, eps);
    for (let c = 0; c < C; c++) y[m * C + c] = (x[m * C + c]! - mu) * r * (wgt ? wgt[c]! : 1) + (bias ? bias[c]! : 0);
  }
  return y;
}

/** RMSNorm over groups of G channels (G = C: whole row; G = head dim: per head), weight [G] */
function rmsNorm(x: Arr, rows: number, G: number, wgt: Float32Array, eps: number): Arr {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const k = rmsScale(x, r * G, G, eps);
    for (let g = 0; g < G; g++) y[r * G + g] = x[r * G + g]! * k * wgt[g]!;
  }
  return y;
}

/** x[B, S, C] * (1 + scale[B, C]) + shift[B, C]; shift/scale given as rows of mod[B, stride] at offsets */
function modulate(x: Arr, B: number, S: number, C: number, mod: Arr, stride: number, shiftOff: number, scaleOff: number): Arr {
  const y = new Float64Array(x.length);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let c = 0; c < C; c++) {
        const i = (b * S + s) * C + c;
        y[i] = x[i]! * (1 + mod[b * stride + scaleOff + c]!) + mod[b * stride + shiftOff + c]!;
      }
  return y;
}

/** r + gate * v (gate rows of mod[B, stride] at gateOff; null gate = 1) */
function residual(r: Arr, v: Arr, B: number, S: number, C: number, mod: Arr | null, stride = 0, gateOff = 0): Arr {
  const y = new Float64Array(r.length);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let c = 0; c < C; c++) {
        const i = (b * S + s) * C + c;
        y[i] = r[i]! + (mod ? mod[b * stride + gateOff + c]! : 1) * v[i]!;
      }
  return y;
}

/** diffusers get_timestep_embedding */
function timestepEmbedding(t: Float32Array, dim: number, flip: boolean, shift: number, scale: number): Arr {
  const half = dim / 2;
  const y = new Float64Array(t.length * dim);
  for (let b = 0; b < t.length; b++) {
    for (let j = 0; j < half; j++) {
      const e = scale * t[b]! * Math.exp((-Math.log(10000) * j) / (half - shift));
      const [first, second] = flip ? [Math.cos(e), Math.sin(e)] : [Math.sin(e), Math.cos(e)];
      y[b * dim + j] = first;
      y[b * dim + half + j] = second;
    }
  }
  return y;
}

/** softmax(q k^T / sqrt(D)) v per (batch, head); q [B, Sq, H*D], k/v [B, Sk, H*D]; keyMask [B, Sk] (1 keep) */
function sdpa(q: Arr, k: Arr, v: Arr, B: number, Sq: number, Sk: number, H: number, D: number, keyMask?: Float32Array): Arr {
  const C = H * D;
  const o = new Float64Array(B * Sq * C);
  const p = new Float64Array(Sk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Sq; i++) {
        for (let j = 0; j < Sk; j++)
          p[j] = keyMask && !keyMask[b * Sk + j] ? -Infinity : dot(q, (b * Sq + i) * C + h * D, k, (b * Sk + j) * C + h * D, D) / Math.sqrt(D);
        const z = softmaxWeights(p, Sk);
        for (let j = 0; j < Sk; j++) {
          const a = p[j]! / z;
          if (a) for (let d = 0; d < D; d++) o[(b * Sq + i) * C + h * D + d] += a * v[(b * Sk + j) * C + h * D + d]!;
        }
      }
  return o;
}

/** complex rotation of interleaved pairs: x [B, S, H*D], angles [S, D/2] (per token, per pair) */
function rotate(x: Arr, B: number, S: number, H: number, D: number, cos: Arr, sin: Arr): Arr {
  const y = new Float64Array(x.length);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < H; h++)
        for (let j = 0; j < D / 2; j++) {
          const i = (b * S + s) * H * D + h * D + 2 * j;
          const [c, sn] = [cos[s * (D / 2) + j]!, sin[s * (D / 2) + j]!];
          y[i] = x[i]! * c - x[i + 1]! * sn;
          y[i + 1] = x[i]! * sn + x[i + 1]! * c;
        }
  return y;
}

const f64 = (a: Float32Array): Arr => Float64Array.from(a);
const sliceRows = (x: Arr, B: number, S: number, C: number, s0: number, n: number): Arr => {
  const y = new Float64Array(B * n * C);
  for (let b = 0; b < B; b++) y.set(x.subarray((b * S + s0) * C, (b * S + s0 + n) * C), b * n * C);
  return y;
};
const catRows = (a: Arr, Sa: number, c: Arr, Sc: number, B: number, C: number): Arr => {
  const y = new Float64Array(B * (Sa + Sc) * C);
  for (let b = 0; b < B; b++) {
    y.set(a.subarray(b * Sa * C, (b + 1) * Sa * C), b * (Sa + Sc) * C);
    y.set(c.subarray(b * Sc * C, (b + 1) * Sc * C), (b * (Sa + Sc) + Sa) * C);
  }
  return y;
};

// ---------------------------------------------------------------------------------------------
// Qwen-Image

/**
 * QwenImageTransformer2DModel.forward for img_shapes = [(1, h, w)] per sample, text length T, and
 * encoder_hidden_states_mask `textMask [B, T]` (1 valid).
 */
export function qwenImageReference(w: W, c: Cfg, B: number, h: number, wd: number, T: number, x: { hidden_states: Float32Array; encoder_hidden_states: Float32Array; timestep: Float32Array; textMask: Float32Array }): Float64Array {
  const H = c.num_attention_heads as number;
  const D = c.attention_head_dim as number;
  const C = H * D;
  const N = h * wd;
  const eps = 1e-6;
  const axes = c.axes_dims_rope as number[];

  // QwenEmbedRope(theta=10000, scale_rope=True): rope_params(index, dim) = index * theta^(-arange(0,dim,2)/dim)
  const freq = (a: number, j: number): number => 1 / Math.pow(10000, (2 * j) / axes[a]!);
  const posIdx = (n: number): number => n; // pos_index = arange(4096)
  const negIdx = (fromEnd: number): number => -fromEnd; // neg_index = arange(4096).flip(0) * -1 - 1 = [-4096 .. -1]
  // image: frame pos_freqs[0][0]; height cat(neg[-(h - h//2):], pos[:h//2]); width likewise
  const hPos = [...Array.from({ length: h - Math.floor(h / 2) }, (_, i) => negIdx(h - Math.floor(h / 2) - i)), ...Array.from({ length: Math.floor(h / 2) }, (_, i) => posIdx(i))];
  const wPos = [...Array.from({ length: wd - Math.floor(wd / 2) }, (_, i) => negIdx(wd - Math.floor(wd / 2) - i)), ...Array.from({ length: Math.floor(wd / 2) }, (_, i) => posIdx(i))];
  const maxVid = Math.max(Math.floor(h / 2), Math.floor(wd / 2));
  const half = D / 2;
  const angles = (pos: number[]): number[] => pos.flatMap((p, a) => Array.from({ length: axes[a]! / 2 }, (_, j) => p * freq(a, j)));
  const imgAng: number[] = [];
  for (let i = 0; i < h; i++) for (let j = 0; j < wd; j++) imgAng.push(...angles([0, hPos[i]!, wPos[j]!]));
  const txtAng: number[] = [];
  for (let t = 0; t < T; t++) txtAng.push(...angles([maxVid + t, maxVid + t, maxVid + t]));
  if (imgAng.length !== N * half || txtAng.length !== T * half) throw new Error('reference: rope axes do not sum to the head dim');
  const imgCos = Float64Array.from(imgAng, Math.cos);
  const imgSin = Float64Array.from(imgAng, Math.sin);
  const txtCos = Float64Array.from(txtAng, Math.cos);
  const txtSin = Float64Array.from(txtAng, Math.sin);

  let hid = linear(w, 'img_in', f64(x.hidden_states), B * N, c.in_channels, C);
  let enc = rmsNorm(f64(x.encoder_hidden_states), B * T, c.joint_attention_dim, wt(w, 'txt_norm.weight'), eps);
  enc = linear(w, 'txt_in', enc, B * T, c.joint_attention_dim, C);
  const tp = timestepEmbedding(x.timestep, 256, true, 0, 1000);
  let temb = linear(w, 'time_text_embed.timestep_embedder.linear_1', tp, B, 256, C);
  temb = linear(w, 'time_text_embed.timestep_embedder.linear_2', map(temb, silu), B, C, C);
  const stemb = map(temb, silu);
  // joint mask: [text mask, ones for the image]
  const joint = new Float32Array(B * (T + N)).fill(1);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) joint[b * (T + N) + t] = x.textMask[b * T + t]!;

  for (let l = 0; l < c.num_layers; l++) {
    const p = `transformer_blocks.${l}.`;
    const imgMod = linear(w, `${p}img_mod.1`, stemb, B, C, 6 * C); // [shift1, scale1, gate1, shift2, scale2, gate2]
    const txtMod = linear(w, `${p}txt_mod.1`, stemb, B, C, 6 * C);
    const img = modulate(layerNorm(hid, B * N, C, eps), B, N, C, imgMod, 6 * C, 0, C);
    const txt = modulate(layerNorm(enc, B * T, C, eps), B, T, C, txtMod, 6 * C, 0, C);
    const a = `${p}attn.`;
    const proj = (name: string, v: Arr, S: number): Arr => linear(w, `${a}${name}`, v, B * S, C, C);
    const headNorm = (name: string, v: Arr, S: number): Arr => rmsNorm(v, B * S * H, D, wt(w, `${a}${name}.weight`), eps);
    const iq = rotate(headNorm('norm_q', proj('to_q', img, N), N), B, N, H, D, imgCos, imgSin);
    const ik = rotate(headNorm('norm_k', proj('to_k', img, N), N), B, N, H, D, imgCos, imgSin);
    const iv = proj('to_v', img, N);
    const tq = rotate(headNorm('norm_added_q', proj('add_q_proj', txt, T), T), B, T, H, D, txtCos, txtSin);
    const tk = rotate(headNorm('norm_added_k', proj('add_k_proj', txt, T), T), B, T, H, D, txtCos, txtSin);
    const tv = proj('add_v_proj', txt, T);
    // order: [text, image]
    const o = sdpa(catRows(tq, T, iq, N, B, C), catRows(tk, T, ik, N, B, C), catRows(tv, T, iv, N, B, C), B, T + N, T + N, H, D, joint);
    const oTxt = sliceRows(o, B, T + N, C, 0, T);
    const oImg = sliceRows(o, B, T + N, C, T, N);
    hid = residual(hid, proj('to_out.0', oImg, N), B, N, C, imgMod, 6 * C, 2 * C);
    enc = residual(enc, proj('to_add_out', oTxt, T), B, T, C, txtMod, 6 * C, 2 * C);
    const ff = (name: string, v: Arr, S: number): Arr =>
      linear(w, `${p}${name}.net.2`, map(linear(w, `${p}${name}.net.0.proj`, v, B * S, C, 4 * C), gelu), B * S, 4 * C, C);
    hid = residual(hid, ff('img_mlp', modulate(layerNorm(hid, B * N, C, eps), B, N, C, imgMod, 6 * C, 3 * C, 4 * C), N), B, N, C, imgMod, 6 * C, 5 * C);
    enc = residual(enc, ff('txt_mlp', modulate(layerNorm(enc, B * T, C, eps), B, T, C, txtMod, 6 * C, 3 * C, 4 * C), T), B, T, C, txtMod, 6 * C, 5 * C);
  }
  // AdaLayerNormContinuous: scale, shift = chunk(linear(silu(temb)), 2)
  const emb = linear(w, 'norm_out.linear', stemb, B, C, 2 * C);
  const y = modulate(layerNorm(hid, B * N, C, eps), B, N, C, emb, 2 * C, C, 0);
  const outC = (c.out_channels ?? c.in_channels) as number;
  return linear(w, 'proj_out', y, B * N, C, c.patch_size * c.patch_size * outC);
}

// ---------------------------------------------------------------------------------------------
// Wan 2.1

/** WanTransformer3DModel.forward (T2V): hidden_states [B, Cin, F, Hl, Wl] -> [B, Cout, F, Hl, Wl] */
export function wanReference(w: W, c: Cfg, B: number, F: number, Hl: number, Wl: number, T: number, x: { hidden_states: Float32Array; encoder_hidden_states: Float32Array; timestep: Float32Array }): Float64Array {
  const H = c.num_attention_heads as number;
  const D = c.attention_head_dim as number;
  const C = H * D;
  const eps = c.eps as number;
  const [pt, ph, pw] = c.patch_size as number[];
  const [fp, hp, wp] = [F / pt!, Hl / ph!, Wl / pw!];
  const N = fp * hp * wp;
  const Cin = c.in_channels as number;
  const Cout = c.out_channels as number;

  // WanRotaryPosEmbed: tables per axis dims [D - 4(D//6), 2(D//6), 2(D//6)], split [D - 2(D//3), D//3, D//3]
  const hw = 2 * Math.floor(D / 6);
  const tableDims = [D - 2 * hw, hw, hw];
  const split = [D - 2 * Math.floor(D / 3), Math.floor(D / 3), Math.floor(D / 3)];
  if (tableDims.join() !== split.join()) throw new Error('reference: Wan rope split differs from its table for this head dim');
  const ang: number[] = [];
  for (let f = 0; f < fp; f++)
    for (let i = 0; i < hp; i++)
      for (let j = 0; j < wp; j++)
        [f, i, j].forEach((pos, a) => {
          const d = tableDims[a]!;
          for (let k = 0; k < d / 2; k++) ang.push(pos / Math.pow(10000, (2 * k) / d));
        });
  const rc = Float64Array.from(ang, Math.cos);
  const rs = Float64Array.from(ang, Math.sin);

  // patch_embedding: Conv3d(kernel = stride = patch), then flatten(2).transpose(1, 2)
  const Wp = wt(w, 'patch_embedding.weight');
  const bp = wt(w, 'patch_embedding.bias');
  const hs = x.hidden_states;
  let hid = new Float64Array(B * N * C);
  for (let b = 0; b < B; b++)
    for (let f = 0; f < fp; f++)
      for (let i = 0; i < hp; i++)
        for (let j = 0; j < wp; j++) {
          const n = (f * hp + i) * wp + j;
          for (let o = 0; o < C; o++) {
            let s = bp[o]!;
            for (let ci = 0; ci < Cin; ci++)
              for (let kt = 0; kt < pt!; kt++)
                for (let kh = 0; kh < ph!; kh++)
                  for (let kw = 0; kw < pw!; kw++)
                    s += Wp[(((o * Cin + ci) * pt! + kt) * ph! + kh) * pw! + kw]! * hs[(((b * Cin + ci) * F + f * pt! + kt) * Hl + i * ph! + kh) * Wl + j * pw! + kw]!;
            hid[(b * N + n) * C + o] = s;
          }
        }

  // condition_embedder
  const tf = timestepEmbedding(x.timestep, c.freq_dim, true, 0, 1);
  let temb = linear(w, 'condition_embedder.time_embedder.linear_1', tf, B, c.freq_dim, C);
  temb = linear(w, 'condition_embedder.time_embedder.linear_2', map(temb, silu), B, C, C);
  const tproj = linear(w, 'condition_embedder.time_proj', map(temb, silu), B, C, 6 * C); // unflatten -> [B, 6, C]
  let enc = linear(w, 'condition_embedder.text_embedder.linear_1', f64(x.encoder_hidden_states), B * T, c.text_dim, C);
  enc = linear(w, 'condition_embedder.text_embedder.linear_2', map(enc, gelu), B * T, C, C);

  for (let l = 0; l < c.num_layers; l++) {
    const p = `blocks.${l}.`;
    const table = wt(w, `${p}scale_shift_table`); // [1, 6, C]
    const mod = new Float64Array(B * 6 * C);
    for (let b = 0; b < B; b++) for (let k = 0; k < 6 * C; k++) mod[b * 6 * C + k] = table[k]! + tproj[b * 6 * C + k]!;
    // shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa
    const x1 = modulate(layerNorm(hid, B * N, C, eps), B, N, C, mod, 6 * C, 0, C);
    const attn = (name: string, q0: Arr, Sq: number, kv: Arr, Sk: number, rope: boolean): Arr => {
      const a = `${p}${name}.`;
      let q = rmsNorm(linear(w, `${a}to_q`, q0, B * Sq, C, C), B * Sq, C, wt(w, `${a}norm_q.weight`), eps);
      let k = rmsNorm(linear(w, `${a}to_k`, kv, B * Sk, C, C), B * Sk, C, wt(w, `${a}norm_k.weight`), eps);
      const v = linear(w, `${a}to_v`, kv, B * Sk, C, C);
      if (rope) {
        q = rotate(q, B, Sq, H, D, rc, rs);
        k = rotate(k, B, Sk, H, D, rc, rs);
      }
      return linear(w, `${a}to_out.0`, sdpa(q, k, v, B, Sq, Sk, H, D), B * Sq, C, C);
    };
    hid = residual(hid, attn('attn1', x1, N, x1, N, true), B, N, C, mod, 6 * C, 2 * C);
    const x2 = c.cross_attn_norm ? layerNorm(hid, B * N, C, eps, wt(w, `${p}norm2.weight`), wt(w, `${p}norm2.bias`)) : hid;
    hid = residual(hid, attn('attn2', x2, N, enc, T, false), B, N, C, null);
    const x3 = modulate(layerNorm(hid, B * N, C, eps), B, N, C, mod, 6 * C, 3 * C, 4 * C);
    const ff = linear(w, `${p}ffn.net.2`, map(linear(w, `${p}ffn.net.0.proj`, x3, B * N, C, c.ffn_dim), gelu), B * N, c.ffn_dim, C);
    hid = residual(hid, ff, B, N, C, mod, 6 * C, 5 * C);
  }

  // head: shift, scale = (scale_shift_table [1, 2, C] + temb[:, None]).chunk(2, dim=1)
  const st = wt(w, 'scale_shift_table');
  const ss = new Float64Array(B * 2 * C);
  for (let b = 0; b < B; b++) for (let k = 0; k < 2 * C; k++) ss[b * 2 * C + k] = st[k]! + temb[b * C + (k % C)]!;
  const y = linear(w, 'proj_out', modulate(layerNorm(hid, B * N, C, eps), B, N, C, ss, 2 * C, 0, C), B * N, C, Cout * pt! * ph! * pw!);
  // reshape (B, F', H', W', pt, ph, pw, Cout), permute (0, 7, 1, 4, 2, 5, 3, 6), flatten
  const out = new Float64Array(B * Cout * F * Hl * Wl);
  for (let b = 0; b < B; b++)
    for (let f = 0; f < fp; f++)
      for (let i = 0; i < hp; i++)
        for (let j = 0; j < wp; j++)
          for (let kt = 0; kt < pt!; kt++)
            for (let kh = 0; kh < ph!; kh++)
              for (let kw = 0; kw < pw!; kw++)
                for (let co = 0; co < Cout; co++) {
                  const n = (f * hp + i) * wp + j;
                  const src = (b * N + n) * (Cout * pt! * ph! * pw!) + ((kt * ph! + kh) * pw! + kw) * Cout + co;
                  out[(((b * Cout + co) * F + f * pt! + kt) * Hl + i * ph! + kh) * Wl + j * pw! + kw] = y[src]!;
                }
  return out;
}
