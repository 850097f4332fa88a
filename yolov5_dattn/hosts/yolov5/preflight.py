"""Checks run before any work starts: the model YAML builds, and every DAttention fits the run's sizes.

`preflight(opt, task)` is called by the scripts (via `entrypoint.main`) with YOLOv5's parsed options:

1. build the model the run will use (from `--cfg`, else the `--weights`/`--resume` checkpoint); a YAML
   naming an unknown module, channels not divisible by heads/groups, a missing key -> one line each;
2. `--imgsz` must be a multiple of the max stride (YOLOv5 would silently round it);
3. for each DAttention (found in the built model, with its stride measured by a probe forward), work out
   the feature maps this task will feed it (`yolov5_dattn.hosts.yolov5.fmap`) and print one line per layer. Size-agnostic
   variants (dwc_pe, log_cpb, the interpolated table) accept them all. A `fixed_pe` layer refuses a size
   that cannot fit (naming the flag and the right value); rectangular training, multi-scale and
   rectangular validation/letterboxing, which it cannot follow, are switched off with a message.
"""
import contextlib
import difflib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Sequence

from . import fmap, square_inputs
from yolov5_dattn.errors import UserError
from .quiet import quiet_yolov5

TASKS = ("train", "val", "detect", "export", "segment-train", "segment-val", "segment-predict")
TRAIN_TASKS = ("train", "segment-train")
VAL_TASKS = ("val", "segment-val")
PREDICT_TASKS = ("detect", "segment-predict")
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
def _imgsz_hw(opt, task: str) -> List[int]:
    imgsz = opt.imgsz if isinstance(opt.imgsz, (list, tuple)) else [opt.imgsz]
    imgsz = [int(s) for s in imgsz]
    return imgsz * 2 if len(imgsz) == 1 else imgsz[:2]


def _imgsz_text(opt) -> str:
    imgsz = opt.imgsz if isinstance(opt.imgsz, (list, tuple)) else [opt.imgsz]
    return " ".join(str(int(s)) for s in imgsz)


def check_imgsz(opt, task: str, gs: int) -> None:
    """--imgsz must be a multiple of the max stride `gs` (YOLOv5 would round it up and only warn)."""
    hw = _imgsz_hw(opt, task)
    bad = [s for s in hw if s % gs]
    if bad:
        fixed = [max((s + gs - 1) // gs * gs, gs) for s in hw]
        fixed_text = " ".join(str(s) for s in (fixed[:1] if fixed[0] == fixed[1] else fixed))
        raise UserError(f"--imgsz {_imgsz_text(opt)} is not a multiple of the model's max stride {gs}: "
                        f"use --imgsz {fixed_text}")
    if task in TRAIN_TASKS and hw[0] < 2 * gs:
        raise UserError(f"--imgsz {hw[0]} is below YOLOv5's training minimum of 2x the max stride: "
                        f"use --imgsz {2 * gs} or more")


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


class _Plan:
    """The inputs a run will feed the model, and the switches preflight may turn off for fixed_pe."""

    def __init__(self, opt, task: str, gs: int):
        self.opt, self.task, self.gs = opt, task, gs
        self.hw = _imgsz_hw(opt, task)
        self.square_needed = False  # fixed_pe needs rect validation / letterboxing off

    def describe(self, site: fmap.AttentionSite) -> str:
        """What `site` will see in this run, for size-agnostic layers (one line)."""
        opt, gs, s = self.opt, self.gs, site.stride
        parts = [f"--imgsz {_imgsz_text(opt)} -> {fmap.fmt(site.fmap(self.hw))}"]
        if self.task in TRAIN_TASKS:
            if getattr(opt, "rect", False):
                parts.append(f"--rect: long side {self.hw[0] // s}, short side by aspect")
            if getattr(opt, "multi_scale", False):
                lo, hi = fmap.multiscale_range(self.hw[0], gs)
                parts.append(f"--multi-scale {fmap.fmt(site.fmap([lo, lo]))}..{fmap.fmt(site.fmap([hi, hi]))}")
        if self.task in TRAIN_TASKS or (self.task in VAL_TASKS and getattr(opt, "task", "val") != "speed"):
            long = fmap.rect_val_long_side(self.hw[0], gs)
            parts.append(f"validation (rectangular, padded): long side {long // s}, short side by aspect")
        if self.task in PREDICT_TASKS:
            shapes = _source_shapes(getattr(opt, "source", ""), self.hw, gs)
            if shapes is None:
                parts.append(f"stream frames letterboxed: long side up to {max(site.fmap(self.hw))}, short side "
                             f"by aspect")
            elif shapes:
                seen = ", ".join(f"{fmap.fmt(site.fmap(hw))}" + (f" x{n}" if n > 1 else "") for hw, n in shapes[:4])
                more = f" and {len(shapes) - 4} more" if len(shapes) > 4 else ""
                parts.append(f"--source letterboxed -> {seen}{more}")
        if self.task == "export" and getattr(opt, "dynamic", False):
            parts.append("--dynamic: any multiple of the stride")
        return "; ".join(parts)

    def enforce(self, site: fmap.AttentionSite) -> List[str]:
        """For a fixed_pe layer: raise UserError for a size that cannot fit; switch off what it cannot
        follow. Returns the messages saying what was switched off."""
        opt, gs = self.opt, self.gs
        declared, got = site.declared, site.fmap(self.hw)
        if got != tuple(declared):
            need = site.input_for(declared)
            right = str(need[0]) if need[0] == need[1] else f"{need[0]} {need[1]}"
            raise UserError(f"{site.name}: fixed_pe was declared for {fmap.fmt(declared)} but --imgsz "
                            f"{_imgsz_text(opt)} gives {fmap.fmt(got)}: use q_size {fmap.fmt(got)} in the "
                            f"YAML or --imgsz {right}")
        notes = []
        if self.task == "export" and getattr(opt, "dynamic", False):
            raise UserError(f"--dynamic: {site.name} uses fixed_pe and only runs at {fmap.fmt(declared)} "
                            f"(--imgsz {_imgsz_text(opt)}): drop --dynamic or use a size-agnostic variant "
                            f"(dwc_pe)")
        if self.task in TRAIN_TASKS and getattr(opt, "rect", False):
            opt.rect = False
            notes.append(f"--rect switched off: {site.name} uses fixed_pe {fmap.fmt(declared)}, rectangular "
                         f"batches would give other sizes")
        if self.task in TRAIN_TASKS and getattr(opt, "multi_scale", False):
            opt.multi_scale = False
            lo, hi = fmap.multiscale_range(self.hw[0], gs)
            notes.append(f"--multi-scale switched off: {site.name} uses fixed_pe {fmap.fmt(declared)}, "
                         f"multi-scale would give {fmap.fmt(site.fmap([lo, lo]))}..{fmap.fmt(site.fmap([hi, hi]))}")
        val_rect = self.task in TRAIN_TASKS or (self.task in VAL_TASKS and getattr(opt, "task", "val") != "speed")
        if val_rect and not self.square_needed:
            long = fmap.rect_val_long_side(self.hw[0], gs)
            self.square_needed = True
            notes.append(f"validation uses square {self.hw[0]}x{self.hw[0]} inputs instead of YOLOv5's "
                         f"rectangular batches (long side {long}): {site.name} uses fixed_pe {fmap.fmt(declared)}")
        if self.task in PREDICT_TASKS and not self.square_needed:
            self.square_needed = True
            notes.append(f"inference letterboxes every image to exactly {self.hw[0]}x{self.hw[1]} (not the minimal "
                         f"rectangle): {site.name} uses fixed_pe {fmap.fmt(declared)}")
        return notes


def check_sizes(opt, task: str, model) -> List[str]:
    """Steps 2 and 3 for a built `model`; returns the lines it printed. May switch off opt.rect /
    opt.multi_scale and turn on `square_inputs` (fixed_pe only)."""
    gs = fmap.grid_size(model)
    check_imgsz(opt, task, gs)
    sites = fmap.find_attention(model)
    plan = _Plan(opt, task, gs)
    lines = []
    for site in sites:
        problem = site.query_problem(plan.hw)
        if problem:
            raise UserError(f"{problem} (--imgsz {_imgsz_text(opt)})")
        head = (f"DAttention {site.name}: stride {site.stride}, {site.variant}{site.queries_text(plan.hw)}, declared "
                f"{fmap.fmt(site.declared)}")
        if site.size_fixed:
            lines += [f"{head}; runs at {fmap.fmt(site.declared)} only"] + plan.enforce(site)
        else:
            lines.append(f"{head} (any size); {plan.describe(site)}")
    square_inputs.set_active(plan.square_needed)
    for line in lines:
        _say(f"preflight: {line}")
    return lines


def preflight(opt, task: str = "detect", models: Optional[Sequence] = None) -> List[str]:
    """Validate a parsed YOLOv5 option namespace before running `task` ('train', 'val', 'detect',
    'export', 'segment-train', 'segment-val', 'segment-predict').

    Args:
        opt: YOLOv5's namespace for the task (fields as its parse_opt: cfg, weights, imgsz, rect, ...).
        task: one of TASKS.
        models: models already loaded from --weights (skips loading them again).
    Returns: the lines printed (one per DAttention layer, plus any switch turned off).
    Raises: UserError with one line naming the flag and what to do. May set opt.rect / opt.multi_scale
        to False (fixed_pe), after printing why.
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
    # a resumed run: train.py reinstates its opt.yaml, saved after the first preflight had adjusted it
    return check_sizes(checked, task, model)
