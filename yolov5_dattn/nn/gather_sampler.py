"""Bilinear sampling from Gather and arithmetic: `F.grid_sample(mode="bilinear", align_corners=True,
padding_mode="zeros")` without a GridSample node in an exported graph.

Deployment runtimes and converters (TensorRT, TFLite, CoreML, NCNN, RKNN, ...) either lack ONNX's GridSample
or run it slowly or wrongly; every one of them has Gather, Floor, Clip, comparisons and Mul/Add, which is all
this needs. For each output point:

    ix = (gx + 1) / 2 · (W - 1)        iy likewise with H            (align_corners=True)
    x0 = floor(ix), x1 = x0 + 1        weights 1 - (ix - x0) and ix - x0 (y likewise)
    out = Σ over the 4 corner taps of weight · input[y, x], a tap outside the map contributing 0

The four taps of every point are read with one Gather from the input laid out as (N·H·W, C) rows.
Every size is read from the tensors' runtime shapes (under tracing a 0-dim tensor, see `dattention.Size`), so a
`--dynamic` export runs at any batch and map size.
"""
from typing import Union

import torch

__all__ = ["grid_sample_gather"]


def _last_index(size: Union[int, torch.Tensor], like: torch.Tensor) -> Union[int, torch.Tensor]:
    """`size - 1` as `like`'s dtype: an int, or for a traced size a (1,) tensor computed in the graph.

    A float Range over the traced size keeps the arithmetic in the input's dtype (arithmetic on the traced
    integer itself would export float64 constants, which some runtimes refuse to mix with float32).
    """
    if isinstance(size, torch.Tensor):
        return torch.arange(size, dtype=like.dtype, device=like.device)[-1:]
    return size - 1


def _clamp(t: torch.Tensor, high: Union[int, torch.Tensor]) -> torch.Tensor:
    """`t` clamped to [0, high]; `high` an int or a (1,) tensor."""
    if isinstance(high, torch.Tensor):
        return torch.minimum(t.clamp(min=0.0), high)
    return t.clamp(0.0, float(high))


def grid_sample_gather(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(input, grid, mode="bilinear", align_corners=True, padding_mode="zeros")`, computed with
    Gather and arithmetic (differentiable in `input` and `grid`).

    Args:
        input: (N, C, H, W) floating point.
        grid: (N, Ho, Wo, 2) sampling positions in `input`'s dtype, (x, y) order, -1 and +1 the centres of the
            first and last pixel; positions beyond read zeros.
    Returns:
        (N, C, Ho, Wo).
    """
    N, C, H, W = input.shape
    Ho, Wo = grid.shape[1], grid.shape[2]
    gx, gy = grid[..., 0].reshape(N, -1), grid[..., 1].reshape(N, -1)  # (N, P), P = Ho·Wo
    last_x, last_y = _last_index(W, grid), _last_index(H, grid)
    ix = (gx + 1.0) * 0.5 * last_x  # pixel coordinates
    iy = (gy + 1.0) * 0.5 * last_y
    x0, y0 = ix.floor(), iy.floor()
    fx, fy = ix - x0, iy - y0  # distance past the left / top tap: the weight of the right / bottom one

    # the 4 taps of every point, stacked last: (N, P, 4) in the order (y0,x0) (y0,x1) (y1,x0) (y1,x1)
    xs = torch.stack((x0, x0 + 1.0, x0, x0 + 1.0), -1)
    ys = torch.stack((y0, y0, y0 + 1.0, y0 + 1.0), -1)
    wx = torch.stack((1.0 - fx, fx, 1.0 - fx, fx), -1)
    wy = torch.stack((1.0 - fy, 1.0 - fy, fy, fy), -1)
    inside = (xs >= 0) & (xs <= last_x) & (ys >= 0) & (ys <= last_y)  # zeros padding: outside taps read 0
    weight = wx * wy * inside.to(grid.dtype)  # (N, P, 4)

    # row of each tap in the (N·H·W, C) layout: clamped (its weight is 0 when it was outside), exact in int64
    col, row = _clamp(xs, last_x).long(), _clamp(ys, last_y).long()
    batch = torch.arange(N, device=input.device).reshape(-1, 1, 1)  # (N, 1, 1)
    index = (batch * H + row) * W + col  # (N, P, 4)

    rows = input.permute(0, 2, 3, 1).reshape(-1, C)  # (N·H·W, C)
    taps = rows.index_select(0, index.reshape(-1)).reshape(N, -1, 4, C)  # (N, P, 4, C)
    out = (taps * weight.unsqueeze(-1).to(taps.dtype)).sum(2)  # (N, P, C)
    return out.permute(0, 2, 1).reshape(N, C, Ho, Wo)
