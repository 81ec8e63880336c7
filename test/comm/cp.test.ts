import { describe, expect, it } from 'vitest';
import { runShm } from '../../runtime/comm/shm.ts';
import { Rng, randn } from '../../runtime/parallel/attention-ref.ts';
import { allReduceProbe, cpGather, cpSplit, cpSplitSizes } from '../../runtime/parallel/cp.ts';

describe('context-parallel split / gather hooks', () => {
  it('tensor_split sizes and the even-mode error', () => {
    expect(cpSplitSizes(10, 4, true)).toEqual([3, 3, 2, 2]);
    expect(cpSplitSizes(12, 4, false)).toEqual([3, 3, 3, 3]);
    expect(() => cpSplitSizes(10, 4, false, 'hidden_states')).toThrow(/hidden_states length 10 is not divisible by 4 ranks/);
  });

  for (const W of [2, 3, 4]) {
    it(`W=${W}: split then gather returns the input (uneven S); probe sums agree on every rank`, async () => {
      const [B, S, C] = [2, 4 * W + 1, 5];
      const x = randn(new Rng(W), B * S * C);
      const res = await runShm(W, async (comm) => {
        const local = cpSplit(x, B, S, C, W, comm.rank, true);
        const full = await cpGather(comm, local, B, C);
        const probe = await allReduceProbe(comm, [0.1 * (comm.rank + 1), 1 / 3]);
        return { same: full.every((v, i) => v === x[i]) && full.length === x.length, probe };
      });
      for (const r of res) {
        expect(r.same).toBe(true);
        expect(r.probe).toEqual(res[0].probe);
      }
    });
  }
});
