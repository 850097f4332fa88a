"""One copy of YOLOv5's modules that the steps change: the pip package (`PIP`, modules `yolov5.utils.general`, ...)
or a git clone (`Host.clone(root)`, modules `utils.general`, ... and the running script; see `clone`).

`replace_function` changes a function where it is defined and in every loaded module of the same host that imported it
by name, so modules imported later pick up the replacement too (through `yolov5_dattn.patching`).
"""
import importlib
import sys
import types
from pathlib import Path
from typing import Callable, Optional

from yolov5_dattn import patching

__all__ = ["Host", "PIP", "missing_anchor", "replace_function"]


class Host:
    """One copy of YOLOv5's modules that the shims patch.

    `prefix` is what its module names start with: 'yolov5.' for the pip package, '' for a git clone, whose
    modules are `models.yolo`, `utils.general`, ... and whose entry script runs as `__main__`. `root` (a
    clone's folder) decides which loaded modules belong to it; without one, the prefix does.
    """

    def __init__(self, prefix: str, root: Optional[Path] = None):
        self.prefix, self.root = prefix, None if root is None else Path(root).resolve()

    @classmethod
    def clone(cls, root) -> "Host":
        """The host of the git clone of YOLOv5 in folder `root`."""
        return cls("", root)

    @property
    def key(self) -> str:
        """Identifies the host (for the shims' once-only bookkeeping)."""
        return f"{self.prefix}@{self.root}"

    @property
    def label(self) -> str:
        """'yolov5 (pip package)' or 'the YOLOv5 clone in <root>', for messages."""
        return "yolov5 (pip package)" if self.root is None else f"the YOLOv5 clone in {self.root}"

    def _file_inside(self, module: types.ModuleType) -> bool:
        path = getattr(module, "__file__", None)
        try:
            return path is not None and Path(path).resolve().is_relative_to(self.root)
        except (OSError, ValueError):
            return False

    def owns(self, mod_name: str, module: Optional[types.ModuleType]) -> bool:
        """True if loaded module `mod_name` is one of this host's."""
        if module is None:
            return False
        if self.root is None:
            return mod_name == self.prefix.rstrip(".") or mod_name.startswith(self.prefix)
        return self._file_inside(module)

    def loaded(self, name: str) -> Optional[types.ModuleType]:
        """Host module `name` ('utils.general', 'train') if loaded, or the running script if it is that file."""
        module = sys.modules.get(self.prefix + name)
        if module is not None and (self.root is None or self._file_inside(module)):
            return module
        main = sys.modules.get("__main__")
        if self.root is not None and main is not None and self._file_inside(main):
            if Path(main.__file__).resolve() == self.root / (name.replace(".", "/") + ".py"):
                return main
        return None

    def module(self, name: str) -> types.ModuleType:
        """Host module `name`, imported if need be (the running script when it is that file)."""
        return self.loaded(name) or importlib.import_module(self.prefix + name)

    def modules(self):
        """(name, module) of every loaded module of this host."""
        return [(n, m) for n, m in list(sys.modules.items()) if self.owns(n, m)]


PIP = Host("yolov5.")


def missing_anchor(host: Host, shim: str, what: str) -> RuntimeError:
    """The error of a shim whose target is not in the host's code: YOLOv5 changed, the shim must too."""
    return RuntimeError(f"yolov5_dattn.hosts.yolov5.{shim}: {host.label} has no {what}; this YOLOv5 is not supported "
                        f"(tested: pip yolov5 7.0.14, clones of v7.0 and master, see README)")


def replace_function(module: types.ModuleType, name: str, new: Callable, host: Host = PIP, *, why: str) -> bool:
    """`patching.patch(module, name, new)`, also where other loaded modules of `host` imported it by name.
    False when the change (`why`) is in place already."""
    return patching.patch(module, name, new, why=why, also=[m for _, m in host.modules()])
