// A broken FLUX.1 diffusers directory gets an error naming the file and the key or field: a truncated
// shard, a shard missing from its index, a renamed key, a mis-shaped key, a config field of the wrong type,
// a tokenizer file that is not JSON, an unsupported pipeline class. Each case breaks a copy of
// test/fixtures/flux1-random and runs generate (or loadFluxPipeline) on it; nothing may crash or produce an image.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { clipPoolIndex, loadFluxPipeline } from '../../runtime/pipeline.ts';
import { HfTokenizer } from '../../runtime/hf-tokenizer.ts';
import { brokenCopies, editJson, renameTensor } from '../helpers/broken-dir.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
const PROMPT = 'a large red circle at the center on a black background';
const broken = brokenCopies(FIX, 'ditforge-modeldir-');

async function generate(dir: string) {
  const pipe = await loadFluxPipeline(dir, { threads: 1, planProvider: (c, _d, req) => compileRequest(c, req) });
  return pipe.generate({ prompt: PROMPT, height: 128, width: 128, steps: 1, maxSequenceLength: 32 });
}

const TSHARD = 'transformer/diffusion_pytorch_model-00002-of-00002.safetensors';

describe('FLUX.1 directory errors', () => {
  it('the unbroken copy runs', async () => {
    const r = await generate(broken(() => {}));
    expect(r.image.length).toBe(128 * 128 * 3);
  });
  it('a truncated shard names the file', async () => {
    const dir = broken((d) => {
      const f = path.join(d, TSHARD);
      fs.truncateSync(f, fs.statSync(f).size - 1000);
    });
    await expect(generate(dir)).rejects.toThrow(/diffusion_pytorch_model-00002-of-00002\.safetensors/);
  });
  it('a shard missing from the directory names the index and the shard', async () => {
    const dir = broken((d) => fs.rmSync(path.join(d, TSHARD)));
    await expect(generate(dir)).rejects.toThrow(/diffusion_pytorch_model\.safetensors\.index\.json: shard "diffusion_pytorch_model-00002-of-00002\.safetensors" \(holding "[^"]+"\) is missing/);
  });
  it('a renamed key: the missing weight and the unexpected tensor are named with the file', async () => {
    const dir = broken((d) => renameTensor(path.join(d, 'text_encoder/model.safetensors'), 'text_model.final_layer_norm.weight', 'text_model.final_layer_norm.scale'));
    await expect(generate(dir)).rejects.toThrow(/text_encoder\/model\.safetensors: missing weight "text_model\.final_layer_norm\.weight" .*; the checkpoint has tensors the plan does not read: text_model\.final_layer_norm\.scale/);
  });
  it('a key in the index but not in its shard is named', async () => {
    const dir = broken((d) =>
      editJson(path.join(d, 'transformer/diffusion_pytorch_model.safetensors.index.json'), (c) => {
        (c.weight_map as Record<string, string>)['proj_out.extra'] = 'diffusion_pytorch_model-00002-of-00002.safetensors';
      }),
    );
    await expect(generate(dir)).rejects.toThrow(/the index diffusion_pytorch_model\.safetensors\.index\.json puts tensor "proj_out\.extra" in this shard, but it is not there/);
  });
  it('a config that does not fit the checkpoint (more layers) names the missing weight and its file', async () => {
    const dir = broken((d) =>
      editJson(path.join(d, 'text_encoder_2/config.json'), (c) => {
        c.num_layers = 3;
      }),
    );
    await expect(generate(dir)).rejects.toThrow(/text_encoder_2\/model\.safetensors\.index\.json: missing weight "encoder\.block\.2\./);
  });
  it('a mis-shaped key names the file, the weight and both shapes', async () => {
    const dir = broken((d) =>
      editJson(path.join(d, 'text_encoder/config.json'), (c) => {
        c.intermediate_size = 64;
      }),
    );
    await expect(generate(dir)).rejects.toThrow(/text_encoder\/model\.safetensors \(text_encoder plan\): weight "text_model\.encoder\.layers\.0\.mlp\.fc1\.weight" has shape \[96, 48\], the plan expects \[64, 48\]/);
  });
  it('a config field of the wrong type names the file and the field', async () => {
    const dir = broken((d) =>
      editJson(path.join(d, 'vae/config.json'), (c) => {
        c.scaling_factor = 'large';
      }),
    );
    await expect(loadFluxPipeline(dir)).rejects.toThrow(/vae\/config\.json: field "scaling_factor" must be a number, got "large"/);
    const dir2 = broken((d) =>
      editJson(path.join(d, 'transformer/config.json'), (c) => {
        c.guidance_embeds = 'yes';
      }),
    );
    await expect(loadFluxPipeline(dir2)).rejects.toThrow(/transformer\/config\.json: field "guidance_embeds" must be true or false, got "yes"/);
  });
  it('a tokenizer file that is not JSON names the file', async () => {
    const dir = broken((d) => fs.writeFileSync(path.join(d, 'tokenizer_2/tokenizer.json'), '{ not json'));
    await expect(loadFluxPipeline(dir)).rejects.toThrow(/tokenizer_2\/tokenizer\.json: not valid JSON/);
  });
  it('an unsupported pipeline class or component class names model_index.json', async () => {
    const dir = broken((d) =>
      editJson(path.join(d, 'model_index.json'), (c) => {
        c._class_name = 'StableDiffusionPipeline';
      }),
    );
    await expect(loadFluxPipeline(dir)).rejects.toThrow(/model_index\.json: _class_name "StableDiffusionPipeline" is not a supported pipeline \(supported: FluxPipeline, FluxFillPipeline, WanPipeline, QwenImagePipeline, ZImagePipeline, Flux2KleinPipeline, OvisImagePipeline\)/);
    const dir2 = broken((d) =>
      editJson(path.join(d, 'model_index.json'), (c) => {
        c.vae = ['diffusers', 'AutoencoderTiny'];
      }),
    );
    await expect(loadFluxPipeline(dir2)).rejects.toThrow(/model_index\.json: vae class AutoencoderTiny is not supported by FluxPipeline here \(supported: AutoencoderKL\)/);
  });
  it('bad FLUX.1 options are refused before work', async () => {
    const pipe = await loadFluxPipeline(FIX, { threads: 1 });
    await expect(pipe.generate({ prompt: PROMPT, height: 120, width: 128, steps: 1 })).rejects.toThrow(/--height must be a positive multiple of 16/);
    await expect(pipe.generate({ prompt: PROMPT, height: 128, width: 128, maxSequenceLength: 513 })).rejects.toThrow(/--max-sequence-length must be an integer in 1\.\.512/);
  });
});

describe('tokenizers and pooling', () => {
  it('max_length padding and truncation keep the special tokens (CLIP: BOS ... EOS; T5: ... </s>)', () => {
    const clip = HfTokenizer.fromDir(path.join(FIX, 'tokenizer'));
    const t5 = HfTokenizer.fromDir(path.join(FIX, 'tokenizer_2'));
    const long = Array.from({ length: 60 }, () => 'red circle').join(' ');
    const c = clip.encode(long, 77);
    expect(c.ids.length).toBe(77);
    expect(c.ids[0]).toBe(clip.tokenToId('<|startoftext|>'));
    expect(c.ids[76]).toBe(clip.tokenToId('<|endoftext|>'));
    expect(c.untruncatedLength).toBeGreaterThan(77);
    const t = t5.encode(long, 32);
    expect(t.ids.length).toBe(32);
    expect(t.ids[31]).toBe(t5.tokenToId('</s>'));
    const short = t5.encode('red', 32);
    expect(short.ids.slice(short.attentionMask.indexOf(0))).toEqual(new Array(32 - short.attentionMask.indexOf(0)).fill(t5.padId));
  });
  it('CLIP pools at argmax(ids) for the legacy eos_token_id 2, else at the first EOS', () => {
    expect(clipPoolIndex([49406, 320, 49407, 49407], 2)).toBe(2);
    expect(clipPoolIndex([0, 5, 7, 2, 2], 7)).toBe(2);
  });
});

describe('inspect <dir>', () => {
  it('lists the components with their classes, parameter counts (the fixture README) and FLOPs', async () => {
    const { runInspect } = await import('../../compiler/cli/commands.ts');
    const write = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    let text: string;
    try {
      text = await runInspect(FIX);
    } finally {
      process.stdout.write = write;
    }
    expect(text).toMatch(/FluxPipeline \(plans: flux1-dev\)/);
    expect(text).toMatch(/text_encoder_2 +transformers\.T5EncoderModel/);
    // parameter counts of the fixture's README: transformer 136832, CLIP 89712, T5 120000
    expect(text).toMatch(/transformer \(FluxTransformer2DModel\)[^\n]*\n {2}params 136\.83 K {2}flops\/forward [\d.]+ G/);
    expect(text).toMatch(/text_encoder \(CLIPTextModel\)[^\n]*\n {2}params 89\.71 K/);
    expect(text).toMatch(/text_encoder_2 \(T5EncoderModel\)[^\n]*\n {2}params 120\.00 K/);
  });
});
