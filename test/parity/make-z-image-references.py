#!/usr/bin/env python3
# Extra reference tensors from diffusers' own ZImagePipeline for the random-weight Z-Image fixture
# (test/fixtures/z-image-random; reference/README.md there says how golden_*.safetensors were made): a
# non-square size whose image tokens are not a multiple of 32 (the x_pad_token path) with a prompt longer than
# 32 tokens (a 64-row caption), CFG 4 with a negative prompt, and guidance 0 (one forward per step).
#
# Run (from the repository root; CPU only, a few seconds), with the full fixture (its VAE encoder too):
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-z-image-references.py \
#       --model ../shared/models/z-image-random --out test/fixtures/z-image-random-extra
#
# Environment: as test/parity/make-flux1-references.py says (diffusers at commit 58eb52c0, src/ on PYTHONPATH).
# Before writing, it reruns the golden_0_s4 call and compares its final latents with the shipped reference.
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import ZImagePipeline

PROMPT = "a large red circle at the center on a black background"
LONG = ("a large red circle at the center on a black background, with a thin blue square in the upper left corner "
        "and a small green triangle near the bottom edge, flat colors, no shadows")
RUNS = [
    {"file": "nonsquare_cfg_s4.safetensors", "prompt": LONG, "negative_prompt": "blurry, noisy", "height": 96, "width": 160,
     "num_inference_steps": 4, "guidance_scale": 4.0, "seed": 5},
    {"file": "turbo_s3.safetensors", "prompt": PROMPT, "negative_prompt": None, "height": 128, "width": 96,
     "num_inference_steps": 3, "guidance_scale": 0.0, "seed": 7},
]


def run(pipe, r):
    g = torch.Generator("cpu").manual_seed(r["seed"])
    lat = pipe.prepare_latents(1, 16, r["height"], r["width"], torch.float32, "cpu", g)
    args = {k: r[k] for k in ("prompt", "height", "width", "num_inference_steps", "guidance_scale")}
    if r["negative_prompt"] is not None:
        args["negative_prompt"] = r["negative_prompt"]
    out = pipe(**args, latents=lat.clone(), output_type="latent").images
    img = pipe(**args, latents=lat.clone(), output_type="np").images[0]
    sched = pipe.scheduler
    return {
        "initial_latents": lat.contiguous(),
        "final_latents": out.float().contiguous(),
        "image_uint8": torch.from_numpy((img * 255).round().astype("uint8")).contiguous(),
        "sigmas": sched.sigmas.float().contiguous(),
        "timesteps": sched.timesteps.float().contiguous(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    pipe = ZImagePipeline.from_pretrained(a.model, torch_dtype=torch.float32)
    gold = load_file(os.path.join(a.model, "reference", "golden_0_s4.safetensors"))
    got = pipe(prompt=PROMPT, height=128, width=128, num_inference_steps=4, guidance_scale=5.0,
               latents=gold["initial_latents"].clone(), output_type="latent").images
    err = ((got - gold["final_latents"]).norm() / gold["final_latents"].norm()).item()
    print("golden_0_s4 final latents relL2 vs the shipped reference", err)
    assert err < 1e-5, "this environment does not reproduce the shipped reference"
    os.makedirs(a.out, exist_ok=True)
    index = {"diffusers": diffusers.__version__, "torch": torch.__version__, "runs": []}
    for r in RUNS:
        t = run(pipe, r)
        save_file(t, os.path.join(a.out, r["file"]))
        index["runs"].append({k: v for k, v in r.items()})
        print(r["file"], {k: list(v.shape) for k, v in t.items()})
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f, indent=2)


main()
