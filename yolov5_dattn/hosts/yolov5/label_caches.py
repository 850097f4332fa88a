"""A dataset's label cache (`labels/*.cache`) never runs code: YOLOv5 reads it with restricted unpickling.

`LoadImagesAndLabels.__init__` (utils/dataloaders.py:492; the segmentation dataset inherits it) reads the cache
inline with `np.load(cache_path, allow_pickle=True).item()`, a full unpickle, whenever train / val builds a
dataset. `install` gives that module its own `np.load` (`patching.override`: numpy itself is left alone) that
sends every `allow_pickle=True` load through `yolov5_dattn.core.safe_cache`, which resolves numpy's array
classes only; loads without pickle (the `.npy` image cache) go to numpy unchanged. A cache that names anything
else is refused with one warning naming the file; YOLOv5's own `except` then scans the labels again and writes a
new cache in its place, as for a stale one.
"""
import numpy as np

from yolov5_dattn import patching
from yolov5_dattn.core.safe_cache import load_cache_array

__all__ = ["install", "safe_np_load", "WHY"]

WHY = "a dataset's labels/*.cache is read with np.load(allow_pickle=True): a planted cache runs code"


def safe_np_load(file, mmap_mode=None, allow_pickle=False, *args, **kwargs):
    """`np.load` as YOLOv5's dataloader sees it: a pickled load goes through the restricted cache reader,
    whatever the file is called; any other load is numpy's.

    Returns: what `np.load` returns (for a label cache, a 0-d object array whose `.item()` is the dict).
    Raises: `safe_cache.CacheRefused` for a file whose pickle could run code (the dataset then rebuilds it)."""
    if allow_pickle:
        return load_cache_array(file)
    return np.load(file, mmap_mode, allow_pickle, *args, **kwargs)


def install(host=None) -> None:
    """Give `host`'s `utils.dataloaders` (default: the pip package's) the restricted `np.load` (idempotent)."""
    from .compat import PIP
    host = PIP if host is None else host
    dataloaders = host.module("utils.dataloaders")
    if "np" not in vars(dataloaders):
        raise RuntimeError(f"yolov5_dattn.hosts.yolov5.label_caches: {host.label} has no np in utils.dataloaders; this "
                           f"YOLOv5 is not supported (tested: pip yolov5 7.0.14, clones of v7.0 and master)")
    patching.override(dataloaders, "np", "load", safe_np_load, why=WHY)
