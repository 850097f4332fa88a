"""LayerNorm over the channel axis of an NCHW tensor."""
from einops import rearrange
from torch import nn


class LayerNormProxy(nn.Module):
    """`nn.LayerNorm(dim)` applied to the channels of a (B, C, H, W) map.

    Kept as a wrapper (state-dict key `norm.*`) so checkpoints match the published recipe.

    Args:
        dim: number of channels C.
    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return rearrange(self.norm(rearrange(x, "b c h w -> b h w c")), "b h w c -> b c h w")
