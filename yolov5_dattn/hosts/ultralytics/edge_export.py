"""ultralytics' NCNN and MNN exports (`format=ncnn`, `format=mnn`) of models with DAttention.

NCNN: ultralytics' `torch2ncnn` traces the model with pnnx, which writes each torch op as an NCNN layer. Two ops
of DAttention's forward have no NCNN layer, and the Gather sampler's int64 index arithmetic has none either, so
the trace runs:

- under `nn.ncnn_forms` (baddbmm and expand_as written as MatMul and broadcasting arithmetic), and
- with the `grid_sample` sampler, whatever the run's sampler: pnnx maps it to NCNN's own GridSample layer.

The result loads in NCNN and in ultralytics' `AutoBackend` (`model=best_ncnn_model`), at the export's image size.

CoreML: ultralytics' `export_coreml` traces with TorchScript and asks for numpy<=2.3.5 (pip would install it): under
NumPy 2.4 coremltools 9.0's TorchScript frontend converts no YOLO model (coremltools issue 2633). `export_coreml`
here converts the `torch.export` program instead (`coreml_convert.to_ml_program`), an fp32 ML program with
ultralytics' input (`image`, an ImageType scaled by 1/255) and metadata; NMS pipelines, `dynamic`, `quantize` and
the legacy `.mlmodel` are refused by the input checks before any work.

MNN: ultralytics' `onnx2mnn` converts the ONNX export (the Gather sampler by default, `export_sampler`) with
`MNN.tools.mnnconvert`, whose import would run `pip install` and contact Alibaba Cloud for its usage logs
(`mnn_convert.no_mnn_logger`); the conversion runs with that logger unimportable.
"""
import functools

from yolov5_dattn import patching

__all__ = ["STEP", "WHY", "WHY_COREML", "WHY_MNN", "apply", "export_coreml"]

STEP = "edge exports"
WHY = "DAttention's NCNN export: ops NCNN has (MatMul, GridSample), not baddbmm / expand_as / Gather"
WHY_MNN = "MNN's converter imported without its logger: no run-time pip install, no upload"
WHY_COREML = "CoreML through torch.export: coremltools' TorchScript frontend fails under NumPy 2.4"


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


def export_coreml(self, prefix="CoreML:"):
    """`Exporter.export_coreml` for NumPy 2.4: `self.model` (fused, eval) at `self.im` through `torch.export` and
    coremltools into `<model>.mlpackage` (fp32 ML program, iOS 17; input "image" as ultralytics' own, scaled 1/255;
    ultralytics' metadata). Returns the package path."""
    import coremltools as ct
    from ultralytics.utils import LOGGER

    from yolov5_dattn.coreml_convert import to_ml_program
    LOGGER.info(f"\n{prefix} starting export with coremltools {ct.__version__} (torch.export)...")
    layout = ct.colorlayout.GRAYSCALE if self.im.shape[1] == 1 else ct.colorlayout.RGB
    mlmodel = to_ml_program(self.model, self.im, [ct.ImageType("image", shape=tuple(self.im.shape), scale=1 / 255,
                                                               color_layout=layout)])
    mlmodel.short_description = str(self.metadata.get("description", ""))
    mlmodel.user_defined_metadata.update({k: str(v) for k, v in self.metadata.items()})
    f = self.file.with_suffix(".mlpackage")
    mlmodel.save(str(f))
    return f


def apply() -> None:
    """Install the NCNN trace forms into ultralytics' `torch2ncnn`, the logger-free import into its `onnx2mnn` and
    the torch.export CoreML conversion as `Exporter.export_coreml` (idempotent)."""
    import ultralytics.utils.export.mnn as mnn_export
    import ultralytics.utils.export.ncnn as ncnn_export
    from ultralytics.engine.exporter import Exporter, try_export
    with patching.applying(STEP):
        if not patching.is_patched(Exporter, "export_coreml", WHY_COREML):
            replacement = functools.wraps(Exporter.export_coreml)(try_export(export_coreml))
            patching.patch(Exporter, "export_coreml", replacement, why=WHY_COREML)
        if not patching.is_patched(ncnn_export, "torch2ncnn", WHY):
            patching.patch(ncnn_export, "torch2ncnn", _ncnn_trace(ncnn_export.torch2ncnn), why=WHY)
        if not patching.is_patched(mnn_export, "onnx2mnn", WHY_MNN):
            patching.patch(mnn_export, "onnx2mnn", _mnn_quiet(mnn_export.onnx2mnn), why=WHY_MNN)
