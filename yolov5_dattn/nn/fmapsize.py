"""The `fmapsize` argument of the DAttention blocks: the feature map size a YAML gives, as DAttention kwargs.

Host-agnostic: every host's blocks take the same `[h, w]` or mapping form.
"""
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Tuple, Union

from .layerscale import check_init

FmapSize = Union[Sequence[int], Mapping[str, Any], Sequence[Any]]


def dattention_kwargs(fmapsize: Optional[FmapSize]) -> dict:
    """Turn a YAML `fmapsize` into DAttention keyword arguments.

    Accepted forms: `[h, w]`, `{q_size: [h, w], <DAttention kwargs>...}`, or the one-element list a YAML
    yields for the latter written inline. Returns a dict with at least `q_size`.
    """
    if isinstance(fmapsize, (list, tuple)) and len(fmapsize) == 1 and isinstance(fmapsize[0], Mapping):
        fmapsize = fmapsize[0]
    if isinstance(fmapsize, Mapping):
        if "q_size" not in fmapsize:
            raise ValueError(f"fmapsize mapping {dict(fmapsize)} has no q_size: add q_size: [h, w]")
        return dict(fmapsize)
    if (isinstance(fmapsize, (list, tuple)) and len(fmapsize) == 2
            and all(isinstance(s, int) and s > 0 for s in fmapsize)):
        return {"q_size": list(fmapsize)}
    raise ValueError(f"fmapsize must be [h, w] or a mapping with q_size, got {fmapsize!r}: "
                     "e.g. [1024, [20, 20]] or [1024, {q_size: [20, 20], dwc_pe: true}] in the YAML")


LAYERSCALE_KEY = "layerscale"  # in the fmapsize mapping: not a DAttention argument, taken by the blocks


def split_layerscale(fmapsize: Optional[FmapSize], layerscale: Optional[float] = None) -> Tuple[dict, Optional[float]]:
    """(DAttention kwargs, layerscale init or None) from a YAML `fmapsize` and a block's `layerscale=` argument.

    A `layerscale` key in the mapping wins over the argument; `layerscale: null` means the recipe placement
    (attention in series, no scale). The init must be a finite number (`check_init`).
    """
    kwargs = dattention_kwargs(fmapsize)
    layerscale = kwargs.pop(LAYERSCALE_KEY, layerscale)
    return kwargs, (None if layerscale is None else check_init(layerscale))
