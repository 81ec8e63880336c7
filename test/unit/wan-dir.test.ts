// A broken Wan 2.1 diffusers directory gets an error naming the file and the key or field: a truncated
// shard, a shard missing from its index, a renamed key, config fields of the wrong type or that do not fit
// each other, a tokenizer that is not JSON, an unsupported scheduler; bad sizes are refused before work.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { familyOf } from '../../runtime/model-dir.ts';
import { loadWanPipeline } from '../../runtime/pipeline.ts';
import { brokenCopies, editJson, renameTensor } from '../helpers/broken-dir.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/wan2.1-random');
const broken = brokenCopies(FIX, 'ditforge-wandir-');

function load(dir: string) {
  return loadWanPipeline(dir, { threads: 1, planProvider: (c, _d, req) => compileRequest(c, req) });
}
const generate = async (dir: string) => (await load(dir)).generate({ prompt: 'red', height: 64, width: 64, numFrames: 5, steps: 1, maxSequenceLength: 16 });

describe('Wan 2.1 directory errors', () => {
  it('the unbroken copy runs: 5 frames of 64x64', async () => {
    const r = await generate(broken(() => {}));
    expect(r.videos[0]!.length).toBe(5 * 64 * 64 * 3);
  });
  it('a truncated shard names the file', async () => {
    const dir = broken((d) => {
      const f = path.join(d, 'text_encoder/model-00002-of-00002.safetensors');
      fs.truncateSync(f, fs.statSync(f).size - 100);
    });
    await expect(generate(dir)).rejects.toThrow(/model-00002-of-00002\.safetensors/);
  });
  it('a shard missing from the directory names the index and the shard', async () => {
    const dir = broken((d) => fs.rmSync(path.join(d, 'transformer/diffusion_pytorch_model-00001-of-00002.safetensors')));
    await expect(generate(dir)).rejects.toThrow(/diffusion_pytorch_model\.safetensors\.index\.json: shard "diffusion_pytorch_model-00001-of-00002\.safetensors" \(holding "[^"]+"\) is missing/);
  });
  it('a renamed VAE key: the missing weight and the unexpected tensor are named with the file', async () => {
    const dir = broken((d) => renameTensor(path.join(d, 'vae/diffusion_pytorch_model.safetensors'), 'decoder.conv_out.weight', 'decoder.conv_out.kernel'));
    await expect(generate(dir)).rejects.toThrow(/vae\/diffusion_pytorch_model\.safetensors: missing weight "decoder\.conv_out\.weight" .*the checkpoint has tensors the plan does not read: decoder\.conv_out\.kernel/);
  });
  it('config fields of the wrong type, or that do not fit each other, name the file and the field', async () => {
    await expect(load(broken((d) => editJson(path.join(d, 'vae/config.json'), (c) => void (c.latents_std = 'wide'))))).rejects.toThrow(/vae\/config\.json: field "latents_std" must be a list of 16 numbers/);
    await expect(load(broken((d) => editJson(path.join(d, 'transformer/config.json'), (c) => void (c.patch_size = [1, 2]))))).rejects.toThrow(/transformer\/config\.json: field "patch_size" must be \[t, h, w\]/);
    await expect(load(broken((d) => editJson(path.join(d, 'transformer/config.json'), (c) => void (c.text_dim = 32))))).rejects.toThrow(/transformer\/config\.json: text_dim 32 differs from the text encoder's d_model 64/);
    await expect(load(broken((d) => editJson(path.join(d, 'scheduler/scheduler_config.json'), (c) => void (c.solver_order = 'two'))))).rejects.toThrow(/scheduler_config\.json.*solver_order/);
  });
  it('an unsupported UMT5 option is named by the model file', async () => {
    const dir = broken((d) => editJson(path.join(d, 'text_encoder/config.json'), (c) => void (c.feed_forward_proj = 'relu')));
    await expect(generate(dir)).rejects.toThrow(/UMT5EncoderModel: feed_forward_proj 'relu' is not supported/);
  });
  it('a tokenizer file that is not JSON names the file', async () => {
    const dir = broken((d) => fs.writeFileSync(path.join(d, 'tokenizer/tokenizer.json'), '{ not json'));
    await expect(load(dir)).rejects.toThrow(/tokenizer\/tokenizer\.json: not valid JSON/);
  });
  it('a scheduler class WanPipeline is not run with here names model_index.json', () => {
    const dir = broken((d) => editJson(path.join(d, 'model_index.json'), (c) => void (c.scheduler = ['diffusers', 'DDIMScheduler'])));
    expect(() => familyOf(dir)).toThrow(/model_index\.json: scheduler class DDIMScheduler is not supported by WanPipeline here \(supported: UniPCMultistepScheduler\)/);
  });
  it('bad sizes and latents are refused before work', async () => {
    const pipe = await load(FIX);
    await expect(pipe.generate({ prompt: 'red', height: 60, width: 64, numFrames: 5 })).rejects.toThrow(/--height must be a positive multiple of 16/);
    await expect(pipe.generate({ prompt: 'red', height: 64, width: 64, numFrames: 6 })).rejects.toThrow(/--num-frames must be 4k\+1 .* got 6; e\.g\. 5 or 9/);
    await expect(pipe.generate({ prompt: 'red', height: 64, width: 64, numFrames: 5, latents: new Float32Array(7) })).rejects.toThrow(/latents must have shape \[1, 16, 2, 8, 8\]/);
    await expect(pipe.generate({ prompt: 'red', height: 64, width: 64, numFrames: 5, steps: 0 })).rejects.toThrow(/--steps must be an integer >= 1/);
  });
});
