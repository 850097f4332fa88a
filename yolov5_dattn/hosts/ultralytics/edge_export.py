"""ultralytics' NCNN and MNN exports (`format=ncnn`, `format=mnn`) of models with DAttention.

NCNN: ultralytics' `torch2ncnn` traces the model with pnnx, which writes each torch op as an NCNN layer. Two ops
of DAttention's forward have no NCNN layer, and the Gather sampler's int64 index arithmetic has none either, so
the trace runs:

- under `nn.ncnn_forms` (baddbmm and expand_as written as MatMul and broadcasting arithmetic), and
- with the `grid_sample` sampler, whatever the run's sampler: pnnx maps it to NCNN's own GridSample layer.

The result loads in NCNN and in ultralytics' `AutoBackend` (`model=best_ncnn_model`), at the export's image size.

MNN: ultralytics' `onnx2mnn` converts the ONNX export (the Gather sampler by default, `export_sampler`) with
`MNN.tools.mnnconvert`, whose import would run `pip install` and contact Alibaba Cloud for its usage logs
(`mnn_convert.no_mnn_logger`); the conversion runs with that logger unimportable.
"""
import functools

from yolov5_dattn import patching

__all__ = ["STEP", "WHY", "WHY_MNN", "apply"]

STEP = "edge exports"
WHY = "DAttention's NCNN export: ops NCNN has (MatMul, GridSample), not baddbmm / expand_as / Gather"
WHY_MNN = "MNN's converter imported without its logger: no run-time pip install, no upload"


def _ncnn_trace(original):
    @functools.wraps(original)
    def torch2ncnn(*args, **kwargs):
        from yolov5_dattn.nn.ncnn_forms import ncnn_forms
        from yolov5_dattn.nn.sampler_switch import sampler_set_to
        with sampler_set_to("grid_sample"), ncnn_forms():
            return original(*args, **kwargs)
    return torch2ncnn


def _mnn_quiet(original):
    @functools.wraps(original)
    def onnx2mnn(*args, **kwargs):
        from yolov5_dattn.mnn_convert import no_mnn_logger
        with no_mnn_logger():
            return original(*args, **kwargs)
    return onnx2mnn


def apply() -> None:
    """Install the NCNN trace forms into ultralytics' `torch2ncnn` and the logger-free import into its
    `onnx2mnn` (idempotent)."""
    import ultralytics.utils.export.mnn as mnn_export
    import ultralytics.utils.export.ncnn as ncnn_export
    with patching.applying(STEP):
        if not patching.is_patched(ncnn_export, "torch2ncnn", WHY):
            patching.patch(ncnn_export, "torch2ncnn", _ncnn_trace(ncnn_export.torch2ncnn), why=WHY)
        if not patching.is_patched(mnn_export, "onnx2mnn", WHY_MNN):
            patching.patch(mnn_export, "onnx2mnn", _mnn_quiet(mnn_export.onnx2mnn), why=WHY_MNN)
