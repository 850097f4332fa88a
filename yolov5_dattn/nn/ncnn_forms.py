"""DAttention's forward written with layers NCNN has, while `pnnx` traces a model for NCNN.

pnnx turns each traced torch op into an NCNN layer; two that DAttention uses have no NCNN layer and would be left
in the `.param` file as layers NCNN cannot load:

- `torch.baddbmm(bias, W, x)` (the output projection, which lands in NCHW directly) is written as
  `matmul(W, x) + bias`: NCNN's MatMul and BinaryOp, the same numbers;
- `reference.expand_as(offset)` (the reference points broadcast to the offsets' batch) is written as
  `offset * 0 + reference`: a broadcasting BinaryOp, the same values for finite offsets.

Bilinear sampling stays `F.grid_sample`, which pnnx maps to NCNN's own GridSample layer (bilinear, zeros,
align_corners); the Gather sampler's int64 index arithmetic has no NCNN form.

    with ncnn_forms():
        pnnx.export(model, ...)
"""
import contextlib
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["NcnnForms", "ncnn_forms"]


class NcnnForms(TorchFunctionMode):
    """A torch function mode that rewrites `torch.baddbmm` (alpha = beta = 1) and `Tensor.expand_as` into
    broadcasting arithmetic and `matmul` (see the module docstring); every other call runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.baddbmm and not kwargs and len(args) == 3:
            bias, a, b = args  # (B, n, m), (B, n, k), (B, k, m)
            return torch.matmul(a, b) + bias
        if func is torch.Tensor.expand_as and not kwargs and len(args) == 2:
            x, other = args
            return other * 0 + x  # broadcast to `other`'s shape
        return func(*args, **kwargs)


@contextlib.contextmanager
def ncnn_forms() -> Iterator[None]:
    """While active, the model's forward uses only ops pnnx maps to NCNN layers (for its trace)."""
    with NcnnForms():
        yield
