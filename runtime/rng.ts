// Seeded initial noise, bit-compatible with `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed),
// dtype=torch.float32)` as FluxPipeline draws it on a CPU with AVX2 (torch's default x86-64 build):
//   * mt19937 seeded with seed mod 2^32 (at::mt19937),
//   * one uniform per element: (u32 & 0xffffff) / 2^24 (at::uniform_real_distribution<float>),
//   * Box-Muller over chunks of 16 (pairs j, j+8) with torch's vectorised `normal_fill_16_AVX2`, whose
//     log/sin/cos come from avx_mathfun (cephes polynomials) compiled with FMA contraction; emulated here
//     in float32 step by step. When numel % 16 != 0, the last 16 values are redrawn (as torch does).
// Verified bit-exact against the three diffusers references (test/unit/rng.test.ts). Other torch builds
// (no AVX2, or a different compiler contraction) could differ by an ulp; `--latents FILE` gives any noise
// exactly.

const f = Math.fround;
const fma = (a: number, b: number, c: number): number => f(a * b + c);

export class MT19937 {
  private readonly mt = new Uint32Array(624);
  private idx = 624;

  constructor(seed: number | bigint) {
    const s = Number(BigInt.asUintN(32, BigInt(seed)));
    this.mt[0] = s;
    for (let j = 1; j < 624; j++) {
      const p = this.mt[j - 1]! ^ (this.mt[j - 1]! >>> 30);
      this.mt[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
  }

  nextU32(): number {
    if (this.idx >= 624) {
      const mt = this.mt;
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        let v = mt[(k + 397) % 624]! ^ (y >>> 1);
        if (y & 1) v ^= 0x9908b0df;
        mt[k] = v >>> 0;
      }
      this.idx = 0;
    }
    let y = this.mt[this.idx++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** at::uniform_real_distribution<float>(0, 1) */
  uniformF32(): number {
    return (this.nextU32() & 0xffffff) / 16777216;
  }
}

const fb = new Float32Array(1);
const ib = new Int32Array(fb.buffer);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1,
  -2.4999993993e-1, 3.3333331174e-1,
].map(f);
const LOG_Q1 = f(-2.1219444e-4);
const LOG_Q2 = f(0.693359375);
const SQRTHF = f(0.707106781186547524);

/** avx_mathfun log256_ps, one lane, float32 with FMA contraction */
function logAvx(x0: number): number {
  if (!(x0 > 0)) return NaN;
  fb[0] = Math.max(x0, 1.17549435e-38);
  const imm0 = ib[0]! >>> 23;
  ib[0] = (ib[0]! & ~0x7f800000) | 0x3f000000;
  let x = fb[0]!;
  let e = f(imm0 - 0x7f + 1);
  const mask = x < SQRTHF;
  const tmp = mask ? x : 0;
  x = f(x - 1);
  if (mask) e = f(e - 1);
  x = f(x + tmp);
  const z = f(x * x);
  let y = LOG_P[0]!;
  for (let k = 1; k < 9; k++) y = fma(y, x, LOG_P[k]!);
  y = f(y * x);
  y = fma(y, z, f(e * LOG_Q1));
  y = fma(z, -0.5, y);
  x = f(x + y);
  return fma(e, LOG_Q2, x);
}

const FOPI = f(1.27323954473516);
const DP1 = f(-0.78515625);
const DP2 = f(-2.4187564849853515625e-4);
const DP3 = f(-3.77489497744594108e-8);
const COS_P = [f(2.443315711809948e-5), f(-1.388731625493765e-3), f(4.166664568298827e-2)];
const SIN_P = [f(-1.9515295891e-4), f(8.3321608736e-3), f(-1.6666654611e-1)];

/** avx_mathfun sincos256_ps, one lane, float32 with FMA contraction -> [sin, cos] */
function sincosAvx(x0: number): [number, number] {
  const neg = x0 < 0;
  let x = Math.abs(x0);
  let j = Math.trunc(f(x * FOPI));
  j = (j + 1) & ~1;
  const y = j;
  const swapSin = (j & 4) !== 0;
  const polyMask = (j & 2) === 0;
  x = fma(y, DP1, x);
  x = fma(y, DP2, x);
  x = fma(y, DP3, x);
  const signCos = (~(j - 2) & 4) !== 0;
  const z = f(x * x);
  let yc = COS_P[0]!;
  yc = fma(yc, z, COS_P[1]!);
  yc = fma(yc, z, COS_P[2]!);
  yc = f(yc * z);
  yc = fma(yc, z, -f(z * 0.5));
  yc = f(yc + 1);
  let ys = SIN_P[0]!;
  ys = fma(ys, z, SIN_P[1]!);
  ys = fma(ys, z, SIN_P[2]!);
  ys = f(ys * z);
  ys = fma(ys, x, x);
  let s = polyMask ? ys : yc;
  let c = polyMask ? yc : ys;
  if (neg !== swapSin) s = -s;
  if (signCos) c = -c;
  return [s, c];
}

const TWO_PI = f(2 * Math.PI);

function normalFill16(d: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - d[o + j]!);
    const u2 = d[o + j + 8]!;
    const r = f(Math.sqrt(f(-2 * logAvx(u1))));
    const [s, c] = sincosAvx(f(TWO_PI * u2));
    d[o + j] = f(r * c);
    d[o + j + 8] = f(r * s);
  }
}

/** torch.randn(n) (float32, CPU generator manual_seed(seed)); n must be >= 16 */
export function torchRandn(n: number, seed: number | bigint): Float32Array {
  return torchRandnFrom(new MT19937(seed), n);
}

/** torch.randn(n) drawn from a generator that earlier draws have advanced (a pipeline's one generator); n >= 16 */
export function torchRandnFrom(g: MT19937, n: number): Float32Array {
  if (!Number.isInteger(n) || n < 16) throw new Error(`torchRandn: needs at least 16 values, got ${n}`);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = g.uniformF32();
  for (let i = 0; i + 16 <= n; i += 16) normalFill16(d, i);
  if (n % 16 !== 0) {
    const o = n - 16;
    for (let i = 0; i < 16; i++) d[o + i] = g.uniformF32();
    normalFill16(d, o);
  }
  return d;
}
