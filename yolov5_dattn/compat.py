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
    shim_quiet_pkg_resources_warning()
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


def shim_no_git_status_check() -> None:
    """segment/train.py runs `check_git_status`, which prints "github: skipping check" for the pip package (no
    .git) and would ask github.com otherwise; a pinned, offline package has no updates to look for."""
    from yolov5.utils import general

    def check_git_status(repo="ultralytics/yolov5", branch="master"):
        """No update check: yolov5 is pinned (setup.cfg) and runs offline."""

    replace_function(general, "check_git_status", check_git_status)


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


def shim_video_end_read() -> None:
    """LoadImages (detect, segment predict) grabs past a video's last frame and then retrieves anyway, so
    OpenCV logs an [ERROR] line at the end of every video; skip that retrieve, which can only fail."""
    from yolov5.utils.dataloaders import LoadImages

    original = LoadImages._new_video
    if getattr(original, "_yolov5_dattn_shim", False):
        return

    @functools.wraps(original)
    def _new_video(self, path):
        original(self, path)
        self.cap = _GrabCheckedCapture(self.cap)

    _new_video._yolov5_dattn_shim = True
    LoadImages._new_video = _new_video


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


# ---- no lost or misplaced checkpoints --------------------------------------------------------------
def shim_atomic_checkpoint_saves() -> None:
    """YOLOv5 writes checkpoints in place (a kill mid-save leaves a 0-byte last.pt, a full disk a corrupt
    one): route the `torch.save` of train.py, segment/train.py and utils/general.py (strip_optimizer) through
    `atomic.atomic_save`, and make TorchScript/ONNX exports write a temp file that is renamed when complete."""
    import importlib

    from . import atomic
    for name in ("yolov5.utils.general", "yolov5.train", "yolov5.segment.train"):
        if name in sys.modules or name == "yolov5.utils.general":  # the trainers once loaded (apply_entrypoints)
            _set_torch_override(importlib.import_module(name), "save", atomic.atomic_save)
    export = sys.modules.get("yolov5.export")
    if export is None:
        return

    def make_atomic(original, suffix):
        def export_format(model, im, file, *args, **kwargs):
            final = Path(file).with_suffix(suffix)
            atomic.remove_stale_temps(final)
            tmp = atomic.temp_path(final, suffix=suffix)  # YOLOv5 derives its output name from `file`
            try:
                f, out = original(model, im, tmp.with_suffix(".pt"), *args, **kwargs)
                if f is None:  # YOLOv5 logged the failure
                    return None, None
                try:
                    atomic.replace_with(tmp, final)
                except OSError as e:
                    if e.errno in atomic._FULL:
                        raise atomic.full_disk_error(final, e) from None
                    raise
                return final, out
            finally:
                tmp.unlink(missing_ok=True)
        return functools.wraps(original)(export_format)

    for name, suffix in (("export_torchscript", ".torchscript"), ("export_onnx", ".onnx")):
        if not getattr(getattr(export, name), "_yolov5_dattn_shim", False):
            replace_function(export, name, make_atomic(getattr(export, name), suffix))


def resume_save_dir(opt, last) -> str:
    """Where `--resume last` writes: the run folder that holds `weights/last.pt`, whatever the checkpoint's
    options record (a copied run would otherwise write into the original, a crafted one anywhere). Prints one
    notice when the recorded folder is another one; UserError when `last` is not in a `weights/` folder."""
    from .errors import UserError
    last = Path(last)
    if last.parent.name != "weights":
        raise UserError(f"--resume {last}: a resumed run writes beside its checkpoint, in <run>/weights/, but "
                        f"this file is not in a weights/ folder: copy it to <run folder>/weights/last.pt "
                        f"(or start a new run with --weights {last})")
    here = last.parent.parent
    recorded = getattr(opt, "save_dir", None)
    if recorded and Path(recorded).resolve() != here.resolve() and int(os.environ.get("RANK", -1)) in (-1, 0):
        print(f"notice: --resume {last}: the checkpoint records run folder {recorded}; writing to {here} instead "
              f"(the folder that holds the checkpoint)", file=sys.stderr)
    return str(here)


def shim_resume_beside_checkpoint() -> None:
    """On `--resume`, train.py/segment/train.py take `save_dir` from opt.yaml (or the checkpoint), so the run
    writes wherever that says; set it to the run folder of the checkpoint given (`resume_save_dir`), on the
    same source line so tracebacks keep YOLOv5's line numbers."""
    import inspect
    import textwrap
    anchor = "opt.cfg, opt.weights, opt.resume = '', str(last), True  # reinstate"
    for name in ("yolov5.train", "yolov5.segment.train"):
        trainer = sys.modules[name]
        if getattr(trainer.main, "_yolov5_dattn_resume_dir", False) or getattr(trainer.main, "__wrapped__", None):
            continue  # done already (a wrapped main would be the wrapper's source)
        lines, first = inspect.getsourcelines(trainer.main)
        source = "".join(lines)
        if source.count(anchor) != 1:
            raise RuntimeError(f"{name}.main has changed: yolov5_dattn.compat.shim_resume_beside_checkpoint "
                               f"needs updating")
        source = source.replace(anchor, anchor.replace("  #", "; opt.save_dir = _yolov5_dattn_resume_dir(opt, "
                                                              "last)  #"))
        trainer._yolov5_dattn_resume_dir = resume_save_dir
        code = compile("\n" * (first - 1) + textwrap.dedent(source), trainer.__file__, "exec")
        namespace = {}
        exec(code, vars(trainer), namespace)
        # set directly, not with replace_function: its shim mark would stop shim_fresh_callbacks wrapping main
        namespace["main"]._yolov5_dattn_resume_dir = True
        trainer.main = namespace["main"]


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
    shim_atomic_checkpoint_saves()
    shim_quiet_autocast_warning()
    shim_no_git_status_check()
    shim_video_end_read()
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
    shim_atomic_checkpoint_saves()
    shim_resume_beside_checkpoint()
    shim_fresh_callbacks()
    shim_run_ignores_host_argv()
    _applied_entrypoints = True
