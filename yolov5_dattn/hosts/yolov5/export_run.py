"""YOLOv5's export loop for our runner: every --include format written, or one error line and no half-written file.
"""
import os
import time
from pathlib import Path
from typing import Optional

from yolov5_dattn.errors import UserError

from .run_checks import export_formats_requested, weights_list

__all__ = ["run_export"]


def run_export(module, opt, sampler: Optional[str] = None) -> None:
    """YOLOv5's export.main loop, but failing (UserError) when a requested format was not written.

    DAttention samples its keys with `sampler` (--sampler; None: the formats' default, `export_sampler`).
    A format that failed after writing part of its output (e.g. an .onnx that then failed its check) has
    that file removed, so nothing half-written is left behind.
    """
    from yolov5_dattn.export_sampler import export_sampler
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    from .coreml_export import export_coreml
    from .deploy import openvino_half_on_cpu, output_path
    from .mnn_export import export_mnn
    from .ncnn_export import export_ncnn
    from .tflite_export import export_tflite
    include = export_formats_requested(opt)
    ours = {"ncnn": export_ncnn,  # formats YOLOv5's export.run does not have
            "mnn": lambda w, imgsz, half: export_mnn(w, imgsz, half=half, dynamic=bool(opt.dynamic),
                                                     batch_size=opt.batch_size, opset=opt.opset),
            "tflite": lambda w, imgsz, half: export_tflite(w, imgsz, batch_size=opt.batch_size),  # YOLOv5's needs TF
            "coreml": lambda w, imgsz, half: export_coreml(w, imgsz, batch_size=opt.batch_size)}  # see its docstring
    native = [fmt for fmt in include if fmt not in ours]
    for weights in weights_list(opt):
        start = time.time()
        written = []
        with openvino_half_on_cpu(opt, include), sampler_set_to(export_sampler(include, sampler)):
            if native:
                written = list(module.run(**{**vars(opt), "weights": weights, "include": native}))
            for fmt in include:
                if fmt in ours:
                    ours[fmt](weights, opt.imgsz, half=bool(opt.half))
        missing = [fmt for fmt in native if not any(_is_format(f, fmt) for f in written)]
        # OpenVINO and TensorRT are converted from an ONNX file YOLOv5 writes first: not wanted when they failed
        intermediate = ["onnx"] if {"openvino", "engine"} & set(missing) and "onnx" not in include else []
        for fmt in missing + intermediate:
            partial = output_path(weights, fmt)
            if partial.is_file() and partial.stat().st_mtime >= start:
                partial.unlink()
        if missing:
            raise UserError(f"--include {' '.join(missing)}: export of {weights} failed and wrote no file "
                            f"(see the 'export failure' line above)")


def _is_format(path: str, fmt: str) -> bool:
    from .deploy import format_suffix
    path = str(path).rstrip("/" + os.sep)  # folder formats come back as 'best_openvino_model/'
    return path.endswith(format_suffix(fmt)) and Path(path).exists()
