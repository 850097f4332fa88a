"""Where DAttention sits in a bottleneck `z = cv2(cv1(x))`: the one placement logic of both hosts' blocks.

- the published recipe (default): `z` goes *through* the attention, `y = attention(z)`;
- the safe insertion (a `layerscale` init): the attention is a residual branch with a learnable per-channel
  scale, `y = z + gamma * attention(z)` (`LayerScale`, key `layer_scale.gamma`). With init 0.0 the block computes
  exactly its parent bottleneck until gamma moves.

Either way the bottleneck's own residual follows: `x + y` when it adds (`self.add`), else `y`.
"""
from typing import Optional

import torch

from .dattention import DAttention
from .fmapsize import FmapSize, split_layerscale
from .layerscale import LayerScale

__all__ = ["AttentionPlacement"]


class AttentionPlacement:
    """Mixin for a host's bottleneck (it has `cv1`, `cv2` and `add`): put before the host class in the bases,
    `class Bottleneck_DAttention(AttentionPlacement, Bottleneck)`, and call `place_attention` in `__init__`.

    Adds only the modules `attention` (and `layer_scale` for the safe insertion), so state-dict keys are those of
    the parent plus `attention.*` (and `layer_scale.gamma`).
    """

    def place_attention(self, channels: int, fmapsize: Optional[FmapSize], layerscale: Optional[float] = None) -> None:
        """Build `self.attention = DAttention(channels, ...)` from `fmapsize` (`[h, w]` or a DAttention kwargs
        mapping, whose `layerscale` key wins over the argument) and, for a `layerscale` init, `self.layer_scale`."""
        kwargs, layerscale = split_layerscale(fmapsize, layerscale)
        self.attention = DAttention(channels, **kwargs)
        if layerscale is not None:  # only then: the recipe's parameters and state-dict keys stay as they are
            self.layer_scale = LayerScale(channels, layerscale)

    def attend(self, z: torch.Tensor) -> torch.Tensor:
        """The placement on the bottleneck's conv output: (B, C, H, W) -> (B, C, H, W)."""
        scale = getattr(self, "layer_scale", None)  # a block pickled with the recipe has none
        return self.attention(z) if scale is None else z + scale(self.attention(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W): `attend(cv2(cv1(x)))`, plus `x` when the bottleneck adds."""
        y = self.attend(self.cv2(self.cv1(x)))
        return x + y if self.add else y
