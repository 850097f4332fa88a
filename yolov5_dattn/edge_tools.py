"""Which Python packages each deployment format's converter and runtime need, on both hosts, and the one-line
refusal when one is missing (`tflite` is YOLOv5's name and ultralytics' old name for `litert`). They come with the
`edge` extra (`pip install "yolov5-dattn[edge]"`); nothing is ever installed at run time (ultralytics would run pip
for a missing exporter dependency).

    missing_tools("ncnn")              # ['pnnx'] when pnnx is not installed, [] when it can run
    edge_refusal("ncnn", "--include")  # '--include ncnn needs pnnx, ...' or None

The check looks packages up without importing them (`importlib.util.find_spec`), so it is cheap, runs before any
work, and a module made unimportable (`sys.modules[name] = None`) counts as missing.
"""
import importlib.util
from typing import Dict, List, Optional, Tuple

__all__ = ["EDGE_EXTRA", "EDGE_NEEDS", "INT8_NEEDS", "edge_refusal", "installed", "missing_tools"]

EDGE_EXTRA = 'pip install "yolov5-dattn[edge]"'

# format (both hosts' spelling) -> ((module to import, pip package), ...): converter and runtime
EDGE_NEEDS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "ncnn": (("pnnx", "pnnx"), ("ncnn", "ncnn")),
    "mnn": (("MNN", "MNN"),),  # converter (from ONNX) and runtime in one package
    # LiteRT (TFLite's new name): litert-torch converts from PyTorch without TensorFlow, ai-edge-litert runs it
    "litert": (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")),
    "tflite": (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")),
    "coreml": (("coremltools", "coremltools"),),
}
# post-training int8 quantization of an OpenVINO export (NNCF, on the user's own images)
INT8_NEEDS: Tuple[Tuple[str, str], ...] = (("nncf", "nncf"),)


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a `sys.modules[module] = None` entry: no)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_tools(fmt: str, int8: bool = False) -> List[str]:
    """The pip packages format `fmt` (lower case) needs and this Python lacks; `int8`: quantized with NNCF
    (OpenVINO). [] for a format not in `EDGE_NEEDS` without int8."""
    needs = EDGE_NEEDS.get(fmt, ()) + (INT8_NEEDS if int8 and fmt == "openvino" else ())
    return [pip for module, pip in needs if not installed(module)]


def edge_refusal(fmt: str, flag: str, int8: bool = False) -> Optional[str]:
    """The one-line refusal for exporting `fmt` here (`flag`: how the user asked, '--include' or 'format='), or
    None when its tools are installed."""
    missing = missing_tools(fmt, int8)
    if not missing:
        return None
    what = f"{flag}{fmt}" if flag.endswith("=") else f"{flag} {fmt}"
    if int8 and fmt == "openvino" and missing == [pip for _, pip in INT8_NEEDS]:
        what += " with int8 quantization" if flag.endswith("=") else " --int8"
    return (f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"{EDGE_EXTRA} (nothing was exported)")
