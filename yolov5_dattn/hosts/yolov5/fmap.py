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
from typing import Sequence, Tuple

from yolov5_dattn.core import fmap_plan
# host-agnostic, shared with the ultralytics host; re-exported here for the YOLOv5 adapter and its tests
from yolov5_dattn.nn.sites import (HW, AttentionSite, feature_map, find_attention, fmt, grid_size,  # noqa: F401
                                   rect_val_long_side)

__all__ = ["MULTI_SCALE", "AttentionSite", "feature_map", "find_attention", "fmt", "grid_size", "letterbox_shape",
           "multiscale_range", "rect_val_long_side"]

MULTI_SCALE = 0.5  # train.py's --multi-scale: sides from 0.5·imgsz to 1.5·imgsz


def multiscale_range(imgsz: int, gs: int) -> Tuple[int, int]:
    """Smallest and largest square side train.py's `--multi-scale` can pick (multiples of gs)."""
    return fmap_plan.multiscale_range(imgsz, gs, MULTI_SCALE)


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
