#!/usr/bin/env python3
# Extra reference tensors from diffusers' own FluxPipeline for the random-weight FLUX.1 fixture
# (test/fixtures/flux1-random; reference/README.md there says how golden_*.safetensors were made).
#
# Run (from the repository root; CPU only, a few seconds):
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-flux1-references.py \
#       --model test/fixtures/flux1-random --out test/fixtures/flux1-random-extra
#
# Environment it was run in (matches the golden references): python 3.11.7, torch 2.13.0+cpu,
# diffusers 0.40.0.dev0 at commit 58eb52c0803ea9af3abec60841c2a093bdf1f951 (src/ from
# `git archive 58eb52c0... src`, on PYTHONPATH), transformers 5.18.0, tokenizers 0.23.2,
# sentencepiece 0.2.2, safetensors 0.8.0, numpy 2.4.6 (plus accelerate, requests, Pillow, importlib_metadata).
#   python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 transformers==5.18.0 \
#       tokenizers==0.23.2 sentencepiece==0.2.2 safetensors==0.8.0 numpy==2.4.6 accelerate requests Pillow importlib_metadata
#
# Writes <out>/cfg_s4.safetensors, <out>/nonsquare_s4.safetensors (same tensor names and meanings as
# golden_0_s4.safetensors, plus negative_* / *_uncond_* for true CFG) and <out>/index.json.
# Before writing, it reruns the golden_0_s4 call and compares every tensor with
# <model>/reference/golden_0_s4.safetensors, so a mismatched environment shows up (--no-check skips it).
import argparse
import json
import os
import platform
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

PROMPT = "a large red circle at the center on a black background"
DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"

RUNS = [
    {
        "file": "cfg_s4.safetensors",
        "kind": "true_cfg",
        "seed": 1,
        "call": {
            "prompt": PROMPT,
            "negative_prompt": "blue",
            "true_cfg_scale": 4.0,
            "height": 128,
            "width": 128,
            "num_inference_steps": 4,
            "guidance_scale": 3.5,
            "max_sequence_length": 32,
            "output_type": "np",
        },
    },
    {
        "file": "nonsquare_s4.safetensors",
        "kind": "nonsquare",
        "seed": 2,
        "call": {
            "prompt": PROMPT,
            "height": 96,
            "width": 160,
            "num_inference_steps": 4,
            "guidance_scale": 3.5,
            "max_sequence_length": 32,
            "output_type": "np",
        },
    },
]

GOLDEN_CHECK = {
    "file": "golden_0_s4.safetensors",
    "seed": 0,
    "call": {
        "prompt": PROMPT,
        "height": 128,
        "width": 128,
        "num_inference_steps": 4,
        "guidance_scale": 3.5,
        "max_sequence_length": 32,
        "output_type": "np",
    },
}


def initial_latents(pipe, seed, height, width):
    # The README's rule: packed [1, (h/16)*(w/16), 64].
    g = torch.Generator("cpu").manual_seed(seed)
    return pipe.prepare_latents(1, 16, height, width, torch.float32, "cpu", g, None)[0]


def token_ids(pipe, prompt, max_sequence_length):
    # The same tokenizer calls as FluxPipeline._get_clip_prompt_embeds / _get_t5_prompt_embeds.
    clip = pipe.tokenizer(
        [prompt], padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True,
        return_overflowing_tokens=False, return_length=False, return_tensors="pt",
    ).input_ids
    t5 = pipe.tokenizer_2(
        [prompt], padding="max_length", max_length=max_sequence_length, truncation=True,
        return_length=False, return_overflowing_tokens=False, return_tensors="pt",
    ).input_ids
    return clip.to(torch.int64), t5.to(torch.int64)


def run(pipe, seed, call):
    call = dict(call)
    h, w = call["height"], call["width"]
    lat0 = initial_latents(pipe, seed, h, w)
    do_cfg = call.get("true_cfg_scale", 1.0) > 1 and call.get("negative_prompt") is not None

    # encode_prompt outputs, in call order (positive first, then negative when true CFG is on).
    enc = []
    orig_encode = pipe.encode_prompt

    def encode_prompt(*a, **k):
        out = orig_encode(*a, **k)
        enc.append(tuple(t.detach().clone() for t in out))
        return out

    # Every transformer call: inputs and output[0]. With true CFG the calls alternate cond, uncond.
    calls = []

    def hook(module, args, kwargs, output):
        calls.append({
            "hidden_states": kwargs["hidden_states"].detach().clone(),
            "timestep": kwargs["timestep"].detach().clone(),
            "guidance": None if kwargs.get("guidance") is None else kwargs["guidance"].detach().clone(),
            "txt_ids": kwargs["txt_ids"].detach().clone(),
            "img_ids": kwargs["img_ids"].detach().clone(),
            "encoder_hidden_states": kwargs["encoder_hidden_states"].detach().clone(),
            "pooled_projections": kwargs["pooled_projections"].detach().clone(),
            "out": output[0].detach().clone(),
        })

    # The latents handed to the VAE (unpacked, / scaling_factor + shift_factor).
    vae_in = []
    orig_decode = pipe.vae.decode

    def decode(z, *a, **k):
        vae_in.append(z.detach().clone())
        return orig_decode(z, *a, **k)

    per_step = []

    def on_step_end(p, i, t, kw):
        per_step.append(kw["latents"].detach().clone())
        return {}

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    pipe.encode_prompt = encode_prompt
    pipe.vae.decode = decode
    try:
        with torch.no_grad():
            out = pipe(**call, latents=lat0.clone(), callback_on_step_end=on_step_end,
                       callback_on_step_end_tensor_inputs=["latents"])
    finally:
        handle.remove()
        del pipe.encode_prompt
        del pipe.vae.decode

    steps = call["num_inference_steps"]
    stride = 2 if do_cfg else 1
    assert len(calls) == steps * stride, (len(calls), steps, stride)
    assert len(per_step) == steps and len(vae_in) == 1
    cond = calls[0::stride]
    image = torch.from_numpy(np.ascontiguousarray(out.images)).to(torch.float32)
    image_uint8 = torch.from_numpy((out.images[0] * 255).round().astype(np.uint8))
    clip_ids, t5_ids = token_ids(pipe, call["prompt"], call["max_sequence_length"])

    pe, pooled, txt_ids = enc[0]
    assert torch.equal(cond[0]["encoder_hidden_states"], pe) and torch.equal(cond[0]["pooled_projections"], pooled)
    assert torch.equal(cond[0]["hidden_states"], lat0)

    t = {
        "clip_input_ids": clip_ids,
        "t5_input_ids": t5_ids,
        "prompt_embeds": pe,
        "pooled_prompt_embeds": pooled,
        "txt_ids": txt_ids,
        "img_ids": cond[0]["img_ids"],
        "guidance": cond[0]["guidance"],
        "initial_latents": lat0,
        "sigmas": pipe.scheduler.sigmas.detach().clone(),
        "timesteps": pipe.scheduler.timesteps.detach().clone(),
        "transformer_timestep_step0": cond[0]["timestep"],
        "transformer_out_step0": cond[0]["out"],
        "transformer_out_all_steps": torch.stack([c["out"] for c in cond]),
        "latents_per_step": torch.stack(per_step),
        "final_latents": per_step[-1],
        "final_latents_vae_input": vae_in[0],
        "image": image,
        "image_uint8": image_uint8,
    }
    if do_cfg:
        unc = calls[1::2]
        npe, npooled, ntxt_ids = enc[1]
        assert torch.equal(unc[0]["encoder_hidden_states"], npe)
        nclip, nt5 = token_ids(pipe, call["negative_prompt"], call["max_sequence_length"])
        s = call["true_cfg_scale"]
        t.update({
            "negative_clip_input_ids": nclip,
            "negative_t5_input_ids": nt5,
            "negative_prompt_embeds": npe,
            "negative_pooled_prompt_embeds": npooled,
            "negative_txt_ids": ntxt_ids,
            "true_cfg_scale": torch.tensor([s], dtype=torch.float32),
            # the unconditional (negative-prompt) branch, the second transformer call of each step
            "transformer_out_uncond_step0": unc[0]["out"],
            "transformer_out_uncond_all_steps": torch.stack([c["out"] for c in unc]),
            # what the scheduler got at step 0: uncond + true_cfg_scale * (cond - uncond)
            "noise_pred_cfg_step0": unc[0]["out"] + s * (cond[0]["out"] - unc[0]["out"]),
        })
    for k, v in t.items():
        if v.dtype.is_floating_point:
            t[k] = v.to(torch.float32)
        t[k] = t[k].contiguous()
    return t


def versions():
    import safetensors, sentencepiece, tokenizers, transformers
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        # src/ came from `git archive <commit> src`, which carries no commit id: say which one via DIFFUSERS_COMMIT.
        "diffusers_commit": os.environ.get("DIFFUSERS_COMMIT", DIFFUSERS_COMMIT),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": sentencepiece.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(here, "..", "fixtures", "flux1-random"))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "flux1-random-extra"))
    ap.add_argument("--no-check", action="store_true", help="skip reproducing reference/golden_0_s4")
    a = ap.parse_args()

    torch.manual_seed(0)
    pipe = FluxPipeline.from_pretrained(a.model, torch_dtype=torch.float32)  # bf16 transformer upcast
    pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)

    check = None
    if not a.no_check:
        ref = load_file(os.path.join(a.model, "reference", GOLDEN_CHECK["file"]))
        got = run(pipe, GOLDEN_CHECK["seed"], GOLDEN_CHECK["call"])
        check = {"file": "reference/" + GOLDEN_CHECK["file"], "max_abs_diff": {}}
        for k in ref:
            if k not in got or got[k].shape != ref[k].shape:
                check["max_abs_diff"][k] = f"shape {None if k not in got else list(got[k].shape)} vs {list(ref[k].shape)}"
                continue
            d = (got[k].to(torch.float64) - ref[k].to(torch.float64)).abs().max().item()
            check["max_abs_diff"][k] = d
        for k, v in check["max_abs_diff"].items():
            print(f"[golden_0_s4 check] {k}: max abs diff {v}")

    os.makedirs(a.out, exist_ok=True)
    index = {
        "pipeline": "FluxPipeline",
        "model": "../flux1-random",
        "versions": versions(),
        "load": "FluxPipeline.from_pretrained('../flux1-random', torch_dtype=torch.float32)  # bf16 transformer upcast, CPU",
        "latents_rule": "latents = pipe.prepare_latents(1, 16, height, width, torch.float32, 'cpu', "
                        "torch.Generator('cpu').manual_seed(seed), None)[0]  (packed [1, (h/16)*(w/16), 64])",
        "image_rule": "image_uint8 = (pipe(..., output_type='np').images[0] * 255).round().astype(uint8)",
        "golden_0_s4_reproduction": check,
        "runs": [],
    }
    for r in RUNS:
        t = run(pipe, r["seed"], r["call"])
        save_file(t, os.path.join(a.out, r["file"]))
        os.chmod(os.path.join(a.out, r["file"]), 0o644)
        call = dict(r["call"], latents="<initial_latents>")
        c = pipe.scheduler.config
        mu = calculate_shift(t["initial_latents"].shape[1], c.get("base_image_seq_len", 256),
                             c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5), c.get("max_shift", 1.15))
        index["runs"].append({
            "file": r["file"], "kind": r["kind"], "seed": r["seed"], "mu": mu, "call": call,
            "tensors": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in t.items()},
        })
        print(f"wrote {os.path.join(a.out, r['file'])}")
        for k, v in t.items():
            print(f"  {k}: {list(v.shape)} {str(v.dtype).replace('torch.', '')}")
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
