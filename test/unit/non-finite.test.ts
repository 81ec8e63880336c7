// Non-finite numbers never become an image: a NaN / inf weight is refused at load naming the file and the
// tensor; a NaN that appears while denoising stops the run at that step naming it (one pass over the latents
// the loop holds anyway).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { loadFluxPipeline } from '../../runtime/pipeline.ts';
import { brokenCopies } from '../helpers/broken-dir.ts';
import fs from 'node:fs';

const FLUX1 = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
const broken = brokenCopies(FLUX1, 'ditforge-nonfinite-');

describe('non-finite values', () => {
  it('a NaN weight is refused at load, naming the file and the tensor', async () => {
    const dir = broken((d) => {
      const f = path.join(d, 'text_encoder/model.safetensors');
      const st = openSafetensorsSync(f);
      const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
      for (const n of st.names()) tensors[n] = { dtype: 'F32', shape: st.tensor(n).shape, data: Float32Array.from(st.tensor(n).data) };
      tensors['text_model.final_layer_norm.weight']!.data[3] = NaN;
      fs.rmSync(f);
      writeSafetensors(f, tensors);
    });
    const pipe = await loadFluxPipeline(dir, { threads: 1, planProvider: (c, _d, req) => compileRequest(c, req) });
    await expect(pipe.generate({ prompt: 'red', height: 128, width: 128, steps: 1, maxSequenceLength: 32 })).rejects.toThrow(
      /text_encoder\/model\.safetensors: tensor "text_model\.final_layer_norm\.weight" has a non-finite value \(NaN\) at index 3/,
    );
  });
  it('a NaN while denoising stops the run at that step', async () => {
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1 });
    const latents = new Float32Array(16 * 16).fill(0.5);
    latents[7] = NaN;
    await expect(pipe.generate({ prompt: 'red', steps: 3, latents })).rejects.toThrow(/the latents after denoising step 1 of 3 \(the transformer's output\) has a non-finite value/);
  });
});
