"""`--include ncnn` for YOLOv5 (7.0.14 has no NCNN export): the model traced by pnnx into an NCNN folder.

    yolov5-dattn export --weights best.pt --include ncnn --imgsz 640        # -> best_ncnn_model/

The folder holds `model.ncnn.param`, `model.ncnn.bin` and `metadata.yaml` (stride, names, imgsz), as ultralytics
names its NCNN exports. DAttention is traced under `nn.ncnn_forms` and with the `grid_sample` sampler, which
pnnx writes as NCNN's GridSample layer (see that module). NCNN runs the model at the export's image size; batch 1.
The folder is written beside the weights under a temp name and renamed when complete. YOLOv5's
`DetectMultiBackend` does not load NCNN folders: run them with NCNN (`ncnn.Net`) or ultralytics' `AutoBackend`.
"""
import os
import shutil
from pathlib import Path
from typing import Sequence

__all__ = ["NCNN_SUFFIX", "export_ncnn", "ncnn_output"]

NCNN_SUFFIX = "_ncnn_model"
# pnnx's intermediate files: not part of the export
_PNNX_DEBUG = ("debug.bin", "debug.param", "debug2.bin", "debug2.param")
_PNNX_SCRATCH = ("model.pt", "model.pnnx.param", "model.pnnx.bin", "model_pnnx.py", "model.pnnx.onnx", "model_ncnn.py")


def ncnn_output(weights) -> Path:
    """Where `--include ncnn` writes for `weights`: best.pt -> best_ncnn_model (a folder)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + NCNN_SUFFIX)


def export_ncnn(weights, imgsz: Sequence[int], half: bool = False) -> Path:
    """Export YOLOv5 checkpoint `weights` to an NCNN folder (`ncnn_output(weights)`), traced on the CPU.

    Args:
        weights: a YOLOv5 .pt; imgsz: [h, w] (or [size]), multiples of the model's stride;
        half: store fp16 weights (NCNN computes in fp32 or fp16 as the device allows).
    Returns: the folder.
    """
    import pnnx
    import torch
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Detect
    from yolov5.utils.general import LOGGER, check_img_size, yaml_save

    from yolov5_dattn.nn.ncnn_forms import ncnn_forms
    from yolov5_dattn.nn.sampler_switch import sampler_set_to

    model = attempt_load(str(weights), device=torch.device("cpu"), inplace=True, fuse=True).eval()
    stride = int(max(model.stride))
    imgsz = list(imgsz) * (2 if len(imgsz) == 1 else 1)
    imgsz = [check_img_size(x, stride) for x in imgsz]
    for m in model.modules():
        if isinstance(m, Detect):
            m.inplace, m.dynamic, m.export = False, False, True  # one output tensor (B, anchors, 5 + nc)
    im = torch.zeros(1, 3, *imgsz)
    with torch.no_grad():
        model(im)  # builds the Detect grids at this size

    folder = ncnn_output(weights)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    debug = [Path(n) for n in _PNNX_DEBUG if not Path(n).exists()]  # pnnx writes these in the cwd
    LOGGER.info(f"\nNCNN: starting export with pnnx {getattr(pnnx, '__version__', '')} at {imgsz}...")
    try:
        paths = {key: (tmp / name).as_posix() for key, name in (
            ("ncnnparam", "model.ncnn.param"), ("ncnnbin", "model.ncnn.bin"), ("ncnnpy", "model_ncnn.py"),
            ("pnnxparam", "model.pnnx.param"), ("pnnxbin", "model.pnnx.bin"), ("pnnxpy", "model_pnnx.py"),
            ("pnnxonnx", "model.pnnx.onnx"))}
        with sampler_set_to("grid_sample"), ncnn_forms():
            pnnx.export(model, (tmp / "model.pt").as_posix(), inputs=im, fp16=bool(half), device="cpu", **paths)
        if not (tmp / "model.ncnn.param").is_file() or not (tmp / "model.ncnn.bin").is_file():
            raise RuntimeError("pnnx wrote no NCNN model")
        for name in _PNNX_SCRATCH:
            (tmp / name).unlink(missing_ok=True)
        names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
        yaml_save(tmp / "metadata.yaml", {"stride": stride, "names": names, "imgsz": imgsz, "batch": 1,
                                          "task": "detect"})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in debug:  # only those this export created
            path.unlink(missing_ok=True)
    LOGGER.info(f"NCNN: export success, saved as {folder}")
    return folder
