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
    const n = 1 << 20;
    const x = new Float32Array(n).fill(0.5);
    // calibrate: make one run() last >= ~300 ms on this machine, whatever its speed
    const probe = new native.Executor(longPlan(n, 20), {});
    probe.setInput('x', x);
    const c0 = performance.now();
    probe.runSync('long');
    const perOp = Math.max((performance.now() - c0) / 20, 0.01);
    const ops = Math.min(20000, Math.ceil(300 / perOp));
    const ex = new native.Executor(longPlan(n, ops), {});
    ex.setInput('x', x);
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
    // a blocked loop would see 0-1 ticks; a free one sees about ms / (1 ms timer + scheduling noise)
    expect(ms).toBeGreaterThan(100);
    expect(ticks).toBeGreaterThan(10);
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

describe('thread pools under concurrency', () => {
  it('two executors running at once plus main-thread runKernel calls give the sequential results', async () => {
    const n = 50_000;
    const mk = () => new native.Executor(longPlan(n, 40), { threads: 2 });
    const a = mk(), b = mk();
    const xa = Float32Array.from({ length: n }, (_, k) => Math.sin(k)), xb = Float32Array.from({ length: n }, (_, k) => Math.cos(k));
    a.setInput('x', xa);
    b.setInput('x', xb);
    const pa = a.run('long'), pb = b.run('long');
    // meanwhile, the global pool on the main thread
    const z = new Float32Array(n), w = new Float32Array(n);
    for (let k = 0; k < 20; k++) native.runKernel('gelu_tanh', [xa, z], [n], []);
    await Promise.all([pa, pb]);
    const want = (x: Float32Array) => {
      const e = new native.Executor(longPlan(n, 40), { threads: 1 });
      e.setInput('x', x);
      e.runSync('long');
      const o = new Float32Array(n);
      e.getOutput('x', o);
      return o;
    };
    const ga = new Float32Array(n), gb = new Float32Array(n);
    a.getOutput('x', ga);
    b.getOutput('x', gb);
    expect(Buffer.from(ga.buffer).equals(Buffer.from(want(xa).buffer))).toBe(true);
    expect(Buffer.from(gb.buffer).equals(Buffer.from(want(xb).buffer))).toBe(true);
    native.runKernel('gelu_tanh', [xa, w], [n], []);
    expect(Buffer.from(z.buffer).equals(Buffer.from(w.buffer))).toBe(true);
  });
});
