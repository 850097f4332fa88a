"""Sparse queries for DAttention: only the most salient query positions attend (the idea of Sparse DETR,
Roh et al., ICLR 2022).

A light scoring head (`QueryScorer`: two 1×1 convs on the module's input) gives each of the H·W query positions
a score; the k = ceil(ρ·H·W) best (`selected_count`) are gathered, attend over the deformed keys and values
(which, like the offsets, stay dense), and their attention outputs are put back at their positions; every other
position gets no attention term. In `DAttention`'s output `y = W_out · (lepe(q) + a) + b_out`, `a` is then

    a_i = 2·sigmoid(s_i) · attention(q_i)   for the k selected positions i,
    a_i = 0                                 for the others,

so a position that is not selected keeps only the position term (LePE) and the output projection's bias, and a
block that adds the module as a residual branch (`z + gamma · attention(z)`) passes `z` through there, scaled
position term aside. The gate `2·sigmoid(s)` is what teaches the scorer without any loss of its own: the
gradient of the host's loss reaches the scores through it. Its last conv starts near zero, so the gate starts
near 1 and a model loaded from a dense (ρ = 1) checkpoint starts close to that checkpoint's outputs.

k depends only on the map size, so every shape is static for a given size; in an export the sizes come from the
input's shape, k is computed in the graph (integer arithmetic, so PyTorch and the runtime agree), and the
selection is ONNX TopK, GatherElements and ScatterElements.
"""
from dataclasses import dataclass
from fractions import Fraction
from typing import Tuple, Union

import torch
from torch import nn

__all__ = ("MAX_DENOMINATOR", "QueryScorer", "Selection", "check_query_ratio", "selected_count",
           "smallest_query_ratio")

# ρ is read as the nearest fraction p/q with q at most this: every ratio written with up to four decimals is
# exact, and k = ceil(n·p/q) is integer arithmetic, the same in PyTorch and in an exported graph
MAX_DENOMINATOR = 10_000

Size = Union[int, torch.Tensor]  # a Python int, or a 0-dim tensor while the model is traced for export


def check_query_ratio(ratio: object) -> float:
    """`ratio` as a float in (0, 1]; anything else raises ValueError naming `query_ratio`."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"DAttention: query_ratio must be a number in (0, 1] (the share of query positions that "
                         f"attend; 1.0: every one), got {ratio!r}: e.g. query_ratio: 0.25")
    return float(ratio)


def _fraction(ratio: float) -> Tuple[int, int]:
    f = Fraction(ratio).limit_denominator(MAX_DENOMINATOR)
    return f.numerator, f.denominator


def selected_count(n: Size, ratio: float) -> Size:
    """k = ceil(ratio · n), the number of query positions that attend out of `n` (at least 1 for n >= 1).

    Args: n positions (an int, or a traced 0-dim int64 tensor); ratio in (0, 1].
    Returns: an int, or a 0-dim int64 tensor computed from `n` in the graph.
    """
    p, q = _fraction(ratio)
    return (n * p + (q - 1)) // q


def smallest_query_ratio(n: int) -> float:
    """The smallest ratio that selects at least one of `n` positions: 1/n (with ceil, any ratio > 0 does)."""
    return 1.0 / max(int(n), 1)


@dataclass
class Selection:
    """The k selected query positions of each image and their gates.

    index: (B, k) int64 positions in 0..H·W-1; gate: (B, k), 2·sigmoid(score), in the scores' dtype.
    """

    index: torch.Tensor
    gate: torch.Tensor

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, k, C) the selected ones."""
        return tokens.gather(1, self.index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def gather_rows(self, bias: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, Ns) per-query rows -> (B, heads, k, Ns) those of the selected queries."""
        index = self.index[:, None, :, None].expand(-1, bias.shape[1], -1, bias.shape[-1])
        return bias.gather(2, index)

    def scatter(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, k, C) attention outputs -> (B, N, C) shaped as `like`: gated at the selected positions, 0 elsewhere."""
        gated = values * self.gate.unsqueeze(-1).to(values.dtype)
        return torch.zeros_like(like, dtype=values.dtype).scatter(
            1, self.index.unsqueeze(-1).expand(-1, -1, values.shape[-1]), gated)

    def scatter_rows(self, rows: torch.Tensor, n: Size) -> torch.Tensor:
        """(B, heads, k, Ns) rows (attention weights) -> (B, heads, n, Ns), zero rows where not selected."""
        B, heads, _, ns = rows.shape
        full = rows.new_zeros(B, heads, n, ns)
        return full.scatter(2, self.index[:, None, :, None].expand(-1, heads, -1, ns), rows)


class QueryScorer(nn.Module):
    """Saliency of each query position, and the top-ρ of them: 1×1 conv (C -> C/4), GELU, 1×1 conv (-> 1).

    Args: channels C of the input; ratio ρ in (0, 1] (`check_query_ratio`).
    Shapes: forward x (B, C, H, W) -> `Selection` with k = `selected_count(H·W, ratio)` positions per image.
    """

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.ratio = check_query_ratio(ratio)
        hidden = max(int(channels) // 4, 1)
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1))
        # small: the gate 2·sigmoid(s) starts near 1 (a dense checkpoint's outputs), the ranking already differs
        # from position to position, and sigmoid's slope is at its largest
        nn.init.trunc_normal_(self.score[-1].weight, std=0.02)
        nn.init.zeros_(self.score[-1].bias)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H·W) scores, at least fp32 (bf16 would rank many positions as ties)."""
        s = self.score(x).flatten(1)
        return s.to(torch.promote_types(s.dtype, torch.float32))

    def forward(self, x: torch.Tensor) -> Selection:
        B, _, H, W = x.shape
        top = self.scores(x).topk(selected_count(H * W, self.ratio), dim=1)
        return Selection(top.indices, 2.0 * top.values.sigmoid())

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"
