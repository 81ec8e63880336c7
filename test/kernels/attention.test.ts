// `attention` / `attention_lse` vs the float64 reference in reference-gemm.ts, `attn_merge` vs reference.ts.
// Tolerance: elementwise, from the error model in attentionRef: the float32 scores carry
// |ds| <= gamma_D * scale * sum |q k|, softmax turns that into a relative error of at most ~2|ds| per
// probability, and P V / the final normalization add gamma_Sk * max|v|. Dropped keys must get probability
// exactly 0 and a fully masked row must be exactly 0 (tolerance 0 there). The LSE bound (lseTol) is derived
// in attentionRef; a row with no kept key must be exactly -inf.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NATIVE_ADDON_PATH, native } from '../../runtime/native.ts';
import { expectClose, randn, sentinel, uniform } from './harness.ts';
import { attnMerge } from './reference.ts';
import { U32, attentionRef, compactRows } from './reference-gemm.ts';

interface Case { B: number; Sq: number; Sk: number; H: number; D: number; mask?: 'none' | 'some' | 'row0-all'; fused?: boolean; seed?: number; qScale?: number; lse?: boolean }

/** exact -inf / +inf where the reference has them, else within the bound */
function expectLse(got: Float32Array, want: Float64Array, tol: Float64Array, label: string) {
  const finite = (a: ArrayLike<number>) => Array.from(a, (x) => (Number.isFinite(x) ? x : 0));
  for (let k = 0; k < want.length; k++) if (!Number.isFinite(want[k]!)) expect(got[k], `${label} lse[${k}]`).toBe(want[k]);
  expectClose(finite(got), finite(want), 0, 0, tol, `${label} lse`);
}

function runCase(c: Case) {
  const { B, Sq, Sk, H, D } = c;
  const HD = H * D, seed = c.seed ?? B * 31 + Sq * 7 + Sk * 3 + H * 11 + D;
  const scale = 1 / Math.sqrt(D);
  let q: Float32Array, k: Float32Array, v: Float32Array, qStride: number, kStride: number, vStride: number;
  let qArr: Float32Array, kArr: Float32Array, vArr: Float32Array;
  if (c.fused) {
    // one fused [B, S, 3*H*D (+pad)] qkv buffer, q/k/v as offset views with the same row stride
    if (Sq !== Sk) throw new Error('fused needs Sq == Sk');
    const st = 3 * HD + 3;
    const qkv = randn(B * Sq * st, seed, c.qScale ?? 1);
    qArr = qkv; kArr = qkv.subarray(HD); vArr = qkv.subarray(2 * HD);
    q = qkv; k = kArr; v = vArr;
    qStride = kStride = vStride = st;
  } else {
    qStride = HD + 2; kStride = HD + 5; vStride = HD + 1;
    q = qArr = randn(B * Sq * qStride, seed + 1, c.qScale ?? 1);
    k = kArr = randn(B * Sk * kStride, seed + 2);
    v = vArr = randn(B * Sk * vStride, seed + 3);
  }
  let keyMask: Float32Array | null = null;
  if (c.mask && c.mask !== 'none') {
    keyMask = new Float32Array(B * Sk);
    for (let b = 0; b < B; b++)
      for (let j = 0; j < Sk; j++) keyMask[b * Sk + j] = c.mask === 'row0-all' && b === 0 ? 0 : (j * 7 + b) % 3 === 0 ? 0 : 1;
    if (Sk > 1 && c.mask === 'some') keyMask[B * Sk - 1] = 0;
  }
  const oStride = HD + 3;
  const o = sentinel(B * Sq * oStride);
  const lse = sentinel(B * Sq * H);
  const ints = [B, Sq, Sk, H, D, qStride, kStride, vStride, oStride];
  if (c.lse) native.runKernel('attention_lse', [q, k, v, keyMask, o, lse], ints, [scale]);
  else native.runKernel('attention', [q, k, v, keyMask, o], ints, [scale]);
  const want = attentionRef({ q: qArr, k: kArr, v: vArr, keyMask, B, Sq, Sk, H, D, qStride, kStride, vStride, scale });
  const got = compactRows(o, B * Sq, HD, oStride);
  expectClose(got, want.o, 0, 0, want.tol, `attention ${JSON.stringify(c)}`);
  if (c.lse) expectLse(lse, want.lse, want.lseTol, JSON.stringify(c));
  // row padding between heads' rows is never written
  for (let r = 0; r < B * Sq; r++) for (let cc = HD; cc < oStride; cc++) expect(o[r * oStride + cc]).toBe(Math.fround(-12345.678));
  return { got, want };
}

describe('attention', () => {
  for (const D of [16, 24, 32, 64, 128, 5]) {
    it(`D=${D}: odd Sq/Sk, separate strided q/k/v`, () => {
      for (const [Sq, Sk] of [[1, 1], [7, 13], [37, 65], [97, 130]] as const) runCase({ B: 2, Sq, Sk, H: 3, D });
    });
  }
  it('q/k/v as strided views of one fused qkv buffer', () => {
    runCase({ B: 2, Sq: 77, Sk: 77, H: 4, D: 32, fused: true });
    runCase({ B: 1, Sq: 129, Sk: 129, H: 2, D: 24, fused: true });
  });
  it('masked keys get probability 0', () => {
    runCase({ B: 2, Sq: 19, Sk: 70, H: 2, D: 16, mask: 'some' });
    runCase({ B: 3, Sq: 5, Sk: 200, H: 1, D: 64, mask: 'some' });
    // a dropped key with a huge value must not leak: its v is set to 1e30
    const B = 1, Sq = 3, Sk = 9, H = 1, D = 16;
    const q = randn(Sq * D, 5), k = randn(Sk * D, 6), v = randn(Sk * D, 7), mask = new Float32Array(Sk).fill(1);
    mask[4] = 0;
    v.fill(1e30, 4 * D, 5 * D);
    const o = sentinel(Sq * D);
    native.runKernel('attention', [q, k, v, mask, o], [B, Sq, Sk, H, D, D, D, D, D], [0.25]);
    const want = attentionRef({ q, k, v, keyMask: mask, B, Sq, Sk, H, D, qStride: D, kStride: D, vStride: D, scale: 0.25 });
    expectClose(o, want.o, 0, 0, want.tol, 'leak');
  });
  it('a fully masked batch row gives exactly 0', () => {
    const { got } = runCase({ B: 2, Sq: 6, Sk: 33, H: 2, D: 24, mask: 'row0-all' });
    for (let kk = 0; kk < 6 * 48; kk++) expect(got[kk]).toBe(0);
  });
  it('large logits (scale x 8) stay finite and accurate', () => {
    runCase({ B: 1, Sq: 40, Sk: 90, H: 2, D: 64, qScale: 8 });
  });
  it('DiT-like 1 x 256 x 256, H=4, D=64', () => {
    runCase({ B: 1, Sq: 256, Sk: 256, H: 4, D: 64, fused: true });
  });
});

describe('attention_lse (ring attention blocks)', () => {
  it('o as attention, lse = log-sum-exp per (b, s, h) at odd sizes and several D', () => {
    for (const D of [5, 16, 64, 72]) for (const [Sq, Sk] of [[1, 1], [7, 13], [37, 65], [97, 130]] as const) runCase({ B: 2, Sq, Sk, H: 3, D, lse: true });
  });
  it('fused qkv views, large logits, masks; a fully masked row gives lse = -inf exactly', () => {
    runCase({ B: 1, Sq: 129, Sk: 129, H: 2, D: 24, fused: true, lse: true });
    runCase({ B: 1, Sq: 40, Sk: 90, H: 2, D: 64, qScale: 8, lse: true });
    runCase({ B: 2, Sq: 19, Sk: 70, H: 2, D: 16, mask: 'some', lse: true });
    runCase({ B: 2, Sq: 6, Sk: 33, H: 2, D: 24, mask: 'row0-all', lse: true });
  });
  it('Sk = 0 gives o = 0 and lse = -inf', () => {
    const B = 2, Sq = 3, H = 2, D = 5;
    const q = randn(B * Sq * H * D, 3), o = sentinel(B * Sq * H * D), lse = sentinel(B * Sq * H);
    native.runKernel('attention_lse', [q, new Float32Array(1), new Float32Array(1), null, o, lse], [B, Sq, 0, H, D, H * D, H * D, H * D, H * D], [0.5]);
    expect(Array.from(o).every((x) => x === 0)).toBe(true);
    expect(Array.from(lse).every((x) => x === -Infinity)).toBe(true);
  });
  it('rejects a missing or short lse tensor with a clear error', () => {
    const q = randn(2 * 4 * 8, 1), o = new Float32Array(2 * 4 * 8);
    expect(() => native.runKernel('attention_lse', [q, q, q, null, o, null], [2, 4, 4, 1, 8, 8, 8, 8, 8], [1])).toThrow(/lse.*required/);
    expect(() => native.runKernel('attention_lse', [q, q, q, null, o, new Float32Array(7)], [2, 4, 4, 1, 8, 8, 8, 8, 8], [1])).toThrow(/lse.*holds 7 floats, needs 8/);
  });
});

interface MergeCase { B: number; S: number; H: number; D: number; seed: number; lseLo: number; lseHi: number; alias?: 'prev' | 'suffix' }

function mergeCase(c: MergeCase, edit?: (pl: Float32Array, sl: Float32Array) => void) {
  const { B, S, H, D, seed } = c;
  const rows = B * S, HD = H * D, ps = HD + 3, ss = HD + 1, ys = c.alias === 'prev' ? ps : c.alias === 'suffix' ? ss : HD + 2;
  const po = randn(rows * ps, seed), so = randn(rows * ss, seed + 1, 0.7, 0.3);
  const pl = uniform(rows * H, seed + 2, c.lseLo, c.lseHi), sl = uniform(rows * H, seed + 3, c.lseLo, c.lseHi);
  edit?.(pl, sl);
  const want = attnMerge(po, pl, so, sl, rows, H, D, ps, ss);
  // Tolerance (float32 kernel vs float64): w = sigmoid(s - p) carries ~4 u relative error plus u |p - s| from
  // rounding p - s (|dw| <= w (1 - w) |d(p - s)|), so y = a - w (a - b) is off by at most
  // (4 u + u |p - s|) |a - b| + 4 u (|a| + |a - b|); yLse = p - logsigmoid(p - s) by 4 u (|p| + |p - s| + |yLse| + 1).
  const tol = new Float64Array(rows * HD), lseTol = new Float64Array(rows * H);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < H; h++) {
      const x = Number.isFinite(pl[r * H + h]! - sl[r * H + h]!) ? Math.abs(pl[r * H + h]! - sl[r * H + h]!) : 0;
      lseTol[r * H + h] = 4 * U32 * (Math.abs(Number.isFinite(pl[r * H + h]!) ? pl[r * H + h]! : 0) + x + (Number.isFinite(want.yLse[r * H + h]!) ? Math.abs(want.yLse[r * H + h]!) : 0) + 1);
      for (let d = 0; d < D; d++) {
        const a = po[r * ps + h * D + d]!, b = so[r * ss + h * D + d]!;
        tol[(r * H + h) * D + d] = (4 * U32 + U32 * x) * Math.abs(a - b) + 4 * U32 * (Math.abs(a) + Math.abs(a - b));
      }
    }
  const yo = c.alias === 'prev' ? po : c.alias === 'suffix' ? so : sentinel(rows * ys);
  const yl = c.alias === 'prev' ? pl : c.alias === 'suffix' ? sl : sentinel(rows * H);
  const untouched = Float32Array.from(yo);
  native.runKernel('attn_merge', [po, pl, so, sl, yo, yl], [B, S, H, D, ps, ss, ys], []);
  expectClose(compactRows(yo, rows, HD, ys), want.y, 0, 0, tol, `attn_merge ${JSON.stringify(c)}`);
  expectLse(yl, want.yLse, lseTol, `attn_merge ${JSON.stringify(c)}`);
  // the floats between rows are never written
  for (let r = 0; r < rows; r++) for (let k = HD; k < ys; k++) expect(yo[r * ys + k]).toBe(untouched[r * ys + k]);
  return { yo, yl, want };
}

describe('attn_merge (Cache-DiT fused_merge_attn_states)', () => {
  it('random states at odd sizes, LSE gaps small and large', () => {
    mergeCase({ B: 2, S: 7, H: 3, D: 5, seed: 1, lseLo: -3, lseHi: 9 });
    mergeCase({ B: 1, S: 33, H: 5, D: 64, seed: 2, lseLo: 2, lseHi: 7 });
    mergeCase({ B: 3, S: 11, H: 2, D: 17, seed: 3, lseLo: -60, lseHi: 60 });
  });
  it('in place: yOut/yLse aliasing the running state (the ring executor) or the suffix', () => {
    mergeCase({ B: 2, S: 13, H: 3, D: 24, seed: 4, lseLo: 0, lseHi: 8, alias: 'prev' });
    mergeCase({ B: 1, S: 9, H: 4, D: 7, seed: 5, lseLo: 0, lseHi: 8, alias: 'suffix' });
  });
  it('LSE gap beyond float32 exp range: stable logsigmoid (Triton log(sigmoid) would give +inf)', () => {
    const { yl, want } = mergeCase({ B: 1, S: 5, H: 2, D: 8, seed: 6, lseLo: 0, lseHi: 1 }, (pl, sl) => {
      for (let k = 0; k < pl.length; k++) (k % 2 ? pl : sl)[k] += 150; // suffix / prev dominating by 150 nats
    });
    for (let k = 0; k < yl.length; k++) expect(Number.isFinite(yl[k]!) && Math.abs(yl[k]! - want.yLse[k]!) < 1e-4 * Math.abs(want.yLse[k]!)).toBe(true);
  });
  it('QUIRK: +inf LSE is treated as -inf; a -inf side contributes nothing (never NaN)', () => {
    const inf = Infinity;
    // per (row, head) of 1 x 6 x 1: [prevLse, lse] pairs
    const pairs = [[inf, 2], [2, inf], [-inf, 3], [3, -inf], [inf, inf], [-inf, inf]] as const;
    const { yo, yl } = mergeCase({ B: 1, S: 6, H: 1, D: 9, seed: 7, lseLo: 0, lseHi: 1 }, (pl, sl) => pairs.forEach(([p, s], k) => { pl[k] = p; sl[k] = s; }));
    expect(Array.from(yl)).toEqual([2, 2, 3, 3, -inf, -inf]);
    for (const x of yo) expect(Number.isNaN(x)).toBe(false);
  });
  it('ring identity: attention_lse over key blocks merged in ring order = attention over all keys', () => {
    for (const [B, Sq, H, D, blocks] of [[1, 29, 3, 16, [13, 8, 20]], [2, 17, 2, 5, [7, 7]], [1, 40, 2, 64, [31, 1, 17, 9]]] as const) {
      const Sk = blocks.reduce((a, b) => a + b, 0), HD = H * D;
      const q = randn(B * Sq * HD, Sk), k = randn(B * Sk * HD, Sk + 1), v = randn(B * Sk * HD, Sk + 2);
      const o = new Float32Array(B * Sq * HD), lse = new Float32Array(B * Sq * H);
      const ob = new Float32Array(B * Sq * HD), lb = new Float32Array(B * Sq * H);
      let start = 0, worstLseTol = 0, worstTol = new Float64Array(B * Sq * HD);
      blocks.forEach((n, bi) => {
        // keys/values [start, start + n) of every batch row, as a compact [B, n, HD] block
        const kb = new Float32Array(B * n * HD), vb = new Float32Array(B * n * HD);
        for (let b = 0; b < B; b++) {
          kb.set(k.subarray((b * Sk + start) * HD, (b * Sk + start + n) * HD), b * n * HD);
          vb.set(v.subarray((b * Sk + start) * HD, (b * Sk + start + n) * HD), b * n * HD);
        }
        const ints = [B, Sq, n, H, D, HD, HD, HD, HD];
        if (bi === 0) native.runKernel('attention_lse', [q, kb, vb, null, o, lse], ints, [0.3]);
        else {
          native.runKernel('attention_lse', [q, kb, vb, null, ob, lb], ints, [0.3]);
          native.runKernel('attn_merge', [o, lse, ob, lb, o, lse], [B, Sq, H, D, HD, HD, HD], []);
        }
        const r = attentionRef({ q, k: kb, v: vb, keyMask: null, B, Sq, Sk: n, H, D, qStride: HD, kStride: HD, vStride: HD, scale: 0.3 });
        worstLseTol = Math.max(worstLseTol, ...r.lseTol);
        worstTol = worstTol.map((t, i) => Math.max(t, r.tol[i]!));
        start += n;
      });
      const want = attentionRef({ q, k, v, keyMask: null, B, Sq, Sk, H, D, qStride: HD, kStride: HD, vStride: HD, scale: 0.3 });
      // merged o = sum_b w_b o_b with |o_b| <= max|v|: each block's bound, plus weight errors from the block
      // LSE errors (|dw_b| <= 2 w_b max lseTol) and the merges' own rounding (a few u per merge)
      const vmax = Math.max(...Array.from(v, Math.abs));
      const tol = worstTol.map((t) => t + (4 * worstLseTol + 8 * blocks.length * U32) * vmax);
      expectClose(o, want.o, 0, 0, tol, `ring blocks ${blocks.join('+')}`);
      expectLse(lse, want.lse, want.lseTol.map((t) => t + 2 * worstLseTol + 8 * blocks.length * U32), `ring blocks ${blocks.join('+')}`);
    }
  });
  it('rejects short tensors and bad strides with a clear error', () => {
    const a = new Float32Array(2 * 3 * 4), l = new Float32Array(2 * 3);
    expect(() => native.runKernel('attn_merge', [a, l, a, new Float32Array(5), a, l], [2, 1, 3, 4, 12, 12, 12], [])).toThrow(/lse.*holds 5 floats, needs 6/);
    expect(() => native.runKernel('attn_merge', [a, l, a, l, a, l], [2, 1, 3, 4, 11, 12, 12], [])).toThrow(/strides must be >= H\*D/);
  });
});

describe('scalar path (DITFORGE_ATTENTION_SCALAR=1: what CPUs without AVX-512 run)', () => {
  // the AVX-512 choice is made once per process, so a child process runs the kernels with the variable set
  it('attention_lse with a mask and attn_merge in place match the float64 references', () => {
    const B = 2, Sq = 11, Sk = 23, H = 3, D = 7, HD = H * D, qs = HD + 2, ks = HD + 5, vs = HD + 1;
    const q = randn(B * Sq * qs, 41), k = randn(B * Sk * ks, 42), v = randn(B * Sk * vs, 43);
    const mask = new Float32Array(B * Sk).fill(1);
    for (let j = 0; j < Sk; j += 4) mask[Sk + j] = 0;
    const pl = uniform(B * Sq * H, 44, 1, 6), so = randn(B * Sq * HD, 45), sl = uniform(B * Sq * H, 46, 1, 6);
    pl[0] = Infinity; // the quirk on the scalar build too
    const dir = mkdtempSync(join(tmpdir(), 'df-attn-scalar-'));
    try {
      const inputs = { q, k, v, mask, pl, so, sl };
      for (const [n, a] of Object.entries(inputs)) writeFileSync(join(dir, n), a);
      const script = `
        const n = require(${JSON.stringify(NATIVE_ADDON_PATH)}), fs = require('fs'), path = require('path');
        const rd = (f) => { const b = fs.readFileSync(path.join(${JSON.stringify(dir)}, f)); return new Float32Array(b.buffer, b.byteOffset, b.length / 4).slice(); };
        const [q, k, v, mask, pl, so, sl] = ['q', 'k', 'v', 'mask', 'pl', 'so', 'sl'].map(rd);
        const o = new Float32Array(${B * Sq * HD}), lse = new Float32Array(${B * Sq * H});
        n.runKernel('attention_lse', [q, k, v, mask, o, lse], [${[B, Sq, Sk, H, D, qs, ks, vs, HD].join(', ')}], [0.4]);
        const mo = o.slice(), ml = lse.slice();
        n.runKernel('attn_merge', [mo, ml, so, sl, mo, ml], [${[B, Sq, H, D, HD, HD, HD].join(', ')}], []);
        for (const [f, a] of [['o', o], ['lse', lse], ['mo', mo], ['ml', ml]]) fs.writeFileSync(path.join(${JSON.stringify(dir)}, f), a);`;
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DITFORGE_ATTENTION_SCALAR: '1' }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const out = (f: string) => { const b = readFileSync(join(dir, f)); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
      const want = attentionRef({ q, k, v, keyMask: mask, B, Sq, Sk, H, D, qStride: qs, kStride: ks, vStride: vs, scale: 0.4 });
      expectClose(out('o'), want.o, 0, 0, want.tol, 'scalar attention_lse o');
      expectLse(out('lse'), want.lse, want.lseTol, 'scalar attention_lse');
      // merge vs float64 on the kernel's own attention output: |o| < 3 and |p - s| < 5 here, so mergeCase's bounds
      // ((4 u + u |p - s|) |a - b| + 4 u (|a| + |a - b|) < 1e-6; LSE 4 u (|p| + |p - s| + |lse| + 1) < 1e-5) fit in
      // 1e-6 + 1e-5 |y| and 1e-5 (1 + |lse|) with margin
      const m = attnMerge(out('o'), out('lse'), so, sl, B * Sq, H, D, HD, HD);
      expectClose(out('mo'), m.y, 1e-6, 1e-5, undefined, 'scalar attn_merge out');
      expectLse(out('ml'), m.yLse, m.yLse.map((x) => 1e-5 * (1 + Math.abs(x))), 'scalar attn_merge');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
