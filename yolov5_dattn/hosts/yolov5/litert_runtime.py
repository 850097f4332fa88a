"""YOLOv5's `DetectMultiBackend` runs `.tflite` files with `ai-edge-litert` (the `edge` extra) during our commands.

`DetectMultiBackend` imports `tflite_runtime.interpreter` (or TensorFlow) for a `.tflite` file. `tflite_runtime` was
renamed `ai-edge-litert` (same `Interpreter` and `load_delegate`) and its last release does not load with NumPy 2;
TensorFlow is a 1 GB install. While a `yolov5-dattn detect` or `val` run loads `.tflite` weights and neither is
importable, `tflite_runtime.interpreter` names `ai_edge_litert.interpreter`; the names are removed when the run
ends, so nothing outside the run sees them.
"""
import contextlib
import sys
import types

from yolov5_dattn.edge_tools import installed

__all__ = ["litert_as_tflite_runtime"]


@contextlib.contextmanager
def litert_as_tflite_runtime(weights):
    """While active, and only when `weights` (a path or a list of them) names a `.tflite` file and neither
    `tflite_runtime` nor `tensorflow` is installed but `ai_edge_litert` is: `import tflite_runtime.interpreter`
    gives `ai_edge_litert.interpreter`."""
    weights = weights if isinstance(weights, (list, tuple)) else [weights]
    wanted = (any(str(w).lower().endswith(".tflite") for w in weights) and not installed("tflite_runtime")
              and not installed("tensorflow") and installed("ai_edge_litert"))
    if not wanted:
        yield
        return
    import ai_edge_litert.interpreter as interpreter
    package = types.ModuleType("tflite_runtime")
    package.__path__ = []  # a package, so that `tflite_runtime.interpreter` resolves
    package.interpreter = interpreter
    sys.modules["tflite_runtime"], sys.modules["tflite_runtime.interpreter"] = package, interpreter
    try:
        yield
    finally:
        for name in ("tflite_runtime.interpreter", "tflite_runtime"):
            sys.modules.pop(name, None)
