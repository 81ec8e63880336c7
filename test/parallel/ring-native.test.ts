// Native ring attention (runtime/parallel/ring.ts ringAttentionNative: attention_lse per ring step + attn_merge
// into o in place) and native USP vs the float64 host oracle (ringAttention / uspAttention without kernels),
// on shm coroutines. Odd head dims and sequence lengths, strided q/k/v/o rows (as the arena views are),
// uneven ring sizes. Tolerance 1e-5 relative L2: float32 attention + float32 merges vs float64 (observed ~1e-7).
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { randomWeights } from '../helpers/random.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { Rng, attentionRef, concatSeq, randn, relL2, sliceSeq } from '../../runtime/parallel/attention-ref.ts';
import { nativeFp8Kernels } from '../../runtime/parallel/fp8-native.ts';
import { checkRingKernels, ringAttention, ringAttentionNative, uspAttention } from '../../runtime/parallel/ring.ts';
import { inputsFor, runOneRank, runRanks, tinyFluxWeights } from './helpers.ts';

/** `[rows, C]` -> rows at `stride` (padding floats set to a sentinel that must survive) */
function strided(x: Float32Array, rows: number, C: number, stride: number): Float32Array {
  const out = new Float32Array(rows * stride).fill(-777);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * C, (r + 1) * C), r * stride);
  return out;
}

/**
 * Float64 oracle of masked attention over the full sequence: per batch item, unmasked attention over its
 * kept keys only (dropped keys have probability exactly 0; no kept key: o = 0, as the kernels give).
 */
function maskedAttentionRef(q: Float32Array, k: Float32Array, v: Float32Array, mask: Float32Array, B: number, S: number, H: number, D: number, scale: number): Float32Array {
  const C = H * D;
  const out = new Float32Array(B * S * C);
  for (let b = 0; b < B; b++) {
    const kept = Array.from({ length: S }, (_, j) => j).filter((j) => mask[b * S + j]! > 0.5);
    const pick = (x: Float32Array) => {
      const y = new Float32Array(kept.length * C);
      kept.forEach((j, n) => y.set(x.subarray((b * S + j) * C, (b * S + j + 1) * C), n * C));
      return y;
    };
    out.set(attentionRef(q.subarray(b * S * C, (b + 1) * S * C), pick(k), pick(v), 1, S, kept.length, H, D, scale).o, b * S * C);
  }
  return out;
}

describe.skipIf(!nativeAvailable())('native ring attention vs the float64 host oracle', () => {
  it('the addon has the ring kernels', () => {
    expect(() => checkRingKernels(native)).not.toThrow();
    expect(() => checkRingKernels({ kernels: () => ['attention'], runKernel: () => undefined })).toThrow(/attention_lse, attn_merge, copy3d.*npm run build:native/);
  });

  for (const [W, B, H, D, sizes] of [
    [1, 2, 2, 8, [5]],
    [2, 1, 3, 16, [9, 9]],
    [3, 2, 2, 5, [7, 4, 6]],
    [4, 1, 2, 24, [5, 5, 5, 5]],
  ] as const) {
    it(`ring of ${W}: B ${B}, H ${H}, D ${D}, S_local [${sizes.join(', ')}], strided views`, async () => {
      const rng = new Rng(W * 100 + D);
      const S = sizes.reduce((a, b) => a + b, 0), C = H * D;
      const q = randn(rng, B * S * C), k = randn(rng, B * S * C), v = randn(rng, B * S * C);
      const starts = sizes.map((_, r) => sizes.slice(0, r).reduce((a, b) => a + b, 0));
      const res = await runShm(W, async (comm) => {
        const r = comm.rank, n = sizes[r]!;
        const [ql, kl, vl] = [q, k, v].map((x) => sliceSeq(x, B, S, C, starts[r]!, n)) as [Float32Array, Float32Array, Float32Array];
        const want = await ringAttention(comm, ql, kl, vl, { B, sLocal: n, H, D, scale: 0.2 }, { sizes: [...sizes] });
        const rows = B * n, qs = C + 3, ks = 3 * C + 1, vs = C + 2, os = C + 5;
        const o = new Float32Array(rows * os).fill(-777);
        await ringAttentionNative(comm, native, { data: strided(ql, rows, C, qs), stride: qs }, { data: strided(kl, rows, C, ks), stride: ks }, { data: strided(vl, rows, C, vs), stride: vs }, { data: o, stride: os }, { B, sLocal: n, H, D, scale: 0.2 }, [...sizes]);
        const compact = new Float32Array(rows * C);
        for (let i = 0; i < rows; i++) {
          compact.set(o.subarray(i * os, i * os + C), i * C);
          for (let c = C; c < os; c++) expect(o[i * os + c]).toBe(-777); // padding between rows untouched
        }
        return { got: compact, want: want.o };
      });
      const got = concatSeq(res.map((x) => x.got), B, C), want = concatSeq(res.map((x) => x.want), B, C);
      expect(relL2(got, want)).toBeLessThan(1e-5);
    });
  }

  it('USP ulysses 2 x ring 2 (5 heads: padding head on the last ulysses rank) matches the host USP', async () => {
    const W = 4, B = 1, H = 5, D = 12, sLocal = 6, S = W * sLocal, C = H * D;
    const rng = new Rng(77);
    const q = randn(rng, B * S * C), k = randn(rng, B * S * C), v = randn(rng, B * S * C);
    const res = await runShm(W, async (comm) => {
      const [ql, kl, vl] = [q, k, v].map((x) => sliceSeq(x, B, S, C, comm.rank * sLocal, sLocal)) as [Float32Array, Float32Array, Float32Array];
      const dims = { B, sLocal, H, D };
      const want = await uspAttention(comm, ql, kl, vl, dims, { ulysses: 2, ring: 2 });
      const got = await uspAttention(comm, ql, kl, vl, dims, { ulysses: 2, ring: 2, kernels: native });
      return { got, want };
    });
    for (const r of res) expect(relL2(r.got, r.want)).toBeLessThan(1e-5);
  });

  it('USP FP8 (ulysses 2 x ring 2): the native fp8_* kernels give the host FP8 bits, and are the ones used', async () => {
    const W = 4, B = 2, H = 5, D = 12, sLocal = 6, S = W * sLocal, C = H * D;
    const rng = new Rng(78);
    const q = randn(rng, B * S * C), k = randn(rng, B * S * C), v = randn(rng, B * S * C);
    const fp8Calls = new Map<string, number>();
    const counting = {
      kernels: () => native.kernels(),
      runKernel: (n: string, t: (Float32Array | null)[], i: number[], f: number[]) => {
        if (n.startsWith('fp8_')) fp8Calls.set(n, (fp8Calls.get(n) ?? 0) + 1);
        native.runKernel(n, t, i, f);
      },
    };
    const fp8Kernels = nativeFp8Kernels(counting)!;
    expect(fp8Kernels).not.toBeNull();
    const res = await runShm(W, async (comm) => {
      const [ql, kl, vl] = [q, k, v].map((x) => sliceSeq(x, B, S, C, comm.rank * sLocal, sLocal)) as [Float32Array, Float32Array, Float32Array];
      const dims = { B, sLocal, H, D };
      const opts = { ulysses: 2, ring: 2, float8: true, kernels: native };
      const host = await uspAttention(comm, ql, kl, vl, dims, opts);
      const nat = await uspAttention(comm, ql, kl, vl, dims, { ...opts, fp8Kernels });
      const exact = await uspAttention(comm, ql, kl, vl, dims, { ulysses: 2, ring: 2, kernels: native });
      return { host, nat, exact };
    });
    for (const r of res) {
      expect(Buffer.from(r.nat.buffer).equals(Buffer.from(r.host.buffer))).toBe(true);
      expect(relL2(r.nat, r.exact)).toBeLessThan(5e-2); // FP8 Q, V, O vs float32
    }
    // per rank: Q and V quantised + dequantised, O quantised + dequantised
    expect(Object.fromEntries(fp8Calls)).toEqual({ fp8_qkv_permute_quant: 2 * W, fp8_qkv_permute_dequant: 2 * W, fp8_per_token_quant: W, fp8_per_token_dequant: W });
  });

  it('executor comm.usp_attention with ulysses_float8 (tiny-flux, 2 x 2): native FP8 == host FP8 bits, close to 1 rank', async () => {
    const T = 'transformer';
    const ref = compilePlan('tiny-flux', { component: T });
    const w = await tinyFluxWeights();
    const inputs = inputsFor(ref, 8);
    const want = runOneRank(ref, w, inputs);
    const plans = compileParallelPlans('tiny-flux', { component: T, parallel: { ulysses_size: 2, ring_size: 2, ulysses_float8: true } });
    const nat = await runRanks(plans, w, inputs);
    const host = await runRanks(plans, w, inputs, { fp8: 'host' });
    for (let r = 0; r < plans.length; r++) expect(Buffer.from(nat[r]!.out.buffer).equals(Buffer.from(host[r]!.out.buffer))).toBe(true);
    for (const o of nat) expect(relL2(o.out, want)).toBeLessThan(5e-2); // the FP8 tolerance of ulysses-lowering.test.ts
  });

  it('Executor.runKernel (on the rank executor threads): same bits as runKernel, same validation, refused while run() is in flight', async () => {
    const plan = compilePlan('tiny-flux', { component: 'transformer' });
    const ex = new native.Executor(JSON.stringify(plan), { threads: 2 });
    const rng = new Rng(5);
    const B = 1, S = 37, H = 3, D = 24, HD = H * D;
    const q = randn(rng, B * S * HD), k = randn(rng, B * S * HD), v = randn(rng, B * S * HD);
    const run = (f: (n: string, t: (Float32Array | null)[], i: number[], fl: number[]) => void) => {
      const o = new Float32Array(B * S * HD), l = new Float32Array(B * S * H);
      f('attention_lse', [q, k, v, null, o, l], [B, S, S, H, D, HD, HD, HD, HD], [0.3]);
      return [o, l];
    };
    const [o1, l1] = run((n, t, i, f) => ex.runKernel!(n, t, i, f));
    const [o2, l2] = run((n, t, i, f) => native.runKernel(n, t, i, f));
    expect(o1).toEqual(o2);
    expect(l1).toEqual(l2);
    expect(() => ex.runKernel!('attn_merge', [q, l1, q, l1, q, new Float32Array(3)], [B, S, H, D, HD, HD, HD], [])).toThrow(/runKernel\(attn_merge\): tensor t\[5\] \(yLse\) holds 3 floats, needs 111/);
    for (const [name, data] of randomWeights(plan, 3)) ex.bindWeight(name, data);
    for (const io of plan.inputs) ex.setInput(io.name, new Float32Array(io.shape.reduce((a, b) => a * b, 1)).fill(0.5));
    const p = ex.run('blocks');
    expect(() => ex.runKernel!('attention_lse', [q, k, v, null, o1, l1], [B, S, S, H, D, HD, HD, HD, HD], [0.3])).toThrow(/runKernel: .* is running a segment/);
    await p;
  });

  // key mask: batch 0 drops every key of rank 1 (that rank's own first block and a visiting block of the
  // others give LSE -inf), batch 1 drops scattered keys, batch 2 drops all keys (o = 0 everywhere)
  for (const [W, B, H, D, sizes] of [
    [2, 3, 3, 16, [9, 9]],
    [3, 3, 2, 5, [7, 4, 6]],
  ] as const) {
    it(`ring of ${W} with a key mask (whole blocks dropped: LSE -inf merges): S_local [${sizes.join(', ')}]`, async () => {
      const rng = new Rng(W * 31 + D);
      const S = sizes.reduce((a, b) => a + b, 0), C = H * D;
      const q = randn(rng, B * S * C), k = randn(rng, B * S * C), v = randn(rng, B * S * C);
      const starts = sizes.map((_, r) => sizes.slice(0, r).reduce((a, b) => a + b, 0));
      const mask = new Float32Array(B * S).fill(1);
      for (let j = starts[1]!; j < starts[1]! + sizes[1]!; j++) mask[j] = 0;
      for (let j = 0; j < S; j += 3) mask[S + j] = 0;
      mask.fill(0, 2 * S);
      const res = await runShm(W, async (comm) => {
        const r = comm.rank, n = sizes[r]!;
        const [ql, kl, vl] = [q, k, v].map((x) => sliceSeq(x, B, S, C, starts[r]!, n)) as [Float32Array, Float32Array, Float32Array];
        const rows = B * n, qs = C + 3, ks = 2 * C + 1, vs = C, os = C + 5;
        const o = new Float32Array(rows * os).fill(-777);
        const ml = sliceSeq(mask, B, S, 1, starts[r]!, n);
        await ringAttentionNative(comm, native, { data: strided(ql, rows, C, qs), stride: qs }, { data: strided(kl, rows, C, ks), stride: ks }, { data: vl, stride: vs }, { data: o, stride: os }, { B, sLocal: n, H, D, scale: 0.3 }, [...sizes], ml);
        const compact = new Float32Array(rows * C);
        for (let i = 0; i < rows; i++) compact.set(o.subarray(i * os, i * os + C), i * C);
        return compact;
      });
      const got = concatSeq(res, B, C);
      const want = maskedAttentionRef(q, k, v, mask, B, S, H, D, 0.3);
      expect(got.every(Number.isFinite)).toBe(true);
      expect(got.subarray(2 * S * C).every((x) => x === 0)).toBe(true);
      const e = relL2(got, want);
      console.log(`native ring of ${W} with a key mask: relL2 ${e.toExponential(2)} vs float64`);
      expect(e).toBeLessThan(1e-5);
      // the mask matters: the unmasked ring is far off
      expect(relL2(got.subarray(0, 2 * S * C), maskedAttentionRef(q, k, v, new Float32Array(B * S).fill(1), B, S, H, D, 0.3).subarray(0, 2 * S * C))).toBeGreaterThan(1e-2);
    });
  }

  it('USP ulysses 2 x ring 2 with a key mask (5 heads): the ring member masks its ulysses-gathered sequence', async () => {
    const W = 4, B = 2, H = 5, D = 12, sLocal = 5, S = W * sLocal, C = H * D;
    const rng = new Rng(78);
    const q = randn(rng, B * S * C), k = randn(rng, B * S * C), v = randn(rng, B * S * C);
    const mask = new Float32Array(B * S).fill(1);
    mask.fill(0, 2 * sLocal, 4 * sLocal); // batch 0: the second ring member's whole gathered block (ranks 2, 3)
    for (let j = 1; j < S; j += 4) mask[S + j] = 0;
    const res = await runShm(W, async (comm) => {
      const [ql, kl, vl, ml] = [q, k, v, mask].map((x, i) => sliceSeq(x, B, S, i === 3 ? 1 : C, comm.rank * sLocal, sLocal)) as [Float32Array, Float32Array, Float32Array, Float32Array];
      const dims = { B, sLocal, H, D };
      const host = uspAttention(comm, ql, kl, vl, dims, { ulysses: 2, ring: 2, mask: ml });
      await expect(host).rejects.toThrow(/USP: a key mask needs the native ring/);
      return uspAttention(comm, ql, kl, vl, dims, { ulysses: 2, ring: 2, kernels: native, mask: ml });
    });
    const e = relL2(concatSeq(res, B, C), maskedAttentionRef(q, k, v, mask, B, S, H, D, 1 / Math.sqrt(D)));
    console.log(`native USP 2x2 with a key mask: relL2 ${e.toExponential(2)} vs float64`);
    expect(e).toBeLessThan(1e-5);
  });

  it('a key mask of the wrong size is a clear error', async () => {
    await expect(
      runShm(2, async (comm) => {
        const x = new Float32Array(4 * 8);
        await ringAttentionNative(comm, native, { data: x, stride: 8 }, { data: x, stride: 8 }, { data: x, stride: 8 }, { data: x, stride: 8 }, { B: 1, sLocal: 4, H: 1, D: 8 }, [4, 4], new Float32Array(3));
      }),
    ).rejects.toThrow(/ring attention: the key mask holds 3 floats, rank . needs \[B 1, S_local 4\] = 4/);
  });

  it('sizes that do not fit the rank are a clear error', async () => {
    await expect(
      runShm(2, async (comm) => {
        const x = new Float32Array(4 * 8);
        await ringAttentionNative(comm, native, { data: x, stride: 8 }, { data: x, stride: 8 }, { data: x, stride: 8 }, { data: x, stride: 8 }, { B: 1, sLocal: 4, H: 1, D: 8 }, [4]);
      }),
    ).rejects.toThrow(/sizes \[4\] do not fit rank . of 2 with 4 local tokens/);
  });
});
