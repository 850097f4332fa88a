"""Square inputs for size-fixed attention: YOLOv5 without its rectangular batches and minimal letterbox.

YOLOv5 feeds PyTorch models rectangles: validation batches padded by half a stride (640 -> 672) and
inference letterboxed only to a stride multiple (16:9 video at 640 -> 640×384). A `fixed_pe` DAttention
only works at its declared size, so when preflight finds that the shapes would not fit, it turns this
mode on: validation loaders get `rect=False, pad=0` and inference loaders `auto=False`, i.e. every image is
letterboxed to exactly `--imgsz`. Off (the default), the wrappers pass every argument through unchanged.
"""
import sys

from yolov5_dattn import patching

_active = False
WHY = "square inputs for a fixed_pe model (inert until preflight turns them on)"
LOADER_MODULES = ("yolov5.train", "yolov5.val", "yolov5.segment.train", "yolov5.segment.val")
SOURCE_MODULES = ("yolov5.detect", "yolov5.segment.predict")
SOURCE_CLASSES = ("LoadImages", "LoadStreams", "LoadScreenshots")


def active() -> bool:
    """True while loaders are forced to square inputs."""
    return _active


def set_active(on: bool) -> None:
    """Turn square inputs on or off for the following runs in this process (installs the wrappers)."""
    global _active
    install()
    _active = bool(on)


def _square_loader(original):
    def create_dataloader(*args, **kwargs):
        if _active:
            kwargs["rect"], kwargs["pad"] = False, 0.0
        return original(*args, **kwargs)
    create_dataloader.__wrapped__ = original
    return create_dataloader


def _square_source(original):
    def load(*args, **kwargs):
        if _active:
            kwargs["auto"] = False
        return original(*args, **kwargs)
    load.__wrapped__ = original
    return load


def install() -> None:
    """Wrap the loaders of YOLOv5's entry modules that are imported (idempotent, inert while off)."""
    import importlib
    with patching.applying("square_inputs.install"):
        for name in LOADER_MODULES + SOURCE_MODULES:
            module = sys.modules.get(name) or importlib.import_module(name)
            if name in LOADER_MODULES:
                if not patching.is_patched(module, "create_dataloader", WHY):
                    patching.patch(module, "create_dataloader", _square_loader(module.create_dataloader), why=WHY)
            else:
                for cls in SOURCE_CLASSES:
                    if not patching.is_patched(module, cls, WHY):
                        patching.patch(module, cls, _square_source(getattr(module, cls)), why=WHY)
