"""Starting a DAttention model from a stock ultralytics checkpoint: say what was transferred and what starts fresh.

`yolo train model=yolo11n-c3k2-dattn.yaml pretrained=yolo11n.pt` and `YOLO(cfg).load("yolo11n.pt")` both end in
`BaseModel.load`, which copies every checkpoint tensor whose name and shape match (`intersect_dicts`) and logs
only "Transferred 499/529 items". Our blocks subclass the stock ones and keep their convolutions' names, so a
stock checkpoint fills everything but the attention. `apply()` wraps `BaseModel.load` (ultralytics' own load
runs unchanged, first) so that a load into or from a model with DAttention also logs the table of
`yolov5_dattn.core.transfer_report`: what was copied, which DAttention modules start fresh, what differs in shape
(a Detect for another nc), per top-level layer, and whether the non-attention part was fully transferred.
A checkpoint that fits (almost) nothing, such as another model family, gets a warning line.

The checkpoint itself is read by ultralytics (`load_checkpoint`), with the restricted loading of
`checkpoints.py`; nothing here unpickles anything.
"""
import weakref
from typing import Optional

import torch

from yolov5_dattn import patching
from yolov5_dattn.core.transfer_report import (TransferReport, attention_modules, by_layer,  # noqa: F401
                                               report_text, summarise)

__all__ = ["STEP", "WHY", "apply", "by_layer", "last_report", "log_report"]

STEP = "transfer report"
WHY = "ultralytics logs only a count of transferred tensors, not which start fresh (the attention) or why"
last_report: Optional[TransferReport] = None  # the latest report (tests and callers read it)
_reported: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # models a table was logged for


def _source(weights) -> torch.nn.Module:
    """The module `BaseModel.load` reads its tensors from (a checkpoint dict's EMA first, as it does)."""
    return (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights


def log_report(model: torch.nn.Module, source: torch.nn.Module) -> TransferReport:
    """Log the table for a load of `source` into `model` (ultralytics' LOGGER: rank 0 only under DDP), a warning
    line when the checkpoint fits (almost) nothing, and return the report."""
    global last_report
    from ultralytics.nn import tasks
    from ultralytics.utils import LOGGER
    # recomputed the way BaseModel.load matches (name and shape, after its Detect rebuild for another nc)
    checkpoint, state, prefixes = source.state_dict(), model.state_dict(), attention_modules(model)
    last_report = result = summarise(checkpoint, state, tasks.intersect_dicts(checkpoint, state),
                                     attention_prefixes=prefixes)
    name = getattr(source, "pt_path", None) or "the given model"
    if source in _reported:  # train() after YOLO(cfg).load(...) loads the model loaded then into a fresh one
        name = f"the model loaded before (from {name})"
    if source in _reported and result.total == len(result.keys["transferred"]):
        LOGGER.info(f"Transfer: all {result.total} tensors from {name}; its table is above")
    else:
        text, warning = report_text(result, model, checkpoint, state, name, prefixes)
        LOGGER.info(text)
        if warning:
            LOGGER.warning(f"{name}: {warning}")
    _reported.add(model)
    return result


def _reporting(load):
    """`BaseModel.load` that, after loading as ultralytics does, logs the transfer table when either model has
    DAttention (a stock-to-stock load logs only ultralytics' own line)."""

    def load_with_report(self, weights, *args, **kwargs):
        result = load(self, weights, *args, **kwargs)
        verbose = kwargs.get("verbose", args[0] if args else True)
        source = _source(weights)
        if verbose and isinstance(source, torch.nn.Module) and (attention_modules(self) or
                                                                attention_modules(source)):
            log_report(self, source)
        return result

    return load_with_report


def apply() -> None:
    """Wrap `BaseModel.load` to log the transfer table (idempotent)."""
    from ultralytics.nn import tasks
    with patching.applying(STEP):
        if not patching.is_patched(tasks.BaseModel, "load", WHY):
            patching.patch(tasks.BaseModel, "load", _reporting(tasks.BaseModel.load), why=WHY)
