#!/usr/bin/env python3
# A FLUX.2-Klein-style directory for the tests (test/fixtures/flux2-klein-random), laid out like
# black-forest-labs/FLUX.2-klein-base-4B: model_index.json naming Flux2KleinPipeline (is_distilled false: CFG
# with the negative prompt ""), a Flux2Transformer2DModel, a Qwen3ForCausalLM text encoder with 28 layers (the
# pipeline stacks hidden_states 9, 18 and 27), an AutoencoderKLFlux2 with random BatchNorm running statistics,
# the Klein FlowMatchEulerDiscreteScheduler config. Scaled down, seeded random weights (the transformer saved
# in bf16 and sharded, as the real checkpoints are); the tokenizer is test/fixtures/z-image-random's small
# Qwen2 tokenizer (the real one cannot be downloaded). References from diffusers' own Flux2KleinPipeline
# loaded back from the directory in float32, under reference/.
#
# Run (from the repository root; CPU only, seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-flux2-klein-fixture.py
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

import diffusers
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from fixture_random import randomize

OUT = "test/fixtures/flux2-klein-random"
TOKENIZER = "test/fixtures/z-image-random/tokenizer"
PROMPT = "a large red circle at the center on a black background"

RUNS = [
    # CFG (the base model): guidance 4, a non-square size
    {"name": "cfg_s4", "seed": 3, "call": {"prompt": PROMPT, "height": 48, "width": 80, "num_inference_steps": 4,
                                           "guidance_scale": 4.0, "max_sequence_length": 40}},
    # editing with two reference images (the size from the first, 70x90 cropped to 68x88), CFG 3
    {"name": "edit2_s3", "seed": 7, "images": ["ref-a.png", "ref-b.png"],
     "call": {"prompt": "make the circle blue", "num_inference_steps": 3, "guidance_scale": 3.0, "max_sequence_length": 32}},
    # no CFG (guidance_scale 1, as a distilled model runs), another step count and size
    {"name": "plain_s3", "seed": 5, "call": {"prompt": "a blue square", "height": 64, "width": 64, "num_inference_steps": 3,
                                             "guidance_scale": 1.0, "max_sequence_length": 24}},
]

# black-forest-labs/FLUX.2-klein-4B scheduler/scheduler_config.json
SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 4096, "max_shift": 1.15,
             "num_train_timesteps": 1000, "shift": 3.0, "shift_terminal": None, "stochastic_sampling": False,
             "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
             "use_exponential_sigmas": False, "use_karras_sigmas": False}


def build():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    g = torch.Generator().manual_seed(0)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tok.save_pretrained(os.path.join(OUT, "tokenizer"))
    te_cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=28, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}, max_position_embeddings=4096)
    te = Qwen3ForCausalLM(te_cfg)
    randomize(te, g, 0.2)
    te.save_pretrained(os.path.join(OUT, "text_encoder"))
    tf = Flux2Transformer2DModel(num_layers=2, num_single_layers=2, num_attention_heads=3, attention_head_dim=16,
                                 axes_dims_rope=[4, 4, 4, 4], joint_attention_dim=3 * 32, in_channels=32,
                                 timestep_guidance_channels=32, guidance_embeds=False)
    randomize(tf, g, 0.15)
    tf.to(torch.bfloat16).save_pretrained(os.path.join(OUT, "transformer"), max_shard_size="100KB")
    vae = AutoencoderKLFlux2(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=16,
                             latent_channels=8, sample_size=64)
    randomize(vae, g, 0.1)
    with torch.no_grad():
        vae.bn.running_mean.copy_(0.3 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape, generator=g))
    vae.save_pretrained(os.path.join(OUT, "vae"))
    FlowMatchEulerDiscreteScheduler(**SCHEDULER).save_pretrained(os.path.join(OUT, "scheduler"))
    index = {"_class_name": "Flux2KleinPipeline", "_diffusers_version": diffusers.__version__, "is_distilled": False,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3ForCausalLM"],
             "tokenizer": ["transformers", "Qwen2TokenizerFast"], "transformer": ["diffusers", "Flux2Transformer2DModel"],
             "vae": ["diffusers", "AutoencoderKLFlux2"]}
    with open(os.path.join(OUT, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def reference_images(ref):
    # smooth colour fields with a little noise: a 90x70 and a 64x64 image (the first one is cropped to 68x88)
    g = np.random.default_rng(0)
    for name, (h, w) in (("ref-a.png", (90, 70)), ("ref-b.png", (64, 64))):
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([120 + 100 * np.sin(x / 9.0), 80 + 90 * np.cos(y / 7.0), 60 + 50 * np.sin((x + y) / 11.0)], -1)
        img = np.clip(img + g.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(ref, name))


def references():
    pipe = Flux2KleinPipeline.from_pretrained(OUT, torch_dtype=torch.float32)
    ref = os.path.join(OUT, "reference")
    os.makedirs(ref, exist_ok=True)
    reference_images(ref)
    for r in RUNS:
        c = dict(r["call"])
        if "images" in r:
            c["image"] = [Image.open(os.path.join(ref, f)) for f in r["images"]]
            if "image_latents" not in r:
                lats, ids = pipe.prepare_image_latents([pipe.image_processor.preprocess(im, height=im.size[1] // 4 * 4, width=im.size[0] // 4 * 4, resize_mode="crop") for im in c["image"]], 1, torch.Generator("cpu").manual_seed(0), "cpu", torch.float32)
                r["image_latents"] = (lats, ids)
        embeds, text_ids = pipe.encode_prompt(c["prompt"], max_sequence_length=c["max_sequence_length"])
        neg, _ = pipe.encode_prompt("", max_sequence_length=c["max_sequence_length"])
        text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": c["prompt"]}], tokenize=False,
                                                  add_generation_prompt=True, enable_thinking=False)
        ids = pipe.tokenizer(text, padding="max_length", truncation=True, max_length=c["max_sequence_length"], return_tensors="pt")["input_ids"]
        if "images" in r:
            # the size the pipeline takes from the first image: rounded down to a multiple of vae_scale_factor * 2
            m = pipe.vae_scale_factor * 2
            c0 = c["image"][0].size
            size = {"height": c0[1] // m * m, "width": c0[0] // m * m}
        else:
            size = {"height": c["height"], "width": c["width"]}
        lat, _ = pipe.prepare_latents(1, 8, size["height"], size["width"], torch.float32, "cpu", torch.Generator("cpu").manual_seed(r["seed"]))
        final = pipe(**c, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
        img = pipe(**c, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images[0]
        t = {
            "input_ids": ids.to(torch.int32), "prompt_embeds": embeds, "negative_prompt_embeds": neg, "text_ids": text_ids.float(),
            "initial_latents": lat, "sigmas": pipe.scheduler.sigmas.float(), "timesteps": pipe.scheduler.timesteps.float(),
            "final_latents": final.float(), "image_uint8": torch.from_numpy((img * 255).round().astype(np.uint8)),
        }
        if "image_latents" in r:
            t["image_latents"], t["image_latent_ids"] = r.pop("image_latents")
            t["image_latent_ids"] = t["image_latent_ids"].float()
        save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(ref, f"{r['name']}.safetensors"))
        print(r["name"], {k: list(v.shape) for k, v in t.items()})
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "runs": RUNS,
            "notes": "initial_latents: pipe.prepare_latents(1, 8, h, w, float32, cpu, Generator.manual_seed(seed)) (packed [1, h/16*w/16, 32]); "
                     "final_latents: output_type='latent' (bn-denormalized, unpatchified [1, 8, h/8, w/8]); "
                     "image_uint8: (output_type='np' * 255).round()"}
    with open(os.path.join(ref, "index.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    build()
    references()
