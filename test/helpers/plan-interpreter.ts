// A slow, independent JS interpreter of plan.json (docs/architecture.md §2/§3): runs every op of every
// segment on a Float32Array arena with float64 accumulation. The compiler tests use it to check the
// plan (argument order, views/strides, memory plan) without the native addon.
import type { Plan, PlanOp } from '../../runtime/plan.ts';
import { dot, gelu, geluErf, layerNormStats, rmsScale, sigmoid, silu, softmaxWeights } from './ref-math.ts';

function compileExpr(expr: string, arity: number): (a: number[], f: number[]) => number {
  let js = expr.replace(/(\d+\.?\d*(?:e[+-]?\d+)?)f\b/g, '$1');
  js = js.replace(/\bexpf\b|\bexp_f\b/g, 'Math.exp').replace(/\btanhf\b|\btanh_f\b/g, 'Math.tanh').replace(/\bsqrtf\b/g, 'Math.sqrt');
  js = js.replace(/\ba(\d+)\b/g, 'a[$1]').replace(/\bf(\d+)\b/g, 'f[$1]');
  void arity;
  return new Function('silu', 'gelu_tanh', 'sigmoid', 'gelu_erf', `return (a, f) => ${js};`)(silu, gelu, sigmoid, geluErf) as (a: number[], f: number[]) => number;
}

export interface InterpreterHooks {
  /** called after each op (debugging) */
  afterOp?: (seg: string, op: PlanOp, arena: Float32Array) => void;
}

export class PlanInterpreter {
  arena: Float32Array;
  private views = new Map<number, Float32Array>();
  private ew = new Map<string, (a: number[], f: number[]) => number>();

  constructor(
    readonly plan: Plan,
    weights: Map<string, Float32Array>,
  ) {
    this.arena = new Float32Array(plan.arenaFloats);
    for (const t of plan.tensors) {
      if (t.base === 'arena') {
        if (t.offset + t.numel > plan.arenaFloats) throw new Error(`tensor ${t.id} out of arena bounds`);
        this.views.set(t.id, this.arena.subarray(t.offset, t.offset + t.numel));
      } else {
        const w = weights.get(t.weight!);
        if (!w) throw new Error(`weight ${t.weight} not bound`);
        this.views.set(t.id, w.subarray(t.offset, t.offset + t.numel));
      }
    }
    for (const e of plan.elementwise) this.ew.set(e.name, compileExpr(e.expr, e.arity));
  }

  setInput(name: string, data: Float32Array): void {
    const io = this.plan.inputs.find((x) => x.name === name);
    if (!io) throw new Error(`no input ${name}`);
    this.views.get(io.tensor)!.set(data);
  }
  getOutput(name: string): Float32Array {
    const io = this.plan.outputs.find((x) => x.name === name);
    if (!io) throw new Error(`no output ${name}`);
    return Float32Array.from(this.views.get(io.tensor)!);
  }
  tensor(id: number): Float32Array {
    return this.views.get(id)!;
  }

  runAll(hooks: InterpreterHooks = {}): void {
    for (const s of this.plan.segments) this.run(s.name, undefined, undefined, hooks);
  }

  run(segment: string, b0?: number, b1?: number, hooks: InterpreterHooks = {}): void {
    const s = this.plan.segments.find((x) => x.name === segment);
    if (!s) throw new Error(`no segment ${segment}`);
    const ops = s.ops ?? (s.blocks ?? []).slice(b0 ?? 0, b1 ?? s.blocks!.length).flatMap((b) => b.ops);
    for (const op of ops) {
      this.exec(op);
      hooks.afterOp?.(segment, op, this.arena);
    }
  }

  exec(op: PlanOp): void {
    const T = (k: number): Float32Array | null => (op.t[k]! < 0 || op.t[k] === undefined ? null : this.views.get(op.t[k]!)!);
    const t = (k: number): Float32Array => {
      const v = T(k);
      if (!v) throw new Error(`${op.k}: t[${k}] is null`);
      return v;
    };
    const [i0, i1, i2, i3, i4, i5, i6, i7, i8] = op.i as number[];
    const f = op.f;
    switch (op.k) {
      case 'linear': {
        const [x, W, b, y, g, r] = [t(0), t(1), T(2), t(3), T(4), T(5)];
        const [M, N, K, e, S, gs] = [i0!, i1!, i2!, i3!, i4!, i5!];
        const row = new Float64Array(N);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let acc = b ? b[n]! : 0;
            for (let k = 0; k < K; k++) acc += x[m * K + k]! * W[n * K + k]!;
            row[n] = e === 1 ? gelu(acc) : e === 2 ? silu(acc) : e === 3 ? r![m * N + n]! + (g ? g[Math.floor(m / S) * gs + n]! : 1) * acc : acc;
          }
          for (let n = 0; n < N; n++) y[m * N + n] = row[n]!;
        }
        return;
      }
      case 'layer_norm':
      case 'ln_modulate': {
        const ln = op.k === 'ln_modulate';
        const x = t(0);
        const y = t(3);
        const [M, C] = [i0!, i1!];
        for (let m = 0; m < M; m++) {
          const [mean, rs] = layerNormStats(x, m * C, C, f[0]!);
          const out = new Float64Array(C);
          for (let c = 0; c < C; c++) {
            const nrm = (x[m * C + c]! - mean) * rs;
            if (ln) {
              const bq = Math.floor(m / i2!);
              out[c] = nrm * (1 + t(2)[bq * i4! + c]!) + t(1)[bq * i3! + c]!;
            } else out[c] = nrm * (T(1) ? T(1)![c]! : 1) + (T(2) ? T(2)![c]! : 0);
          }
          for (let c = 0; c < C; c++) y[m * C + c] = out[c]!;
        }
        return;
      }
      case 'rms_norm': {
        const [x, w, y] = [t(0), T(1), t(2)];
        const [M, C] = [i0!, i1!];
        for (let m = 0; m < M; m++) {
          const rs = rmsScale(x, m * C, C, f[0]!);
          for (let c = 0; c < C; c++) y[m * C + c] = x[m * C + c]! * rs * (w ? w[c]! : 1);
        }
        return;
      }
      case 'gate_residual': {
        const [r, g, x, y] = [t(0), t(1), t(2), t(3)];
        const [M, C, S, gs] = [i0!, i1!, i2!, i3!];
        for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) y[m * C + c] = r[m * C + c]! + g[Math.floor(m / S) * gs + c]! * x[m * C + c]!;
        return;
      }
      case 'rope':
      case 'qk_norm_rope': {
        const qk = op.k === 'qk_norm_rope';
        const x = t(0);
        const w = qk ? T(1) : null;
        const cos = T(qk ? 2 : 1);
        const sin = T(qk ? 3 : 2);
        const y = t(qk ? 4 : 3);
        const [B, S, H, D, xs, ys] = [i0!, i1!, i2!, i3!, i4!, i5!];
        const tmp = new Float64Array(D);
        for (let r = 0; r < B * S; r++) {
          const s = r % S;
          for (let h = 0; h < H; h++) {
            const xo = r * xs + h * D;
            const yo = r * ys + h * D;
            const sc = qk ? rmsScale(x, xo, D, f[0]!) : 1;
            for (let d = 0; d < D; d++) tmp[d] = x[xo + d]! * sc * (w ? w[d]! : 1);
            for (let j = 0; j < D / 2; j++) {
              if (!cos || !sin) {
                y[yo + 2 * j] = tmp[2 * j]!;
                y[yo + 2 * j + 1] = tmp[2 * j + 1]!;
                continue;
              }
              const a = tmp[2 * j]!;
              const bb = tmp[2 * j + 1]!;
              y[yo + 2 * j] = a * cos[s * D + 2 * j]! - bb * sin[s * D + 2 * j]!;
              y[yo + 2 * j + 1] = bb * cos[s * D + 2 * j + 1]! + a * sin[s * D + 2 * j + 1]!;
            }
          }
        }
        return;
      }
      case 'attention': {
        const [q, k, v, mask, o] = [t(0), t(1), t(2), T(3), t(4)];
        const [B, Sq, Sk, H, D, qs, ks, vs, os] = [i0!, i1!, i2!, i3!, i4!, i5!, i6!, i7!, i8!];
        const p = new Float64Array(Sk);
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < Sq; i++) {
              for (let j = 0; j < Sk; j++)
                p[j] = mask && !(mask[b * Sk + j]! >= 0.5) ? -Infinity : dot(q, (b * Sq + i) * qs + h * D, k, (b * Sk + j) * ks + h * D, D) * f[0]!;
              const den = softmaxWeights(p, Sk);
              for (let d = 0; d < D; d++) {
                let acc = 0;
                for (let j = 0; j < Sk; j++) acc += p[j]! * v[(b * Sk + j) * vs + h * D + d]!;
                o[(b * Sq + i) * os + h * D + d] = acc / den;
              }
            }
        return;
      }
      case 'timestep_embedding': {
        const [x, y] = [t(0), t(1)];
        const [B, C, flip] = [i0!, i1!, i2!];
        const half = Math.floor(C / 2);
        for (let b = 0; b < B; b++)
          for (let j = 0; j < half; j++) {
            const e = Math.fround(Math.exp(Math.fround(Math.fround(Math.fround(-Math.log(f[2]!)) * j) / (half - f[1]!))));
            const arg = Math.fround(f[0]! * Math.fround(x[b]! * e));
            y[b * C + j] = flip ? Math.cos(arg) : Math.sin(arg);
            y[b * C + half + j] = flip ? Math.sin(arg) : Math.cos(arg);
          }
        return;
      }
      case 'rope_table': {
        const [ids, cos, sin] = [t(0), t(1), t(2)];
        const [S, A] = [i0!, i1!];
        const dims = [i2!, i3!, i4!, i5!].filter((d) => d > 0);
        const D = dims.reduce((a, b) => a + b, 0);
        for (let s = 0; s < S; s++) {
          let off = 0;
          dims.forEach((d, a) => {
            for (let j = 0; j < d / 2; j++) {
              const ang = ids[s * A + a]! * (1 / Math.pow(f[0]!, (2 * j) / d));
              cos[s * D + off + 2 * j] = cos[s * D + off + 2 * j + 1] = Math.cos(ang);
              sin[s * D + off + 2 * j] = sin[s * D + off + 2 * j + 1] = Math.sin(ang);
            }
            off += d;
          });
        }
        return;
      }
      case 'embedding': {
        const [ids, tb, y] = [t(0), t(1), t(2)];
        const [M, C] = [i0!, i1!];
        for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) y[m * C + c] = tb[Math.trunc(ids[m]!) * C + c]!;
        return;
      }
      case 'masked_mean': {
        const [x, mask, y] = [t(0), t(1), t(2)];
        const [B, S, C] = [i0!, i1!, i2!];
        for (let b = 0; b < B; b++) {
          const acc = new Float64Array(C);
          let n = 0;
          for (let s = 0; s < S; s++) {
            if (!(mask[b * S + s]! >= 0.5)) continue;
            n++;
            for (let c = 0; c < C; c++) acc[c] += x[(b * S + s) * C + c]!;
          }
          for (let c = 0; c < C; c++) y[b * C + c] = n ? acc[c]! / n : 0;
        }
        return;
      }
      case 'copy3d': {
        const [x, y] = [t(0), t(1)];
        const [O, R, C, xo, xr, yo, yr] = [i0!, i1!, i2!, i3!, i4!, i5!, i6!];
        for (let o = 0; o < O; o++) for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) y[o * yo + r * yr + c] = x[o * xo + r * xr + c]!;
        return;
      }
      case 'transpose': {
        const [x, y] = [t(0), t(1)];
        const [Bt, R, C] = [i0!, i1!, i2!];
        for (let b = 0; b < Bt; b++) for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) y[(b * C + c) * R + r] = x[(b * R + r) * C + c]!;
        return;
      }
      case 'conv2d': {
        const [x, W, bias, y] = [t(0), t(1), T(2), t(3)];
        const [N, Ci, H, Wd, Co, kh, kw, st, pad, padEnd] = [i0!, i1!, i2!, i3!, i4!, i5!, i6!, i7!, i8!, (op.i as number[])[9]!];
        const Ho = Math.floor((H + pad + padEnd - kh) / st) + 1;
        const Wo = Math.floor((Wd + pad + padEnd - kw) / st) + 1;
        for (let n = 0; n < N; n++)
          for (let co = 0; co < Co; co++)
            for (let oh = 0; oh < Ho; oh++)
              for (let ow = 0; ow < Wo; ow++) {
                let acc = bias ? bias[co]! : 0;
                for (let ci = 0; ci < Ci; ci++)
                  for (let a = 0; a < kh; a++) {
                    const ih = oh * st - pad + a;
                    if (ih < 0 || ih >= H) continue;
                    for (let bb = 0; bb < kw; bb++) {
                      const iw = ow * st - pad + bb;
                      if (iw < 0 || iw >= Wd) continue;
                      acc += x[((n * Ci + ci) * H + ih) * Wd + iw]! * W[((co * Ci + ci) * kh + a) * kw + bb]!;
                    }
                  }
                y[((n * Co + co) * Ho + oh) * Wo + ow] = acc;
              }
        return;
      }
      case 'group_norm': {
        const [x, w, b, y] = [t(0), T(1), T(2), t(3)];
        const [N, C, HW, G, fs] = [i0!, i1!, i2!, i3!, i4!];
        const Cg = C / G;
        for (let n = 0; n < N; n++)
          for (let g = 0; g < G; g++) {
            const base = (n * C + g * Cg) * HW;
            const len = Cg * HW;
            const [mean, rs] = layerNormStats(x, base, len, f[0]!);
            for (let k = 0; k < len; k++) {
              const ch = g * Cg + Math.floor(k / HW);
              const val = (x[base + k]! - mean) * rs * (w ? w[ch]! : 1) + (b ? b[ch]! : 0);
              y[base + k] = fs ? silu(val) : val;
            }
          }
        return;
      }
      case 'upsample_nearest2x': {
        const [x, y] = [t(0), t(1)];
        const [NC, H, W] = [i0!, i1!, i2!];
        for (let n = 0; n < NC; n++) for (let i = 0; i < 2 * H; i++) for (let j = 0; j < 2 * W; j++) y[(n * 2 * H + i) * 2 * W + j] = x[(n * H + (i >> 1)) * W + (j >> 1)]!;
        return;
      }
      case 'add':
      case 'mul': {
        const [a, b, y] = [t(0), t(1), t(2)];
        for (let i = 0; i < i0!; i++) y[i] = op.k === 'add' ? a[i]! + b[i]! : a[i]! * b[i]!;
        return;
      }
      case 'silu':
      case 'gelu_tanh': {
        const [x, y] = [t(0), t(1)];
        for (let i = 0; i < i0!; i++) y[i] = op.k === 'silu' ? silu(x[i]!) : gelu(x[i]!);
        return;
      }
      default: {
        const fn = this.ew.get(op.k);
        if (!fn) throw new Error(`interpreter: unknown kernel ${op.k}`);
        const ins = op.t.slice(0, -1).map((id) => this.views.get(id)!);
        const y = this.views.get(op.t[op.t.length - 1]!)!;
        const a = new Array<number>(ins.length);
        for (let i = 0; i < i0!; i++) {
          for (let k = 0; k < ins.length; k++) a[k] = ins[k]![i]!;
          y[i] = fn(a, f);
        }
      }
    }
  }
}
