"""Starting a DAttention model from a baseline checkpoint: say what was transferred and what starts fresh.

YOLOv5's train.py already loads every checkpoint tensor whose name and shape match the new model
(`intersect_dicts`), and C3 -> C3_DAttention keeps the convolutions' names (`cv1`, `cv2`, `cv3`,
`m.i.cv1`, `m.i.cv2`), so a baseline yolov5s.pt fills everything except the attention. YOLOv5 only
prints "Transferred 342/370 items"; `install()` wraps `intersect_dicts` where train.py and
segment/train.py call it so that a short table also says which tensors start fresh and why.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import torch

ATTENTION_KEY = ".attention."  # Bottleneck_DAttention.attention: every DAttention tensor's name has it
LAYER_SCALE_KEY = ".layer_scale."  # the safe insertion's per-channel scale of that attention (new with it)

# reason -> table label, in table order
ROWS = OrderedDict([
    ("transferred", "transferred from the checkpoint"),
    ("attention", "fresh: DAttention layers (not in a baseline)"),
    ("shape", "fresh: shape differs (e.g. Detect for another nc)"),
    ("excluded", "fresh: excluded by YOLOv5 (anchors)"),
    ("missing", "fresh: other names not in the checkpoint"),
])


@dataclass
class TransferReport:
    """Every tensor of the new model's state_dict, by what happened to it."""
    keys: Dict[str, List[str]] = field(default_factory=lambda: {reason: [] for reason in ROWS})
    values: Dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in ROWS})
    unused: int = 0  # checkpoint tensors the new model has no place for

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.keys.values())


def summarise(checkpoint: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor],
              transferred: Mapping[str, torch.Tensor], exclude: Sequence[str] = ()) -> TransferReport:
    """Classify each tensor of `model` (a state_dict) given what `intersect_dicts` kept.

    Args:
        checkpoint: the checkpoint's state_dict; model: the new model's state_dict;
        transferred: `intersect_dicts(checkpoint, model, exclude)`; exclude: its substrings.
    Returns: a `TransferReport` (tensor names and value counts per reason).
    """
    report = TransferReport()
    for key, tensor in model.items():
        if key in transferred:
            reason = "transferred"
        elif ATTENTION_KEY in key or LAYER_SCALE_KEY in key:
            reason = "attention"
        elif any(x in key for x in exclude):
            reason = "excluded"
        elif key in checkpoint:
            reason = "shape"
        else:
            reason = "missing"
        report.keys[reason].append(key)
        report.values[reason] += tensor.numel()
    report.unused = sum(1 for key in checkpoint if key not in model)
    return report


def format_table(report: TransferReport, source: str = "checkpoint") -> str:
    """The report as a short fixed-width table (rows with no tensors are left out)."""
    lines = [f"Transfer from {source}:", f"  {'':<52}{'tensors':>8}{'values':>12}"]
    for reason, label in ROWS.items():
        if report.keys[reason]:
            lines.append(f"  {label:<52}{len(report.keys[reason]):>8}{report.values[reason]:>12,}")
    lines.append(f"  {'total (new model)':<52}{report.total:>8}{sum(report.values.values()):>12,}")
    fresh_modules = sorted({k.split(ATTENTION_KEY)[0] + ATTENTION_KEY.rstrip(".") for k in report.keys["attention"]
                            if ATTENTION_KEY in k})
    if fresh_modules:
        lines.append(f"  fresh DAttention: {', '.join(fresh_modules)}")
    if report.unused:
        lines.append(f"  {report.unused} checkpoint tensors have no place in the new model (unused)")
    return "\n".join(lines)


last_report: Optional[TransferReport] = None  # the latest report (tests and callers read it)


def _reporting(intersect_dicts):
    """`intersect_dicts` that also logs the transfer table (via YOLOv5's LOGGER: rank 0 only under DDP)."""

    def intersect_dicts_with_report(da, db, exclude=()):
        global last_report
        result = intersect_dicts(da, db, exclude)
        from yolov5.utils.general import LOGGER
        last_report = summarise(da, db, result, exclude)
        LOGGER.info(format_table(last_report))
        return result

    intersect_dicts_with_report.__wrapped__ = intersect_dicts
    return intersect_dicts_with_report


def install() -> None:
    """Report transfers in YOLOv5's detection and segmentation training (idempotent)."""
    import yolov5.segment.train
    import yolov5.train

    from yolov5_dattn import patching
    why = "a --weights transfer reports what starts fresh"
    with patching.applying("transfer.install"):
        for module in (yolov5.train, yolov5.segment.train):
            if not patching.is_patched(module, "intersect_dicts", why):
                patching.patch(module, "intersect_dicts", _reporting(module.intersect_dicts), why=why)
