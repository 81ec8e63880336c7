#!/usr/bin/env python3
# LongCat-Image transformer references from diffusers' own LongCatImageTransformer2DModel (test/parity/longcat-image.test.ts):
#  * the parameter count at the released config (10 dual + 20 single blocks, joint_attention_dim 3584) and at the
#    class defaults, counted on the meta device -> params.json;
#  * a scaled-down random-weight model (2 dual + 2 single blocks, 3 heads of 16, odd token counts) run forward in
#    float32 -> transformer.safetensors (weights, diffusers key names) and io.safetensors (inputs, output), under
#    test/fixtures/longcat-transformer-scaled.
#
# Run (from the repository root; CPU only, seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-longcat-references.py
import json
import os

import torch
from safetensors.torch import save_file

from diffusers import LongCatImageTransformer2DModel
from fixture_random import randomize

OUT = "test/fixtures/longcat-transformer-scaled"
RELEASED = {"num_layers": 10, "num_single_layers": 20, "attention_head_dim": 128, "num_attention_heads": 24,
            "joint_attention_dim": 3584, "pooled_projection_dim": 3584, "axes_dims_rope": [16, 56, 56], "in_channels": 64}
SCALED = {"num_layers": 2, "num_single_layers": 2, "num_attention_heads": 3, "attention_head_dim": 16, "axes_dims_rope": [4, 6, 6],
          "joint_attention_dim": 40, "pooled_projection_dim": 40, "in_channels": 20}


def main():
    os.makedirs(OUT, exist_ok=True)
    with torch.device("meta"):
        params = {"released": sum(p.numel() for p in LongCatImageTransformer2DModel(**RELEASED).parameters()),
                  "class_defaults": sum(p.numel() for p in LongCatImageTransformer2DModel().parameters())}
    with open(os.path.join(OUT, "params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")
    g = torch.Generator().manual_seed(1)
    m = LongCatImageTransformer2DModel(**SCALED).eval()
    randomize(m, g, 0.3)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(OUT, "transformer.safetensors"))
    B, N, T = 2, 15, 7  # 48x80 px -> 3x5 packed tokens
    io = {"hidden_states": torch.randn(B, N, 20, generator=g), "encoder_hidden_states": torch.randn(B, T, 40, generator=g),
          "timestep": torch.tensor([0.73, 0.31]),
          "img_ids": torch.stack([torch.zeros(N), torch.arange(N) // 5, torch.arange(N) % 5], -1),
          "txt_ids": torch.stack([torch.zeros(T), torch.arange(T), torch.arange(T)], -1)}
    with torch.no_grad():
        io["output"] = m(**io, return_dict=False)[0]
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    print(params, io["output"].shape)


if __name__ == "__main__":
    main()
