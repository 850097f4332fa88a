"""YOLOv5's model summary with GFLOPs that include the attention, at the image size actually used.

YOLOv5's `model_info` runs thop on a 32-px probe and scales the result by (imgsz/32)². For our models
that is wrong twice: thop cannot see the attention's matmuls, and attention cost grows with the square
of the feature map (HW · Ns), not linearly with the pixel count. We replace it with a count at the real
size (thop convention + the FLOPs thop misses, see `yolov5_dattn.analysis.flops`), on a weightless meta copy.

Which size? `DetectionModel.__init__` and `fuse()` call `info()` with YOLOv5's default 640 and nothing
else, yet the entry functions know it: `opt.imgsz` of `train.train`, the `imgsz` argument of `val.run`,
`detect.run`, `export.run` and their segment twins. `install_sizes` wraps those functions so that their
body runs inside `summary_imgsz(<that size>)`; a model built anywhere else reports at 640, YOLOv5's
default. `summary_imgsz(...)` sets a size explicitly.
"""
import contextlib
import functools
import inspect
import logging
import sys
from pathlib import Path
from typing import Iterator, List, Optional

from yolov5_dattn import patching
from yolov5_dattn.analysis.flops import ImgSize, image_shape
from yolov5_dattn.core.summary_flops import summary_gflops

__all__ = ["SIZED_ENTRIES", "WHY", "current_imgsz", "gflops_text", "install", "install_sizes", "model_info", "sized",
           "summary_imgsz", "uninstall"]

_forced: List[ImgSize] = []  # stack of sizes set by `summary_imgsz`
# YOLOv5 entry modules (host-relative) and the function of each that knows the run's image size
SIZED_ENTRIES = (("train", "train"), ("segment.train", "train"), ("val", "run"), ("segment.val", "run"),
                 ("detect", "run"), ("segment.predict", "run"), ("export", "run"))


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


def current_imgsz(default: ImgSize = 640) -> List[int]:
    """The image size of the running YOLOv5 entry function (the innermost `summary_imgsz`), as [h, w];
    `default` outside one."""
    return image_shape(_forced[-1] if _forced else default)


def sized(function, size_of):
    """`function` whose body runs inside `summary_imgsz(size_of(arguments))`, where `arguments` maps its
    parameter names to the values of the call (defaults included); a value that is not an image size
    leaves the summary size as it was."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run_at_imgsz(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            size = _as_size(size_of(bound.arguments))
        except TypeError:  # a call YOLOv5 itself will refuse: let it
            size = None
        with summary_imgsz(size) if size else contextlib.nullcontext():
            return function(*args, **kwargs)

    return run_at_imgsz


def _imgsz_of(arguments) -> object:
    """`opt.imgsz` (train) or the `imgsz` argument (val, detect, export)."""
    if "opt" in arguments:
        return getattr(arguments["opt"], "imgsz", None)
    size = arguments.get("imgsz")
    return list(size) if isinstance(size, tuple) else size


def install_sizes(host=None) -> None:
    """Wrap the entry functions of `host` (a `compat.Host`, default the pip package) that are loaded and
    defined: `train.train` reports at `opt.imgsz`, `val.run`, `detect.run`, `export.run` (and the segment
    ones) at their `imgsz`. Idempotent."""
    from .compat import PIP
    host = PIP if host is None else host
    for module_name, function_name in SIZED_ENTRIES:
        module = host.loaded(module_name)
        function = getattr(module, function_name, None) if module is not None else None
        if not inspect.isfunction(function):
            continue  # not loaded, or a clone's script still being imported (its functions come later)
        patching.patch(module, function_name, sized(function, _imgsz_of),
                       why="the model summary reports at the run's image size")


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
    # YOLOv5 pads images up to a multiple of the largest stride before they reach the model
    stride = int(max(getattr(model, "stride", [32]).max(), 32)) if hasattr(model, "stride") else 32
    try:
        counted = summary_gflops(model, imgsz, stride=stride)
    except Exception as e:  # a summary must never stop a run; say why the figure is missing
        return f", GFLOPs not counted ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    h, w = counted.size
    text = f", {_gflops(counted.gflops)} GFLOPs at {h}x{w}"
    if counted.missed_gflops:
        text += f" (incl. {_gflops(counted.missed_gflops)} GFLOPs of attention matmuls that thop misses)"
    return text


def _gflops(g: float) -> str:
    """Three significant figures or more: 113.1, 4.52, 0.172."""
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

    `imgsz` is what YOLOv5 passes (always its default 640); the size of the running YOLOv5 entry function
    (`install_sizes`, `summary_imgsz`) takes precedence (see the module docstring). `detailed` is the
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
    size = current_imgsz(default=imgsz)
    name = Path(model.yaml_file).stem.replace("yolov5", "YOLOv5") if hasattr(model, "yaml_file") else "Model"
    LOGGER.info(f"{name} summary: {len(list(model.modules()))} layers, {n_p} parameters, {n_g} gradients"
                f"{gflops_text(model, size)}")


WHY = "model.info() counts the attention, at the run's image size"


def install(host=None) -> None:
    """Make `model.info()` of `host` (a `compat.Host`, default the pip package) use our `model_info`: the
    `model_info` global of its `models.yolo` (what `DetectionModel.info` calls) and of `utils.torch_utils`.
    Idempotent."""
    from .compat import PIP
    host = PIP if host is None else host
    for name in ("models.yolo", "utils.torch_utils"):
        patching.patch(host.module(name), "model_info", model_info, why=WHY)


def uninstall() -> None:
    """Restore YOLOv5's own `model_info` wherever `install` replaced it."""
    patching.undo(where=lambda c: c.name == "model_info" and c.why == WHY)
