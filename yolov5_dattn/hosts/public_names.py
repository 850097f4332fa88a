"""`yolov5_dattn.yolov5` and `yolov5_dattn.ultralytics`: the public names of the adapters under `hosts/`.

Users write `import yolov5_dattn.ultralytics`, and checkpoints pickle their block classes by module name
(`yolov5_dattn.ultralytics.blocks.C2f_DAttention`). A finder on `sys.meta_path` answers every name under a
public prefix with the module already known under `yolov5_dattn.hosts`, so each module exists once (one
class object, whatever name a checkpoint uses) and only names under `yolov5_dattn.` are ever looked at.
"""
import importlib
import importlib.abc
import importlib.util
import sys
from typing import List, Optional

__all__ = ["PUBLIC", "install", "real_name", "public_name", "spellings"]

PUBLIC = {"yolov5_dattn.yolov5": "yolov5_dattn.hosts.yolov5",
          "yolov5_dattn.ultralytics": "yolov5_dattn.hosts.ultralytics"}


def real_name(name: str) -> Optional[str]:
    """`yolov5_dattn.ultralytics.blocks` -> `yolov5_dattn.hosts.ultralytics.blocks`; None for other names."""
    for public, real in PUBLIC.items():
        if name == public or name.startswith(public + "."):
            return real + name[len(public):]
    return None


def public_name(name: str) -> Optional[str]:
    """The inverse of `real_name`: a module name under `hosts` as users and older checkpoints spell it."""
    for public, real in PUBLIC.items():
        if name == real or name.startswith(real + "."):
            return public + name[len(real):]
    return None


def spellings(cls: type) -> List[str]:
    """Every "module.QualName" a checkpoint may name `cls` by: its own, and its public one for a class of an
    adapter (`yolov5_dattn.ultralytics.blocks.C2f_DAttention` besides `...hosts.ultralytics.blocks...`)."""
    own = f"{cls.__module__}.{cls.__qualname__}"
    public = public_name(cls.__module__)
    return [own] if public is None else [own, f"{public}.{cls.__qualname__}"]


class _PublicNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        real = real_name(fullname)
        if real is None:
            return None
        module = importlib.import_module(real)
        return importlib.util.spec_from_loader(fullname, self, is_package=hasattr(module, "__path__"))

    def create_module(self, spec):
        return sys.modules[real_name(spec.name)]  # the module itself, not a copy

    def exec_module(self, module):
        pass  # the real module ran already: find_spec imported it under its own name


_FINDER = _PublicNames()


def install() -> None:
    """Put the finder first on `sys.meta_path` (idempotent): the path finder would otherwise find
    `yolov5_dattn.ultralytics.blocks` through the package's `__path__` and load the file a second time."""
    if not any(isinstance(f, _PublicNames) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)
