#!/usr/bin/env python3
# An Ovis-Image-style directory for the tests (test/fixtures/ovis-image-random), laid out like AIDC-AI/Ovis-Image-7B:
# model_index.json naming OvisImagePipeline, an OvisImageTransformer2DModel (SwiGLU MLPs), a Qwen3Model text
# encoder, FLUX.1's AutoencoderKL, a FlowMatchEulerDiscreteScheduler. Scaled down, seeded random weights (the
# transformer saved in bf16 and sharded); the tokenizer is test/fixtures/z-image-random's small Qwen2 tokenizer
# (the real one cannot be downloaded). References from diffusers' own OvisImagePipeline loaded back from the
# directory in float32, under reference/; and the transformer's parameter count at the released config.
#
# Run (from the repository root; CPU only, seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-ovis-image-fixture.py
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

import diffusers
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OvisImagePipeline, OvisImageTransformer2DModel
from fixture_random import randomize

OUT = "test/fixtures/ovis-image-random"
TOKENIZER = "test/fixtures/z-image-random/tokenizer"

RUNS = [
    # CFG 5 (the pipeline's default) with the empty negative prompt, a non-square size
    {"name": "cfg_s4", "seed": 3, "call": {"prompt": "a large red circle at the center on a black background", "height": 48, "width": 80,
                                           "num_inference_steps": 4, "guidance_scale": 5.0, "max_sequence_length": 24}},
    # no CFG (guidance_scale 1), another negative prompt would be ignored
    {"name": "plain_s3", "seed": 5, "call": {"prompt": "a blue square", "height": 64, "width": 64, "num_inference_steps": 3,
                                             "guidance_scale": 1.0, "max_sequence_length": 16}},
]

# FLUX.1's scheduler config (OvisImagePipeline passes calculate_shift's mu)
SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000,
             "shift": 3.0, "use_dynamic_shifting": True}


def build():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    g = torch.Generator().manual_seed(0)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tok.save_pretrained(os.path.join(OUT, "tokenizer"))
    te = Qwen3Model(Qwen3Config(vocab_size=len(tok), hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}, max_position_embeddings=4096))
    randomize(te, g, 0.2)
    te.save_pretrained(os.path.join(OUT, "text_encoder"))
    tf = OvisImageTransformer2DModel(in_channels=16, out_channels=None, num_layers=2, num_single_layers=2, attention_head_dim=16,
                                     num_attention_heads=3, joint_attention_dim=40, axes_dims_rope=(4, 6, 6))
    randomize(tf, g, 0.15)
    tf.to(torch.bfloat16).save_pretrained(os.path.join(OUT, "transformer"), max_shard_size="100KB")
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=16, latent_channels=4, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
                        use_quant_conv=False, use_post_quant_conv=False)
    randomize(vae, g, 0.1)
    vae.to(torch.bfloat16).save_pretrained(os.path.join(OUT, "vae"))
    FlowMatchEulerDiscreteScheduler(**SCHEDULER).save_pretrained(os.path.join(OUT, "scheduler"))
    index = {"_class_name": "OvisImagePipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
             "tokenizer": ["transformers", "Qwen2TokenizerFast"], "transformer": ["diffusers", "OvisImageTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(OUT, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def references():
    pipe = OvisImagePipeline.from_pretrained(OUT, torch_dtype=torch.float32)
    ref = os.path.join(OUT, "reference")
    os.makedirs(ref, exist_ok=True)
    with torch.device("meta"):
        params = sum(p.numel() for p in OvisImageTransformer2DModel(in_channels=64, out_channels=None).parameters())
    for r in RUNS:
        c = r["call"]
        L = c["max_sequence_length"]
        embeds, _, text_ids, _ = pipe.encode_prompt(c["prompt"], do_classifier_free_guidance=False, max_sequence_length=L)
        neg, _, _, _ = pipe.encode_prompt("", do_classifier_free_guidance=False, max_sequence_length=L)
        ids = pipe.tokenizer(pipe._get_messages(c["prompt"]), padding="max_length", truncation=True, max_length=L + pipe.user_prompt_begin_id,
                             return_tensors="pt", add_special_tokens=False)["input_ids"]
        lat, _ = pipe.prepare_latents(1, 4, c["height"], c["width"], torch.float32, "cpu", torch.Generator("cpu").manual_seed(r["seed"]))
        final = pipe(**c, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
        img = pipe(**c, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images[0]
        t = {"input_ids": ids.to(torch.int32), "prompt_embeds": embeds, "negative_prompt_embeds": neg, "text_ids": text_ids.float(),
             "initial_latents": lat, "sigmas": pipe.scheduler.sigmas.float(), "timesteps": pipe.scheduler.timesteps.float(),
             "final_latents": final.float(), "image_uint8": torch.from_numpy((img * 255).round().astype(np.uint8))}
        save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(ref, f"{r['name']}.safetensors"))
        print(r["name"], {k: list(v.shape) for k, v in t.items()})
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "runs": RUNS, "released_transformer_params": params,
            "notes": "initial_latents: pipe.prepare_latents(1, 4, h, w, float32, cpu, Generator.manual_seed(seed)) (packed); "
                     "final_latents: output_type='latent' (packed); image_uint8: (output_type='np' * 255).round()"}
    with open(os.path.join(ref, "index.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    build()
    references()
