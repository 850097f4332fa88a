"""YOLOv5 blocks built on DAttention: a bottleneck that ends in attention, and its C3."""
from typing import Optional

from torch import nn
from yolov5.models.common import C3, Bottleneck

from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.nn.fmapsize import FmapSize, dattention_kwargs


class Bottleneck_DAttention(Bottleneck):
    """YOLOv5 Bottleneck (1×1 conv → 3×3 conv) followed by DAttention; residual when shortcut and c1 == c2.

    Args: c1, c2 channels in/out; fmapsize see `dattention_kwargs`; shortcut, g, e as `Bottleneck`.
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, fmapsize: FmapSize, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, e)
        self.attention = DAttention(c2, **dattention_kwargs(fmapsize))

    def forward(self, x):
        y = self.attention(self.cv2(self.cv1(x)))
        return x + y if self.add else y


class C3_DAttention(C3):
    """YOLOv5 C3 whose n bottlenecks are `Bottleneck_DAttention(c_, c_, fmapsize, shortcut, g, e=1.0)`.

    Args: c1, c2 channels in/out; n repeats; fmapsize see `dattention_kwargs`; shortcut, g, e as `C3`.
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None,
                 shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        kwargs = dattention_kwargs(fmapsize)
        self.m = nn.Sequential(*(Bottleneck_DAttention(c_, c_, kwargs, shortcut, g, e=1.0) for _ in range(n)))
