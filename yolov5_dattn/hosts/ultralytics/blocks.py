"""Ultralytics blocks with DAttention, built from ultralytics' own blocks so widths, `n` and `e` behave alike.

Each class subclasses the ultralytics block it extends and only swaps the inner modules, so its convolutions
keep the original's names (a stock checkpoint's weights land where they belong) and its parameter count is
the original's plus that of the DAttention modules it adds (minus the attention it replaces, for C2PSA / AIFI).
The argument orders are the ones the public YAMLs use:

    - [-1, 3, C2f_DAttention, [1024, [20, 20], True]]       # YOLOv8: c2, fmapsize, shortcut
    - [-1, 2, C3k2_DAttention, [1024, [20, 20], True]]      # YOLO11/26: c2, fmapsize, c3k
    - [-1, 2, C2PSA_DAttention, [1024, [20, 20]]]           # c2, fmapsize
    - [-1, 1, AIFI_DAttention, [1024, 8, [20, 20]]]         # RT-DETR: cm, num_heads, fmapsize

`fmapsize` is `[h, w]` (the feature map at the training imgsz: imgsz / stride) or a mapping of DAttention
keyword arguments with `q_size` (`{q_size: [20, 20], n_heads: 4}`), as in the YOLOv5 configs.

`layerscale: <init>` in that mapping selects the safe insertion of the YOLOv5 blocks (`yolov5_dattn.hosts.yolov5.blocks`)
for the bottleneck-based blocks (Bottleneck/C2f/C3k/C3k2_DAttention): DAttention becomes a residual branch with
a learnable per-channel scale, `z + gamma * attention(z)`, gamma starting at `init`. With 0.0 each block computes
exactly its parent's output (same convolution weights) until gamma moves, so a stock checkpoint's accuracy is
the starting point:

    - [-1, 2, C3k2_DAttention, [1024, {q_size: [20, 20], layerscale: 0.0}, True]]

C2PSA_DAttention and AIFI_DAttention refuse `layerscale` (ValueError naming the block): their DAttention replaces
the parent's own attention, so no scale makes them start as the parent.
"""
from typing import Optional

import torch
from torch import nn
from ultralytics.nn.modules.block import C2PSA, C2f, C3k, C3k2, Bottleneck
from ultralytics.nn.modules.transformer import AIFI

from yolov5_dattn.nn.attention_placement import AttentionPlacement
from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.nn.fmapsize import FmapSize, dattention_kwargs, split_layerscale


def _kwargs(fmapsize: Optional[FmapSize], block: str) -> dict:
    """DAttention kwargs from `fmapsize`; a missing one is named with the block that needs it."""
    if fmapsize is None:
        raise ValueError(f"{block}: fmapsize is required ([h, w] of the feature map at the training imgsz, "
                         f"e.g. [20, 20] at imgsz 640 for P5/32)")
    return dattention_kwargs(fmapsize)


def _replacing_kwargs(fmapsize: Optional[FmapSize], block: str) -> dict:
    """`_kwargs` for a block whose DAttention replaces the parent's attention: `layerscale` is refused there."""
    kwargs, layerscale = split_layerscale(_kwargs(fmapsize, block))
    if layerscale is not None:
        parent = block[:-len("_DAttention")]
        raise ValueError(f"{block}: layerscale is not supported: its DAttention replaces {parent}'s own attention, "
                         f"so no scale makes it start as the stock block; drop layerscale from fmapsize (or use "
                         f"C3k2_DAttention / C2f_DAttention, which take it)")
    return kwargs  # `layerscale: null` is the placement they always have


class Bottleneck_DAttention(AttentionPlacement, Bottleneck):
    """Ultralytics `Bottleneck` (cv1 → cv2) with DAttention; residual as the original.

    `z = cv2(cv1(x))`; `y = attention(z)` (the published recipe's placement) or, with layerscale,
    `y = z + gamma * attention(z)`; `x + y` when shortcut and c1 == c2.
    Args: c1, c2 channels in/out; fmapsize `[h, w]` or a DAttention kwargs mapping with `q_size`, which may also
    hold `layerscale`; shortcut, g, k, e as `Bottleneck`; layerscale: None (default) = the recipe; a number =
    the residual branch with a per-channel scale starting there (`LayerScale`, key `layer_scale.gamma`; 0.0:
    exactly `Bottleneck`'s output at init). A `layerscale` key in fmapsize wins over the argument.
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, fmapsize: Optional[FmapSize] = None, shortcut: bool = True, g: int = 1,
                 k: tuple = (3, 3), e: float = 0.5, layerscale: Optional[float] = None):
        super().__init__(c1, c2, shortcut, g, k, e)
        # placement and forward: `AttentionPlacement`
        self.place_attention(c2, _kwargs(fmapsize, type(self).__name__), layerscale)


class C2f_DAttention(C2f):
    """YOLOv8's `C2f` whose n bottlenecks are `Bottleneck_DAttention` (same convolutions as C2f's).

    Args: c1, c2 channels in/out; n bottlenecks; fmapsize see `Bottleneck_DAttention`; shortcut, g, e as `C2f`.
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None, shortcut: bool = False,
                 g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        kwargs = _kwargs(fmapsize, type(self).__name__)
        self.m = nn.ModuleList(Bottleneck_DAttention(self.c, self.c, kwargs, shortcut, g, k=((3, 3), (3, 3)), e=1.0)
                               for _ in range(n))


class C3k_DAttention(C3k):
    """YOLO11's `C3k` whose n bottlenecks are `Bottleneck_DAttention` (kernel k, e=1.0, as C3k's).

    Args: c1, c2 channels in/out; n bottlenecks; fmapsize see `Bottleneck_DAttention`; shortcut, g, e, k as `C3k`.
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None, shortcut: bool = True,
                 g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__(c1, c2, n, shortcut, g, e, k)
        c_ = int(c2 * e)
        kwargs = _kwargs(fmapsize, type(self).__name__)
        self.m = nn.Sequential(*(Bottleneck_DAttention(c_, c_, kwargs, shortcut, g, k=(k, k), e=1.0)
                                 for _ in range(n)))


class C3k2_DAttention(C3k2):
    """YOLO11/YOLO26's `C3k2` whose n inner blocks carry DAttention: `C3k_DAttention(c, c, 2)` when c3k, else
    `Bottleneck_DAttention(c, c)` (C3k2's own choice, with c = int(c2 * e)).

    Args: c1, c2 channels in/out; n blocks; fmapsize see `Bottleneck_DAttention`; c3k, e, g, shortcut as `C3k2`
    (parse_model sets c3k for the m/l/x scales, as for C3k2).
    Shapes: (B, c1, H, W) -> (B, c2, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None, c3k: bool = False,
                 e: float = 0.5, g: int = 1, shortcut: bool = True):
        super().__init__(c1, c2, n, c3k, e, False, g, shortcut)
        kwargs = _kwargs(fmapsize, type(self).__name__)
        self.m = nn.ModuleList(C3k_DAttention(self.c, self.c, 2, kwargs, shortcut, g) if c3k
                               else Bottleneck_DAttention(self.c, self.c, kwargs, shortcut, g)
                               for _ in range(n))


class C2PSA_DAttention(C2PSA):
    """YOLO11's `C2PSA` whose PSA blocks attend with DAttention instead of `Attention` (same FFN, residuals).

    Each `PSABlock.attn` becomes `DAttention(c)` with c = int(c1 * e); the mapping form of fmapsize sets its
    heads (`n_heads`, default 8) and groups.
    Args: c1, c2 channels (equal, as C2PSA); n PSA blocks; fmapsize see `Bottleneck_DAttention`; e as `C2PSA`.
    Shapes: (B, c1, H, W) -> (B, c1, H, W)
    """

    def __init__(self, c1: int, c2: int, n: int = 1, fmapsize: Optional[FmapSize] = None, e: float = 0.5):
        super().__init__(c1, c2, n, e)
        kwargs = _replacing_kwargs(fmapsize, type(self).__name__)
        for block in self.m:
            block.attn = DAttention(self.c, **kwargs)


class AIFI_DAttention(AIFI):
    """RT-DETR's `AIFI` encoder layer with DAttention as its self-attention: same FFN (fc1, fc2), norms,
    dropouts and post/pre-norm order; DAttention works on the (B, C, H, W) map with its own position term,
    so AIFI's sine-cosine embedding is not added.

    Args: c1 channels; cm FFN width; num_heads DAttention heads (unless the fmapsize mapping sets n_heads);
    fmapsize see `Bottleneck_DAttention`; dropout, act, normalize_before as `AIFI`.
    Shapes: (B, c1, H, W) -> (B, c1, H, W)
    """

    def __init__(self, c1: int, cm: int = 2048, num_heads: int = 8, fmapsize: Optional[FmapSize] = None,
                 dropout: float = 0.0, act: Optional[nn.Module] = None, normalize_before: bool = False):
        super().__init__(c1, cm, num_heads, dropout, act, normalize_before)
        del self.ma  # replaced, not kept unused: parameters, state dict and FLOPs are the new layer's
        kwargs = {"n_heads": num_heads, **_replacing_kwargs(fmapsize, type(self).__name__)}
        self.attention = DAttention(c1, **kwargs)

    def _attend(self, x: torch.Tensor, h, w) -> torch.Tensor:
        """DAttention on tokens (B, h·w, C) of an (h, w) map -> (B, h·w, C)."""
        y = self.attention(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w))
        return y.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        c, h, w = x.shape[1:]
        src = x.flatten(2).permute(0, 2, 1)
        if self.normalize_before:
            src = src + self.dropout1(self._attend(self.norm1(src), h, w))
            src = src + self.dropout2(self.fc2(self.dropout(self.act(self.fc1(self.norm2(src))))))
        else:
            src = self.norm1(src + self.dropout1(self._attend(src, h, w)))
            src = self.norm2(src + self.dropout2(self.fc2(self.dropout(self.act(self.fc1(src))))))
        return src.permute(0, 2, 1).reshape(-1, c, h, w).contiguous()


__all__ = ["Bottleneck_DAttention", "C2f_DAttention", "C3k_DAttention", "C3k2_DAttention", "C2PSA_DAttention",
           "AIFI_DAttention"]
