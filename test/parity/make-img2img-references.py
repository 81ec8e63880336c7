#!/usr/bin/env python3
# Image-to-image references from diffusers' own FluxImg2ImgPipeline / ZImageImg2ImgPipeline for the
# random-weight fixtures: the noised initial latents, every step's latents and the image, for an input image at
# the output size and one that is resized (PIL Lanczos).
#
# Run (from the repository root; CPU only, a few seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-img2img-references.py \
#       --pipeline flux --model test/fixtures/flux1-random --out test/fixtures/flux1-random-img2img
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-img2img-references.py \
#       --pipeline z-image --model test/fixtures/z-image-random --out test/fixtures/z-image-random-img2img
#
# Writes <out>/<name>.png (the input image), <out>/<name>.safetensors and <out>/index.json.
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import FluxImg2ImgPipeline, ZImageImg2ImgPipeline

PROMPT = "a large red circle at the center on a black background"

FLUX_RUNS = [
    # the image at the output size: no resize
    {"name": "same_size_s5", "image_size": (128, 128), "seed": 3,
     "call": {"prompt": PROMPT, "height": 128, "width": 128, "num_inference_steps": 5, "strength": 0.6,
              "guidance_scale": 3.5, "max_sequence_length": 32}},
    # a non-square output from an image of another size (resized with PIL's Lanczos), strength 0.8
    {"name": "resized_s4", "image_size": (150, 100), "seed": 4,
     "call": {"prompt": PROMPT, "height": 96, "width": 160, "num_inference_steps": 4, "strength": 0.8,
              "guidance_scale": 3.5, "max_sequence_length": 32}},
]

# ZImageImg2ImgPipeline: the size is the image's (rounded down to a multiple of 16); CFG on, then off
Z_IMAGE_RUNS = [
    {"name": "cfg_s5", "image_size": (96, 80), "seed": 3,
     "call": {"prompt": PROMPT, "num_inference_steps": 5, "strength": 0.6, "guidance_scale": 2.0, "max_sequence_length": 64}},
    {"name": "rounded_s4", "image_size": (70, 50), "seed": 4,
     "call": {"prompt": PROMPT, "num_inference_steps": 4, "strength": 0.9, "guidance_scale": 0.0, "max_sequence_length": 64}},
]

PIPELINES = {"flux": (FluxImg2ImgPipeline, FLUX_RUNS), "z-image": (ZImageImg2ImgPipeline, Z_IMAGE_RUNS)}


def input_image(w, h, seed):
    """a smooth colour field with a bright disc and a little noise (an image, not zeros)"""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * (x / max(w - 1, 1))
    g = 255 * (y / max(h - 1, 1))
    b = 255 * (((x - w / 2) ** 2 + (y - h / 2) ** 2) < (min(w, h) / 3) ** 2)
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")


def run(pipe, spec, out_dir):
    call = dict(spec["call"])
    image = input_image(*spec["image_size"], spec["seed"])
    image.save(os.path.join(out_dir, spec["name"] + ".png"))

    got = {}
    orig_prepare = pipe.prepare_latents

    def prepare_latents(image, *a, **k):
        got["image_input"] = image.detach().clone()
        out = orig_prepare(image, *a, **k)
        got["initial_latents"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return out

    per_step = []

    def on_step_end(p, i, t, kw):
        per_step.append(kw["latents"].detach().clone())
        return {}

    pipe.prepare_latents = prepare_latents
    try:
        with torch.no_grad():
            out = pipe(**call, image=image, output_type="np", generator=torch.Generator("cpu").manual_seed(spec["seed"]),
                       callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    finally:
        del pipe.prepare_latents
    t = {
        **got,
        "sigmas": pipe.scheduler.sigmas.detach().clone(),
        "timesteps": pipe.scheduler.timesteps.detach().clone(),
        "latents_per_step": torch.stack(per_step),
        "final_latents": per_step[-1],
        "image_uint8": torch.from_numpy((out.images[0] * 255).round().astype(np.uint8)),
    }
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out_dir, spec["name"] + ".safetensors"))
    return {"file": spec["name"] + ".safetensors", "image": spec["name"] + ".png", "seed": spec["seed"], "call": call,
            "steps_run": len(per_step), "tensors": {k: list(v.shape) for k, v in t.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", required=True, choices=sorted(PIPELINES))
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cls, specs = PIPELINES[a.pipeline]
    pipe = cls.from_pretrained(a.model, torch_dtype=torch.float32)
    runs = [run(pipe, s, a.out) for s in specs]
    index = {"pipeline": cls.__name__, "model": os.path.relpath(a.model, a.out),
             "versions": {"torch": torch.__version__, "numpy": np.__version__, "pillow": Image.__version__}, "runs": runs}
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
