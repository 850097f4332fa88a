"""YOLOv5 blocks built on DAttention: a bottleneck that ends in attention, and its C3.

Two ways to place the attention, chosen in the YAML:

- the published recipe (default): the bottleneck's conv output goes *through* DAttention,
  `y = attn(cv2(cv1(x)))`, and `C3_DAttention` defaults to `shortcut=False`;
- the safe insertion (opt-in, `layerscale: <init>` in the `fmapsize` mapping, or the `layerscale=` argument):
  DAttention is a residual branch with a learnable per-channel scale, `y = z + gamma * attn(z)` with
  `z = cv2(cv1(x))` and gamma starting at `init`. With `init` 0.0 and `shortcut` True the block computes
  exactly YOLOv5's `C3`/`Bottleneck` of the same convolutions until gamma moves, so a model started from a
  baseline checkpoint (`--weights yolov5n.pt`: the convolutions keep their names) starts at the baseline's
  accuracy. The public YAMLs' third argument is `shortcut`:

      - [-1, 3, C3_DAttention, [1024, [20, 20]]]                                     # recipe
      - [-1, 3, C3_DAttention, [1024, [20, 20], True]]                               # recipe, residuals kept
      - [-1, 3, C3_DAttention, [1024, {q_size: [20, 20], layerscale: 0.0}, True]]    # safe insertion
"""
from typing import Optional

from torch import nn
from yolov5.models.common import C3, Bottleneck

from yolov5_dattn.nn.attention_placement import AttentionPlacement
from yolov5_dattn.nn.fmapsize import LAYERSCALE_KEY, FmapSize, split_layerscale  # noqa: F401  (names kept here)

__all__ = ["Bottleneck_DAttention", "C3_DAttention"]


class Bottleneck_DAttention(AttentionPlacement, Bottleneck):
    """YOLOv5 Bottleneck (1×1 conv → 3×3 conv) with DAttention; residual when shortcut and c1 == c2.

    Args: c1, c2 channels in/out; fmapsize `[h, w]` or a mapping of DAttention kwargs with `q_size` (see
    `dattention_kwargs`), which may also hold `layerscale`; shortcut, g, e as `Bottleneck`;
    layerscale: None (default) = the recipe, `attn(z)`; a number = the safe insertion `z + gamma * attn(z)`,
    gamma per channel starting at that number (`LayerScale`, key `layer_scale.gamma`).
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, fmapsize: FmapSize, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 layerscale: Optional[float] = None):
        super().__init__(c1, c2, shortcut, g, e)
        self.place_attention(c2, fmapsize, layerscale)  # placement and forward: `AttentionPlacement`


class C3_DAttention(C3):
    """YOLOv5 C3 whose n bottlenecks are `Bottleneck_DAttention(c_, c_, fmapsize, shortcut, g, e=1.0, layerscale)`.

    Args: c1, c2 channels in/out; n repeats; fmapsize and layerscale see `Bottleneck_DAttention`; shortcut, g, e
    as `C3` (shortcut defaults to False, as in the recipe; YOLOv5's backbone C3 uses True).
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None,
                 shortcut: bool = False, g: int = 1, e: float = 0.5, layerscale: Optional[float] = None):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        kwargs, layerscale = split_layerscale(fmapsize, layerscale)
        self.m = nn.Sequential(*(Bottleneck_DAttention(c_, c_, kwargs, shortcut, g, e=1.0, layerscale=layerscale)
                                 for _ in range(n)))
