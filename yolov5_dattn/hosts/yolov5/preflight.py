"""Checks run before any work starts: the model YAML builds, and every DAttention fits the run's sizes.

`preflight(opt, task)` is called by the scripts (via `entrypoint.main`) with YOLOv5's parsed options:

1. build the model the run will use (from `--cfg`, else the `--weights`/`--resume` checkpoint); a YAML
   naming an unknown module, channels not divisible by heads/groups, a missing key -> one line each;
2. + 3. for each DAttention (found in the built model, with its stride measured by a probe forward), work out
   the feature maps this task will feed it (`make_plan`, by YOLOv5's rules in `yolov5_dattn.hosts.yolov5.fmap`)
   and check them with `yolov5_dattn.core.fmap_plan`, the rules and messages the ultralytics host uses too, here
   in YOLOv5's words (`--imgsz 640`, `--rect`): `--imgsz` must be a multiple of the max stride (YOLOv5 would
   silently round it); one line per layer says what it will see; a `fixed_pe` layer refuses a size that cannot
   fit (naming the flag and the right value). What a fixed_pe layer cannot follow (rectangular training,
   multi-scale, rectangular validation / letterboxing) comes back in the Verdict, and `preflight` applies it:
   `opt.rect` / `opt.multi_scale` off and `square_inputs` on, each said in a line.
"""
import contextlib
import difflib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Sequence

from yolov5_dattn.core.fmap_plan import YOLOV5_FLAGS as FLAGS
from yolov5_dattn.core.fmap_plan import Plan, Verdict, check_plan
from yolov5_dattn.errors import UserError
from . import fmap, square_inputs
from .quiet import quiet_yolov5

__all__ = ["FLAGS", "TASKS", "TRAIN_TASKS", "build_from_cfg", "check_sizes", "make_plan", "preflight", "run_model"]

TASKS = ("train", "val", "detect", "export", "segment-train", "segment-val", "segment-predict")
TRAIN_TASKS = ("train", "segment-train")
MODES = {"train": "train", "segment-train": "train", "val": "val", "segment-val": "val", "detect": "predict",
         "segment-predict": "predict", "export": "export"}  # each task as a fmap_plan mode
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")
VIDEO_SUFFIXES = (".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv")
MAX_SCANNED_IMAGES = 200  # a folder source: enough files to show the distinct letterbox shapes


def _say(message: str) -> None:
    """Print on the main process only (DDP workers would repeat every line)."""
    if int(os.environ.get("RANK", -1)) in (-1, 0):
        print(message, flush=True)


# ---- 1. the model ----------------------------------------------------------------------------------


def _failing_layer(error: BaseException) -> Optional[SimpleNamespace]:
    """The layer parse_model was building when it raised `error`: index, module and args, as the hooked
    parse_model attached them (`registry.failing_layer`)."""
    from .registry import failing_layer
    return failing_layer(error)


def _module_names() -> List[str]:
    """Names a model YAML may use: YOLOv5's modules, torch.nn's, ours."""
    from torch import nn
    from yolov5.models import yolo
    names = [k for k, v in vars(yolo).items() if isinstance(v, type) and issubclass(v, nn.Module)]
    return names + [f"nn.{k}" for k, v in vars(nn).items() if isinstance(v, type) and issubclass(v, nn.Module)]


def _describe(layer: Optional[SimpleNamespace]) -> str:
    if layer is None:
        return ""
    m = layer.m if isinstance(layer.m, str) else getattr(layer.m, "__name__", str(layer.m))
    return f"layer {layer.i} ({m} {layer.args})"


def build_from_cfg(cfg: str):
    """Build the model of YAML `cfg` (CPU, 3 input channels) as YOLOv5 will; raises UserError naming
    `--cfg`, the layer and what to do when it cannot be built."""
    import yaml
    from yolov5.models.yolo import Model

    if not Path(cfg).is_file():
        raise UserError(f"--cfg {cfg} not found: pass a model YAML such as configs/yolov5n_c3_dattn.yaml")
    from .safe_yaml import UnsafeModelYAML

    try:
        with quiet_yolov5():  # the run itself prints the layer table once
            return Model(cfg, ch=3)
    except UnsafeModelYAML as e:  # a string that only eval could have read (it is never evaluated)
        raise UserError(f"--cfg {cfg}: {e.detail}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"--cfg {cfg} is not valid YAML{where}: fix its syntax") from None
    except (NameError, AttributeError) as e:
        layer = _failing_layer(e)
        if isinstance(e, AttributeError) and not (layer is not None and isinstance(layer.m, str)):
            raise
        name = layer.m if layer is not None and isinstance(layer.m, str) else getattr(e, "name", None) or str(e)
        close = difflib.get_close_matches(str(name), _module_names(), n=1)
        hint = f"did you mean {close[0]}?" if close else \
            "use a YOLOv5 module or DAttention / Bottleneck_DAttention / C3_DAttention"
        where = f"layer {layer.i} uses" if layer is not None else "names"
        raise UserError(f"--cfg {cfg}: {where} unknown module '{name}': {hint}") from None
    except KeyError as e:
        layer = _failing_layer(e)
        where = f" in {_describe(layer)}" if layer is not None else ""
        raise UserError(f"--cfg {cfg}: missing key {e}{where}: a YOLOv5 model YAML needs nc, depth_multiple, "
                        f"width_multiple, anchors, backbone and head") from None
    except (ValueError, TypeError, IndexError) as e:
        layer = _failing_layer(e)
        if layer is None:
            raise
        message = " ".join(str(e).split())
        raise UserError(f"--cfg {cfg}: {_describe(layer)} cannot be built: {message}") from None


def _checkpoint_model(path: str):
    from .checkpoints import check_model_checkpoint
    return check_model_checkpoint(path)


def _first_pt(weights) -> Optional[str]:
    weights = weights if isinstance(weights, (list, tuple)) else [weights]
    return next((str(w) for w in weights if w and str(w).endswith(".pt") and Path(str(w)).is_file()), None)


def _resumed_options(opt):
    """For `--resume`: the options of the interrupted run (its opt.yaml) and its last.pt, as train.py
    will reinstate them; None when there is nothing to resume (train.py reports that)."""
    import yaml
    from yolov5.utils.general import get_latest_run
    last = opt.resume if isinstance(opt.resume, str) else get_latest_run()
    if not last or not Path(last).is_file():
        return None
    opt_yaml = Path(last).parent.parent / "opt.yaml"
    saved = yaml.safe_load(opt_yaml.read_text()) if opt_yaml.is_file() else {}
    resumed = SimpleNamespace(**{**vars(opt), **(saved or {})})
    resumed.cfg, resumed.weights, resumed.resume = "", str(last), True
    return resumed


def run_model(opt, task: str, models: Optional[Sequence] = None):
    """The model this run will use, built or loaded for checking; None if there is no PyTorch model
    to inspect (ONNX / TorchScript weights, remote files)."""
    if task in TRAIN_TASKS and getattr(opt, "cfg", ""):
        return build_from_cfg(str(opt.cfg))
    if models:
        return models[0]
    pt = _first_pt(getattr(opt, "weights", None))
    return _checkpoint_model(pt) if pt else None


# ---- 2 + 3. sizes --------------------------------------------------------------------------------
def _source_shapes(source: str, imgsz: Sequence[int], gs: int) -> Optional[List[tuple]]:
    """Letterboxed input sizes (h, w) of a file / folder / glob source (distinct, with counts);
    None for webcams and streams, whose frame size is unknown before they open."""
    import glob

    import cv2
    from PIL import Image
    source = str(source)
    if source.isnumeric() or "://" in source or source.endswith(".streams") or source.startswith("screen"):
        return None
    path = Path(source)
    if any(c in source for c in "*?["):
        files = sorted(glob.glob(source, recursive=True))
    elif path.is_dir():
        files = sorted(str(p) for p in path.iterdir())
    else:
        files = [source]
    shapes = {}
    for f in files[:MAX_SCANNED_IMAGES]:
        suffix = Path(f).suffix.lower()
        hw = None
        if suffix in IMAGE_SUFFIXES:
            with contextlib.suppress(Exception), Image.open(f) as im:
                hw = (im.height, im.width)
        elif suffix in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(f)
            if cap.isOpened():
                hw = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
            cap.release()
        if hw and hw[0] > 0 and hw[1] > 0:
            key = fmap.letterbox_shape(hw, imgsz, gs)
            shapes[key] = shapes.get(key, 0) + 1
    return sorted(shapes.items(), key=lambda kv: -kv[1])


def make_plan(opt, task: str, gs: int, checkpoint: bool = False, source_shapes: bool = True) -> Plan:
    """The Plan (`yolov5_dattn.core.fmap_plan`) of `task` with YOLOv5's parsed `opt`, by YOLOv5 7.0.14's rules
    (`fmap`): training batches `--imgsz` square (`--rect`: by aspect; `--multi-scale`: 0.5x to 1.5x); validation
    rectangular and padded (not for `val.py --task speed`); inference letterboxed to a stride multiple. An
    `--imgsz` off the stride grid, or below 2x the max stride for training, is refused (YOLOv5 would round it
    with only a warning). `checkpoint`: the model came from --weights; `source_shapes`: scan `--source` for
    the letterboxed sizes (predict)."""
    imgsz = opt.imgsz if isinstance(opt.imgsz, (list, tuple)) else [opt.imgsz]
    sizes = [int(s) for s in imgsz]
    mode = MODES[task]
    hw = sizes * 2 if len(sizes) == 1 else sizes[:2]
    source = str(getattr(opt, "source", "") or "")
    return Plan(mode=mode, given=sizes, hw=hw, gs=gs,
                rect=bool(getattr(opt, "rect", False)) if mode == "train" else mode in ("val", "predict"),
                multi_scale=fmap.MULTI_SCALE if mode == "train" and getattr(opt, "multi_scale", False) else 0.0,
                validates=mode == "train" or (mode == "val" and getattr(opt, "task", "val") != "speed"),
                checkpoint=checkpoint, dynamic=mode == "export" and bool(getattr(opt, "dynamic", False)),
                source_shapes=_source_shapes(source, hw, gs) if mode == "predict" and source and source_shapes
                else None,
                refuse_rounding=True, train_floor=2 * gs)


def check_sizes(opt, task: str, model, checkpoint: bool = False) -> Verdict:
    """Steps 2 and 3 for a built `model`: the Verdict of `yolov5_dattn.core.fmap_plan` in YOLOv5's words
    (`--imgsz 640`, `--rect`). Reads `opt` only. Raises UserError (one line) for the first refusal."""
    gs = fmap.grid_size(model)
    sites = fmap.find_attention(model)
    scan = any(not site.size_fixed for site in sites)  # only size-free layers report the letterboxed sizes
    plan = make_plan(opt, task, gs, checkpoint, source_shapes=scan)
    return check_plan(sites, plan, FLAGS).accept()


def preflight(opt, task: str = "detect", models: Optional[Sequence] = None) -> List[str]:
    """Validate a parsed YOLOv5 option namespace before running `task` ('train', 'val', 'detect',
    'export', 'segment-train', 'segment-val', 'segment-predict').

    Args:
        opt: YOLOv5's namespace for the task (fields as its parse_opt: cfg, weights, imgsz, rect, ...).
        task: one of TASKS.
        models: models already loaded from --weights (skips loading them again).
    Returns: the lines printed (one per DAttention layer, plus any switch turned off).
    Raises: UserError with one line naming the flag and what to do. May set opt.rect / opt.multi_scale
        to False and turn square inputs on (fixed_pe), printing why.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    from . import data_yaml
    data_yaml.install()
    square_inputs.set_active(False)  # a previous run in this process must not leak into this one
    checked = opt
    if task in TRAIN_TASKS and getattr(opt, "resume", False):
        checked = _resumed_options(opt)
        if checked is None:
            return []
    model = run_model(checked, task, models)
    if model is None:
        return []
    verdict = check_sizes(checked, task, model, checkpoint=not (task in TRAIN_TASKS and getattr(checked, "cfg", "")))
    # what a fixed_pe layer cannot follow, applied to the run's options here; a resumed run needs none of it:
    # train.py reinstates its opt.yaml, saved after the first preflight had switched these off
    if checked is opt:
        for key in verdict.switch_off:
            setattr(opt, key, False)
    square_inputs.set_active(verdict.square)
    for line in verdict.lines:
        _say(f"preflight: {line}")
    return list(verdict.lines)
