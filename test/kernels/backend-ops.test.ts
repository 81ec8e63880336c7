// One test over every kernel on every backend present (after ggml's test-backend-ops: a case per op,
// eval(cpu, other backend)). Each case sizes its buffers from the kernel's own argument signature
// (kernelNeeds), fills them with seeded random data (valid ids, masks and packed payloads where a kernel
// reads them as such), puts guard floats after every buffer, and runs:
//   - on the CPU: the guards stay untouched, every output is finite, a second run is bit-identical;
//   - on every other backend (CUDA where a device is present): every buffer equals the CPU's within the
//     case's tolerance (relative L2; 1e-5 for float32 kernels: only the reduction order differs);
//     without one, one line per backend says why it was skipped.
// The float64 references of each family are in its own test (attention.test.ts, conv.test.ts, ...); this
// one proves the backends agree and that every registered kernel has a case.
import { describe, expect, it } from 'vitest';
import { relL2 } from '../../runtime/metrics.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { randn } from './harness.ts';

const GUARD = 16;
const SENTINEL = Math.fround(-12345.678);

interface OpCase {
  name: string;
  /** which tensor slots are given (null slots stay absent) */
  present: boolean[];
  i: number[];
  f?: number[];
  /** slot -> contents of `n` floats (default: seeded normal values) */
  init?: Record<number, (n: number, seed: number) => Float32Array>;
  /** relative L2 allowed between backends (default 1e-5) */
  tol?: number;
  label?: string;
}

const ints = (hi: number) => (n: number, seed: number) => Float32Array.from(randn(n, seed), (v) => Math.min(hi - 1, Math.floor(Math.abs(v) * hi * 0.4)));
/** 0/1 rows of `cols` with at least the first key kept */
const mask01 = (cols: number) => (n: number, seed: number) => Float32Array.from(randn(n, seed), (v, k) => (k % cols === 0 || v > -0.3 ? 1 : 0));
const f64 = (n: number, seed: number) => new Float32Array(Float64Array.from(randn(n / 2, seed), (v) => v * 0.5).buffer);
/** an fp8 payload made by the matching quantizer from random floats */
const packed = (quant: string, srcLen: number, ints: number[]) => (n: number, seed: number) => {
  const out = new Float32Array(n);
  native.runKernel(quant, [randn(srcLen, seed), out], ints, []);
  return out;
};

const [B, Sq, Sk, H, D] = [2, 5, 7, 3, 8];
const HD = H * D;
const CASES: OpCase[] = [
  { name: 'attention', present: [true, true, true, true, true], i: [B, Sq, Sk, H, D, HD, HD, HD, HD], f: [0.35], init: { 3: mask01(Sk) } },
  { name: 'attention_lse', present: [true, true, true, false, true, true], i: [B, Sq, Sk, H, D, HD, HD, HD, HD], f: [0.35] },
  { name: 'attn_merge', present: [true, true, true, true, true, true], i: [B, Sq, H, D, HD, HD, HD] },
  { name: 'attention_bias', present: [true, true, true, true, true, true], i: [B, Sq, Sk, H, D, HD, HD, HD, HD, 0], f: [1], init: { 4: mask01(Sk) } },
  { name: 'attention_bias', label: 'causal', present: [true, true, true, false, false, true], i: [B, Sq, Sq, H, D, HD, HD, HD, HD, 1], f: [0.35] },
  { name: 'attention_bias', label: 'grouped-query (kvHeads 1 of 3)', present: [true, true, true, false, true, true], i: [B, Sq, Sk, H, D, HD, D, D, HD, 1, 1], f: [0.35], init: { 4: mask01(Sk) } },
  { name: 't5_position_bias', present: [true, true], i: [H, Sq, Sk, 32, 128, 1] },
  { name: 'cache_probe', present: [true, true, true, true, true], i: [37] },
  { name: 'residual_store', present: [true, true, true], i: [37] },
  { name: 'residual_apply', present: [true, true, true], i: [37] },
  { name: 'forecast', present: [true, true, true], i: [37, 2], f: [1, 0.5] },
  { name: 'taylor_diff', present: [true, true, true], i: [37], f: [0.5] },
  { name: 'foca_forecast', present: [true, true, true, true, true], i: [37, 1], f: [0.5] },
  { name: 'dmd_gram', present: [true, true, true], i: [36, 2, 2, 0], init: { 0: f64 } },
  { name: 'forecast_f64', present: [true, true, false, true, true], i: [36, 2, 2, 3], init: { 1: f64 } },
  { name: 'conv2d', present: [true, true, true, true], i: [2, 3, 7, 5, 4, 3, 3, 1, 1, 1] },
  // diffusers' Downsample2D: zeros after each axis only, stride 2
  { name: 'conv2d', present: [true, true, true, true], i: [1, 3, 8, 6, 5, 3, 3, 2, 0, 1] },
  { name: 'conv3d', present: [true, true, true, true], i: [2, 3, 5, 6, 4, 3, 3, 3, 1, 1] },
  { name: 'timestep_embedding', present: [true, true], i: [3, 32, 1], f: [1, 0, 10000], init: { 0: (n, s) => Float32Array.from(randn(n, s), (v) => 500 + 300 * v) } },
  { name: 'embedding', present: [true, true, true], i: [11, 16, 50], init: { 0: ints(50) } },
  { name: 'masked_mean', present: [true, true, true], i: [2, 7, 16], init: { 1: mask01(7) } },
  { name: 'fp8_qkv_permute_quant', present: [true, true], i: [2, 5, 3, 2, 8, 6, 48], tol: 1e-3 },
  { name: 'fp8_qkv_permute_dequant', present: [true, true], i: [5, 2, 2, 8], init: { 0: packed('fp8_qkv_permute_quant', 2 * 5 * 16, [2, 5, 1, 2, 8, 2, 16]) }, tol: 1e-3 },
  { name: 'fp8_per_token_quant', present: [true, true], i: [5, 32], tol: 1e-3 },
  { name: 'fp8_per_token_dequant', present: [true, true], i: [5, 32], init: { 0: packed('fp8_per_token_quant', 5 * 32, [5, 32]) }, tol: 1e-3 },
  { name: 'copy3d', present: [true, true], i: [2, 3, 5, 20, 6, 15, 5] },
  { name: 'transpose', present: [true, true], i: [2, 5, 7] },
  { name: 'upsample_nearest2x', present: [true, true], i: [6, 5, 7] },
  { name: 'linear', present: [true, true, true, true], i: [7, 9, 13, 0, 7, 0] },
  { name: 'linear', label: 'gelu, no bias', present: [true, true, false, true], i: [7, 9, 13, 1, 7, 0] },
  { name: 'linear', label: 'gated residual', present: [true, true, true, true, true, true], i: [7, 9, 13, 3, 4, 9] },
  { name: 'gate_residual', present: [true, true, true, true], i: [7, 16, 4, 96] },
  { name: 'layer_norm', present: [true, true, true, true], i: [7, 16], f: [1e-6] },
  { name: 'ln_modulate', present: [true, true, true, true], i: [7, 16, 4, 96, 96], f: [1e-6] },
  { name: 'rms_norm', present: [true, true, true], i: [7, 16], f: [1e-6] },
  { name: 'rms_sumsq', present: [true, true], i: [7, 16] },
  { name: 'rms_norm_apply', present: [true, true, true, true], i: [7, 16, 16], f: [1e-6], init: { 1: (n, s) => Float32Array.from(randn(n, s), (v) => 1 + Math.abs(v)) } },
  { name: 'group_norm', present: [true, true, true, true], i: [2, 8, 15, 4, 1], f: [1e-6] },
  { name: 'rope', present: [true, true, true, true], i: [B, Sq, H, D, HD, HD] },
  { name: 'rope', label: 'rotate-half', present: [true, true, true, true], i: [B, Sq, H, D, HD, HD, 1] },
  { name: 'qk_norm_rope', label: 'rotate-half', present: [true, true, true, true, true], i: [B, Sq, H, D, HD, HD, 1], f: [1e-6] },
  { name: 'qk_norm_rope', present: [true, true, true, true, true], i: [B, Sq, H, D, HD, HD], f: [1e-6] },
  { name: 'rope_table', present: [true, true, true], i: [5, 2, 6, 10, 0, 0], f: [10000], init: { 0: ints(40) } },
];

/** elementwise kernels (add, mul, silu, gelu_tanh, the fused ew_<hash> chains): the signature knows the arity */
function elementwiseCase(name: string): OpCase | null {
  for (let nt = 2; nt <= 8; nt++) {
    try {
      native.kernelNeeds(name, new Array<boolean>(nt).fill(true), [37], 8);
      return { name, present: new Array<boolean>(nt).fill(true), i: [37], f: [0.75, -1.25, 0.5, 2, -0.5, 1.5, 0.25, -2] };
    } catch {
      // not this arity
    }
  }
  return null;
}

function caseFor(name: string): OpCase[] {
  const listed = CASES.filter((c) => c.name === name);
  if (listed.length) return listed;
  const ew = elementwiseCase(name);
  return ew ? [ew] : [];
}

/** buffers sized from the signature, each followed by GUARD sentinel floats */
function buffers(c: OpCase, seed: number): { t: (Float32Array | null)[]; sizes: number[] } {
  const sizes = native.kernelNeeds(c.name, c.present, c.i, c.f?.length ?? 0);
  const t = c.present.map((p, k) => {
    if (!p) return null;
    const n = Math.max(1, sizes[k]!);
    const b = new Float32Array(n + GUARD).fill(SENTINEL);
    b.set((c.init?.[k] ?? ((m: number, s: number) => randn(m, s)))(n, seed + 17 * k).subarray(0, n));
    return b;
  });
  return { t, sizes };
}

const run = (c: OpCase, t: (Float32Array | null)[], device?: string): void => {
  // each slot sees exactly its signature's size; the guard floats stay outside the views
  const views = t.map((b) => (b ? b.subarray(0, b.length - GUARD) : null));
  if (device) native.runKernel(c.name, views, c.i, c.f ?? [], device);
  else native.runKernel(c.name, views, c.i, c.f ?? []);
};

/** the other backends of this build and machine, or why each is unavailable */
function otherBackends(): { device: string; skip: string | null }[] {
  if (native.cudaKernels().length === 0) return [{ device: 'cuda', skip: 'this build has no CUDA backend (nvcc was not found at build time)' }];
  try {
    native.runKernel('add', [new Float32Array(1), new Float32Array(1), new Float32Array(1)], [1], [], 'cuda');
    return [{ device: 'cuda', skip: null }];
  } catch (e) {
    return [{ device: 'cuda', skip: (e as Error).message }];
  }
}

describe.skipIf(!nativeAvailable())('every kernel on every backend', () => {
  const others = otherBackends();

  it('every registered kernel (CPU and CUDA tables) has a case', () => {
    const all = [...new Set([...native.kernels(), ...native.cudaKernels()])];
    expect(all.filter((k) => caseFor(k).length === 0)).toEqual([]);
  });

  for (const name of native.kernels()) {
    for (const c of caseFor(name)) {
      const label = `${name}${c.label ? ` (${c.label})` : ''}`;
      it(`${label}: cpu keeps its guards, is finite and deterministic`, () => {
        const { t } = buffers(c, 11);
        const again = t.map((b) => (b ? Float32Array.from(b) : null));
        run(c, t);
        run(c, again);
        t.forEach((b, k) => {
          if (!b) return;
          const n = b.length - GUARD;
          for (let g = n; g < b.length; g++) expect(b[g], `${label}: t[${k}] written past its ${n} floats`).toBe(SENTINEL);
          expect(Array.from(b), `${label}: t[${k}] differs between two runs`).toEqual(Array.from(again[k]!));
        });
      });
      for (const o of others) {
        it.skipIf(o.skip !== null)(`${label}: ${o.device} == cpu`, () => {
          const { t } = buffers(c, 23);
          const dev = t.map((b) => (b ? Float32Array.from(b) : null));
          run(c, t);
          run(c, dev, o.device);
          t.forEach((b, k) => {
            if (!b) return;
            const e = relL2(dev[k]!, b);
            expect(e, `${label}: t[${k}] on ${o.device}`).toBeLessThanOrEqual(c.tol ?? 1e-5);
          });
        });
      }
    }
  }
  for (const o of others) if (o.skip) console.log(`[backend-ops] ${o.device}: every case skipped: ${o.skip}`);
});
