"""`--include mnn` for YOLOv5 (7.0.14 has no MNN export): the model exported to ONNX and converted by MNN's
converter into one `.mnn` file.

    yolov5-dattn export --weights best.pt --include mnn --imgsz 640 [--dynamic] [--half]   # -> best.mnn

The ONNX step runs with the run's sampler (the Gather sampler unless `--sampler grid_sample`: see
`export_sampler`) into a temp folder, so no `best.onnx` is left unless `--include onnx` asks for it. `--dynamic`
makes batch, height and width free (MNN's Module API reshapes at run time); `--half` stores fp16 weights. The
model's stride, names and size go into the file's bizCode as JSON. YOLOv5's `DetectMultiBackend` does not load
`.mnn` files: run them with MNN (`MNN.nn.load_module_from_file`); the output is YOLOv5's (B, anchors, 5 + nc), not
the layout ultralytics' `AutoBackend` expects.
"""
import tempfile
from pathlib import Path
from typing import Sequence

__all__ = ["MNN_SUFFIX", "export_mnn", "mnn_output"]

MNN_SUFFIX = ".mnn"


def mnn_output(weights) -> Path:
    """Where `--include mnn` writes for `weights`: best.pt -> best.mnn."""
    return Path(weights).with_suffix(MNN_SUFFIX)


def export_mnn(weights, imgsz: Sequence[int], half: bool = False, dynamic: bool = False, batch_size: int = 1,
               opset: int = 17) -> Path:
    """Export YOLOv5 checkpoint `weights` to MNN (`mnn_output(weights)`), traced on the CPU.

    Args:
        weights: a YOLOv5 .pt; imgsz: [h, w] (or [size]), multiples of the model's stride;
        half: store fp16 weights; dynamic: free batch, height and width; batch_size: the traced batch;
        opset: ONNX opset of the intermediate graph.
    Returns: the .mnn file; it maps images (B, 3, H, W) in [0, 1] to (B, anchors, 5 + nc), as YOLOv5's Detect.
    """
    import torch
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Detect
    from yolov5.utils.general import LOGGER, check_img_size

    from yolov5_dattn.mnn_convert import onnx_to_mnn
    from yolov5_dattn.nn.sampler_switch import sampler

    model = attempt_load(str(weights), device=torch.device("cpu"), inplace=True, fuse=True).eval()
    stride = int(max(model.stride))
    imgsz = list(imgsz) * (2 if len(imgsz) == 1 else 1)
    imgsz = [check_img_size(x, stride) for x in imgsz]
    for m in model.modules():
        if isinstance(m, Detect):  # one output tensor; grids from the input's shape when dynamic
            m.inplace, m.dynamic, m.export = False, bool(dynamic), True
    im = torch.zeros(max(int(batch_size), 1), 3, *imgsz)
    with torch.no_grad():
        model(im)  # builds the Detect grids at this size

    import MNN
    LOGGER.info(f"\nMNN: starting export with MNN {MNN.version()} at {imgsz}, sampler {sampler()}...")
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    metadata = {"stride": stride, "names": names, "imgsz": imgsz, "batch": int(im.shape[0]), "task": "detect",
                "dynamic": bool(dynamic)}
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    with tempfile.TemporaryDirectory(prefix="yolov5-dattn-mnn-") as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(model, im, str(onnx_file), opset_version=int(opset), input_names=["images"],
                              output_names=["output0"], dynamic_axes=axes if dynamic else None, dynamo=False)
        out = onnx_to_mnn(onnx_file, mnn_output(weights), metadata, fp16=bool(half))
    LOGGER.info(f"MNN: export success, saved as {out}")
    return out
