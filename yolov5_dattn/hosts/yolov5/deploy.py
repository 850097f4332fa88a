"""Export formats: which ones can run here (checked before anything runs), OpenVINO through today's API, and
YOLOv5's export defaults fixed for DAttention.

- `check_formats(opt, include, has_dattention)` refuses, in one line, a `--include` format whose tools are missing
  (`tensorflow`, `coremltools`, TensorRT on a CUDA device, ...), or that would install software itself
  (`edgetpu`: YOLOv5 adds Google's apt repository as root), before YOLOv5 starts and leaves anything behind.
- `export_openvino` replaces YOLOv5's (which needs the retired `openvino-dev` / `mo`): the ONNX file YOLOv5
  wrote first goes through `openvino.convert_model` + `openvino.save_model` into `<weights>_openvino_model/`
  (written to a temp folder, renamed when complete), with OpenVINO's telemetry off (`import_openvino`: no
  network).
- `patch_export(export, replace)` installs that, makes `export.run()` default to opset 17 (YOLOv5's `run` says 12,
  only its CLI 17) and makes the TensorRT export's ONNX step use the run's opset instead of a hard-coded 12
  (grid_sample, which DAttention needs, is opset 16).
- `openvino_runtime_module()` is the `openvino.runtime` that YOLOv5's `DetectMultiBackend` imports, built from
  the current `openvino` package (where that module no longer exists).
"""
import contextlib
import contextvars
import functools
import importlib.util
import inspect
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

from yolov5_dattn.core.onnx_opset import MIN_ONNX_OPSET
from yolov5_dattn.errors import UserError

DEFAULT_OPSET = 17
TENSORFLOW_FORMATS = ("saved_model", "pb", "tflite", "edgetpu", "tfjs")

# format -> (module that must be importable, pip package that provides it)
_NEEDS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "torchscript": (),
    "onnx": (("onnx", "onnx"),),
    "openvino": (("onnx", "onnx"), ("openvino", "openvino")),
    "engine": (("onnx", "onnx"), ("tensorrt", "tensorrt")),
    "coreml": (("coremltools", "coremltools"),),
    "saved_model": (("tensorflow", "tensorflow"),),
    "pb": (("tensorflow", "tensorflow"),),
    "tflite": (("tensorflow", "tensorflow"),),
    "edgetpu": (("tensorflow", "tensorflow"),),
    "tfjs": (("tensorflow", "tensorflow"), ("tensorflowjs", "tensorflowjs")),
    "paddle": (("paddle", "paddlepaddle"), ("x2paddle", "x2paddle")),
}

# the opset of the export.run() in progress, for its TensorRT step
_run_opset: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_run_opset", default=DEFAULT_OPSET)
# --half for OpenVINO on a CPU export (YOLOv5's run() only allows --half on a GPU; OpenVINO stores fp16 weights
# from the fp32 ONNX model without one)
_openvino_fp16: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_openvino_fp16", default=False)


def _cuda_requested(device) -> bool:
    """Whether YOLOv5's `--device` value names a CUDA device ('0', '0,1', 'cuda:0'), not 'cpu' / 'mps'."""
    device = str(device or "").strip().lower()
    return device not in ("", "cpu", "mps")


def refusal(fmt: str, opt, has_dattention: bool) -> Optional[str]:
    """Why `--include fmt` cannot run here (one line for `UserError`), or None when it can.

    Args:
        fmt: a YOLOv5 export format argument ('onnx', 'engine', ...); opt: the export options (device, half);
        has_dattention: the model has DAttention layers.
    """
    import torch
    from yolov5_dattn.edge_tools import EDGE_NEEDS, edge_refusal, installed
    if fmt in EDGE_NEEDS:
        return edge_refusal(fmt, "--include")
    missing = [pip for module, pip in _NEEDS.get(fmt, ()) if not installed(module)]
    if fmt == "engine" and not (torch.cuda.is_available() and _cuda_requested(getattr(opt, "device", "cpu"))):
        return ("--include engine: TensorRT builds its engine on a CUDA GPU: run on a machine with one, with "
                "--device 0 and the tensorrt package installed (or export --include onnx here)")
    if missing:
        return (f"--include {fmt} needs {' and '.join(missing)}, which is not installed: "
                f"pip install {' '.join(missing)} (nothing was exported)")
    if fmt == "edgetpu" and not shutil.which("edgetpu_compiler"):
        return ("--include edgetpu needs the Edge TPU compiler (edgetpu_compiler) on PATH; this plugin never "
                "installs system packages (YOLOv5 would add Google's apt repository as root): install it from "
                "coral.ai yourself, or export --include tflite")
    if fmt in TENSORFLOW_FORMATS and has_dattention:
        return (f"--include {fmt}: YOLOv5's TensorFlow exporter rebuilds the model from TensorFlow versions of its "
                f"own layers and has none for DAttention: export --include onnx (or openvino) instead")
    return None


def check_formats(opt, include: Sequence[str], has_dattention: bool, models: Sequence = ()) -> None:
    """Raise `UserError` for the first requested format that cannot run here (see `refusal`), or that cannot run
    the sparse queries of one of `models` (`sparse_export.sparse_refusal`: NCNN, TensorRT's limits)."""
    from yolov5_dattn.sparse_export import sparse_refusal
    for fmt in include:
        reason = next((r for r in (sparse_refusal(fmt, "--include", m, getattr(opt, "imgsz", None),
                                                  bool(getattr(opt, "dynamic", False))) for m in models) if r),
                      None) or refusal(fmt, opt, has_dattention)
        if reason:
            raise UserError(reason)


def format_suffix(fmt: str) -> str:
    """The file suffix (or folder ending) YOLOv5 gives an export format: 'onnx' -> '.onnx', 'openvino' ->
    '_openvino_model'."""
    from yolov5.export import export_formats
    table = export_formats()
    return table.loc[table["Argument"] == fmt, "Suffix"].iloc[0]


def output_path(weights, fmt: str) -> Path:
    """Where YOLOv5 writes format `fmt` for `weights`: 'best.pt', 'onnx' -> best.onnx; 'openvino' ->
    best_openvino_model (a folder)."""
    suffix = format_suffix(fmt)
    weights = Path(weights)
    return weights.with_suffix(suffix) if suffix.startswith(".") else weights.with_name(weights.stem + suffix)


# ---- OpenVINO ---------------------------------------------------------------------------------------
def import_openvino() -> types.ModuleType:
    """`import openvino` with its telemetry off.

    `import openvino` imports its converter, which sends a usage event to Google Analytics (from a child
    process) unless the user opted out: `openvino_telemetry` is opt-out. While it is imported here,
    `openvino_telemetry` cannot be, so the converter binds its own no-op stub, for the whole process.
    """
    if "openvino" not in sys.modules:
        saved = sys.modules.get("openvino_telemetry")
        sys.modules["openvino_telemetry"] = None  # `import openvino_telemetry` raises ImportError
        try:
            importlib.import_module("openvino")
        finally:
            if saved is None:
                sys.modules.pop("openvino_telemetry", None)
            else:
                sys.modules["openvino_telemetry"] = saved
    return sys.modules["openvino"]


@contextlib.contextmanager
def _no_openvino_telemetry():
    """While active, OpenVINO's converter uses its no-op telemetry stub, also when `openvino` was imported by
    someone else before `import_openvino` could switch it off."""
    from openvino.tools.ovc import telemetry_stub
    saved = []
    for name, module in list(sys.modules.items()):
        if name.startswith("openvino.tools.ovc") and module is not None and hasattr(module, "tm"):
            saved.append((module, module.tm))
            module.tm = telemetry_stub
    try:
        yield
    finally:
        for module, tm in saved:
            module.tm = tm


def convert_to_openvino(onnx_file, folder, name: str, metadata: dict, half: bool = False) -> Path:
    """Convert an ONNX file to an OpenVINO IR folder: `<folder>/<name>.xml`, `.bin` and `<name>.yaml` (metadata).

    Written to a temp folder beside `folder` and renamed when complete, so `folder` is either the previous
    export or the new one. `half` stores fp16 weights (inputs and outputs stay fp32).
    Returns: `folder`.
    """
    ov = import_openvino()
    import openvino.tools.ovc.convert_impl  # noqa: F401  (loaded, so its telemetry can be switched off)
    from yolov5.utils.general import yaml_save

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _no_openvino_telemetry():
            model = ov.convert_model(str(onnx_file))
        ov.save_model(model, str(tmp / f"{name}.xml"), compress_to_fp16=half)
        yaml_save(tmp / f"{name}.yaml", metadata)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_openvino(file, metadata, half, prefix="OpenVINO:"):
    """YOLOv5's `export_openvino(file, metadata, half)` through the current `openvino` API: converts the
    `file.onnx` that `export.run` wrote first into `<file stem>_openvino_model/`. Returns (folder + '/', None)."""
    from yolov5.utils.general import LOGGER
    ov = import_openvino()
    file = Path(file)
    half = bool(half) or _openvino_fp16.get()
    LOGGER.info(f"\n{prefix} starting export with openvino {ov.__version__}...")
    folder = convert_to_openvino(file.with_suffix(".onnx"), output_path(file, "openvino"), file.stem, metadata,
                                 half=half)
    return f"{folder}{os.sep}", None


# ---- yolov5.export ----------------------------------------------------------------------------------
def patch_export(export: types.ModuleType, replace: Callable[[types.ModuleType, str, Callable, str], None]) -> None:
    """Install this module's fixes into YOLOv5's `export` module; `replace(module, name, new, why)` swaps a
    function (compat.replace_function, i.e. `patching.patch`). Idempotent."""
    from yolov5_dattn import patching
    from yolov5.utils.general import colorstr

    def openvino(file, metadata, half, prefix=colorstr("OpenVINO:")):  # try_export reads `prefix`'s default
        """YOLOv5's OpenVINO export, through `yolov5_dattn.hosts.yolov5.deploy.export_openvino`."""
        return export_openvino(file, metadata, half, prefix=prefix)

    replace(export, "export_openvino", export.try_export(openvino), "OpenVINO export through the current openvino API")

    run = export.run
    signature = inspect.signature(run)

    def export_run(*args, **kwargs):
        """YOLOv5's export.run with opset 17 by default (its own default, 12, has no grid_sample)."""
        bound = signature.bind_partial(*args, **kwargs)
        opset = bound.arguments.get("opset", DEFAULT_OPSET)
        if "opset" not in bound.arguments:
            kwargs["opset"] = opset
        token = _run_opset.set(max(int(opset), MIN_ONNX_OPSET))
        try:
            return run(*args, **kwargs)
        finally:
            _run_opset.reset(token)

    replace(export, "run", functools.wraps(run)(export_run), "export.run() defaults to opset 17 (12 has no grid_sample)")

    engine = export.export_engine

    def export_engine(*args, **kwargs):
        """YOLOv5's TensorRT export, whose ONNX step uses the run's opset (>= 16) instead of a hard-coded 12."""
        onnx_step = export.export_onnx

        def export_onnx(model, im, file, opset, *rest, **kw):
            return onnx_step(model, im, file, max(opset, _run_opset.get()), *rest, **kw)

        with patching.temporarily(export, "export_onnx", export_onnx, why="TensorRT's ONNX step at the run's opset"):
            return engine(*args, **kwargs)

    replace(export, "export_engine", functools.wraps(engine)(export_engine),
            "TensorRT's ONNX step uses the run's opset (hard-coded 12 has no grid_sample)")


@contextlib.contextmanager
def openvino_half_on_cpu(opt, include: Sequence[str]):
    """`--half` for an OpenVINO-only export on CPU: YOLOv5's run() refuses --half without a GPU, but OpenVINO
    stores fp16 weights from an fp32 model. While active, `opt.half` is off and OpenVINO writes fp16."""
    if not (getattr(opt, "half", False) and set(include) <= {"openvino"}
            and not _cuda_requested(getattr(opt, "device", "cpu"))):
        yield
        return
    token = _openvino_fp16.set(True)
    opt.half = False
    try:
        yield
    finally:
        opt.half = True
        _openvino_fp16.reset(token)


# ---- DetectMultiBackend -----------------------------------------------------------------------------
def openvino_runtime_module() -> types.ModuleType:
    """An `openvino.runtime` module (`Core`, `Layout`, `get_batch`) over the current `openvino` package, for
    YOLOv5's `DetectMultiBackend`. Its `Core` compiles for fp32 inference by default: on CPUs with bf16 or fp16
    support OpenVINO would otherwise compute in those (outputs ~1e-2 off), while an fp32 model is what it was
    given. (`--half` exports still store fp16 weights.)"""
    ov = import_openvino()

    class Core(ov.Core):
        """`openvino.Core` whose `compile_model` asks for fp32 inference unless told otherwise."""

        def compile_model(self, model, device_name="CPU", config=None, **kwargs):
            config = {"INFERENCE_PRECISION_HINT": "f32", **(config or {})}
            return super().compile_model(model, device_name, config, **kwargs)

    module = types.ModuleType("openvino.runtime")
    module.__doc__ = "openvino.runtime for YOLOv5's DetectMultiBackend, provided by yolov5_dattn.hosts.yolov5.deploy"
    module.Core, module.Layout, module.get_batch = Core, ov.Layout, ov.get_batch
    return module
