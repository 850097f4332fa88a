"""Which feature map each DAttention will see, for the input sizes a YOLOv5 run will feed it.

Everything here is derived from the BUILT model: one probe forward with hooks tells each DAttention's
stride (input pixels per feature-map cell), so a YAML that moves the block to another level, or a P6
model, needs no special case. The input sizes reproduce YOLOv5 7.0.14's own rules:

- training batches (mosaic) are `imgsz` square;
- `--rect` batches: the long side is `imgsz`, the short side follows the images' aspect ratio
  (utils/dataloaders.py: ceil(shape · imgsz / stride + pad) · stride, pad 0);
- validation (val.py, and train.py's per-epoch check) is always rectangular with pad 0.5, which
  pushes the long side one stride beyond `imgsz` (640 -> 672, so P5 sees 21);
- `--multi-scale` picks randrange(0.5·imgsz, 1.5·imgsz + gs) // gs · gs per batch;
- inference letterboxes each image/frame: long side to `imgsz`, short side padded to a stride multiple
  (utils/augmentations.py `letterbox(auto=True)`).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from yolov5_dattn.nn.dattention import DAttention

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


def feature_map(input_hw: Sequence[int], stride: int) -> HW:
    """(h, w) of the map after `stride`-fold downsampling; YOLOv5's stride-2 convs round up (k3 s2 p1)."""
    return math.ceil(int(input_hw[0]) / stride), math.ceil(int(input_hw[1]) / stride)


def grid_size(model: nn.Module) -> int:
    """The stride every YOLOv5 input size must be a multiple of: max(model stride, 32), as train.py/val.py."""
    stride = getattr(model, "stride", None)
    return max(int(stride.max()) if stride is not None else 32, 32)


def find_attention(model: nn.Module, probe: Optional[int] = None) -> List[AttentionSite]:
    """Every DAttention in `model` with its stride, measured by one probe forward (no gradients).

    Args:
        model: a built YOLOv5 model (DetectionModel / SegmentationModel), any mode, any dtype.
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


def rect_val_long_side(imgsz: int, gs: int, pad: float = 0.5) -> int:
    """Long side (pixels) of YOLOv5's rectangular validation batches: ceil(imgsz/gs + pad)·gs."""
    return math.ceil(imgsz / gs + pad) * gs


def multiscale_range(imgsz: int, gs: int) -> Tuple[int, int]:
    """Smallest and largest square side train.py's `--multi-scale` can pick (multiples of gs)."""
    low = int(imgsz * 0.5) // gs * gs
    high = (int(imgsz * 1.5) + gs - 1) // gs * gs
    return max(low, gs), high


def letterbox_shape(src_hw: Sequence[int], new_hw: Sequence[int], stride: int, auto: bool = True) -> HW:
    """Input size (h, w) YOLOv5's `letterbox` makes of a src_hw image for a new_hw target.

    auto=True (PyTorch models): scale to fit, then pad each side only up to a stride multiple.
    auto=False: pad to exactly new_hw.
    """
    if not auto:
        return int(new_hw[0]), int(new_hw[1])
    h, w = int(src_hw[0]), int(src_hw[1])
    r = min(new_hw[0] / h, new_hw[1] / w)
    unpad_w, unpad_h = int(round(w * r)), int(round(h * r))
    dw, dh = (new_hw[1] - unpad_w) % stride, (new_hw[0] - unpad_h) % stride
    return unpad_h + dh, unpad_w + dw


def fmt(hw: Sequence[int]) -> str:
    """[h, w] as written in a YAML."""
    return f"[{int(hw[0])}, {int(hw[1])}]"
