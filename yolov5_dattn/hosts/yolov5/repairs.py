"""Repairs: what YOLOv5 7.0.14 needs to run at all on today's torch / numpy / Pillow / setuptools / OpenCV / openvino.

Each repair is one function that fixes one break and is safe to run twice; the step table (`changes.STEPS`, kind
"repair") says when each runs and which YOLOv5 line it concerns. Library-wide changes (numpy, Pillow) only add what is
missing; `torch` is changed only as seen from YOLOv5's own modules (`patching.override`). Every change goes through
`yolov5_dattn.patching`, except the process settings the table marks `process` (a warnings filter, a stand-in
`pkg_resources` in `sys.modules`).
"""
import contextlib
import functools
import importlib.util
import os
import sys
import types
import warnings

from yolov5_dattn import patching

from .host import PIP, Host, replace_function

__all__ = ["shim_quiet_pkg_resources_warning", "shim_pkg_resources", "shim_numpy_trapz", "shim_pil_getsize",
           "shim_ipython_optional", "shim_segment_detect_not_pickled", "shim_legacy_onnx_exporter",
           "shim_openvino_runtime", "shim_quiet_autocast_warning", "shim_video_end_read", "shim_fresh_callbacks",
           "shim_run_ignores_host_argv", "shim_noval_map50s", "shim_untimed_validation_nms",
           "shim_flat_model_imports"]


def shim_quiet_pkg_resources_warning() -> None:
    """setuptools <81 warns "pkg_resources is deprecated" when yolov5 imports it: noise only, not the user's to fix."""
    if "pkg_resources" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            pass  # setuptools >=81: shim_pkg_resources provides it


def shim_pkg_resources() -> None:
    """setuptools ≥81 removed `pkg_resources`; yolov5 imports it only for `parse_version`. Once the stand-in is in
    `sys.modules`, other code that finds it there asks for `fixup_namespace_packages` too (pytest's
    `monkeypatch.syspath_prepend` does): a no-op, as there are no pkg_resources-style namespace packages left."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse as parse_version
        module = types.ModuleType("pkg_resources", "yolov5_dattn's stand-in: setuptools >=81 has no pkg_resources")
        module.parse_version = parse_version
        module.fixup_namespace_packages = lambda path_item, parent=None: None
        sys.modules["pkg_resources"] = module


def shim_numpy_trapz() -> None:
    """numpy 2.x removed `np.trapz` (yolov5 utils/metrics.py:118 → training dies at the first validation)."""
    import numpy as np
    if not hasattr(np, "trapz"):
        patching.patch(np, "trapz", np.trapezoid, why="numpy 2 removed np.trapz, which YOLOv5's metrics call")


def shim_pil_getsize() -> None:
    """Pillow ≥10 removed `FreeTypeFont.getsize` (utils/plots.py:91,155 → plot threads crash)."""
    from PIL import ImageFont

    def getsize(self, text, *args, **kwargs):
        # the old getsize measured from the drawing origin, i.e. the bbox's right/bottom edge
        _, _, right, bottom = self.getbbox(text, *args, **kwargs)
        return right, bottom

    for cls in (ImageFont.FreeTypeFont, getattr(ImageFont, "TransposedFont", None)):
        if cls is not None and not hasattr(cls, "getsize"):
            patching.patch(cls, "getsize", getsize, why="Pillow 10 removed getsize, which YOLOv5's plots call")


@contextlib.contextmanager
def shim_ipython_optional():
    """A v7.0 clone imports IPython at start-up (models/common.py, utils/general.py) only to display images in
    notebooks. Without IPython installed, while the block imports the clone's modules they get a stand-in
    that reports "no notebook" (`get_ipython()` is None) and displays nothing; it is out of `sys.modules`
    again afterwards, so other libraries (matplotlib asks for IPython's version) never see it. A real
    IPython, when installed, is always used."""
    import importlib.machinery
    import importlib.util
    if "IPython" in sys.modules or importlib.util.find_spec("IPython") is not None:
        yield
        return
    ipython = types.ModuleType("IPython", "yolov5_dattn's stand-in: IPython is not installed")
    display = types.ModuleType("IPython.display", "yolov5_dattn's stand-in: IPython is not installed")
    display.display = lambda *objects, **kwargs: None
    display.clear_output = lambda wait=False: None
    ipython.get_ipython = lambda: None
    ipython.display = display
    ipython.__spec__ = importlib.machinery.ModuleSpec("IPython", None)
    display.__spec__ = importlib.machinery.ModuleSpec("IPython.display", None)
    sys.modules.update({"IPython": ipython, "IPython.display": display})
    try:
        yield
    finally:
        for name in ("IPython", "IPython.display"):
            if sys.modules.get(name) in (ipython, display):
                del sys.modules[name]


def shim_segment_detect_not_pickled(host: Host = PIP) -> None:
    """`Segment.__init__` stores `self.detect = Detect.forward`, which pickles as `builtins.getattr`
    (models/yolo.py:101) and would have to be allowlisted; keep it on the class instead."""
    yolo = host.module("models.yolo")
    why = "Segment keeps Detect.forward on the class, so checkpoints pickle without builtins.getattr"
    init = yolo.Segment.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.__dict__.pop("detect", None)

    if patching.patch(yolo.Segment, "__init__", __init__, why=why):
        # `self.detect(self, x)` keeps working
        patching.patch(yolo.Segment, "detect", staticmethod(yolo.Detect.forward), why=why)


def shim_legacy_onnx_exporter(host: Host = PIP) -> None:
    """torch ≥2.9 `torch.onnx.export` defaults to the dynamo exporter (needs onnxscript; yolov5's
    `try_export` swallows the failure); use the TorchScript-based exporter YOLOv5 was written for.
    (A clone of master exports through ultralytics, which asks for it itself.)"""
    import torch
    export = host.module("export") if host is PIP else host.loaded("export")
    if export is None:
        return  # a clone's export.py is not running

    real_export = torch.onnx.export

    def onnx_export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return real_export(*args, **kwargs)

    patching.override(export, "torch", "onnx.export", onnx_export,
                      why="ONNX export with the TorchScript-based exporter YOLOv5 was written for")


def shim_openvino_runtime(host: Host = PIP) -> None:
    """DetectMultiBackend loads `*_openvino_model` with `from openvino.runtime import Core, Layout, get_batch`,
    a module current `openvino` no longer has; provide it (`deploy.openvino_runtime_module`) when such a model
    is loaded."""
    import importlib.util

    from . import deploy
    backend = host.module("models.common").DetectMultiBackend
    init = backend.__init__

    @functools.wraps(init)
    def __init__(self, weights="yolov5s.pt", *args, **kwargs):
        w = str(weights[0] if isinstance(weights, list) else weights)
        if ("_openvino_model" in w and "openvino.runtime" not in sys.modules
                and importlib.util.find_spec("openvino") is not None):
            deploy.import_openvino()  # telemetry off
            try:
                importlib.import_module("openvino.runtime")
            except ImportError:
                sys.modules["openvino.runtime"] = deploy.openvino_runtime_module()
        init(self, weights, *args, **kwargs)

    patching.patch(backend, "__init__", __init__, why="OpenVINO models load through the current openvino API")


def shim_quiet_autocast_warning(host: Host = PIP) -> None:
    """train.py's `torch.cuda.amp.autocast(amp)` warns (FutureWarning) on every batch because SPPF's
    `catch_warnings` resets the once-only registry; silence exactly that warning (and the one of its
    `torch.cuda.amp.GradScaler`) when YOLOv5's code triggers it."""
    module = r"yolov5\." if host is PIP else r"(__main__|train|segment\.train)$"  # a clone's trainer
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.(autocast|GradScaler)", category=FutureWarning,
                            module=module)


class _GrabCheckedCapture:
    """A `cv2.VideoCapture` whose `retrieve()` after a failed `grab()` returns (False, None) without asking
    OpenCV, which would log "[ERROR] ... retrieveFrame Picture does not contain data"; all else is delegated."""

    def __init__(self, cap):
        self._cap, self._grabbed = cap, True

    def grab(self):
        self._grabbed = self._cap.grab()
        return self._grabbed

    def retrieve(self, *args, **kwargs):
        if not self._grabbed:
            return False, None
        return self._cap.retrieve(*args, **kwargs)

    def read(self, *args, **kwargs):
        self._grabbed = True
        return self._cap.read(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["_cap"], name)


def shim_video_end_read(host: Host = PIP) -> None:
    """LoadImages (detect, segment predict) grabs past a video's last frame and then retrieves anyway, so
    OpenCV logs an [ERROR] line at the end of every video; skip that retrieve, which can only fail."""
    LoadImages = host.module("utils.dataloaders").LoadImages

    original = LoadImages._new_video

    @functools.wraps(original)
    def _new_video(self, path):
        original(self, path)
        self.cap = _GrabCheckedCapture(self.cap)

    patching.patch(LoadImages, "_new_video", _new_video, why="no OpenCV [ERROR] line at the end of every video")


def shim_fresh_callbacks() -> None:
    """`train.main(opt, callbacks=Callbacks())` shares one default instance across calls: a second run in
    one process writes into the first run's loggers; give every call its own."""
    from yolov5.utils.callbacks import Callbacks
    for name in ("yolov5.train", "yolov5.segment.train"):
        trainer = sys.modules[name]

        def make_main(original):
            def main(opt, callbacks=None):
                return original(opt, Callbacks() if callbacks is None else callbacks)
            return functools.wraps(original)(main)

        replace_function(trainer, "main", make_main(trainer.main), why="every train.main call gets its own Callbacks")


def shim_run_ignores_host_argv() -> None:
    """`train.run(**kwargs)` parses the host program's `sys.argv` (e.g. pytest's flags); parse only kwargs."""
    from yolov5.utils.callbacks import Callbacks
    for name in ("yolov5.train", "yolov5.segment.train"):
        trainer = sys.modules[name]

        def make_run(module):
            def run(**kwargs):
                argv, sys.argv = sys.argv, sys.argv[:1]
                try:
                    opt = module.parse_opt(True)
                finally:
                    sys.argv = argv
                callbacks = kwargs.pop("callbacks", None) or Callbacks()
                for k, v in kwargs.items():
                    setattr(opt, k, v)
                module.main(opt, callbacks)
                return opt
            return run

        replace_function(trainer, "run", make_run(trainer), why="train.run(**kwargs) parses kwargs, not the host's sys.argv")


def shim_noval_map50s() -> None:
    """train.py with `--noval` crashes after the first epoch (UnboundLocalError: `map50s` is only set
    by validation, but logged every epoch); initialise it next to `maps`, on the same source line so
    tracebacks keep YOLOv5's line numbers."""
    from yolov5 import train as trainer

    why = "train.py --noval: map50s is set before the first epoch"
    if patching.is_patched(trainer, "train", why):
        return
    anchor = "maps = np.zeros(nc)  # mAP per class"
    fixed = patching.replace_line(trainer.train, anchor, "maps = np.zeros(nc); map50s = np.zeros(nc)  # mAP per class")
    if fixed is None or "map50s" not in fixed.__code__.co_varnames:
        return  # a YOLOv5 without this bug (or without this code): nothing to fix
    replace_function(trainer, "train", fixed, why=why)


def shim_untimed_validation_nms() -> None:
    """val.py (also run by train.py after every epoch) and segment/val.py call `non_max_suppression`, which
    stops after `0.5 + 0.05 * batch` seconds and drops the rest of the batch's boxes: on a busy CPU the same
    weights score a different mAP. Validation gets a copy without the time limit; detect/predict keep it."""
    from yolov5.utils import general

    why = "validation NMS has no time limit: mAP must not depend on how busy the machine is"
    untimed = None
    for name in ("yolov5.val", "yolov5.segment.val"):
        module = sys.modules[name]
        if patching.is_patched(module, "non_max_suppression", why):
            continue
        if untimed is None:
            untimed = patching.replace_line(general.non_max_suppression, "time_limit = 0.5 + 0.05 * bs",
                                            "time_limit = float('inf')")
            if untimed is None:
                return  # a YOLOv5 without this limit: nothing to do
        patching.patch(module, "non_max_suppression", untimed, why=why)


def _flat_models_is_pip_package() -> bool:
    """True unless a top-level `models` other than the pip package's folder is importable.

    Inside a git clone of YOLOv5 (or any project with its own `models` package, found first on
    sys.path), `models` is that project's: aliasing it to the pip package would hand the clone's
    `from models.yolo import Model` the wrong classes.
    """
    import yolov5.models
    try:
        spec = importlib.util.find_spec("models")
    except (ImportError, ValueError):  # a half-initialised `models` in sys.modules without a spec
        return False
    if spec is None or not spec.submodule_search_locations:
        return spec is None
    ours = {os.path.realpath(p) for p in yolov5.models.__path__}
    return {os.path.realpath(p) for p in spec.submodule_search_locations} <= ours


def shim_flat_model_imports() -> None:
    """yolov5 puts its folder on sys.path and `attempt_load` does `from models.yolo import ...`, which
    would load a second copy of yolo.py whose classes never match ours; point `models.*` at ours.
    Skipped when `models` is someone else's (a git clone of YOLOv5 registers its own via the patch)."""
    if not _flat_models_is_pip_package():
        return
    for name, module in list(sys.modules.items()):
        if name == "yolov5.models" or name.startswith("yolov5.models."):
            sys.modules.setdefault(name[len("yolov5."):], module)
