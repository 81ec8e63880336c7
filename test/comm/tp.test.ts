import { describe, expect, it } from 'vitest';
import { runShm } from '../../runtime/comm/shm.ts';
import { Rng, randn, relL2 } from '../../runtime/parallel/attention-ref.ts';
import { colParallelReplicate, colShard, evenShard, fluxSingleProjOutShard, linearRef, planWeightData, rowParallelLinear, rowShard } from '../../runtime/parallel/tp.ts';

const gelu = (a: Float32Array) => a.map((v) => 0.5 * v * (1 + Math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));

describe('tensor parallel reference (shm)', () => {
  for (const W of [2, 3, 4]) {
    it(`W=${W}: MLP (col -> row) and FLUX single-block proj_out reorder equal 1 rank`, async () => {
      const rng = new Rng(W);
      const [T, C, M] = [5, 12 * W, 24 * W];
      const x = randn(rng, T * C);
      const w1 = randn(rng, M * C, 0.1);
      const b1 = randn(rng, M, 0.1);
      const w2 = randn(rng, C * M, 0.1);
      const b2 = randn(rng, C, 0.1);
      const wa = randn(rng, C * C, 0.1); // stands in for the attention path (to_v -> per-head attention)
      const wp = randn(rng, C * (C + M), 0.1); // proj_out: in = [attn C | mlp M]
      const bp = randn(rng, C, 0.1);
      const mlpRef = linearRef(gelu(linearRef(x, w1, b1, T, M, C)), w2, b2, T, C, M);
      const a = linearRef(x, wa, null, T, C, C);
      const h = gelu(linearRef(x, w1, b1, T, M, C));
      const cat = new Float32Array(T * (C + M));
      for (let i = 0; i < T; i++) {
        cat.set(a.subarray(i * C, (i + 1) * C), i * (C + M));
        cat.set(h.subarray(i * M, (i + 1) * M), i * (C + M) + C);
      }
      const projRef = linearRef(cat, wp, bp, T, C, C + M);
      const adaRef = linearRef(x, w1, b1, T, M, C);
      const res = await runShm(W, async (comm) => {
        const r = comm.rank;
        const c1 = colShard(w1, b1, M, C, W, r);
        const hLoc = gelu(linearRef(x, c1.w, c1.b, T, c1.n, C));
        const r2 = rowShard(w2, C, M, W, r);
        const mlp = await rowParallelLinear(comm, hLoc, r2.w, b2, T, C, r2.k);
        const ca = colShard(wa, null, C, C, W, r);
        const aLoc = linearRef(x, ca.w, null, T, ca.n, C);
        const catLoc = new Float32Array(T * (ca.n + c1.n));
        for (let i = 0; i < T; i++) {
          catLoc.set(aLoc.subarray(i * ca.n, (i + 1) * ca.n), i * (ca.n + c1.n));
          catLoc.set(hLoc.subarray(i * c1.n, (i + 1) * c1.n), i * (ca.n + c1.n) + ca.n);
        }
        const proj = await rowParallelLinear(comm, catLoc, fluxSingleProjOutShard(wp, C, C, M, W, r), bp, T, C, ca.n + c1.n);
        const ada = await colParallelReplicate(comm, x, w1, b1, T, M, C);
        return { mlp: relL2(mlp, mlpRef), proj: relL2(proj, projRef), ada: relL2(ada, adaRef), same: Array.from(proj.subarray(0, 4)) };
      });
      for (const r of res) {
        expect(r.mlp).toBeLessThan(1e-5);
        expect(r.proj).toBeLessThan(1e-5);
        expect(r.ada).toBe(0);
        expect(r.same).toEqual(res[0].same); // all-reduce is bit-identical on every rank
      }
      console.log(`TP W=${W}: mlp relL2 ${res[0].mlp.toExponential(2)}, single-block proj_out relL2 ${res[0].proj.toExponential(2)}`);
    });
  }

  it('planWeightData: plan weight slices == the host reference shards; bad shapes name the weight', () => {
    const rng = new Rng(7);
    const [N, C, M] = [6, 8, 12];
    const w = randn(rng, N * (C + M));
    const full = { data: w, shape: [N, C + M] };
    // row-parallel proj_out of rank 1 of 2: [attn shard | mlp shard]
    const proj = planWeightData({ name: 'p.weight', shape: [N, (C + M) / 2], tensor: 0, slice: { full: [N, C + M], axis: 1, ranges: [[C / 2, C / 2], [C + M / 2, M / 2]] } }, full, 'ckpt');
    expect(Array.from(proj)).toEqual(Array.from(fluxSingleProjOutShard(w, N, C, M, 2, 1)));
    // column-parallel rows + bias of rank 2 of 3
    const col = colShard(w, w.subarray(0, N), N, C + M, 3, 2);
    expect(Array.from(planWeightData({ name: 'c.weight', shape: [2, C + M], tensor: 0, slice: { full: [N, C + M], axis: 0, ranges: [[4, 2]] } }, full, 'ckpt'))).toEqual(Array.from(col.w));
    expect(Array.from(planWeightData({ name: 'c.bias', shape: [2], tensor: 0, slice: { full: [N], axis: 0, ranges: [[4, 2]] } }, { data: w.subarray(0, N), shape: [N] }, 'ckpt'))).toEqual(Array.from(col.b!));
    // unsliced: the data itself; wrong checkpoint shapes / ranges name the weight
    expect(planWeightData({ name: 'x', shape: [N, C + M], tensor: 0 }, full, 'ckpt')).toBe(w);
    expect(() => planWeightData({ name: 'x', shape: [N, C], tensor: 0 }, full, 'ckpt')).toThrow(/ckpt: weight "x" has shape \[6, 20\], the plan expects \[6, 8\]/);
    expect(() => planWeightData({ name: 'y', shape: [N, 4], tensor: 0, slice: { full: [N, C + M], axis: 1, ranges: [[18, 4]] } }, full, 'ckpt')).toThrow(/weight "y": slice range \[18, 22\) is outside axis 1 \(20\)/);
  });

  it('rejects shards that do not divide (names the dimension)', () => {
    expect(() => evenShard(30, 4, 'heads')).toThrow(/heads = 30 is not divisible by tp degree 4/);
  });
});
