"""Compatibility layer: makes the packaged YOLOv5 (7.0.14) run on today's libraries, offline.

Each shim is one small named function that fixes one measured break (see issue 3) and is safe to run
twice. `apply()` runs the shims the model code needs (done by `import yolov5_dattn`);
`apply_entrypoints()` also imports and patches YOLOv5's train/val/detect/export/segment modules (done
by the scripts). Shims that must act before `yolov5` is first imported run in `apply_before_import()`.

Patching rule: a YOLOv5 function is replaced in the module that defines it *and* in every loaded
`yolov5.*` module that imported it by name, so modules imported later pick up the replacement too.
Library-wide changes (numpy, Pillow) only add what is missing; `torch` is changed only as seen from
YOLOv5's own modules (a view of `torch` with a few names overridden).
"""
import functools
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

_applied = False
_applied_entrypoints = False

# YOLOv5 modules whose `torch.load` calls must go through our safe loader
_TORCH_LOAD_MODULES = ("yolov5.models.experimental", "yolov5.utils.general", "yolov5.train", "yolov5.segment.train")
_ENTRY_MODULES = ("yolov5.train", "yolov5.val", "yolov5.detect", "yolov5.export",
                  "yolov5.segment.train", "yolov5.segment.val", "yolov5.segment.predict")


# ---- helpers ------------------------------------------------------------------------------------
def replace_function(module: types.ModuleType, name: str, new: Callable) -> None:
    """Replace `module.name` by `new`, also where other loaded yolov5 modules imported it by name."""
    old = getattr(module, name)
    if getattr(old, "_yolov5_dattn_shim", False):
        return
    new._yolov5_dattn_shim = True
    new.__wrapped__ = old
    for mod_name, mod in list(sys.modules.items()):
        if mod is not None and (mod_name == "yolov5" or mod_name.startswith("yolov5.")):
            if getattr(mod, name, None) is old:
                setattr(mod, name, new)
    setattr(module, name, new)


class ModuleView(types.ModuleType):
    """A module as seen by one YOLOv5 module: every attribute is the real module's except `overrides`."""

    def __init__(self, real: types.ModuleType, overrides: Dict[str, Any]):
        super().__init__(real.__name__)
        self._real, self._overrides = real, overrides

    def __getattr__(self, name):
        overrides = self.__dict__.get("_overrides", {})
        if name in overrides:
            return overrides[name]
        return getattr(self.__dict__["_real"], name)


def _set_torch_override(module: types.ModuleType, name: str, value: Any) -> None:
    """Let `module` see `torch.<name>` as `value` (name may be dotted one level, e.g. 'onnx.export')."""
    import torch
    view = module.torch if isinstance(module.torch, ModuleView) else ModuleView(torch, {})
    if "." in name:
        sub, attr = name.split(".", 1)
        inner = view._overrides.get(sub)
        inner = inner if isinstance(inner, ModuleView) else ModuleView(getattr(torch, sub), {})
        inner._overrides[attr] = value
        view._overrides[sub] = inner
    else:
        view._overrides[name] = value
    module.torch = view


# ---- before `import yolov5` ---------------------------------------------------------------------
def shim_pkg_resources() -> None:
    """setuptools ≥81 removed `pkg_resources`; yolov5 imports it only for `parse_version`."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse as parse_version
        module = types.ModuleType("pkg_resources")
        module.parse_version = parse_version
        sys.modules["pkg_resources"] = module


def shim_offline_ultralytics() -> None:
    """ultralytics (imported by yolov5) probes DNS at import unless told it is offline."""
    os.environ.setdefault("YOLO_OFFLINE", "1")


def shim_numpy_trapz() -> None:
    """numpy 2.x removed `np.trapz` (yolov5 utils/metrics.py:118 → training dies at the first validation)."""
    import numpy as np
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid


def shim_pil_getsize() -> None:
    """Pillow ≥10 removed `FreeTypeFont.getsize` (utils/plots.py:91,155 → plot threads crash)."""
    from PIL import ImageFont

    def getsize(self, text, *args, **kwargs):
        # the old getsize measured from the drawing origin, i.e. the bbox's right/bottom edge
        _, _, right, bottom = self.getbbox(text, *args, **kwargs)
        return right, bottom

    for cls in (ImageFont.FreeTypeFont, getattr(ImageFont, "TransposedFont", None)):
        if cls is not None and not hasattr(cls, "getsize"):
            cls.getsize = getsize


def apply_before_import() -> None:
    """Shims needed for `import yolov5` itself to work."""
    shim_pkg_resources()
    shim_offline_ultralytics()
    shim_numpy_trapz()
    shim_pil_getsize()


# ---- offline ------------------------------------------------------------------------------------
def offline_font() -> Optional[Path]:
    """A TrueType font that is on disk already: matplotlib's DejaVuSans (covers Latin, Greek, Cyrillic)."""
    try:
        import matplotlib
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return path if path.is_file() else None
    except ImportError:
        return None


def shim_fonts_offline() -> None:
    """`check_font` downloads Arial.ttf / Arial.Unicode.ttf; never download, draw with a local font instead."""
    from yolov5.utils import general, plots
    from PIL import ImageFont

    def check_font(font=general.FONT, progress=False):
        """No download: plots fall back to `offline_font()` when the font is not on disk."""

    def check_pil_font(font=general.FONT, size=10):
        """The requested font if it is on disk (as given or in YOLOv5's config dir), else DejaVuSans."""
        for candidate in (Path(font), general.CONFIG_DIR / Path(font).name, offline_font()):
            if candidate is not None and candidate.is_file():
                return ImageFont.truetype(str(candidate), size)
        return ImageFont.load_default(size)

    replace_function(general, "check_font", check_font)
    replace_function(plots, "check_pil_font", check_pil_font)


def shim_no_pip_installs() -> None:
    """`check_requirements` may run `pip install` at run time; only report what is missing, never install."""
    from yolov5.utils import general

    def check_requirements(requirements=None, exclude=(), install=True, cmds=''):
        """Never installs (offline, reproducible); dependencies are declared in setup.cfg."""
        return True

    replace_function(general, "check_requirements", check_requirements)


def _looks_like_hub_id(name: str) -> bool:
    """'owner/model' with no file suffix and nothing on disk by that name."""
    return (name.count("/") == 1 and not Path(name).suffix and not Path(name).exists()
            and not name.startswith((".", "/", "http:", "https:")))


def shim_no_hub_lookups() -> None:
    """`attempt_download_from_hub` asks huggingface.co about every weights path, even an existing
    local `best.pt`; only ask for names that can be a hub model id ('owner/model')."""
    from yolov5.utils import downloads

    original = downloads.attempt_download_from_hub

    def attempt_download_from_hub(repo_id, hf_token=None, revision=None):
        """None (use the local file) unless `repo_id` can only be a hub id."""
        if not isinstance(repo_id, str) or not _looks_like_hub_id(repo_id):
            return None
        return original(repo_id, hf_token=hf_token, revision=revision)

    replace_function(downloads, "attempt_download_from_hub", attempt_download_from_hub)


def shim_missing_weights_fail_fast() -> None:
    """A missing weights file goes through GitHub API + `git tag` + `curl --retry 9` (over 5 minutes);
    say so in one line at once instead."""
    from yolov5.utils import downloads

    from .errors import UserError

    def attempt_download(file, repo="ultralytics/yolov5", release="v7.0", hf_token=None):
        """The path if the file exists; UserError otherwise (downloads are off)."""
        hub = downloads.attempt_download_from_hub(file, hf_token=hf_token)
        path = Path(str(hub or file).strip().replace("'", ""))
        if path.exists():
            return str(path)
        raise UserError(f"weights file {file} not found: pass the path of an existing .pt/.onnx/.torchscript "
                        f"file (this plugin never downloads weights)")

    replace_function(downloads, "attempt_download", attempt_download)


def shim_no_dataset_downloads() -> None:
    """`check_dataset` downloads (or runs the YAML's `download:` script for) a dataset that is not on
    disk; say in one line that it is missing instead."""
    from yolov5.utils import general

    from .errors import UserError
    original = general.check_dataset

    def check_dataset(data, autodownload=True):
        """YOLOv5's check without the download step. Returns the data dict."""
        try:
            return original(data, autodownload=False)
        except Exception as e:
            if "Dataset not found" not in str(e):
                raise
            raise UserError(f"--data {data}: the dataset's val images are not on disk (downloads are off): "
                            f"fix the paths in the YAML or put the data there first") from None

    replace_function(general, "check_dataset", check_dataset)


# ---- torch ≥2.6 -----------------------------------------------------------------------------------
def shim_safe_torch_load() -> None:
    """torch ≥2.6 loads with `weights_only=True` by default and refuses every YOLOv5 checkpoint; make
    YOLOv5's `torch.load` calls use our allowlisted loader (`yolov5_dattn.checkpoints.load`)."""
    import importlib

    from .checkpoints import load
    for name in _TORCH_LOAD_MODULES:
        if name in sys.modules or name in ("yolov5.models.experimental", "yolov5.utils.general"):
            _set_torch_override(importlib.import_module(name), "load", load)


def shim_segment_detect_not_pickled() -> None:
    """`Segment.__init__` stores `self.detect = Detect.forward`, which pickles as `builtins.getattr`
    (models/yolo.py:101) and would have to be allowlisted; keep it on the class instead."""
    from yolov5.models import yolo

    if getattr(yolo.Segment.__init__, "_yolov5_dattn_shim", False):
        return
    init = yolo.Segment.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.__dict__.pop("detect", None)

    __init__._yolov5_dattn_shim = True
    yolo.Segment.__init__ = __init__
    yolo.Segment.detect = staticmethod(yolo.Detect.forward)  # `self.detect(self, x)` keeps working


def shim_legacy_onnx_exporter() -> None:
    """torch ≥2.9 `torch.onnx.export` defaults to the dynamo exporter (needs onnxscript; yolov5's
    `try_export` swallows the failure); use the TorchScript-based exporter YOLOv5 was written for."""
    import torch
    from yolov5 import export

    real_export = torch.onnx.export

    def onnx_export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return real_export(*args, **kwargs)

    _set_torch_override(export, "onnx.export", onnx_export)


# ---- hygiene ------------------------------------------------------------------------------------
def shim_quiet_autocast_warning() -> None:
    """train.py's `torch.cuda.amp.autocast(amp)` warns (FutureWarning) on every batch because SPPF's
    `catch_warnings` resets the once-only registry; silence exactly that warning (and the one of its
    `torch.cuda.amp.GradScaler`) when YOLOv5's code triggers it."""
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.(autocast|GradScaler)", category=FutureWarning,
                            module=r"yolov5\.")


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

        replace_function(trainer, "main", make_main(trainer.main))


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

        replace_function(trainer, "run", make_run(trainer))


def shim_noval_map50s() -> None:
    """train.py with `--noval` crashes after the first epoch (UnboundLocalError: `map50s` is only set
    by validation, but logged every epoch); initialise it next to `maps`, on the same source line so
    tracebacks keep YOLOv5's line numbers."""
    import inspect
    import textwrap
    from yolov5 import train as trainer

    if getattr(trainer.train, "_yolov5_dattn_shim", False):
        return
    lines, first = inspect.getsourcelines(trainer.train)
    source = "".join(lines)
    anchor = "maps = np.zeros(nc)  # mAP per class"
    if source.count(anchor) != 1 or "map50s" not in source:
        return  # a YOLOv5 without this bug (or without this code): nothing to fix
    source = source.replace(anchor, "maps = np.zeros(nc); map50s = np.zeros(nc)  # mAP per class")
    code = compile("\n" * (first - 1) + textwrap.dedent(source), trainer.__file__, "exec")
    namespace = {}
    exec(code, vars(trainer), namespace)
    replace_function(trainer, "train", namespace["train"])


def apply() -> None:
    """Shims the model code needs (idempotent); run by `import yolov5_dattn`."""
    global _applied
    if _applied:
        return
    apply_before_import()
    shim_fonts_offline()
    shim_no_pip_installs()
    shim_no_hub_lookups()
    shim_missing_weights_fail_fast()
    shim_no_dataset_downloads()
    shim_segment_detect_not_pickled()
    shim_safe_torch_load()
    shim_quiet_autocast_warning()
    _applied = True


def apply_entrypoints() -> None:
    """`apply()` plus the shims of YOLOv5's train/val/detect/export/segment modules (imports them)."""
    global _applied_entrypoints
    apply()
    if _applied_entrypoints:
        return
    import importlib
    for name in _ENTRY_MODULES:
        importlib.import_module(name)
    shim_safe_torch_load()
    shim_legacy_onnx_exporter()
    shim_noval_map50s()
    shim_fresh_callbacks()
    shim_run_ignores_host_argv()
    _applied_entrypoints = True
