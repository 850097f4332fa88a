"""Compatibility layer: makes the packaged YOLOv5 (7.0.14) run on today's libraries, offline.

Each shim is one small named function that fixes one break of YOLOv5 on today's libraries and is safe to
run twice; `changes.py` lists them in order, with the YOLOv5 line each concerns. `apply()` runs the shims
the model code needs (done by `import yolov5_dattn`); `apply_entrypoints()` also imports and patches
YOLOv5's train/val/detect/export/segment modules (done by the scripts). Shims that must act before `yolov5`
is first imported run in `apply_before_import()`.

Hosts: the shims act on one copy of YOLOv5's modules, a `Host`: the pip package (`PIP`, modules
`yolov5.utils.general`, ...) or a git clone (`Host.clone(root)`, modules `utils.general`, ... and the
running script; see `yolov5_dattn.hosts.yolov5.clone`). The shims `apply` runs take `host` (default `PIP`); those
only `apply_entrypoints` runs serve the plugin's own runner and act on the pip package.

Patching rule: every change goes through `yolov5_dattn.patching` (one journal, one "already patched"
test, undoable); which shim runs when, and which YOLOv5 line each one concerns, is the ordered list in
`yolov5_dattn.hosts.yolov5.changes`. A YOLOv5 function is replaced in the module that defines it *and* in every
loaded module of the same host that imported it by name, so modules imported later pick up the replacement
too. Library-wide changes (numpy, Pillow) only add what is missing; `torch` is changed only as seen from
YOLOv5's own modules (`patching.override`: a view of `torch` with a few names overridden). Process-wide
settings that are not attributes (an environment variable, a warnings filter, a stand-in `pkg_resources`
in `sys.modules`) are listed there too, but are not in the journal.
"""
import contextlib
import functools
import importlib
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Callable, Optional

from yolov5_dattn import patching
from yolov5_dattn.patching import ModuleView  # noqa: F401  (was defined here; kept importable)

_applied = set()  # hosts (by prefix/root) whose model shims ran
_applied_entrypoints = False

# YOLOv5 modules (names relative to the host) whose `torch.load` calls must go through our safe loader
_TORCH_LOAD_MODULES = ("models.experimental", "utils.general", "train", "segment.train")
_ENTRY_MODULES = ("train", "val", "detect", "export", "segment.train", "segment.val", "segment.predict")


class Host:
    """One copy of YOLOv5's modules that the shims patch.

    `prefix` is what its module names start with: 'yolov5.' for the pip package, '' for a git clone, whose
    modules are `models.yolo`, `utils.general`, ... and whose entry script runs as `__main__`. `root` (a
    clone's folder) decides which loaded modules belong to it; without one, the prefix does.
    """

    def __init__(self, prefix: str, root: Optional[Path] = None):
        self.prefix, self.root = prefix, None if root is None else Path(root).resolve()

    @classmethod
    def clone(cls, root) -> "Host":
        """The host of the git clone of YOLOv5 in folder `root`."""
        return cls("", root)

    @property
    def key(self) -> str:
        """Identifies the host (for the shims' once-only bookkeeping)."""
        return f"{self.prefix}@{self.root}"

    @property
    def label(self) -> str:
        """'yolov5 (pip package)' or 'the YOLOv5 clone in <root>', for messages."""
        return "yolov5 (pip package)" if self.root is None else f"the YOLOv5 clone in {self.root}"

    def _file_inside(self, module: types.ModuleType) -> bool:
        path = getattr(module, "__file__", None)
        try:
            return path is not None and Path(path).resolve().is_relative_to(self.root)
        except (OSError, ValueError):
            return False

    def owns(self, mod_name: str, module: Optional[types.ModuleType]) -> bool:
        """True if loaded module `mod_name` is one of this host's."""
        if module is None:
            return False
        if self.root is None:
            return mod_name == self.prefix.rstrip(".") or mod_name.startswith(self.prefix)
        return self._file_inside(module)

    def loaded(self, name: str) -> Optional[types.ModuleType]:
        """Host module `name` ('utils.general', 'train') if loaded, or the running script if it is that file."""
        module = sys.modules.get(self.prefix + name)
        if module is not None and (self.root is None or self._file_inside(module)):
            return module
        main = sys.modules.get("__main__")
        if self.root is not None and main is not None and self._file_inside(main):
            if Path(main.__file__).resolve() == self.root / (name.replace(".", "/") + ".py"):
                return main
        return None

    def module(self, name: str) -> types.ModuleType:
        """Host module `name`, imported if need be (the running script when it is that file)."""
        return self.loaded(name) or importlib.import_module(self.prefix + name)

    def modules(self):
        """(name, module) of every loaded module of this host."""
        return [(n, m) for n, m in list(sys.modules.items()) if self.owns(n, m)]


PIP = Host("yolov5.")


def missing_anchor(host: Host, shim: str, what: str) -> RuntimeError:
    """The error of a shim whose target is not in the host's code: YOLOv5 changed, the shim must too."""
    return RuntimeError(f"yolov5_dattn.hosts.yolov5.compat.{shim}: {host.label} has no {what}; this YOLOv5 is not supported "
                        f"(tested: pip yolov5 7.0.14, clones of v7.0 and master, see README)")


# ---- helpers ------------------------------------------------------------------------------------
def replace_function(module: types.ModuleType, name: str, new: Callable, host: Host = PIP, *, why: str) -> bool:
    """`patching.patch(module, name, new)`, also where other loaded modules of `host` imported it by name.
    False when the change (`why`) is in place already."""
    return patching.patch(module, name, new, why=why, also=[m for _, m in host.modules()])


# ---- before `import yolov5` ---------------------------------------------------------------------
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
    from yolov5_dattn.core.offline_env import set_offline_environment
    set_offline_environment()


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


def apply_before_import() -> None:
    """Shims needed for `import yolov5` itself to work (the "before-import" steps of `changes.STEPS`)."""
    from . import changes
    changes.apply("before-import")


# ---- offline ------------------------------------------------------------------------------------
def offline_font() -> Optional[Path]:
    """A TrueType font that is on disk already: matplotlib's DejaVuSans (covers Latin, Greek, Cyrillic)."""
    try:
        import matplotlib
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return path if path.is_file() else None
    except ImportError:
        return None


def shim_fonts_offline(host: Host = PIP) -> None:
    """`check_font` downloads Arial.ttf / Arial.Unicode.ttf; never download, draw with a local font instead.
    (A clone of master draws with ultralytics' Annotator, kept offline by `shim_offline_ultralytics`, and has
    no `check_pil_font`.)"""
    general = host.module("utils.general")
    plots = host.module("utils.plots")
    from PIL import ImageFont

    def check_font(font=general.FONT, progress=False):
        """No download: plots fall back to `offline_font()` when the font is not on disk."""

    def check_pil_font(font=general.FONT, size=10):
        """The requested font if it is on disk (as given or in YOLOv5's config dir), else DejaVuSans."""
        for candidate in (Path(font), general.CONFIG_DIR / Path(font).name, offline_font()):
            if candidate is not None and candidate.is_file():
                return ImageFont.truetype(str(candidate), size)
        return ImageFont.load_default(size)

    replace_function(general, "check_font", check_font, host, why="no font downloads")
    if hasattr(plots, "check_pil_font") or host is PIP:
        replace_function(plots, "check_pil_font", check_pil_font, host, why="draw with a font on disk, never download")


def shim_ultralytics_fonts_offline(host: Host = PIP) -> None:
    """A clone of master draws with ultralytics' `Annotator`, whose `check_font` asks github.com for Arial.ttf
    (also with YOLO_OFFLINE set) when it is not in ultralytics' config dir; use the local font instead. Only
    for a host whose plots use that Annotator; the name is replaced where the Annotator looks it up."""
    annotator = getattr(host.module("utils.plots"), "Annotator", None)
    plotting = sys.modules.get(getattr(annotator, "__module__", ""))
    if plotting is None or not plotting.__name__.startswith("ultralytics.") or not hasattr(plotting, "check_font"):
        return  # YOLOv5's own Annotator: shim_fonts_offline covers it
    from ultralytics.utils import USER_CONFIG_DIR

    def check_font(font="Arial.ttf"):
        """The font if ultralytics has it on disk, else `offline_font()`; never downloads."""
        file = USER_CONFIG_DIR / Path(font).name
        return file if file.is_file() else offline_font()

    replace_function(plotting, "check_font", check_font, host, why="ultralytics' Annotator: no font downloads")


def shim_no_pip_installs(host: Host = PIP) -> None:
    """`check_requirements` may run `pip install` at run time; only report what is missing, never install."""
    general = host.module("utils.general")

    def check_requirements(requirements=None, exclude=(), install=True, cmds='', **kwargs):
        """Never installs (offline, reproducible); dependencies are declared in setup.cfg."""
        return True

    replace_function(general, "check_requirements", check_requirements, host, why="never pip-install at run time")


def _looks_like_hub_id(name: str) -> bool:
    """'owner/model' with no file suffix and nothing on disk by that name."""
    return (name.count("/") == 1 and not Path(name).suffix and not Path(name).exists()
            and not name.startswith((".", "/", "http:", "https:")))


def shim_no_hub_lookups(host: Host = PIP) -> None:
    """`attempt_download_from_hub` (pip package only) asks huggingface.co about every weights path, even an
    existing local `best.pt`; only ask for names that can be a hub model id ('owner/model')."""
    downloads = host.module("utils.downloads")
    if host is not PIP and not hasattr(downloads, "attempt_download_from_hub"):
        return  # a git clone has no hub lookups

    original = downloads.attempt_download_from_hub

    def attempt_download_from_hub(repo_id, hf_token=None, revision=None):
        """None (use the local file) unless `repo_id` can only be a hub id."""
        if not isinstance(repo_id, str) or not _looks_like_hub_id(repo_id):
            return None
        return original(repo_id, hf_token=hf_token, revision=revision)

    replace_function(downloads, "attempt_download_from_hub", attempt_download_from_hub, host,
                     why="ask huggingface.co only about names that can be a hub id")


def shim_missing_weights_fail_fast(host: Host = PIP) -> None:
    """A missing weights file goes through GitHub API + `git tag` + `curl --retry 9` (over 5 minutes);
    say so in one line at once instead."""
    downloads = host.module("utils.downloads")

    from yolov5_dattn.errors import UserError

    def attempt_download(file, repo="ultralytics/yolov5", release="v7.0", hf_token=None):
        """The path if the file exists; UserError otherwise (downloads are off)."""
        from_hub = getattr(downloads, "attempt_download_from_hub", None)
        hub = from_hub(file, hf_token=hf_token) if from_hub is not None else None
        path = Path(str(hub or file).strip().replace("'", ""))
        if path.exists():
            return str(path)
        raise UserError(f"weights file {file} not found: pass the path of an existing .pt/.onnx/.torchscript "
                        f"file (this plugin never downloads weights)")

    replace_function(downloads, "attempt_download", attempt_download, host,
                     why="a missing weights file is one error line, not minutes of download attempts")


def shim_no_dataset_downloads(host: Host = PIP) -> None:
    """`check_dataset` downloads (or runs the YAML's `download:` script for) a dataset that is not on
    disk; say in one line that it is missing instead."""
    general = host.module("utils.general")

    from yolov5_dattn.errors import UserError
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

    replace_function(general, "check_dataset", check_dataset, host, why="a missing dataset is one error line, no download")


# ---- torch ≥2.6 -----------------------------------------------------------------------------------
def shim_safe_torch_load(host: Host = PIP) -> None:
    """torch ≥2.6 loads with `weights_only=True` by default and refuses every YOLOv5 checkpoint; make
    YOLOv5's `torch.load` calls use our allowlisted loader (`yolov5_dattn.hosts.yolov5.checkpoints.load`). A clone of
    master loads through ultralytics' `torch_load` (full pickle) instead: that name is replaced likewise."""
    from .checkpoints import load

    def torch_load(*args, **kwargs):
        """ultralytics' `torch_load` signature, our allowlisted `checkpoints.load`."""
        return load(*args, **kwargs)

    for name in _TORCH_LOAD_MODULES:
        module = host.loaded(name) if name in ("train", "segment.train") else host.module(name)
        if module is None:
            continue  # a trainer not loaded (apply_entrypoints loads them for the pip package)
        why = "checkpoints load through the allowlisted loader (torch>=2.6 refuses YOLOv5's)"
        if "torch_load" in vars(module):
            patching.patch(module, "torch_load", torch_load, why=why)
        elif "torch" in vars(module):
            patching.override(module, "torch", "load", load, why=why)
        else:
            raise missing_anchor(host, "shim_safe_torch_load", f"torch or torch_load in {name}")


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


def shim_export_formats(host: Host = PIP) -> None:
    """YOLOv5's export: OpenVINO through the current `openvino` API (its own needs the retired openvino-dev/`mo`),
    `run()` at opset 17 by default (it says 12, only the CLI 17) and TensorRT's ONNX step at the run's opset
    (hard-coded 12, which has no grid_sample). See `yolov5_dattn.hosts.yolov5.deploy`."""
    from . import deploy
    export = host.module("export") if host is PIP else host.loaded("export")
    if export is not None:
        deploy.patch_export(export, lambda module, name, new, why: replace_function(module, name, new, host, why=why))


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


# ---- hygiene ------------------------------------------------------------------------------------
def shim_quiet_autocast_warning(host: Host = PIP) -> None:
    """train.py's `torch.cuda.amp.autocast(amp)` warns (FutureWarning) on every batch because SPPF's
    `catch_warnings` resets the once-only registry; silence exactly that warning (and the one of its
    `torch.cuda.amp.GradScaler`) when YOLOv5's code triggers it."""
    module = r"yolov5\." if host is PIP else r"(__main__|train|segment\.train)$"  # a clone's trainer
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.(autocast|GradScaler)", category=FutureWarning,
                            module=module)


def shim_no_git_status_check(host: Host = PIP) -> None:
    """segment/train.py runs `check_git_status`, which prints "github: skipping check" for the pip package (no
    .git) and would ask github.com otherwise; a pinned, offline package has no updates to look for."""
    general = host.module("utils.general")

    def check_git_status(repo="ultralytics/yolov5", branch="master"):
        """No update check: yolov5 is pinned (setup.cfg) and runs offline."""

    replace_function(general, "check_git_status", check_git_status, host, why="no update check against github.com")


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


def shim_backend_names_literal(host: Host = PIP) -> None:
    """DetectMultiBackend reads an ONNX file's class names with `eval(meta['names'])` (models/common.py:380),
    so a crafted .onnx runs code; read them as a literal instead (`eval` is only called there in that
    module; its TorchScript/OpenVINO/TFLite metadata go through json/yaml/literal_eval already). A value that
    is not a literal is one UserError naming the file."""
    from yolov5_dattn.errors import UserError
    from .input_checks import literal_names
    common = host.module("models.common")

    def names_literal(text, *args):
        """`ast.literal_eval` of exported-model metadata (no globals, no calls)."""
        return literal_names(text, "model metadata")

    why = "exported models' class names are read as a literal, never evaluated"
    # a module global shadows the builtin for that module's code only
    if not patching.patch(common, "eval", names_literal, why=why):
        return
    backend = common.DetectMultiBackend
    init = backend.__init__

    @functools.wraps(init)
    def __init__(self, weights="yolov5s.pt", *args, **kwargs):
        try:
            init(self, weights, *args, **kwargs)
        except UserError as e:
            if "model metadata:" not in str(e):
                raise
            w = weights[0] if isinstance(weights, list) else weights
            raise UserError(str(e).replace("model metadata:", f"--weights {w}:", 1)) from None

    patching.patch(backend, "__init__", __init__, why="unreadable class names in an exported model name --weights")


def shim_no_heif_install() -> None:
    """ultralytics (imported by yolov5) patches `PIL.Image.open` to run `check_requirements('pi-heif')` (a pip
    install) the first time a file cannot be identified, so a corrupt image is reported as "No module named
    'pi_heif'"; mark its plugin step done, so Pillow's own "cannot identify image file" comes through.
    HEIF is not one of YOLOv5 7.0's image formats."""
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and hasattr(patches, "_pil_plugins_registered"):
        patching.patch(patches, "_pil_plugins_registered", True,
                       why="a corrupt image is Pillow's error, not a pi-heif install attempt")


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


# ---- no lost or misplaced checkpoints --------------------------------------------------------------
def shim_atomic_checkpoint_saves(host: Host = PIP) -> None:
    """YOLOv5 writes checkpoints in place (a kill mid-save leaves a 0-byte last.pt, a full disk a corrupt
    one): route the `torch.save` of train.py, segment/train.py and utils/general.py (strip_optimizer) through
    `atomic.atomic_save`, and make TorchScript/ONNX exports write a temp file that is renamed when complete."""
    from yolov5_dattn import atomic
    for name in ("utils.general", "train", "segment.train"):
        module = host.module(name) if name == "utils.general" else host.loaded(name)  # trainers once loaded
        if module is not None:
            patching.override(module, "torch", "save", atomic.atomic_save,
                              why="checkpoints are written atomically (no 0-byte last.pt after a kill)")
    export = host.loaded("export")
    if export is None or "export_onnx" not in vars(export):
        return  # not loaded, or a clone's export.py still importing (its functions come later)

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
        replace_function(export, name, make_atomic(getattr(export, name), suffix), host,
                         why="an export is written to a temp file and renamed when complete")


def resume_save_dir(opt, last) -> str:
    """Where `--resume last` writes: the run folder that holds `weights/last.pt`, whatever the checkpoint's
    options record (a copied run would otherwise write into the original, a crafted one anywhere). Prints one
    notice when the recorded folder is another one; UserError when `last` is not in a `weights/` folder
    (`core.resume_dir.run_folder`, the rule both hosts share)."""
    from yolov5_dattn.core.resume_dir import run_folder
    return str(run_folder(last, getattr(opt, "save_dir", None), asked=f"--resume {last}", new_run=f"--weights {last}"))


def shim_resume_beside_checkpoint() -> None:
    """On `--resume`, train.py/segment/train.py take `save_dir` from opt.yaml (or the checkpoint), so the run
    writes wherever that says; set it to the run folder of the checkpoint given (`resume_save_dir`), on the
    same source line so tracebacks keep YOLOv5's line numbers."""
    anchor = "opt.cfg, opt.weights, opt.resume = '', str(last), True  # reinstate"
    # no name is added to train.py: the edited line imports this module itself
    call = "__import__('yolov5_dattn.hosts.yolov5.compat', fromlist=['_']).resume_save_dir(opt, last)"
    why = "--resume writes beside the checkpoint it was given"
    for name in ("yolov5.train", "yolov5.segment.train"):
        trainer = sys.modules[name]
        if patching.is_patched(trainer, "main"):
            continue  # done already (and a wrapped main would be the wrapper's source)
        edited = patching.replace_line(trainer.main, anchor, anchor.replace("  #", f"; opt.save_dir = {call}  #"))
        if edited is None:
            raise RuntimeError(f"{name}.main has changed: yolov5_dattn.hosts.yolov5.compat.shim_resume_beside_checkpoint "
                               f"needs updating")
        patching.patch(trainer, "main", edited, why=why)


def apply(host: Host = PIP) -> None:
    """Shims the model code of `host` needs (idempotent); run by `import yolov5_dattn` for the pip package
    and by `yolov5_dattn.hosts.yolov5.clone.install` for a git clone."""
    from . import changes
    if host.key in _applied:
        return
    apply_before_import()
    with shim_ipython_optional() if host is not PIP else contextlib.nullcontext():
        host.module("models.yolo")  # imports models.common and utils.general (the IPython importers) now
        changes.apply("model", host)
    _applied.add(host.key)


def apply_entrypoints() -> None:
    """`apply()` plus the shims of YOLOv5's train/val/detect/export/segment modules (imports them)."""
    global _applied_entrypoints
    apply()
    if _applied_entrypoints:
        return
    from . import changes
    for name in _ENTRY_MODULES:
        PIP.module(name)
    changes.apply("entrypoints")
    _applied_entrypoints = True
