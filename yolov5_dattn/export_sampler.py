"""Which bilinear sampler (`yolov5_dattn.nn.sampler_switch`) an export runs DAttention with, on both hosts.

- chosen: `--sampler gather|grid_sample` (YOLOv5 export) or `sampler=` (`yolov5-dattn yolo export`) holds for
  every format of the run;
- by default: "grid_sample" when every requested format has a GridSample that works (`GRID_SAMPLE_FORMATS`:
  TorchScript is PyTorch itself; onnxruntime, OpenVINO and OpenCV 5 read ONNX's GridSample and are tested with
  it), else "gather" for the whole run. TensorRT's GridSample fails to build or miscompiles in many reported
  cases, TFLite, CoreML, NCNN, RKNN and the other converters lack it, and a format not listed is treated the
  same way: `--include onnx engine` exports both with the Gather sampler, so the ONNX file is the one TensorRT
  was built from.
"""
from typing import Iterable, Optional

from yolov5_dattn.nn.sampler_switch import CHOICES

__all__ = ["CHOICES", "GRID_SAMPLE_FORMATS", "export_sampler"]

# format names as both hosts spell them (YOLOv5 `--include`, ultralytics `format=`)
GRID_SAMPLE_FORMATS = ("torchscript", "onnx", "openvino")


def export_sampler(formats: Iterable[str], chosen: Optional[str] = None) -> str:
    """The sampler for an export of `formats` (lower-case names): `chosen` when given, else "grid_sample" if every
    format is in `GRID_SAMPLE_FORMATS`, else "gather". Raises ValueError for a `chosen` not in `CHOICES`."""
    if chosen is not None:
        if chosen not in CHOICES:
            raise ValueError(f"sampler {chosen!r}: choose one of {', '.join(CHOICES)}")
        return chosen
    formats = [str(f).lower() for f in formats]
    return "grid_sample" if formats and all(f in GRID_SAMPLE_FORMATS for f in formats) else "gather"
