"""Policy: what our commands promise on YOLOv5 beyond YOLOv5 itself: offline (no font, weights, dataset or pip
downloads, no hub or git lookups), safe loading (checkpoints, exported models' metadata), atomic checkpoint saves and
`--resume` beside its checkpoint.

Each step is one function, safe to run twice; the step table (`changes.STEPS`, kind "policy") says when each runs and
which YOLOv5 line it concerns. Every change goes through `yolov5_dattn.patching`.
"""
import functools
import sys
from pathlib import Path

from yolov5_dattn import patching
from yolov5_dattn.core.offline import local_font, never_installs

from .host import PIP, Host, missing_anchor, replace_function

__all__ = ["shim_offline_ultralytics", "shim_fonts_offline", "shim_ultralytics_fonts_offline",
           "shim_no_pip_installs", "shim_no_hub_lookups", "shim_missing_weights_fail_fast",
           "shim_no_dataset_downloads", "shim_safe_torch_load", "shim_atomic_checkpoint_saves",
           "shim_no_git_status_check", "shim_backend_names_literal", "shim_no_heif_install", "resume_save_dir",
           "shim_resume_beside_checkpoint"]

_TORCH_LOAD_MODULES = ("models.experimental", "utils.general", "train", "segment.train")



def shim_offline_ultralytics() -> None:
    """ultralytics (imported by yolov5) probes DNS at import unless told it is offline."""
    from yolov5_dattn.core.offline_env import set_offline_environment
    set_offline_environment()


def shim_fonts_offline(host: Host = PIP) -> None:
    """`check_font` downloads Arial.ttf / Arial.Unicode.ttf; never download, draw with a local font instead.
    (A clone of master draws with ultralytics' Annotator, kept offline by `shim_offline_ultralytics`, and has
    no `check_pil_font`.)"""
    general = host.module("utils.general")
    plots = host.module("utils.plots")
    from PIL import ImageFont

    def check_font(font=general.FONT, progress=False):
        """No download: plots fall back to a font on disk (`local_font`) when this one is not there."""

    def check_pil_font(font=general.FONT, size=10):
        """The requested font if it is on disk (as given, in YOLOv5's config dir or known to matplotlib), else
        DejaVuSans (`yolov5_dattn.core.offline.local_font`)."""
        path = local_font(font, general.CONFIG_DIR)
        return ImageFont.load_default(size) if path is None else ImageFont.truetype(str(path), size)

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
        """The font if it is on disk (ultralytics' config dir first), else DejaVuSans; never downloads."""
        return local_font(font, USER_CONFIG_DIR)

    replace_function(plotting, "check_font", check_font, host, why="ultralytics' Annotator: no font downloads")


def shim_no_pip_installs(host: Host = PIP) -> None:
    """`check_requirements` may run `pip install` at run time; only report what is missing, never install."""
    general = host.module("utils.general")

    # checks nothing, answers True: the dependencies are declared in setup.cfg
    replace_function(general, "check_requirements", never_installs(), host, why="never pip-install at run time")


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
            raise missing_anchor(host, "policy.shim_safe_torch_load", f"torch or torch_load in {name}")


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


def shim_no_git_status_check(host: Host = PIP) -> None:
    """segment/train.py runs `check_git_status`, which prints "github: skipping check" for the pip package (no
    .git) and would ask github.com otherwise; a pinned, offline package has no updates to look for."""
    general = host.module("utils.general")

    def check_git_status(repo="ultralytics/yolov5", branch="master"):
        """No update check: yolov5 is pinned (setup.cfg) and runs offline."""

    replace_function(general, "check_git_status", check_git_status, host, why="no update check against github.com")


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
    call = "__import__('yolov5_dattn.hosts.yolov5.policy', fromlist=['_']).resume_save_dir(opt, last)"
    why = "--resume writes beside the checkpoint it was given"
    for name in ("yolov5.train", "yolov5.segment.train"):
        trainer = sys.modules[name]
        if patching.is_patched(trainer, "main"):
            continue  # done already (and a wrapped main would be the wrapper's source)
        edited = patching.replace_line(trainer.main, anchor, anchor.replace("  #", f"; opt.save_dir = {call}  #"))
        if edited is None:
            raise RuntimeError(f"{name}.main has changed: yolov5_dattn.hosts.yolov5.policy.shim_resume_beside_checkpoint "
                               f"needs updating")
        patching.patch(trainer, "main", edited, why=why)
