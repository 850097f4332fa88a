"""`--include coreml` for YOLOv5 models with DAttention: an fp32 ML program (`best.mlpackage`) through `torch.export`.

    yolov5-dattn export --weights best.pt --include coreml --imgsz 640   # -> best.mlpackage

YOLOv5 7.0.14's CoreML export traces with TorchScript, which coremltools cannot convert under NumPy 2.4; this one
converts the `torch.export` program (`coreml_convert.to_ml_program`). DAttention runs with the Gather sampler (CoreML has no GridSample;
`export_sampler`).

The model: input "images" (B, 3, H, W) in [0, 1] as a tensor, output YOLOv5's raw (B, anchors, 5 + nc), batch and
size fixed at export, fp32 compute (`compute_precision` FLOAT32), iOS 17 / macOS 14 or later; stride and names in
its user-defined metadata. coremltools cannot run a model off macOS: here the package is converted and its spec
checked, not executed. Written to a temp folder and renamed when complete.
"""
import os
import shutil
from pathlib import Path
from typing import Sequence


__all__ = ["COREML_SUFFIX", "coreml_output", "export_coreml"]

COREML_SUFFIX = ".mlpackage"


def coreml_output(weights) -> Path:
    """Where `--include coreml` writes for `weights`: best.pt -> best.mlpackage (a folder)."""
    return Path(weights).with_suffix(COREML_SUFFIX)


def export_coreml(weights, imgsz: Sequence[int], batch_size: int = 1) -> Path:
    """Export YOLOv5 checkpoint `weights` to a CoreML ML program (`coreml_output(weights)`), traced on the CPU.

    Args:
        weights: a YOLOv5 .pt; imgsz: [h, w] (or [size]), multiples of the model's stride; batch_size: the batch
            the model is built for.
    Returns: the .mlpackage folder; it maps "images" (B, 3, H, W) in [0, 1] to (B, anchors, 5 + nc).
    """
    import coremltools as ct
    from yolov5.utils.general import LOGGER

    from yolov5_dattn.coreml_convert import to_ml_program
    from yolov5_dattn.nn.sampler_switch import sampler

    from .traced_export import export_model
    loaded = export_model(weights, imgsz, batch_size)
    LOGGER.info(f"\nCoreML: starting export with coremltools {ct.__version__} at {loaded.imgsz}, "
                f"sampler {sampler()}...")
    mlmodel = to_ml_program(loaded.model, loaded.im, [ct.TensorType("images", shape=tuple(loaded.im.shape))],
                            [ct.TensorType("output0")])
    mlmodel.user_defined_metadata.update({"stride": str(loaded.stride), "names": str(loaded.names),
                                          "imgsz": str(loaded.imgsz), "batch": str(int(loaded.im.shape[0]))})
    out = coreml_output(weights)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{COREML_SUFFIX}")  # coremltools wants the suffix
    try:
        mlmodel.save(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info(f"CoreML: export success, saved as {out}")
    return out
