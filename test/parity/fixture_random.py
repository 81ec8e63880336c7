# Seeded random weights for the scaled-down fixture directories the make-*-fixture.py scripts build: every
# parameter drawn, so no part of a model is left at an initialization that would hide a wrong layer (norm
# weights around 1, the rest around 0 at the given scale).
import torch


def randomize(module, g, scale):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith("weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
