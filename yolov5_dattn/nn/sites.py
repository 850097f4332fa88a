"""Which feature map each DAttention of a built model sees: its stride, measured by one probe forward.

Host-agnostic (pure torch): any model whose forward takes a (1, 3, H, W) image and that may carry a `stride`
tensor works, so the YOLOv5 host (`yolov5_dattn.hosts.yolov5.fmap`, which re-exports these names) and the ultralytics
host (`yolov5_dattn.hosts.ultralytics.fmap_checks`) share it. A YAML that moves a block to another level, or a P6
model, needs no special case: the stride comes from the built model.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .dattention import DAttention
from .query_selection import selected_count, smallest_query_ratio

HW = Tuple[int, int]


@dataclass
class AttentionSite:
    """One DAttention in a model and the downsampling in front of it."""

    name: str  # module path, e.g. 'model.8.m.0.attention'
    module: DAttention
    stride: int  # input pixels per cell of the map it attends over

    @property
    def declared(self) -> HW:
        """The `q_size` (h, w) written in the YAML."""
        return self.module.q_h, self.module.q_w

    @property
    def size_fixed(self) -> bool:
        """True when its parameters only fit `declared` (fixed_pe)."""
        return self.module.size_fixed

    @property
    def variant(self) -> str:
        """Short name of the position term, as written in a YAML ('dwc_pe', 'fixed_pe', ...)."""
        return {"dwc": "dwc_pe", "fixed": "fixed_pe", "log_cpb": "log_cpb", "table": "interpolated table",
                "none": "no pe"}[self.module.pe_kind]

    def fmap(self, input_hw: Sequence[int]) -> HW:
        """Feature map (h, w) for an input of `input_hw` pixels."""
        return feature_map(input_hw, self.stride)

    def input_for(self, hw: Sequence[int]) -> HW:
        """The input size (h, w) in pixels whose feature map is `hw`."""
        return int(hw[0]) * self.stride, int(hw[1]) * self.stride

    @property
    def query_ratio(self) -> float:
        """The share of query positions that attend (`DAttention(query_ratio=...)`; 1.0 without a scorer)."""
        scorer = getattr(self.module, "query_scorer", None)
        return 1.0 if scorer is None else float(scorer.ratio)

    def queries(self, input_hw: Sequence[int]) -> Tuple[int, int]:
        """(k, H·W): the queries that attend and all of them, on the map of an input of `input_hw` pixels."""
        h, w = self.fmap(input_hw)
        ratio = self.query_ratio
        return (selected_count(h * w, ratio) if ratio > 0 else 0), h * w

    def query_problem(self, input_hw: Sequence[int]) -> Optional[str]:
        """None when the layer's query_ratio selects between 1 and all of the queries at `input_hw`; else what
        is wrong, with the smallest ratio that works there (a module built by DAttention always passes: its
        constructor refuses a ratio outside (0, 1]; this catches a loaded model whose ratio was changed)."""
        k, n = self.queries(input_hw)
        if 0.0 < self.query_ratio <= 1.0 and 1 <= k <= n:
            return None
        return (f"{self.name}: query_ratio {self.query_ratio:g} selects {k} of the {n} queries of its "
                f"{fmt(self.fmap(input_hw))} map: use a query_ratio in (0, 1]; the smallest that works there is "
                f"{smallest_query_ratio(n):.4g} (1 query), 1.0 attends with all")

    def queries_text(self, input_hw: Sequence[int]) -> str:
        """', query_ratio 0.25: 1600 of 6400 queries attend' for a sparse layer at `input_hw`; '' for a dense one."""
        if getattr(self.module, "query_scorer", None) is None:
            return ""
        k, n = self.queries(input_hw)
        return f", query_ratio {self.query_ratio:g}: {k} of {n} queries attend"

    @property
    def smallest_side(self) -> int:
        """The smallest map side (cells) the module runs on: its offset network's depthwise conv (kernel
        `ksize`, stride `stride`, padded ksize // 2 unless ksize == stride) needs ksize - 2·pad cells, and
        `no_off`'s average pooling needs `stride`. Smaller maps raise inside torch."""
        m = self.module
        if m.no_off:
            return max(int(m.stride), 1)
        pad = m.ksize // 2 if m.ksize != m.stride else 0
        return max(int(m.ksize) - 2 * pad, 1)


def feature_map(input_hw: Sequence[int], stride: int) -> HW:
    """(h, w) of the map after `stride`-fold downsampling; stride-2 convs (k3 s2 p1, YOLOv5's and ultralytics')
    round up."""
    return math.ceil(int(input_hw[0]) / stride), math.ceil(int(input_hw[1]) / stride)


def rect_val_long_side(side: int, gs: int, pad: float = 0.5) -> int:
    """Long side (pixels) of rectangular validation batches: ceil(side/gs + pad)·gs (YOLOv5's val.py and
    ultralytics' build_yolo_dataset both pad by half a stride, so 640 -> 672)."""
    return math.ceil(side / gs + pad) * gs


def grid_size(model: nn.Module) -> int:
    """The stride every input size must be a multiple of: max(model stride, 32), as YOLOv5's train.py/val.py and
    ultralytics' trainer compute it."""
    stride = getattr(model, "stride", None)
    return max(int(stride.max()) if stride is not None else 32, 32)


def find_attention(model: nn.Module, probe: Optional[int] = None) -> List[AttentionSite]:
    """Every DAttention in `model` with its stride, measured by one probe forward (no gradients).

    Args:
        model: a built detection/segmentation model (YOLOv5's or ultralytics'), any mode, any dtype.
        probe: probe image side; default 2·grid_size, the smallest YOLOv5 accepts for training.
    Returns: sites in forward order (empty when the model has no DAttention; no forward is run then).
    """
    named = [(name, m) for name, m in model.named_modules() if isinstance(m, DAttention)]
    if not named:
        return []
    probe = probe or 2 * grid_size(model)
    if next(model.parameters()).dtype != torch.float32:  # checkpoints store fp16; not every CPU op has fp16
        import copy
        model = copy.deepcopy(model).float()
        named = [(name, m) for name, m in model.named_modules() if isinstance(m, DAttention)]
    seen = {}

    def remember(name):
        def hook(module, args):  # returns None: a pre-hook's return value would replace the input
            seen.setdefault(name, tuple(args[0].shape[-2:]))
        return hook

    hooks = [m.register_forward_pre_hook(remember(name)) for name, m in named]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()  # BatchNorm in training mode would also update running statistics
        with torch.no_grad():
            model(torch.zeros(1, 3, probe, probe, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    sites = []
    for name, m in named:
        if name not in seen:  # a DAttention the forward never reaches has nothing to check
            continue
        h, w = (int(s) for s in seen[name])
        sites.append(AttentionSite(name, m, stride=max(probe // max(h, 1), 1)))
    return sites


def fmt(hw: Sequence[int]) -> str:
    """[h, w] as written in a YAML."""
    return f"[{int(hw[0])}, {int(hw[1])}]"
