"""Every change this plugin makes to YOLOv5 at run time, in the order it is made: what, why, which line.

This list is what the install functions apply (`apply(phase, host)`): `compat.apply_before_import()`
(phase "before-import"), `compat.apply()` ("model", for the pip package and for git clones),
`yolov5_dattn.hosts.yolov5.install()` ("install": what `import yolov5_dattn` adds once `yolov5` is imported),
`compat.apply_entrypoints()` ("entrypoints", the pip scripts' train/val/detect/export/segment modules) and
`clone.install` ("clone"). Steps of phase "run" are installed by the commands that need them (named in
`applied_by`). Each step is one function; every attribute it changes goes through `yolov5_dattn.patching`
(tagged with the step's name), so `yolov5-dattn changes` can print what is in place and tests can undo it.

`line` is where the change bites in the pip package yolov5 7.0.14 (file under site-packages/yolov5). A step
marked `process` changes a process-wide setting (environment, warnings filter, `sys.modules`), not an
attribute: it is listed here but not in the patching journal.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, List, Optional

from yolov5_dattn import patching
from yolov5_dattn.core.steps import Step

PHASES = ("before-import", "model", "install", "entrypoints", "clone", "run")


@dataclass(frozen=True)
class InstallStep(Step):
    """A `core.steps.Step` of the YOLOv5 host with how it is installed. `function` is 'module:function' under
    yolov5_dattn.hosts.yolov5 (or yolov5_dattn); its name ('policy.shim_fonts_offline') is also the `step` of the
    patching journal's changes it makes."""
    function: str = ""
    phase: str = ""
    hosts: str = "pip, clone"  # which hosts the step applies to in its phase
    takes_host: bool = True
    process: bool = False  # a process-wide setting, not an attribute change
    applied_by: str = ""  # for phase "run": who installs it

    def resolve(self) -> Callable:
        """The function that makes the change."""
        module, _, attr = self.function.partition(":")
        package = "yolov5_dattn" if module == "shipped" else "yolov5_dattn.hosts.yolov5"
        return getattr(importlib.import_module(f"{package}.{module}"), attr)


def _step(function: str, kind: str, phase: str, targets: str, line: str, why: str, **how) -> InstallStep:
    return InstallStep(function.replace(":", "."), kind, targets, line, why, function=function, phase=phase, **how)


STEPS: List[InstallStep] = [
    # ---- before `import yolov5`: what importing it needs
    _step("repairs:shim_quiet_pkg_resources_warning", "repair", "before-import", "warnings filter",
          "utils/general.py:34", "setuptools <81 warns 'pkg_resources is deprecated' when yolov5 imports it",
          takes_host=False, process=True),
    _step("repairs:shim_pkg_resources", "repair", "before-import", "sys.modules['pkg_resources']",
          "utils/general.py:34", "setuptools >=81 has no pkg_resources; yolov5 needs only its parse_version",
          takes_host=False, process=True),
    _step("policy:shim_offline_ultralytics", "policy", "before-import", "os.environ['YOLO_OFFLINE']", "helpers.py:1",
          "ultralytics (imported by yolov5) probes DNS at import unless told it is offline", takes_host=False,
          process=True),
    _step("repairs:shim_numpy_trapz", "repair", "before-import", "numpy.trapz", "utils/metrics.py:118",
          "numpy 2 removed np.trapz: training would die at the first validation", takes_host=False),
    _step("repairs:shim_pil_getsize", "repair", "before-import", "PIL.ImageFont.FreeTypeFont.getsize",
          "utils/plots.py:91", "Pillow 10 removed getsize: plot threads would crash", takes_host=False),
    # ---- the model code (pip package and clones)
    _step("policy:shim_fonts_offline", "policy", "model", "utils.general.check_font, utils.plots.check_pil_font",
          "utils/general.py:464, utils/plots.py:55", "plots would download Arial.ttf; draw with a local font"),
    _step("policy:shim_ultralytics_fonts_offline", "policy", "model", "ultralytics.utils.plotting.check_font",
          "(clone of master) ultralytics/utils/plotting.py", "ultralytics' Annotator asks github.com for Arial.ttf",
          hosts="clone"),
    _step("policy:shim_no_pip_installs", "policy", "model", "utils.general.check_requirements", "utils/general.py:384",
          "check_requirements may pip-install at run time"),
    _step("policy:shim_no_hub_lookups", "policy", "model", "utils.downloads.attempt_download_from_hub",
          "utils/downloads.py:148", "every weights path, even a local best.pt, is asked of huggingface.co"),
    _step("policy:shim_missing_weights_fail_fast", "policy", "model", "utils.downloads.attempt_download",
          "utils/downloads.py:84", "a missing weights file means minutes of GitHub API, git tag and curl retries"),
    _step("policy:shim_no_dataset_downloads", "policy", "model", "utils.general.check_dataset", "utils/general.py:474",
          "a dataset not on disk is downloaded (or its download: script run)"),
    _step("repairs:shim_segment_detect_not_pickled", "repair", "model", "models.yolo.Segment.__init__, Segment.detect",
          "models/yolo.py:101", "self.detect = Detect.forward pickles as builtins.getattr"),
    _step("policy:shim_safe_torch_load", "policy", "model", "torch.load as seen from models.experimental, "
          "utils.general (and the trainers)", "models/experimental.py:79, utils/general.py:972, train.py:140",
          "torch >=2.6 refuses YOLOv5 checkpoints; load through the allowlisted loader"),
    _step("policy:shim_atomic_checkpoint_saves", "policy", "model", "torch.save as seen from utils.general, the "
          "trainers; export.export_torchscript/export_onnx", "train.py:406, utils/general.py:981, export.py:136,152",
          "a kill mid-save leaves a 0-byte last.pt, a full disk a corrupt one"),
    _step("repairs:shim_quiet_autocast_warning", "repair", "model", "warnings filter", "train.py:329",
          "torch.cuda.amp.autocast warns on every batch", process=True),
    _step("policy:shim_no_git_status_check", "policy", "model", "utils.general.check_git_status",
          "segment/train.py:527", "prints 'skipping check' or asks github.com for updates"),
    _step("repairs:shim_video_end_read", "repair", "model", "utils.dataloaders.LoadImages._new_video",
          "utils/dataloaders.py:291", "OpenCV logs an [ERROR] line at the end of every video"),
    _step("label_caches:install", "policy", "model", "np.load as seen from utils.dataloaders",
          "utils/dataloaders.py:492", "np.load(allow_pickle=True) of a dataset's labels/*.cache: a planted cache "
          "runs code"),
    _step("policy:shim_backend_names_literal", "policy", "model", "models.common.eval, DetectMultiBackend.__init__",
          "models/common.py:380", "eval(meta['names']) runs code from a crafted .onnx"),
    _step("repairs:shim_openvino_runtime", "repair", "model", "models.common.DetectMultiBackend.__init__",
          "models/common.py:384", "from openvino.runtime import ... fails with current openvino"),
    _step("policy:shim_no_heif_install", "policy", "model", "ultralytics.utils.patches._pil_plugins_registered",
          "ultralytics/utils/patches.py:88", "a corrupt image becomes a pi-heif install attempt", takes_host=False),
    _step("repairs:shim_legacy_onnx_exporter", "repair", "model", "torch.onnx.export as seen from export",
          "export.py:169", "torch >=2.9 exports with dynamo by default (needs onnxscript)", hosts="clone"),
    # ---- what `import yolov5_dattn` adds (pip package)
    _step("repairs:shim_flat_model_imports", "repair", "install", "sys.modules['models', 'models.*']",
          "models/experimental.py:75", "attempt_load imports models.yolo from yolov5's folder on sys.path: a second "
          "copy of yolo.py, whose classes match nothing", hosts="pip", takes_host=False, process=True),
    _step("registry:install_hook", "plugin", "install", "models.yolo.parse_model and the registered names in its "
          "globals", "models/yolo.py:299", "parse_model learns our modules, has no eval, and names the layer that "
          "fails"),
    _step("summary:install", "plugin", "install", "models.yolo.model_info, utils.torch_utils.model_info",
          "models/yolo.py:151, utils/torch_utils.py:272", "GFLOPs at the run's size, attention matmuls included"),
    _step("shipped:install", "plugin", "install", "models.yolo.DetectionModel.__init__", "models/yolo.py:167",
          "Model('yolov5n_c3_dattn.yaml') finds the shipped config by name", takes_host=False),
    # ---- the pip package's entry modules (scripts/*.py, yolov5-dattn train ...)
    _step("policy:shim_safe_torch_load", "policy", "entrypoints", "torch.load as seen from train, segment.train",
          "train.py:140,581", "torch >=2.6 refuses YOLOv5 checkpoints", hosts="pip"),
    _step("repairs:shim_legacy_onnx_exporter", "repair", "entrypoints", "torch.onnx.export as seen from export",
          "export.py:169", "torch >=2.9 exports with dynamo by default (needs onnxscript)", hosts="pip"),
    _step("repairs:shim_noval_map50s", "repair", "entrypoints", "train.train (line 271 edited in place)",
          "train.py:271,389", "--noval: UnboundLocalError on map50s after the first epoch", hosts="pip",
          takes_host=False),
    _step("repairs:shim_untimed_validation_nms", "repair", "entrypoints", "val.non_max_suppression, "
          "segment.val.non_max_suppression (a copy of utils/general.py's with line 892 edited)",
          "utils/general.py:892", "NMS drops boxes after 0.5 + 0.05*batch s: validation mAP would depend on machine "
          "load", hosts="pip", takes_host=False),
    _step("policy:shim_atomic_checkpoint_saves", "policy", "entrypoints", "torch.save as seen from the trainers; "
          "export", "train.py:406, export.py:136,152", "checkpoints and exports written atomically", hosts="pip"),
    _step("export_formats:install", "plugin", "entrypoints", "export.export_openvino, export.run, export.export_engine",
          "export.py:208,654,270", "OpenVINO through the current API; opset 17 by default (12 has no grid_sample)",
          hosts="pip"),
    _step("policy:shim_resume_beside_checkpoint", "policy", "entrypoints", "train.main, segment.train.main (line "
          "edited in place)", "train.py:585, segment/train.py:549", "--resume writes wherever the checkpoint's "
          "opt.yaml says", hosts="pip", takes_host=False),
    _step("repairs:shim_fresh_callbacks", "repair", "entrypoints", "train.main, segment.train.main", "train.py:557",
          "the default Callbacks() is shared by every call in a process", hosts="pip", takes_host=False),
    _step("repairs:shim_run_ignores_host_argv", "repair", "entrypoints", "train.run, segment.train.run", "train.py:717",
          "train.run(**kwargs) parses the host program's sys.argv", hosts="pip", takes_host=False),
    _step("summary:install_sizes", "plugin", "entrypoints", "train.train, val.run, detect.run, export.run, segment.*",
          "train.py:77, val.py:100, detect.py:54, export.py:654", "model summaries report at the run's --imgsz",
          hosts="pip"),
    # ---- a git clone (clone.install, run by the hook lines clone-setup adds)
    _step("registry:install_hook", "plugin", "clone", "models.yolo.parse_model and the registered names",
          "models/yolo.py", "as for the pip package", hosts="clone"),
    _step("summary:install", "plugin", "clone", "models.yolo.model_info, utils.torch_utils.model_info",
          "models/yolo.py", "as for the pip package", hosts="clone"),
    _step("checkpoints:allow_host_modules", "policy", "clone", "(the safe loader's allowlist; no YOLOv5 attribute)",
          "models/experimental.py", "the clone's model classes load like the pip package's", hosts="clone"),
    _step("clone:one_line_user_errors", "policy", "clone", "sys.excepthook", "-", "a UserError is one error line and "
          "exit 2", hosts="clone", takes_host=False),
    _step("clone:check_at_first_parse", "plugin", "clone", "argparse.ArgumentParser.parse_known_args (until the entry "
          "script's first parse), then the script's train/run and export's main", "train.py:494", "the pip scripts' "
          "checks run on the clone's options before anything is written", hosts="clone"),
    # ---- installed by the commands that need them
    _step("data_yaml:install", "policy", "run", "utils.general.check_dataset (wherever imported)",
          "utils/general.py:474", "a data YAML's relative path: means relative to the YAML", hosts="pip",
          takes_host=False, applied_by="entrypoint.main, preflight"),
    _step("transfer:install", "plugin", "run", "train.intersect_dicts, segment.train.intersect_dicts", "train.py:144",
          "a --weights transfer says what starts fresh", hosts="pip", takes_host=False,
          applied_by="yolov5-dattn train, scripts/train.py"),
    _step("square_inputs:install", "plugin", "run", "create_dataloader of train/val; "
          "LoadImages/LoadStreams/LoadScreenshots of detect", "val.py:189, detect.py:120", "a fixed_pe model gets "
          "square inputs (inert until preflight turns it on)", hosts="pip", takes_host=False,
          applied_by="preflight (square_inputs.set_active)"),
    _step("litert_runtime:litert_as_tflite_runtime", "repair", "run", "sys.modules['tflite_runtime.interpreter'] "
          "(during one detect/val run of .tflite weights, when neither tflite_runtime nor tensorflow is installed)",
          "models/common.py:458", "DetectMultiBackend runs .tflite files with tflite_runtime, whose successor is "
          "ai-edge-litert", hosts="pip", takes_host=False, process=True,
          applied_by="entrypoint.execute (a context manager: undone when the run returns)"),
    _step("entrypoint:parsing", "plugin", "run", "argparse.ArgumentParser.parse_known_args (during one parse only)",
          "train.py:494", "YOLOv5's parse_opt parses our argv with our flags added", hosts="pip", takes_host=False,
          applied_by="entrypoint.parse (a context manager: undone when the parse returns)"),
]


def steps(phase: Optional[str] = None, host=None) -> List[InstallStep]:
    """The steps of `phase` (all when None), in order; only those for `host` (pip or clone) when given."""
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    kind = None if host is None else ("pip" if host.root is None else "clone")
    return [s for s in STEPS if (phase is None or s.phase == phase) and (kind is None or kind in s.hosts)]


def apply(phase: str, host=None) -> None:
    """Apply the steps of `phase` to `host` (default: the pip package), in order, each tagged in the patching
    journal with its name."""
    from .host import PIP
    host = PIP if host is None else host
    for step in steps(phase, host):
        with patching.applying(step.name):
            function = step.resolve()
            function(host) if step.takes_host else function()


def step_of(change: patching.Change) -> Optional[InstallStep]:
    """The documented step that made `change` (by its journal tag)."""
    return next((s for s in STEPS if s.name == change.step), None)
