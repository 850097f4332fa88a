"""When the steps run on a YOLOv5 host: the repairs it needs (`repairs`), our policy (`policy`) and the plugin steps,
in the order of the step table (`changes.STEPS`).

`apply_before_import()` runs what `import yolov5` itself needs; `apply(host)` the steps of YOLOv5's model code (done by
`import yolov5_dattn` for the pip package, by `clone.install` for a git clone); `apply_entrypoints()` also imports and
changes the pip package's train/val/detect/export/segment modules (done by our commands and scripts). Each is
idempotent. A host is one copy of YOLOv5's modules (`host.Host`: the pip package `PIP` or a clone).
"""
import contextlib

from .host import PIP, Host

__all__ = ["Host", "PIP", "apply", "apply_before_import", "apply_entrypoints"]

_applied = set()  # hosts (by prefix/root) whose model steps ran
_applied_entrypoints = False
_ENTRY_MODULES = ("train", "val", "detect", "export", "segment.train", "segment.val", "segment.predict")


def apply_before_import() -> None:
    """The steps `import yolov5` itself needs (phase "before-import" of `changes.STEPS`)."""
    from . import changes
    changes.apply("before-import")


def apply(host: Host = PIP) -> None:
    """The steps the model code of `host` needs (phase "model"; idempotent)."""
    from . import changes
    from .repairs import shim_ipython_optional
    if host.key in _applied:
        return
    apply_before_import()
    with shim_ipython_optional() if host is not PIP else contextlib.nullcontext():
        host.module("models.yolo")  # imports models.common and utils.general (the IPython importers) now
        changes.apply("model", host)
    _applied.add(host.key)


def apply_entrypoints() -> None:
    """`apply()` plus the steps of the pip package's train/val/detect/export/segment modules (imports them)."""
    global _applied_entrypoints
    apply()
    if _applied_entrypoints:
        return
    from . import changes
    for name in _ENTRY_MODULES:
        PIP.module(name)
    changes.apply("entrypoints")
    _applied_entrypoints = True
