// Runs a whole plan on the native executor and its ONNX export on onnxruntime-node (parity tests).
import * as ort from 'onnxruntime-node';
import { native, nativeAvailable } from '../../runtime/native.ts';
import type { Plan } from '../../runtime/plan.ts';

const available = nativeAvailable();
const registered = new Set(available ? native.kernels() : []);

/** Why `plan` cannot run natively here (addon not built, kernels missing), or null when it can. */
export function notRunnable(plan: Plan): string | null {
  if (!available) return 'native addon not built';
  const missing = plan.kernels.filter((k) => !registered.has(k));
  return missing.length ? `native addon lacks kernels ${missing.join(', ')}` : null;
}

/** Binds weights and inputs, runs every segment in order, returns every output. */
export function runNative(plan: Plan, weights: Map<string, Float32Array>, inputs: Record<string, Float32Array>, threads = 2): Record<string, Float32Array> {
  const ex = new native.Executor(JSON.stringify(plan), { threads });
  for (const w of plan.weights) ex.bindWeight(w.name, weights.get(w.name)!);
  for (const i of plan.inputs) ex.setInput(i.name, inputs[i.name]!);
  for (const s of plan.segments) ex.runSync(s.name);
  const out: Record<string, Float32Array> = {};
  for (const o of plan.outputs) {
    out[o.name] = new Float32Array(o.shape.reduce((a, b) => a * b, 1));
    ex.getOutput(o.name, out[o.name]!);
  }
  return out;
}

/** Runs an ONNX model (weights embedded) on the plan's inputs. */
export async function runOnnx(bytes: Uint8Array, plan: Plan, inputs: Record<string, Float32Array>, threads = 2): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of plan.inputs) feeds[i.name] = new ort.Tensor('float32', inputs[i.name]!, i.shape);
    const r = await s.run(feeds);
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.release();
  }
}
