"""ONNX -> MNN through the `MNN` package's converter, without the side effects of its Python tools, on both hosts.

`import MNN.tools.mnnconvert` imports `MNN.tools.utils.log`, which, on import, runs `pip install -U
aliyun-log-python-sdk` through `os.system` when that package is missing, then asks an Alibaba Cloud URL for
credentials to upload usage logs (with /etc/machine-id). `no_mnn_logger()` makes that module unimportable while
the tools are imported, so `mnnconvert` binds no logger (it catches the ImportError): nothing is installed and
nothing is sent. `onnx_to_mnn` calls the converter (`_tools.mnnconvert`, what `mnnconvert.convert` calls)
directly.

    onnx_to_mnn("best.onnx", "best.mnn", {"stride": 32, "names": {0: "person"}})   # -> Path("best.mnn")
"""
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

__all__ = ["MNN_LOGGER", "no_mnn_logger", "onnx_to_mnn"]

MNN_LOGGER = "MNN.tools.utils.log"


@contextlib.contextmanager
def no_mnn_logger():
    """While active, `import MNN.tools.utils.log` raises ImportError (unless it is imported already), so MNN's
    tools imported meanwhile bind no logger: no run-time pip install, no upload."""
    if sys.modules.get(MNN_LOGGER) is not None:
        yield
        return
    had = MNN_LOGGER in sys.modules
    sys.modules[MNN_LOGGER] = None
    try:
        yield
    finally:
        if not had:
            sys.modules.pop(MNN_LOGGER, None)


def onnx_to_mnn(onnx_file, mnn_file, metadata: Optional[dict] = None, fp16: bool = False) -> Path:
    """Convert `onnx_file` to an MNN model at `mnn_file`; `metadata` is stored as JSON in its bizCode (what
    ultralytics' `AutoBackend` reads back); `fp16` stores fp16 weights.

    Written to a temp name beside `mnn_file` and renamed when complete, so `mnn_file` is either the previous
    export or the new one. Raises RuntimeError when the converter wrote nothing. Returns: `mnn_file` as a Path.
    """
    with no_mnn_logger():
        import MNN  # noqa: F401  (loads _mnncengine, which _tools needs)
        import _tools
    mnn_file = Path(mnn_file)
    tmp = mnn_file.with_name(f".{mnn_file.name}.{os.getpid()}.tmp")
    scratch = tmp.parent / ".__convert_external_data.bin"  # the converter's own scratch file for large weights
    had_scratch = scratch.exists()
    args = ["", "-f", "ONNX", "--modelFile", str(onnx_file), "--MNNModel", str(tmp),
            "--bizCode", json.dumps(metadata or {})]
    if fp16:
        args.append("--fp16")
    try:
        _tools.mnnconvert(args)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"MNN's converter wrote no model from {onnx_file}")
        os.replace(tmp, mnn_file)
    finally:
        tmp.unlink(missing_ok=True)
        if not had_scratch:
            scratch.unlink(missing_ok=True)
    return mnn_file
