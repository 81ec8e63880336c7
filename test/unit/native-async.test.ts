// run() executes on a worker thread: the JS event loop keeps ticking during a long forward, and the executor
// refuses to touch the arena while a run is in flight.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';

function longPlan(n: number, ops: number): string {
  const list = Array.from({ length: ops }, (_, k) => ({ k: k % 2 ? 'gelu_tanh' : 'silu', t: [0, 0], i: [n], f: [] }));
  return JSON.stringify({
    format: 'ditforge-plan/1', model: 'long', component: 'transformer', tag: 't', dims: {}, config: {},
    inputs: [{ name: 'x', tensor: 0, shape: [n] }], outputs: [{ name: 'x', tensor: 0, shape: [n] }], weights: [],
    arenaFloats: n, tensors: [{ id: 0, base: 'arena', offset: 0, numel: n }],
    segments: [{ name: 'long', ops: list }], kernels: ['silu', 'gelu_tanh'], elementwise: [],
  });
}

describe('Executor.run is asynchronous', () => {
  it('the event loop ticks while a long plan runs', async () => {
    const n = 1 << 21;
    const ex = new native.Executor(longPlan(n, 300), {});
    ex.setInput('x', new Float32Array(n).fill(0.5));
    let ticks = 0;
    let running = true;
    const tick = () => {
      ticks++;
      if (running) setTimeout(tick, 1);
    };
    setTimeout(tick, 1);
    const t0 = performance.now();
    const p = ex.run('long');
    expect(() => ex.setInput('x', new Float32Array(n))).toThrow(/is running a segment; await run\(\) first/);
    expect(() => ex.runSync('long')).toThrow(/is running a segment/);
    await p;
    running = false;
    const ms = performance.now() - t0;
    // ~600M transcendental evaluations: well over 50 ms here; the loop must have run many timers meanwhile
    expect(ms).toBeGreaterThan(50);
    expect(ticks).toBeGreaterThan(Math.min(10, ms / 20));
    const out = new Float32Array(n);
    ex.getOutput('x', out);
    expect(Number.isFinite(out[0])).toBe(true);
    expect(out[n - 1]).toBe(out[0]);
  });

  it('concurrent run() calls on one executor are serialised', async () => {
    const n = 4096;
    const ex = new native.Executor(longPlan(n, 20), { threads: 2 });
    const x = new Float32Array(n).fill(-1.5);
    ex.setInput('x', x);
    await Promise.all([ex.run('long'), ex.run('long'), ex.run('long')]);
    const a = new Float32Array(n);
    ex.getOutput('x', a);
    const ref = new native.Executor(longPlan(n, 20), { threads: 1 });
    ref.setInput('x', x);
    for (let k = 0; k < 3; k++) ref.runSync('long');
    const b = new Float32Array(n);
    ref.getOutput('x', b);
    expect(Array.from(a)).toEqual(Array.from(b));
  });
});
