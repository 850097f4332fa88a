"""The GFLOPs a host's model summary prints for a model with DAttention: the one count both hosts' summaries use.

Both hosts count with thop, which sees neither DAttention's matmuls nor the attention's growth with the feature
map (HW · Ns). A summary asks `summary_gflops` instead: thop's convention plus the FLOPs thop misses
(`yolov5_dattn.analysis.flops.count_flops`), at the size the run uses, on a copy of the model. How the figure
reaches the summary line is the host adapter's part.
"""
from dataclasses import dataclass
from typing import List, Optional, Union

import torch
from torch import nn

__all__ = ["GFLOP", "SummaryFlops", "summary_gflops"]

GFLOP = 1e9


@dataclass(frozen=True)
class SummaryFlops:
    """One forward's cost as a summary prints it: `size` [h, w] counted at, `gflops` (thop's convention plus the
    attention) and `missed_gflops` (the part of it thop alone does not see)."""
    size: List[int]
    gflops: float
    missed_gflops: float


def summary_gflops(model: nn.Module, imgsz: Union[int, List[int]] = 640, *, stride: int = 1,
                   device: Union[str, torch.device] = "meta", channels: Optional[int] = None) -> SummaryFlops:
    """Count one forward of `model` on a (1, ch, h, w) image for a model summary.

    Args: model (not modified); imgsz int or [h, w], each side rounded up to a multiple of `stride` (a host that
    pads its images first); device 'meta' (shapes only) or the model's own (a head that reads tensor values);
    channels input channels (default: the model's YAML `ch`, else its first parameter's dim 1).
    Raises whatever the model's forward raises at that size.
    """
    from yolov5_dattn.analysis.flops import count_flops, image_shape
    h, w = (-(-s // stride) * stride for s in image_shape(imgsz))
    report = count_flops(model, [h, w], device=device, channels=channels)
    return SummaryFlops([h, w], report.thop_with_attention / GFLOP, report.thop_missed / GFLOP)
