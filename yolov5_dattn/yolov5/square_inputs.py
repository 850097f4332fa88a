"""Square inputs for size-fixed attention: YOLOv5 without its rectangular batches and minimal letterbox.

YOLOv5 feeds PyTorch models rectangles: validation batches padded by half a stride (640 -> 672) and
inference letterboxed only to a stride multiple (16:9 video at 640 -> 640×384). A `fixed_pe` DAttention
only works at its declared size, so when preflight finds that the shapes would not fit, it turns this
mode on: validation loaders get `rect=False, pad=0` and inference loaders `auto=False`, i.e. every image is
letterboxed to exactly `--imgsz`. Off (the default), the wrappers pass every argument through unchanged.
"""
import sys

_active = False
_MARK = "_yolov5_dattn_square_inputs"
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
    setattr(create_dataloader, _MARK, True)
    create_dataloader.__wrapped__ = original
    return create_dataloader


def _square_source(original):
    def load(*args, **kwargs):
        if _active:
            kwargs["auto"] = False
        return original(*args, **kwargs)
    setattr(load, _MARK, True)
    load.__wrapped__ = original
    return load


def install() -> None:
    """Wrap the loaders of YOLOv5's entry modules that are imported (idempotent, inert while off)."""
    import importlib
    for name in LOADER_MODULES + SOURCE_MODULES:
        module = sys.modules.get(name) or importlib.import_module(name)
        if name in LOADER_MODULES:
            if not getattr(module.create_dataloader, _MARK, False):
                module.create_dataloader = _square_loader(module.create_dataloader)
        else:
            for cls in SOURCE_CLASSES:
                if not getattr(getattr(module, cls), _MARK, False):
                    setattr(module, cls, _square_source(getattr(module, cls)))
