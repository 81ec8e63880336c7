#!/usr/bin/env python3
# A FLUX.1-Fill-style directory for the tests (test/fixtures/flux1-fill-random), laid out like
# black-forest-labs/FLUX.1-Fill-dev: model_index.json naming FluxFillPipeline, a FluxTransformer2DModel with
# in_channels 384 (the noisy latents, the masked image's latents and the 8x8-unshuffled mask, packed) and
# out_channels 64, seeded random weights saved in bf16; tokenizers, text encoders, scheduler and VAE are links to
# test/fixtures/flux1-random's. References from diffusers' own FluxFillPipeline under reference/.
#
# Run (from the repository root; CPU only, a few seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-flux1-fill-fixture.py \
#       --base test/fixtures/flux1-random --out test/fixtures/flux1-fill-random
import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import FluxFillPipeline, FluxTransformer2DModel

PROMPT = "a large red circle at the center on a black background"

RUNS = [
    {"name": "fill_s4", "image_size": (128, 128), "seed": 5,
     "call": {"prompt": PROMPT, "height": 128, "width": 128, "num_inference_steps": 4, "guidance_scale": 30.0,
              "max_sequence_length": 32}},
    # another size (image and mask resized with PIL's Lanczos), strength 0.75
    {"name": "fill_resized_s4", "image_size": (150, 100), "seed": 6,
     "call": {"prompt": PROMPT, "height": 96, "width": 160, "num_inference_steps": 4, "strength": 0.75,
              "guidance_scale": 30.0, "max_sequence_length": 32}},
]


def input_image(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 128 + 0 * x], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")


def mask_image(w, h):
    """white (repaint) in a centred rectangle, black elsewhere, soft edges so binarize matters; RGB like a user's file"""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.maximum(np.abs(x - w / 2) / (w / 4), np.abs(y - h / 2) / (h / 4))
    m = np.clip((1.2 - d) * 400, 0, 255)
    return Image.fromarray(np.stack([m, m * 0.9, m * 0.8], -1).round().astype(np.uint8), "RGB")


def make_dir(base, out):
    os.makedirs(out, exist_ok=True)
    for c in ["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae"]:
        p = os.path.join(out, c)
        if os.path.islink(p) or os.path.exists(p):
            continue
        os.symlink(os.path.join("..", os.path.basename(base), c), p)
    with open(os.path.join(base, "model_index.json")) as f:
        mi = json.load(f)
    mi["_class_name"] = "FluxFillPipeline"
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(mi, f, indent=2)
    with open(os.path.join(base, "transformer", "config.json")) as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    cfg.update(in_channels=384, out_channels=64)
    torch.manual_seed(1234)
    t = FluxTransformer2DModel(**cfg).to(torch.bfloat16)
    shutil.rmtree(os.path.join(out, "transformer"), ignore_errors=True)
    t.save_pretrained(os.path.join(out, "transformer"))


def run(pipe, spec, ref_dir):
    call = dict(spec["call"])
    image = input_image(*spec["image_size"], spec["seed"])
    mask = mask_image(*spec["image_size"])
    image.save(os.path.join(ref_dir, spec["name"] + "_image.png"))
    mask.save(os.path.join(ref_dir, spec["name"] + "_mask.png"))
    got = {}
    orig_mask = pipe.prepare_mask_latents

    def prepare_mask_latents(mask_t, masked_image, *a, **k):
        got["mask_input"] = mask_t.detach().clone()
        got["masked_image"] = masked_image.detach().clone()
        m, ml = orig_mask(mask_t, masked_image, *a, **k)
        got["mask_packed"] = m.detach().clone()
        got["masked_image_latents_packed"] = ml.detach().clone()
        return m, ml

    orig_prepare = pipe.prepare_latents

    def prepare_latents(*a, **k):
        lat, ids = orig_prepare(*a, **k)
        got["initial_latents"] = lat.detach().clone()
        return lat, ids

    per_step = []

    def on_step_end(p, i, t, kw):
        per_step.append(kw["latents"].detach().clone())
        return {}

    pipe.prepare_mask_latents = prepare_mask_latents
    pipe.prepare_latents = prepare_latents
    try:
        with torch.no_grad():
            out = pipe(**call, image=image, mask_image=mask, output_type="np", generator=torch.Generator("cpu").manual_seed(spec["seed"]),
                       callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    finally:
        del pipe.prepare_mask_latents
        del pipe.prepare_latents
    t = {**got, "sigmas": pipe.scheduler.sigmas.detach().clone(), "latents_per_step": torch.stack(per_step),
         "final_latents": per_step[-1], "image_uint8": torch.from_numpy((out.images[0] * 255).round().astype(np.uint8))}
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(ref_dir, spec["name"] + ".safetensors"))
    return {"file": spec["name"] + ".safetensors", "image": spec["name"] + "_image.png", "mask": spec["name"] + "_mask.png",
            "seed": spec["seed"], "call": call, "steps_run": len(per_step), "tensors": {k: list(v.shape) for k, v in t.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    make_dir(a.base, a.out)
    ref_dir = os.path.join(a.out, "reference")
    os.makedirs(ref_dir, exist_ok=True)
    pipe = FluxFillPipeline.from_pretrained(a.out, torch_dtype=torch.float32)
    runs = [run(pipe, s, ref_dir) for s in RUNS]
    with open(os.path.join(ref_dir, "index.json"), "w") as f:
        json.dump({"pipeline": "FluxFillPipeline", "versions": {"torch": torch.__version__, "numpy": np.__version__, "pillow": Image.__version__}, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
