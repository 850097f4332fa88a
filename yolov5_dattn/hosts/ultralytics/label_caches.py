"""A dataset's label cache (`labels/*.cache`) never runs code: it is read with restricted unpickling.

ultralytics' `data.utils.load_dataset_cache_file` reads the cache with `np.load(path, allow_pickle=True)`, a full
unpickle, whenever train / val builds a dataset (`YOLODataset`, the classification, grounding and semantic
datasets; imported by name into `data.dataset`). Under the policy it reads it with
`yolov5_dattn.core.safe_cache.load_label_cache`, which resolves numpy's array classes only. A cache that names
anything else is refused with one warning naming the file; the dataset's own `except` then scans the labels
again and writes a new cache in its place, as for a stale one.
"""
from pathlib import Path
from typing import Any

from yolov5_dattn import patching
from yolov5_dattn.core.safe_cache import load_label_cache

__all__ = ["apply", "load_dataset_cache_file", "STEP", "WHY"]

STEP = "label caches"
WHY = "a dataset's labels/*.cache is read with np.load(allow_pickle=True): a planted cache runs code"


def load_dataset_cache_file(path: Path) -> Any:
    """ultralytics' `load_dataset_cache_file` with restricted unpickling: the cache's dict.

    Raises: `safe_cache.CacheRefused` for a cache that could run code; OSError / ValueError for a missing or
    corrupt one (the caller rebuilds it in both cases)."""
    return load_label_cache(path)


def apply() -> None:
    """Install the rule (idempotent): modules that imported `load_dataset_cache_file` by name get it too."""
    from ultralytics.data import utils
    if patching.is_patched(utils, "load_dataset_cache_file", WHY):
        return
    original = utils.load_dataset_cache_file
    with patching.applying(STEP):
        patching.patch(utils, "load_dataset_cache_file", load_dataset_cache_file, why=WHY,
                       also=patching.holders("load_dataset_cache_file", original))
