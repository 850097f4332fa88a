"""Dataset label caches (`labels/*.cache`) read without running code.

Both hosts keep the scan of a dataset's labels in a `.cache` file beside them: `np.save` of a dict (ultralytics:
`labels`, `hash`, `results`, `msgs`, `version`; YOLOv5: one `[labels, shape, segments]` list per image plus the
same bookkeeping), so the file is a 0-d object array that numpy pickles. Both read it back with
`np.load(path, allow_pickle=True)`, a full unpickle: a `.cache` planted in a dataset someone hands over runs code
as soon as train / val builds its dataset.

`load_cache_array` reads the same file with an unpickler that resolves only what such a dict holds. The dict,
its lists, tuples, strings and numbers are pickle opcodes and need no lookup; the arrays in it need numpy's
array reconstructor, `numpy.ndarray` and `numpy.dtype`, and nothing else (`ALLOWED`). Any other global is
refused (`CacheRefused`, after one warning naming the file) before it is called. Both hosts rescan the labels
and rewrite the cache when loading it raises, so a refused cache is treated as a stale one.
"""
import logging
import os
import pickle
from typing import Any, BinaryIO, Callable, Dict, Tuple, Union

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["ALLOWED", "CacheRefused", "load_cache_array", "load_label_cache"]

LOGGER = logging.getLogger(__name__)

# (module, name) a label cache's pickle may name: numpy 2 writes numpy._core, numpy 1 numpy.core
ALLOWED: Tuple[Tuple[str, str], ...] = (
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
)

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class CacheRefused(pickle.UnpicklingError):
    """A label cache that names something no label cache holds (a pickle that could run code), or that is not a
    `.npy` array file."""


def _allowed_objects() -> Dict[Tuple[str, str], Any]:
    """`ALLOWED` resolved in this numpy, without importing the deprecated `numpy.core` alias."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # an older numpy, without numpy._core
        from numpy.core.multiarray import _reconstruct
    objects = {"_reconstruct": _reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}
    return {(module, name): objects[name] for module, name in ALLOWED}


class _CacheUnpickler(pickle.Unpickler):
    """An unpickler whose globals are `ALLOWED` only (extension codes also resolve through `find_class`)."""

    def __init__(self, f: BinaryIO):
        super().__init__(f, fix_imports=True, encoding="ASCII")  # np.load's defaults
        self._objects = _allowed_objects()

    def find_class(self, module: str, name: str) -> Any:
        found = self._objects.get((module, name))
        if found is None:
            raise CacheRefused(f"it names {module}.{name}, which no label cache holds")
        return found


def _refuse(name: str, why: str) -> CacheRefused:
    LOGGER.warning(f"yolov5-dattn: label cache {name} refused: {why}; treating it as stale (the labels are "
                   f"scanned again)")
    return CacheRefused(f"label cache {name} refused: {why}")


def _read(f: BinaryIO, name: str) -> np.ndarray:
    start = f.tell()
    prefix = f.read(len(npy_format.MAGIC_PREFIX))
    if not prefix:
        raise EOFError(f"label cache {name} is empty")  # as np.load: a stale cache, no warning
    if prefix != npy_format.MAGIC_PREFIX:  # np.load would unpickle it in full, or read it as a zip
        raise _refuse(name, "it is not a .npy array file")
    f.seek(start)
    version = npy_format.read_magic(f)
    readers: Dict[Tuple[int, int], Callable] = {(1, 0): npy_format.read_array_header_1_0,
                                                (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise _refuse(name, f".npy format version {version} (np.save writes 1.0 or 2.0)")
    _, _, dtype = readers[version](f)
    if not dtype.hasobject:  # plain numbers: numpy reads them without pickle
        f.seek(start)
        return npy_format.read_array(f, allow_pickle=False)
    try:
        array = _CacheUnpickler(f).load()
    except CacheRefused as e:
        raise _refuse(name, str(e)) from None
    if not isinstance(array, np.ndarray):
        raise _refuse(name, f"it holds a {type(array).__name__}, not an array")
    return array


def load_cache_array(file: PathOrFile) -> np.ndarray:
    """`np.load(file, allow_pickle=True)` for a `.npy` label cache, with restricted unpickling.

    Args:
        file: a path, or a binary file object positioned at the start of the `.npy` data.
    Returns:
        the array numpy would return: for a label cache, a 0-d object array whose `.item()` is the dict.
    Raises:
        CacheRefused: the file names a global outside `ALLOWED`, or is not a `.npy` file (one warning naming the
            file is logged first; nothing in it has run).
        OSError, ValueError, EOFError, pickle.UnpicklingError: missing, truncated or corrupt, as numpy raises
            them (the hosts rebuild the cache on any of these).
    """
    if hasattr(file, "read"):
        return _read(file, str(getattr(file, "name", file)))
    with open(os.fspath(file), "rb") as f:
        return _read(f, os.fspath(file))


def load_label_cache(path: PathOrFile) -> Any:
    """`np.load(path, allow_pickle=True).item()` with restricted unpickling: the cache's dict.

    Raises: as `load_cache_array`; ValueError when the array holds more than one element."""
    return load_cache_array(path).item()
