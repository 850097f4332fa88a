"""Starting a DAttention model from a baseline checkpoint: say what was transferred and what starts fresh.

YOLOv5's train.py already loads every checkpoint tensor whose name and shape match the new model
(`intersect_dicts`), and C3 -> C3_DAttention keeps the convolutions' names (`cv1`, `cv2`, `cv3`,
`m.i.cv1`, `m.i.cv2`), so a baseline yolov5s.pt fills everything except the attention. YOLOv5 only
prints "Transferred 342/370 items"; `install()` wraps `intersect_dicts` where train.py and
segment/train.py call it so that a short table also says which tensors start fresh and why.
"""
from collections import OrderedDict
from typing import Optional

# the report itself is host-neutral (the ultralytics host prints it too); these names stay importable from here
from yolov5_dattn.core.transfer_report import (ATTENTION_KEY, LAYER_SCALE_KEY, ROWS as _SHARED_ROWS,  # noqa: F401
                                               TransferReport, summarise)
from yolov5_dattn.core.transfer_report import format_table as _format_table

__all__ = ["ROWS", "format_table", "install", "last_report", "summarise"]

# reason -> table label, in table order (YOLOv5 excludes only the anchors by name)
ROWS = OrderedDict(_SHARED_ROWS, excluded="fresh: excluded by YOLOv5 (anchors)")


def format_table(report: TransferReport, source: str = "checkpoint") -> str:
    """The report as a short fixed-width table (rows with no tensors are left out)."""
    return _format_table(report, source, rows=ROWS)


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
