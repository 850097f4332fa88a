"""Deployment targets that cannot run sparse queries (`DAttention(query_ratio < 1)`), refused before any work.

A sparse layer exports its query selection as ONNX TopK (k computed from the input's shape), GatherElements and
ScatterElements (`nn.query_selection`). Where that runs, tried with the real tools (`tests/nn/test_sparse_queries.py`,
`tests/cli/test_sparse_export_refusal.py`):

| target | sparse layers |
|---|---|
| onnxruntime, OpenVINO (ONNX and IR), static and `--dynamic` | run, within 1e-4 of PyTorch |
| OpenCV DNN 5.0 (static ONNX), MNN 3.6 (high precision) | run |
| LiteRT via litert-torch (`--include tflite`, `format=litert`) | run, within 1e-5 of PyTorch (`tests/cli/test_deploy_tflite.py`) |
| NCNN via pnnx (`--include ncnn`, `format=ncnn`) | refused: pnnx has no NCNN layer for `torch.topk`, `gather`, `scatter` and leaves them in the `.param` file, which NCNN does not load ("layer torch.topk not exists or registered") |
| TensorRT (`--include engine`, `format=engine`) | refused when a layer's k reaches `TENSORRT_MAX_K` at the largest size the engine is built for, or when TensorRT is older than 10 and the export is `--dynamic` (its ONNX parser needs TopK's K to be a constant there) |

    reason = sparse_refusal("ncnn", "--include", model)   # a one-line reason, or None
"""
import importlib.metadata
from typing import List, Optional, Sequence, Tuple, Union

from torch import nn

__all__ = ["SPARSE_OPS", "TENSORRT_MAX_K", "sparse_layers", "sparse_refusal"]

SPARSE_OPS = "TopK, GatherElements and ScatterElements"
# TensorRT's TopK: "K input must be less than 3840" (onnx-tensorrt docs/operators.md, 10.1 GA)
TENSORRT_MAX_K = 3840
_NCNN_WHY = "pnnx has no NCNN layer for torch.topk, gather and scatter, so NCNN cannot load the model"
_ALTERNATIVES = {"--include": "--include onnx or openvino", "format=": "format=onnx, openvino or mnn"}


def sparse_layers(model: nn.Module) -> List[Tuple[str, float]]:
    """(module name, query_ratio) of every DAttention of `model` whose queries are sparse (query_ratio < 1)."""
    from yolov5_dattn.nn.dattention import DAttention
    found = []
    for name, m in model.named_modules():
        scorer = getattr(m, "query_scorer", None) if isinstance(m, DAttention) else None
        if scorer is not None and float(scorer.ratio) < 1.0:
            found.append((name, float(scorer.ratio)))
    return found


def _tensorrt_major() -> Optional[int]:
    """The installed TensorRT's major version (read from the package metadata, not imported), or None."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return int(importlib.metadata.version(dist).split(".")[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def _square(imgsz: Union[int, Sequence[int], None]) -> Tuple[int, int]:
    size = [640] if imgsz is None else list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    size = [int(s) for s in size] * (2 if len(size) == 1 else 1)
    return size[0], size[1]


def sparse_refusal(fmt: str, flag: str, model: nn.Module, imgsz: Union[int, Sequence[int], None] = None,
                   dynamic: bool = False, engine_scale: int = 1,
                   tensorrt_major: Optional[int] = None) -> Optional[str]:
    """Why `fmt` cannot run `model`'s sparse layers (one line, naming the first such layer and suggesting
    query_ratio 1.0), or None when it can or the model has none.

    Args:
        fmt: the format, lower case ('ncnn', 'engine', ...); flag: how the user asked ('--include' or 'format=');
        model: the model to export; imgsz: the export's image size (int or [h, w]);
        dynamic: a `--dynamic` export; engine_scale: the largest input a dynamic TensorRT engine is built for, as a
            multiple of imgsz (YOLOv5: 1, ultralytics: 2);
        tensorrt_major: TensorRT's major version (default: the installed one, if any).
    """
    layers = sparse_layers(model)
    if not layers or fmt not in ("ncnn", "engine"):
        return None
    what = f"{flag}{fmt}" if flag.endswith("=") else f"{flag} {fmt}"
    name, ratio = layers[0]
    more = f" (and {len(layers) - 1} more sparse layer{'s' if len(layers) > 2 else ''})" if len(layers) > 1 else ""
    fix = (f"export a model trained with query_ratio 1.0 (every query attends, no TopK) for this target, or "
           f"{_ALTERNATIVES.get(flag, 'onnx or openvino')}")
    if fmt == "ncnn":
        return (f"{what}: DAttention {name} has query_ratio {ratio:g}{more}, whose query selection exports as "
                f"{SPARSE_OPS}; {_NCNN_WHY}: {fix}")
    major = _tensorrt_major() if tensorrt_major is None else tensorrt_major
    if dynamic and major is not None and major < 10:
        return (f"{what} --dynamic: DAttention {name} has query_ratio {ratio:g}{more}, whose TopK takes k from the "
                f"input's size; TensorRT {major} needs a constant k (10 or newer takes it): export without dynamic, "
                f"or {fix}")
    from yolov5_dattn.nn.sites import find_attention
    h, w = _square(imgsz)
    scale = engine_scale if dynamic else 1
    for site in find_attention(model):
        if site.query_ratio >= 1.0:
            continue
        k, n = site.queries((h * scale, w * scale))
        if k >= TENSORRT_MAX_K:
            return (f"{what}: DAttention {site.name} (query_ratio {site.query_ratio:g}) selects {k} of {n} queries at "
                    f"{h * scale}x{w * scale}, and TensorRT's TopK takes fewer than {TENSORRT_MAX_K}: {fix}, or a "
                    f"smaller image size")
    return None
