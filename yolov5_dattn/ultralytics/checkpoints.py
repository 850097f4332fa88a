"""Checkpoints loaded with `weights_only=True` and an allowlist, by default.

ultralytics unpickles a `.pt` in full unless `ULTRALYTICS_SAFE_LOAD` is set: a checkpoint from anyone can run
code on load. Its opt-in restricted loader (`_SafeLoad`: `torch.load(weights_only=True)` with an allowlist of
torch and ultralytics classes) is made the default (`tasks.SAFE_LOAD`), and our classes (the blocks, DAttention
and its parts) join its allowlist, since they live outside `ultralytics.nn.modules`. A checkpoint naming
anything else is refused by torch before any of it runs.
"""
from yolov5_dattn import patching

STEP = "safe loading"
WHY_DEFAULT = "ultralytics unpickles checkpoints in full (arbitrary code) unless restricted loading is on"
WHY_ALLOW = "the restricted loader's allowlist knows only ultralytics' and torch's classes, not ours"


def allowed_classes() -> dict:
    """'module.QualName' -> class, for every class of ours a checkpoint may hold."""
    from yolov5_dattn.nn.dattention import DAttention
    from yolov5_dattn.nn.layernorm import LayerNormProxy
    from yolov5_dattn.nn.layerscale import LayerScale
    from . import blocks
    classes = [DAttention, LayerNormProxy, LayerScale, *(getattr(blocks, name) for name in blocks.__all__)]
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


def apply() -> None:
    """Make restricted loading the default and allow our classes in it (idempotent)."""
    import ultralytics.nn.tasks as tasks
    safe = tasks._SafeLoad
    if not safe.SUPPORTED:  # torch < 2.6: ultralytics cannot restrict; nothing to extend
        return
    build = safe.__dict__["_build"].__func__

    def _build(cls):
        """ultralytics' allowlist plus ours."""
        return {**build(cls), **allowed_classes()}

    with patching.applying(STEP):
        patching.patch(safe, "_build", classmethod(_build), why=WHY_ALLOW)
        if safe._registry is not None:  # built already (a load ran before us): extend it in place
            safe._registry.update(allowed_classes())
        patching.patch(tasks, "SAFE_LOAD", True, why=WHY_DEFAULT)
