#!/usr/bin/env python3
# Wan 2.1 I2V transformer references from diffusers' own WanTransformer3DModel (test/parity/wan-i2v.test.ts):
#  * the parameter count at Wan-AI/Wan2.1-I2V-14B-480P-Diffusers' config (scripts/convert_wan_to_diffusers.py
#    "Wan-I2V-14B-480p"), counted on the meta device -> params.json;
#  * a scaled-down random-weight I2V model (2 blocks, 3 heads of 24, image_dim 20, 9 image tokens; the text
#    512 tokens long, as the attention processor's hard-coded split of image and text tokens needs) run
#    forward in float32 -> transformer.safetensors and io.safetensors, under test/fixtures/wan-i2v-transformer-scaled.
#
# Run (from the repository root; CPU only, seconds), in the environment make-flux1-references.py names:
#
#   PYTHONPATH=/tmp/diffusers-src/src /tmp/refenv/bin/python test/parity/make-wan-i2v-references.py
import json
import os

import torch
from safetensors.torch import save_file

from diffusers import WanTransformer3DModel
from fixture_random import randomize

OUT = "test/fixtures/wan-i2v-transformer-scaled"
RELEASED = {"image_dim": 1280, "added_kv_proj_dim": 5120, "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06,
            "ffn_dim": 13824, "freq_dim": 256, "in_channels": 36, "num_attention_heads": 40, "num_layers": 40, "out_channels": 16,
            "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "text_dim": 4096}
SCALED = {"image_dim": 20, "added_kv_proj_dim": 72, "attention_head_dim": 24, "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 100,
          "freq_dim": 32, "in_channels": 12, "num_attention_heads": 3, "num_layers": 2, "out_channels": 4, "patch_size": [1, 2, 2],
          "qk_norm": "rms_norm_across_heads", "text_dim": 24}


def main():
    os.makedirs(OUT, exist_ok=True)
    with torch.device("meta"):
        params = {"released": sum(p.numel() for p in WanTransformer3DModel(**RELEASED).parameters())}
    with open(os.path.join(OUT, "params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")
    g = torch.Generator().manual_seed(2)
    m = WanTransformer3DModel(**SCALED).eval()
    randomize(m, g, 0.2)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(OUT, "transformer.safetensors"))
    # 2 latent frames of 6 x 10 -> 2 x 3 x 5 = 30 tokens; batch 2
    io = {"hidden_states": torch.randn(2, 12, 2, 6, 10, generator=g), "timestep": torch.tensor([730.0, 310.0]),
          "encoder_hidden_states": torch.randn(2, 512, 24, generator=g), "encoder_hidden_states_image": torch.randn(2, 9, 20, generator=g)}
    with torch.no_grad():
        io["output"] = m(**io, return_dict=False)[0]
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    print(params, io["output"].shape, float(io["output"].abs().mean()))


if __name__ == "__main__":
    main()
