"""`--include tflite` for YOLOv5 models with DAttention: PyTorch -> LiteRT (TFLite) with `litert-torch`, no TensorFlow.

    yolov5-dattn export --weights best.pt --include tflite --imgsz 640   # -> best-fp32.tflite

YOLOv5 7.0.14's own TFLite export rebuilds the model from TensorFlow versions of its layers and has none for
DAttention. `litert-torch` converts the PyTorch graph itself; DAttention runs with the Gather sampler (TFLite has no
GridSample; `export_sampler`). The file keeps YOLOv5's conventions for its TensorFlow formats, so
`DetectMultiBackend` reads it as it reads YOLOv5's own `.tflite`:

- input (B, H, W, 3) in [0, 1], channels last;
- output (B, anchors, 5 + nc) with xywh divided by (w, h, w, h) (YOLOv5's TF models output normalised boxes;
  `DetectMultiBackend` multiplies them back), the rest as PyTorch's; a segmentation model's prototypes follow as
  a second output;
- stride and class names appended as a zip entry `meta.txt` (the flatbuffer tolerates it), where
  `DetectMultiBackend` looks for them.

The shapes are static (batch and size of the export), as YOLOv5's TFLite files are; the weights are fp32 (hence the
name: YOLOv5's default TFLite file is `-fp16`). Written to a temp name and renamed when complete.
"""
import contextlib
import os
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

__all__ = ["TFLITE_SUFFIX", "YOLOv5TFLiteIO", "export_tflite", "squares_as_products", "tflite_output"]

TFLITE_SUFFIX = "-fp32.tflite"


def tflite_output(weights) -> Path:
    """Where `--include tflite` writes for `weights`: best.pt -> best-fp32.tflite."""
    weights = Path(weights)
    return weights.with_name(weights.stem + TFLITE_SUFFIX)


class YOLOv5TFLiteIO(nn.Module):
    """A YOLOv5 model with the input and output conventions of YOLOv5's TensorFlow formats.

    Shapes: x (B, H, W, 3) -> (B, anchors, 5 + nc) with xywh / (w, h, w, h) [, prototypes (B, 32, H/4, W/4)].
    """

    def __init__(self, model: nn.Module, h: int, w: int):
        super().__init__()
        self.model = model
        self.register_buffer("box_scale", torch.tensor([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h]), persistent=False)

    def forward(self, x: torch.Tensor):
        y = self.model(x.permute(0, 3, 1, 2))
        first = y[0] if isinstance(y, (list, tuple)) else y
        first = torch.cat((first[..., :4] * self.box_scale, first[..., 4:]), -1)
        return (first, *y[1:]) if isinstance(y, (list, tuple)) else first


@contextlib.contextmanager
def squares_as_products():
    """While active, litert-torch lowers `x ** 2` as x * x (the same number).

    YOLOv5's Detect squares its box sizes with `** 2`; litert-torch lowers that to `tfl.pow`, which its converter then
    refuses ("failed to legalize operation 'tfl.pow'"). The decomposition is litert-torch's process-wide table, so
    it is put back when the conversion ends.
    """
    from litert_torch.fx_infra import decomp
    table = decomp._pre_lower_decomp  # no public getter of one entry; add/remove are public
    op = torch.ops.aten.pow.Tensor_Scalar
    before = table.get(op)
    decomp.add_pre_lower_decomp(op, lambda x, e: x * x if e == 2 else before(x, e) if before else NotImplemented)
    try:
        yield
    finally:
        if before is None:
            table.pop(op, None)
        else:
            decomp.add_pre_lower_decomp(op, before)


def export_tflite(weights, imgsz: Sequence[int], batch_size: int = 1) -> Path:
    """Export YOLOv5 checkpoint `weights` to LiteRT (`tflite_output(weights)`), traced on the CPU.

    Args:
        weights: a YOLOv5 .pt; imgsz: [h, w] (or [size]), multiples of the model's stride; batch_size: the batch
            the file is built for.
    Returns: the .tflite file (see the module docstring for its input and output).
    """
    from yolov5.utils.general import LOGGER

    from yolov5_dattn.nn.sampler_switch import sampler

    from .traced_export import export_model
    loaded = export_model(weights, imgsz, batch_size)
    im = loaded.im.permute(0, 2, 3, 1).contiguous()  # NHWC, as YOLOv5's TensorFlow formats
    wrapped = YOLOv5TFLiteIO(loaded.model, *loaded.imgsz).eval()

    import litert_torch
    LOGGER.info(f"\nLiteRT: starting export with litert-torch {litert_torch.__version__} at {loaded.imgsz}, "
                f"sampler {sampler()}...")
    out = tflite_output(weights)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), squares_as_products():
            litert_torch.convert(wrapped, (im,)).export(str(tmp))
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"litert-torch wrote no model from {weights}")
        with zipfile.ZipFile(tmp, "a", zipfile.ZIP_DEFLATED) as zf:  # read back with ast.literal_eval
            zf.writestr("meta.txt", repr({"stride": loaded.stride, "names": loaded.names}))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    LOGGER.info(f"LiteRT: export success, saved as {out}")
    return out
