#!/usr/bin/env python3
# FLUX.2 transformer references from diffusers' own Flux2Transformer2DModel (test/parity/flux2.test.ts):
#  * the parameter count of each released config (FLUX.2-dev, Klein 4B, Klein 9B), counted on the meta
#    device as sum(p.numel() for p in model.parameters()) -> params.json;
#  * a scaled-down random-weight model (2 dual + 2 single blocks, 3 heads of 16, odd token counts, uneven
#    4-axis ids) run forward in float32 with and without the guidance embedding -> transformer.safetensors
#    (weights, diffusers key names; the case without guidance leaves out the guidance embedder) and
#    io-<case>.safetensors (inputs, output), under
#    test/fixtures/flux2-transformer-scaled.
#
# Run (from the repository root; CPU only, seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-flux2-references.py
import json
import os

import torch
from safetensors.torch import save_file

from diffusers import Flux2Transformer2DModel

OUT = "test/fixtures/flux2-transformer-scaled"

# scripts/convert_flux2_to_diffusers.py's configs
RELEASES = {
    "flux2-dev": {},
    "flux2-klein-4b": {"num_layers": 5, "num_single_layers": 20, "num_attention_heads": 24, "joint_attention_dim": 7680, "guidance_embeds": False},
    "flux2-klein-9b": {"num_layers": 8, "num_single_layers": 24, "num_attention_heads": 32, "joint_attention_dim": 12288, "guidance_embeds": False},
}

SCALED = {"num_layers": 2, "num_single_layers": 2, "num_attention_heads": 3, "attention_head_dim": 16,
          "axes_dims_rope": [4, 4, 4, 4], "joint_attention_dim": 40, "in_channels": 20, "out_channels": 7,
          "timestep_guidance_channels": 32, "mlp_ratio": 3.0}


def main():
    os.makedirs(OUT, exist_ok=True)
    params = {}
    for name, cfg in RELEASES.items():
        with torch.device("meta"):
            m = Flux2Transformer2DModel(**cfg)
        params[name] = sum(p.numel() for p in m.parameters())
    with open(os.path.join(OUT, "params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    weights = None
    for guidance in (True, False):
        m = Flux2Transformer2DModel(**SCALED, guidance_embeds=guidance).eval()
        if weights is None:
            # random weights everywhere (the RMSNorm weights too, so a wrong norm shows)
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 1.0) + (0 if p.ndim > 1 else 1.0))
            weights = {k: v.contiguous() for k, v in m.state_dict().items()}
            save_file(weights, os.path.join(OUT, "transformer.safetensors"))
        else:
            # the same weights without the guidance embedder
            m.load_state_dict({k: v for k, v in weights.items() if "guidance_embedder" not in k}, strict=True)
        tag = "guidance" if guidance else "plain"
        B, N, T = 2, 15, 7  # 48x80 px -> 3x5 packed tokens
        hidden = torch.randn(B, N, SCALED["in_channels"], generator=g)
        enc = torch.randn(B, T, SCALED["joint_attention_dim"], generator=g)
        timestep = torch.tensor([0.73, 0.31])
        img_ids = torch.stack([torch.zeros(N), torch.arange(N) // 5, torch.arange(N) % 5, torch.zeros(N)], -1)
        txt_ids = torch.stack([torch.zeros(T), torch.zeros(T), torch.zeros(T), torch.arange(T)], -1)
        io = {"hidden_states": hidden, "encoder_hidden_states": enc, "timestep": timestep, "img_ids": img_ids, "txt_ids": txt_ids}
        if guidance:
            io["guidance"] = torch.tensor([4.0, 2.5])
        with torch.no_grad():
            out = m(**io, return_dict=False)[0]
        io["output"] = out
        save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, f"io-{tag}.safetensors"))
        print(tag, out.shape, float(out.abs().mean()))
    print(params)


if __name__ == "__main__":
    main()
