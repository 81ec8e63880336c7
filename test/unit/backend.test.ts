// The native backend interface (runtime/native/src/backend.h): plans run on "cpu" or "cuda[:N]" through one
// executor loop. Without a GPU the CUDA cases print why they are skipped and a CUDA device is a clear error;
// with one, a whole tiny-flux transformer plan on CUDA matches the CPU (fp32: 1e-4 relative L2, the bound
// the device-layer work sets for fp32 plans).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import type { Plan } from '../../runtime/plan.ts';
import { cliInTmp, expectCleanError, ROOT } from '../e2e/cli-harness.ts';

const PLAN = path.join(ROOT, 'generated/tiny-flux/transformer/plan.json');

/** null when a CUDA executor can be made here, else the backend's reason */
function cudaUnavailable(): string | null {
  try {
    new native.Executor(fs.readFileSync(PLAN, 'utf8'), { device: 'cuda' });
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

describe.skipIf(!nativeAvailable())('backends', () => {
  const why = cudaUnavailable();
  if (why) console.log(`[backend] cuda cases skipped: ${why}`);

  it('cpu is the default; unknown devices are named with the valid ones', () => {
    const ex = new native.Executor(fs.readFileSync(PLAN, 'utf8'), { threads: 1 });
    expect(ex.device()).toBe('cpu');
    expect(() => new native.Executor(fs.readFileSync(PLAN, 'utf8'), { device: 'tpu' })).toThrow(/unknown device 'tpu' \(valid: cpu, cuda, cuda:N\)/);
    expect(() => new native.Executor(fs.readFileSync(PLAN, 'utf8'), { device: 'cuda:x' })).toThrow(/expected cuda or cuda:N/);
  });

  it('every CPU kernel has a CUDA implementation in this build (when built with CUDA)', () => {
    const cuda = native.cudaKernels();
    if (cuda.length === 0) {
      console.log('[backend] this build has no CUDA backend (nvcc was not found at build time): nothing to compare');
      return;
    }
    expect(native.kernels().filter((k) => !cuda.includes(k))).toEqual([]);
  });

  it('without a usable device, --device cuda is one clear line (library and CLI)', () => {
    if (!why) {
      console.log('[backend] a CUDA device is present: the no-device error is not exercised here');
      return;
    }
    expect(why).toMatch(/--device cuda: (no usable CUDA driver or device|this build has no CUDA backend)/);
    const { cli } = cliInTmp('ditforge-backend-', ['generate', '--model', 'tiny-flux', '--prompt', 'red']);
    expectCleanError(cli(['--device', 'cuda', '--steps', '1']), /--device cuda: /);
    expectCleanError(cli(['--device', 'cuda', '--world', '2']), /--device cuda with --world \/ --parallel/);
  });

  it.skipIf(why !== null)('cuda: the tiny-flux transformer plan matches the CPU within 1e-4; host views are refused', async () => {
    const text = fs.readFileSync(PLAN, 'utf8');
    const plan = JSON.parse(text) as Plan;
    const w = openSafetensorsSync(path.join(ROOT, 'models/tiny-flux/transformer/diffusion_pytorch_model.safetensors'));
    const run = async (device: string): Promise<Float32Array> => {
      const ex = new native.Executor(text, { device, threads: 2 });
      for (const x of plan.weights) ex.bindWeight(x.name, w.tensor(x.name).data);
      for (const io of plan.inputs) {
        const n = io.shape.reduce((a, b) => a * b, 1);
        ex.setInput(io.name, Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + io.name.length)));
      }
      for (const s of plan.segments) await ex.run(s.name);
      const o = plan.outputs[0]!;
      const out = new Float32Array(o.shape.reduce((a, b) => a * b, 1));
      ex.getOutput(o.name, out);
      if (device !== 'cpu') expect(() => ex.tensorView(o.tensor)).toThrow(/no host view/);
      return out;
    };
    const e = relL2(await run('cuda'), await run('cpu'));
    console.log(`[backend] tiny-flux transformer cuda vs cpu: relL2 ${e.toExponential(2)}`);
    expect(e).toBeLessThan(1e-4);
  });
});
