"""One switch for how every DAttention reads its keys (bilinear sampling), beside the attention-kernel switch.

    set_sampler("gather")                 # at run time, for the whole process
    with sampler_set_to("gather"): ...    # for one block (an export), then the previous choice again
    YOLOV5_DATTN_SAMPLER=gather ...       # or from the environment, read once, here only

- "grid_sample" (the default): `F.grid_sample`, PyTorch's own kernel; in an ONNX graph one GridSample node;
- "gather": `gather_sampler.grid_sample_gather`, the same numbers from Gather and arithmetic, for runtimes
  without a reliable GridSample (TensorRT, TFLite, CoreML, NCNN, ...).

Both compute `grid_sample(mode="bilinear", align_corners=True, padding_mode="zeros")`; `bilinear` is the one
place that reads the switch. It is read at every call, so a model loaded from a checkpoint follows it too.
"""
from typing import ContextManager

import torch
import torch.nn.functional as F

from .gather_sampler import grid_sample_gather
from .process_choice import ProcessChoice

__all__ = ["ENV", "CHOICES", "sampler", "set_sampler", "sampler_set_to", "bilinear"]

ENV = "YOLOV5_DATTN_SAMPLER"
CHOICES = ("grid_sample", "gather")

_CHOICE = ProcessChoice(ENV, CHOICES, lambda: "grid_sample", "set_sampler")


def sampler() -> str:
    """The sampler in force: one of `CHOICES` (the environment is read on the first call only)."""
    return _CHOICE.get()


def set_sampler(name: str) -> None:
    """Choose the sampler for every DAttention in this process from now on. Raises ValueError for a name not in
    `CHOICES`."""
    _CHOICE.set(name)


def sampler_set_to(name: str) -> ContextManager[None]:
    """`set_sampler(name)` for the duration of the block; the previous choice is restored on exit."""
    return _CHOICE.set_to(name)


def bilinear(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`grid_sample(input, grid, mode="bilinear", align_corners=True, padding_mode="zeros")` by the sampler in
    force.

    Args: input (N, C, H, W); grid (N, Ho, Wo, 2), (x, y) in [-1, 1] (beyond reads zeros), input's dtype.
    Returns: (N, C, Ho, Wo).
    """
    if sampler() == "gather":
        return grid_sample_gather(input, grid)
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
