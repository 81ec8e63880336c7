#!/usr/bin/env python3
# A Wan 2.2 A14B-style (two experts) random-weight WanPipeline directory, and its references from diffusers'
# own WanPipeline: the Wan 2.1 fixture (tokenizer, UMT5, AutoencoderKLWan, scheduler) plus `transformer_2`
# (a second WanTransformer3DModel with its own seeded random weights, saved with save_pretrained) and
# `boundary_ratio` 0.875 in model_index.json (Wan-AI/Wan2.2-T2V-A14B-Diffusers' value): `transformer` runs the
# steps with t >= 875, `transformer_2` the later ones, with guidance_scale and guidance_scale_2.
#
# Run (from the repository root; CPU only, seconds), from the full Wan 2.1 fixture (its VAE encoder too):
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-wan22-fixture.py \
#       --base ../shared/models/wan2.1-random --out test/fixtures/wan2.2-random
#
# Environment: as test/parity/make-flux1-references.py says (diffusers at commit 58eb52c0, src/ on PYTHONPATH).
# The VAE encoder and the PNGs are removed from the written copy afterwards (text-to-video never runs them).
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import WanPipeline, WanTransformer3DModel

PROMPT = "a large red circle at the center on a black background"
RUNS = [
    {"file": "golden_s4.safetensors", "height": 64, "width": 64, "num_frames": 5, "num_inference_steps": 4, "guidance_scale": 5.0, "guidance_scale_2": 3.0, "seed": 0},
    {"file": "golden_s6.safetensors", "height": 48, "width": 80, "num_frames": 9, "num_inference_steps": 6, "guidance_scale": 4.0, "guidance_scale_2": None, "seed": 1},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    shutil.copytree(a.base, a.out, ignore=shutil.ignore_patterns("reference"))
    for root, dirs, files in os.walk(a.out):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    cfg = json.load(open(os.path.join(a.out, "transformer", "config.json")))
    torch.manual_seed(22)
    t2 = WanTransformer3DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    with torch.no_grad():
        for p in t2.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.dim() == 1 and p.numel() == cfg["num_attention_heads"] * cfg["attention_head_dim"] else 0.0))
    t2.save_pretrained(os.path.join(a.out, "transformer_2"))
    idx = json.load(open(os.path.join(a.out, "model_index.json")))
    idx["transformer_2"] = ["diffusers", "WanTransformer3DModel"]
    idx["boundary_ratio"] = 0.875
    idx["expand_timesteps"] = False
    json.dump(idx, open(os.path.join(a.out, "model_index.json"), "w"), indent=2)

    pipe = WanPipeline.from_pretrained(a.out, torch_dtype=torch.float32)
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == 0.875
    ref = os.path.join(a.out, "reference")
    os.makedirs(ref, exist_ok=True)
    index = {"diffusers": diffusers.__version__, "torch": torch.__version__, "prompt": PROMPT, "runs": []}
    for r in RUNS:
        g = torch.Generator("cpu").manual_seed(r["seed"])
        lat = pipe.prepare_latents(1, 16, r["height"], r["width"], r["num_frames"], torch.float32, "cpu", g, None)
        args = {k: r[k] for k in ("height", "width", "num_frames", "num_inference_steps", "guidance_scale", "guidance_scale_2") if r[k] is not None}
        out = pipe(prompt=PROMPT, **args, latents=lat.clone(), output_type="latent").frames
        video = pipe(prompt=PROMPT, **args, latents=lat.clone(), output_type="np").frames[0]
        t = {
            "initial_latents": lat.contiguous(),
            "final_latents": out.float().contiguous(),
            "video_uint8": torch.from_numpy((video * 255).round().astype("uint8")).contiguous(),
            "timesteps": pipe.scheduler.timesteps.float().contiguous(),
        }
        save_file(t, os.path.join(ref, r["file"]))
        index["runs"].append(r)
        print(r["file"], [int(x) for x in pipe.scheduler.timesteps], {k: list(v.shape) for k, v in t.items()})
    json.dump(index, open(os.path.join(ref, "index.json"), "w"), indent=2)
    # text-to-video never runs the VAE encoder: keep the decoder half only
    vae = os.path.join(a.out, "vae", "diffusion_pytorch_model.safetensors")
    w = load_file(vae)
    save_file({k: v for k, v in w.items() if not (k.startswith("encoder.") or k.startswith("quant_conv."))}, vae, metadata={"format": "pt"})


main()
