"""A learnable per-channel scale (LayerScale, Touvron et al., "Going deeper with Image Transformers", 2021).

Initialised to zero it makes a residual branch `y + scale(branch(y))` start as the identity, so a block
that adds a branch to a trained network computes exactly that network's outputs until the first step.
"""
import math

import torch
from torch import nn


def check_init(init: object, what: str = "layerscale") -> float:
    """`init` as a float; refuses bools, non-numbers and non-finite values (ValueError naming `what`)."""
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not math.isfinite(init):
        raise ValueError(f"{what} must be a finite number (the scale's initial value, 0.0 for an exact start), "
                         f"got {init!r}")
    return float(init)


class LayerScale(nn.Module):
    """Multiply each channel by a learnable factor `gamma` (initially `init` for every channel).

    Args: channels C; init the initial factor (0.0: the output is exactly zero until gamma is trained).
    Shapes: (B, C, *) -> (B, C, *)
    """

    def __init__(self, channels: int, init: float = 0.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((int(channels),), check_init(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}"
