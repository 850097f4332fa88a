"""The YOLOv5 model as our own converters (`--include tflite`, `--include coreml`) take it: loaded, fused, its
Detect head giving one tensor, at the export's fixed batch and size.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import nn

__all__ = ["ExportModel", "export_model"]


@dataclass
class ExportModel:
    """model: fused, eval, Detect in export mode (one output, no in-place writes); im: (B, 3, H, W) zeros at the
    export size; stride; imgsz [h, w]; names {class index: name}."""
    model: nn.Module
    im: torch.Tensor
    stride: int
    imgsz: List[int]
    names: Dict[int, str]


def export_model(weights, imgsz: Sequence[int], batch_size: int = 1) -> ExportModel:
    """Load YOLOv5 checkpoint `weights` on the CPU for a fixed-size export at `imgsz` ([h, w] or [size], rounded
    up to stride multiples) and batch `batch_size`, the Detect grids built at that size."""
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Detect
    from yolov5.utils.general import check_img_size

    model = attempt_load(str(weights), device=torch.device("cpu"), inplace=True, fuse=False)
    with torch.no_grad():  # fused under no_grad: else the fused weights are non-leaf copies, which torch.export
        model = model.fuse().eval()  # (litert-torch, coremltools) cannot register back as parameters
    stride = int(max(model.stride))
    imgsz = list(imgsz) * (2 if len(imgsz) == 1 else 1)
    imgsz = [check_img_size(x, stride) for x in imgsz]
    for m in model.modules():
        if isinstance(m, Detect):  # one detection tensor, no in-place writes (the converters trace functionally)
            m.inplace, m.dynamic, m.export = False, False, True
    im = torch.zeros(max(int(batch_size), 1), 3, *imgsz)
    with torch.no_grad():
        model(im)  # builds the Detect grids at this size
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    return ExportModel(model, im, stride, imgsz, names)
