"""YOLOv5's model summary with GFLOPs that include the attention, at the image size actually used.

YOLOv5's `model_info` runs thop on a 32-px probe and scales the result by (imgsz/32)². For our models
that is wrong twice: thop cannot see the attention's matmuls, and attention cost grows with the square
of the feature map (HW · Ns), not linearly with the pixel count. We replace it with a count at the real
size (thop convention + the FLOPs thop misses, see `yolov5_dattn.analysis.flops`), on a weightless meta copy.

Which size? `DetectionModel.__init__` and `fuse()` call `info()` with YOLOv5's default 640 and nothing
else, yet the size is known a few frames up: `opt.imgsz` in `train()`, the `imgsz` argument of
`val.run`, `detect.run`, `export.run`. We read the nearest such value from the calling frames (a model
built elsewhere reports at 640, YOLOv5's default). `summary_imgsz(...)` forces a size explicitly.
"""
import contextlib
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, List, Optional

from yolov5_dattn.analysis.flops import ImgSize, count_flops, image_shape

_forced: List[ImgSize] = []  # stack of sizes set by `summary_imgsz`
_MAX_FRAMES = 16  # train() -> Model() -> DetectionModel.__init__ -> info -> model_info is 5 deep


def _as_size(value) -> Optional[List[int]]:
    """`value` if it looks like an image size (a positive int, or a list/tuple of one or two), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return [value, value]
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return image_shape(list(value))
    return None


def caller_imgsz(default: ImgSize = 640, skip: int = 1) -> List[int]:
    """The image size of the YOLOv5 run that is building or loading a model, read from the call stack.

    Looks, nearest frame first, for `opt.imgsz` or a local `imgsz`; `skip` frames (ours) are ignored.
    Returns [h, w]; `default` when no frame has one.
    """
    if _forced:
        return image_shape(_forced[-1])
    frame = sys._getframe(skip + 1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        local = frame.f_locals
        size = _as_size(getattr(local.get("opt"), "imgsz", None)) or _as_size(local.get("imgsz"))
        if size:
            return size
        frame = frame.f_back
    return image_shape(default)


@contextlib.contextmanager
def summary_imgsz(imgsz: ImgSize) -> Iterator[None]:
    """Within the block, model summaries report GFLOPs at `imgsz` (int or [h, w])."""
    _forced.append(imgsz)
    try:
        yield
    finally:
        _forced.pop()


def gflops_text(model, imgsz: ImgSize) -> str:
    """The GFLOPs part of the summary line, e.g. ', 113.1 GFLOPs at 640x640 (incl. 3.5 ... thop misses)'."""
    h, w = image_shape(imgsz)
    stride = int(max(getattr(model, "stride", [32]).max(), 32)) if hasattr(model, "stride") else 32
    # YOLOv5 pads images up to a multiple of the largest stride before they reach the model
    h, w = (-(-s // stride) * stride for s in (h, w))
    try:
        report = count_flops(model, [h, w])
    except Exception as e:  # a summary must never stop a run; say why the figure is missing
        return f", GFLOPs not counted ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    text = f", {_gflops(report.thop_with_attention)} GFLOPs at {h}x{w}"
    if report.thop_missed:
        text += f" (incl. {_gflops(report.thop_missed)} GFLOPs of attention matmuls that thop misses)"
    return text


def _gflops(flops: int) -> str:
    """Three significant figures or more: 113.1, 4.52, 0.172."""
    g = flops / 1e9
    return f"{g:.{1 if g >= 10 else 2 if g >= 1 else 3}f}"


def _logger(model) -> logging.Logger:
    """The LOGGER of the YOLOv5 that defines `model`'s class (a git clone of master logs through ultralytics')."""
    logger = getattr(sys.modules.get(type(model).__module__), "LOGGER", None)
    if isinstance(logger, logging.Logger):
        return logger
    from yolov5.utils.general import LOGGER
    return LOGGER


def model_info(model, verbose: bool = False, imgsz: ImgSize = 640, detailed: Optional[bool] = None) -> None:
    """Drop-in for `yolov5.utils.torch_utils.model_info`: parameter counts and GFLOPs at the run's image size.

    `imgsz` is what YOLOv5 passes (always its default 640); the size of the running YOLOv5 entry point,
    when one is found on the call stack, takes precedence (see the module docstring). `detailed` is the
    name a YOLOv5 master clone passes `verbose` by.
    """
    verbose = verbose if detailed is None else detailed
    LOGGER = _logger(model)

    if not LOGGER.isEnabledFor(logging.INFO):  # nobody will read it: skip the count
        return
    params = list(model.parameters())
    n_p = sum(p.numel() for p in params)
    n_g = sum(p.numel() for p in params if p.requires_grad)
    if verbose:
        LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} "
                    f"{'mu':>10} {'sigma':>10}")
        for i, (name, p) in enumerate(model.named_parameters()):
            LOGGER.info(f"{i:5d} {name.replace('module_list.', ''):>40} {str(p.requires_grad):>9} {p.numel():12d} "
                        f"{str(list(p.shape)):>20} {p.mean().item():10.3g} {p.std().item():10.3g}")
    size = caller_imgsz(default=imgsz, skip=1)
    name = Path(model.yaml_file).stem.replace("yolov5", "YOLOv5") if hasattr(model, "yaml_file") else "Model"
    LOGGER.info(f"{name} summary: {len(list(model.modules()))} layers, {n_p} parameters, {n_g} gradients"
                f"{gflops_text(model, size)}")


_originals = {}


def install(yolo: Optional[ModuleType] = None, *also: ModuleType) -> None:
    """Make `model.info()` use our `model_info`. Idempotent.

    Args:
        yolo: the module whose `model_info` global `DetectionModel.info` calls; default the pip package's
            `yolov5.models.yolo` (and `yolov5.utils.torch_utils`). Pass a git clone's `models.yolo` for a clone.
        also: more modules whose `model_info` to replace (a clone's `utils.torch_utils`).
    """
    targets = [yolo, *also] if yolo is not None else []
    if yolo is None:
        import yolov5.models.yolo
        import yolov5.utils.torch_utils
        targets = [yolov5.models.yolo, yolov5.utils.torch_utils]
    for module in targets:
        if getattr(module, "model_info", None) is not model_info:
            _originals[module] = module.model_info
            module.model_info = model_info


def uninstall() -> None:
    """Restore YOLOv5's own `model_info` wherever `install` replaced it."""
    while _originals:
        module, original = _originals.popitem()
        module.model_info = original
