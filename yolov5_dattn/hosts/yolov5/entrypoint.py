"""The shared runner behind `scripts/*.py`: YOLOv5's own entry points, with our modules, offline.

`main(task)` does, in order:
1. apply the compatibility layer (`compat.apply_entrypoints`);
2. parse the command line with YOLOv5's own parser for the task (its `parse_opt`), to which we add our
   few flags (`--trust-checkpoint`), so `--help` lists both and every YOLOv5 flag keeps its meaning;
3. check the files the run needs (weights, checkpoints, data, cfg, source) and call
   `yolov5_dattn.hosts.yolov5.preflight.preflight(opt, task)`, all before anything is written;
4. call the package's own `main`/`run` (outputs land where YOLOv5 puts them: runs/train/exp…).
A `UserError` (or one of YOLOv5's own input assertions) becomes `error: <one line>` and exit status 2.
"""
import argparse
import contextlib
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from yolov5_dattn.errors import UserError, one_line

# task -> YOLOv5 module whose parse_opt/main we run
TASKS: Dict[str, str] = {
    "train": "yolov5.train",
    "val": "yolov5.val",
    "detect": "yolov5.detect",
    "export": "yolov5.export",
    "segment-train": "yolov5.segment.train",
    "segment-val": "yolov5.segment.val",
    "segment-predict": "yolov5.segment.predict",
}
TRAIN_TASKS = ("train", "segment-train")
OUR_FLAGS = ("trust_checkpoint", "sampler")  # "sampler": export only (None elsewhere)
MIN_ONNX_OPSET = 16  # grid_sample (DAttention's key sampling) needs opset 16


def add_our_flags(parser: argparse.ArgumentParser, task: str, pip_defaults: bool = True) -> None:
    """Our flags, in their own --help section. With `pip_defaults` (the pip package's scripts), train tasks
    default to `--weights ''` (from scratch: YOLOv5's default `yolov5s.pt` would need a download and does not
    match a DAttention config) and --project to ./runs/...; a git clone keeps its own defaults."""
    group = parser.add_argument_group("yolov5-dattn")
    group.add_argument("--trust-checkpoint", action="store_true",
                       help="load --weights/--resume checkpoints with full pickle even if they name classes "
                            "outside the safe allowlist (only for files whose source you trust: a pickle can "
                            "run code)")
    if task == "export":
        from yolov5_dattn.nn.sampler_switch import CHOICES
        group.add_argument("--sampler", choices=CHOICES, default=None,
                           help="how DAttention's bilinear key sampling is exported: grid_sample (one GridSample "
                                "node) or gather (Gather and arithmetic, for runtimes without a reliable "
                                "GridSample: TensorRT, TFLite, CoreML, ...). Default: grid_sample when every "
                                "--include format reads GridSample (torchscript, onnx, openvino), else gather")
    if not pip_defaults:
        return
    if task in TRAIN_TASKS:
        parser.set_defaults(weights="")
    # the pip package's segment scripts default to ROOT / 'runs/...', i.e. inside site-packages/yolov5;
    # use ./runs/... as YOLOv5's own checkout (and the package's detection scripts) do
    project = parser.get_default("project")
    if isinstance(project, Path):
        parser.set_defaults(project=str(Path("runs") / project.name))


@contextlib.contextmanager
def parsing(argv: Sequence[str], prog: str, extend: Callable[[argparse.ArgumentParser], None]):
    """While active, any argparse parser parses `argv` (not sys.argv) after `extend(parser)` ran once on it.

    This lets YOLOv5's `parse_opt` build its parser and post-process the result as it always does. A
    temporary change (`patching.temporarily`): undone when the block exits.
    """
    import weakref

    from yolov5_dattn import patching
    real = argparse.ArgumentParser.parse_known_args
    extended = weakref.WeakSet()

    def parse_known_args(self, args=None, namespace=None):
        if self not in extended:
            extended.add(self)
            self.prog = prog
            extend(self)
        opt, rest = real(self, list(argv) if args is None else args, namespace)
        # bare shipped names (--cfg yolov5l_c3_dattn.yaml) -> their paths here, not in check_inputs:
        # some parse_opt check --data themselves (val: check_yaml) before returning
        from yolov5_dattn.shipped import resolve_options
        resolve_options(opt)
        return opt, rest

    with patching.temporarily(argparse.ArgumentParser, "parse_known_args", parse_known_args,
                              why="YOLOv5's parse_opt parses our argv, with our flags added", step="entrypoint.parsing"):
        yield


def parse(task: str, argv: Sequence[str], prog: Optional[str] = None, echo: Optional[List[str]] = None):
    """Parse `argv` for `task` with YOLOv5's parser plus ours.

    Args:
        echo: if a list, the options line that YOLOv5's `parse_opt` prints (`detect: weights=...`) is appended
            to it instead of being logged, so that a run refused by the checks prints only its `error:` line.
    Returns: (opt, ours) — YOLOv5's namespace (our flags removed, so it can go to YOLOv5's run(**vars))
    and a namespace of our flags.
    """
    from yolov5.utils.general import colorstr

    from yolov5_dattn import patching
    module = importlib.import_module(TASKS[task])
    printer = getattr(module, "print_args", None)
    collect = contextlib.nullcontext()
    if echo is not None and printer is not None:
        name = TASKS[task].split(".", 1)[-1].replace(".", "/")  # 'segment/predict', as YOLOv5 labels it

        def print_args(args=None, *_, **__):
            echo.append(colorstr(f"{name}: ") + ", ".join(f"{k}={v}" for k, v in (args or {}).items()))

        collect = patching.temporarily(module, "print_args", print_args, why="the options line waits for the checks",
                                       step="entrypoint.parsing")
    with collect, parsing(argv, prog or f"scripts/{task.replace('-', '/')}.py", lambda p: add_our_flags(p, task)):
        try:
            opt = module.parse_opt()
        except AssertionError as e:  # some parse_opt check files themselves (val: check_yaml(--data))
            missing = str(e).partition("File not found: ")[2].strip()
            if not missing:
                raise
            flag = next((a for a, v in zip(argv, argv[1:]) if a.startswith("--") and v == missing), "a path")
            raise UserError(f"{flag} {missing} not found: check the path") from None
    ours = argparse.Namespace(**{k: opt.__dict__.pop(k, None) for k in OUR_FLAGS})
    return opt, ours


# ---- checks before any work --------------------------------------------------------------------
def _weights_list(opt) -> List[str]:
    weights = getattr(opt, "weights", None)
    weights = weights if isinstance(weights, (list, tuple)) else [weights]
    return [str(w) for w in weights if w not in (None, "")]


def _is_remote(name: str) -> bool:
    return name.lower().startswith(("http://", "https://", "rtsp://", "rtmp://", "grpc://", "triton:"))


def check_weights(opt, task: str):
    """Every --weights (and --resume) file exists; .pt files load safely and hold a YOLOv5 model; a --resume
    checkpoint can be resumed (`resume.check_resume`).

    Returns: the loaded PyTorch models (for later checks), possibly empty.
    """
    from .checkpoints import check_model_checkpoint
    paths = _weights_list(opt)
    resume = getattr(opt, "resume", False)
    if task in TRAIN_TASKS and resume and not getattr(opt, "evolve", None):  # YOLOv5 ignores it with --evolve
        from .resume import check_resume
        return [check_resume(opt, task)]
    if task in TRAIN_TASKS and resume:
        paths = [resume] if isinstance(resume, str) else []
    from .input_checks import check_weights_format
    if task not in TRAIN_TASKS and not paths:
        raise UserError("--weights is empty: pass the .pt (or exported .onnx / .torchscript) file to use, "
                        "e.g. runs/train/exp/weights/best.pt")
    models = []
    for w in paths:
        if _is_remote(w):
            continue
        path = Path(w)
        flag = "--resume" if task in TRAIN_TASKS and resume else "--weights"
        if not path.exists():
            raise UserError(f"{flag} {w} not found: pass an existing .pt, .onnx or .torchscript file "
                            f"(this plugin never downloads weights)")
        if path.suffix == ".pt" and path.is_file():
            models.append(check_model_checkpoint(path))
        elif task not in TRAIN_TASKS:
            check_weights_format(path, opt, task)
        else:
            raise UserError(f"{flag} {w}: training starts from a PyTorch checkpoint (.pt file): pass one, or "
                            f"--weights '' with --cfg to train from scratch")
    return models


def check_inputs(opt, task: str, general=None) -> None:
    """--data / --cfg / --source name things that exist and can be read (before YOLOv5 creates its output
    folder: `input_checks`). `general`: the host's `utils.general` (a clone's finds its own data/ and hyps and
    resolves `path:` as that clone will); default the pip package's."""
    if general is None:
        from yolov5.utils import general

    from . import input_checks
    if task in TRAIN_TASKS and int(os.environ.get("LOCAL_RANK", -1)) != -1:
        import torch
        if torch.cuda.device_count() <= int(os.environ["LOCAL_RANK"]):
            raise UserError(f"torch.distributed.run started rank {os.environ['LOCAL_RANK']} but only "
                            f"{torch.cuda.device_count()} CUDA GPU(s) are visible: YOLOv5 trains one GPU per "
                            f"process, so use --nproc_per_node <= the GPU count, or run without "
                            f"torch.distributed.run on CPU")
    if task in TRAIN_TASKS and getattr(opt, "resume", False):
        return
    if task in TRAIN_TASKS + ("val", "segment-val"):
        data = str(opt.data)
        if not _is_remote(data):
            if not Path(data).is_file():
                raise UserError(f"--data {data} not found: pass the path of a dataset YAML or a shipped name "
                                f"such as demo_shapes.yaml")
            input_checks.check_data_yaml(data)
            checked = general.check_dataset(data)  # raises UserError when the images are not on disk
            input_checks.check_dataset_files(data, checked, opt, task)
    if task in TRAIN_TASKS and opt.cfg:
        try:  # YOLOv5 also accepts its built-in names (yolov5n.yaml); later checks need the path
            opt.cfg = general.check_yaml(opt.cfg)
        except AssertionError:
            raise UserError(f"--cfg {opt.cfg} not found: pass a model YAML path or a shipped name such as "
                            f"yolov5n_c3_dattn.yaml (yolov5-dattn configs lists them)") from None
    if task in TRAIN_TASKS and opt.hyp:
        try:  # YOLOv5's own names (hyp.scratch-high.yaml) are found in its package
            general.check_yaml(opt.hyp)
        except AssertionError:
            raise UserError(f"--hyp {opt.hyp} not found: pass a hyperparameter YAML path or a shipped name "
                            f"such as hyp.demo.yaml") from None
    if task in TRAIN_TASKS and not opt.cfg and not _weights_list(opt):
        raise UserError("nothing to build: pass --cfg <model.yaml> (e.g. configs/yolov5n_c3_dattn.yaml) "
                        "or --weights <checkpoint.pt>")
    if task in ("detect", "segment-predict"):
        source = str(opt.source)
        if not (source.isnumeric() or _is_remote(source) or source.endswith(".streams") or source == "screen"
                or source.startswith("screen ") or any(c in source for c in "*?[") or Path(source).exists()):
            raise UserError(f"--source {source} not found: pass an image, a folder, a glob, a video, "
                            f"a webcam index (0) or a stream URL")
        input_checks.check_source(source)


def export_formats_requested(opt) -> List[str]:
    """--include as a lower-case list; YOLOv5 also accepts one comma-separated word ('torchscript,onnx')."""
    include = opt.include if isinstance(opt.include, (list, tuple)) else [opt.include]
    return [x.strip().lower() for item in include for x in str(item).split(",") if x.strip()]


def check_export(opt, models, sampler: Optional[str] = None) -> None:
    """ONNX export of DAttention with the grid_sample sampler needs opset >= 16 (`sampler`: --sampler, None for
    the formats' default, `export_sampler`); every --include format must be able to run here
    (`deploy.check_formats`: its tools installed, nothing installed at run time)."""
    from yolov5_dattn.export_sampler import export_sampler
    from yolov5_dattn.nn.dattention import DAttention
    from .deploy import check_formats
    include = export_formats_requested(opt)
    has_dattention = any(isinstance(m, DAttention) for model in models for m in model.modules())
    if ({"onnx", "openvino", "mnn"} & set(include) and has_dattention and opt.opset < MIN_ONNX_OPSET
            and export_sampler(include, sampler) == "grid_sample"):
        raise UserError(f"--opset {opt.opset} cannot express grid_sample (used by DAttention): "
                        f"use --opset {MIN_ONNX_OPSET} or higher (default 17), or --sampler gather")
    if "ncnn" in include and sampler == "gather":
        raise UserError("--sampler gather: NCNN has no layer for the Gather sampler's index arithmetic; --include "
                        "ncnn uses NCNN's own GridSample layer: remove --sampler (or export ncnn separately)")
    check_formats(opt, include, has_dattention, models)


# ---- running --------------------------------------------------------------------------------------
def run_export(module, opt, sampler: Optional[str] = None) -> None:
    """YOLOv5's export.main loop, but failing (UserError) when a requested format was not written.

    DAttention samples its keys with `sampler` (--sampler; None: the formats' default, `export_sampler`).
    A format that failed after writing part of its output (e.g. an .onnx that then failed its check) has
    that file removed, so nothing half-written is left behind.
    """
    from yolov5_dattn.export_sampler import export_sampler
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    from .deploy import openvino_half_on_cpu, output_path
    from .mnn_export import export_mnn
    from .ncnn_export import export_ncnn
    include = export_formats_requested(opt)
    ours = {"ncnn": export_ncnn,  # formats YOLOv5's export.run does not have
            "mnn": lambda w, imgsz, half: export_mnn(w, imgsz, half=half, dynamic=bool(opt.dynamic),
                                                     batch_size=opt.batch_size, opset=opt.opset)}
    native = [fmt for fmt in include if fmt not in ours]
    for weights in _weights_list(opt):
        start = time.time()
        written = []
        with openvino_half_on_cpu(opt, include), sampler_set_to(export_sampler(include, sampler)):
            if native:
                written = list(module.run(**{**vars(opt), "weights": weights, "include": native}))
            for fmt in include:
                if fmt in ours:
                    ours[fmt](weights, opt.imgsz, half=bool(opt.half))
        missing = [fmt for fmt in native if not any(_is_format(f, fmt) for f in written)]
        # OpenVINO and TensorRT are converted from an ONNX file YOLOv5 writes first: not wanted when they failed
        intermediate = ["onnx"] if {"openvino", "engine"} & set(missing) and "onnx" not in include else []
        for fmt in missing + intermediate:
            partial = output_path(weights, fmt)
            if partial.is_file() and partial.stat().st_mtime >= start:
                partial.unlink()
        if missing:
            raise UserError(f"--include {' '.join(missing)}: export of {weights} failed and wrote no file "
                            f"(see the 'export failure' line above)")


def _is_format(path: str, fmt: str) -> bool:
    from .deploy import format_suffix
    path = str(path).rstrip("/" + os.sep)  # folder formats come back as 'best_openvino_model/'
    return path.endswith(format_suffix(fmt)) and Path(path).exists()


def execute(task: str, opt, callbacks=None, sampler: Optional[str] = None) -> None:
    """Call the package's own entry point for `task` with a parsed, checked `opt` (`sampler`: export's
    --sampler)."""
    module = importlib.import_module(TASKS[task])
    if task in TRAIN_TASKS:
        from yolov5.utils.callbacks import Callbacks
        module.main(opt, callbacks if callbacks is not None else Callbacks())
    elif task == "export":
        run_export(module, opt, sampler)
    elif task in ("val", "detect"):
        # their main() re-parses the command line; hand it the namespace we already checked
        parse_opt, module.parse_opt = module.parse_opt, lambda: opt
        try:
            module.main()
        finally:
            module.parse_opt = parse_opt
    else:  # segment val / predict take opt
        module.main(opt)


def check_run(opt, task: str, ours, general=None) -> None:
    """Every check before `task` runs on parsed `opt` (our flags in `ours`): --trust-checkpoint takes effect,
    then numbers, --project, weights, inputs, export formats and `preflight` (which may adjust `opt`).
    `general`: the host's `utils.general` for `check_inputs`. Raises UserError (one line) for bad input."""
    from . import input_checks
    from .checkpoints import TRUST_ENV, TRUST_FLAG, trusted
    from .preflight import preflight
    if ours.trust_checkpoint:  # an env var, so DDP workers and YOLOv5's own loads see it too
        os.environ[TRUST_ENV] = "1"
    elif trusted() and int(os.environ.get("RANK", -1)) in (-1, 0):
        print(f"notice: {TRUST_ENV}=1 is set: checkpoints the safe loader refuses are loaded with full pickle, "
              f"which can run code (as with {TRUST_FLAG}); unset it to load only what is safe", file=sys.stderr)
    input_checks.check_numbers(opt, task)
    input_checks.check_project(opt, task)
    models = check_weights(opt, task)
    check_inputs(opt, task, general)
    if task == "export":
        check_export(opt, models, getattr(ours, "sampler", None))
    preflight(opt, task, models=models)


def main(task: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None, callbacks=None) -> int:
    """Run `task` ('train', 'val', 'detect', 'export', 'segment-train', 'segment-val',
    'segment-predict') with command-line `argv` (default sys.argv[1:]).

    Returns the exit status: 0 on success, 2 with `error: <one line>` on stderr for bad input.
    `callbacks` (train tasks): a yolov5 `Callbacks` to use instead of a fresh one.
    """
    from . import compat
    compat.apply_entrypoints()
    from . import data_yaml
    from .checkpoints import TRUST_ENV

    data_yaml.install()

    argv = sys.argv[1:] if argv is None else list(argv)
    trust_before = os.environ.get(TRUST_ENV)  # --trust-checkpoint holds for this run only
    try:
        echo: List[str] = []  # YOLOv5's options line, printed once the checks pass
        opt, ours = parse(task, argv, prog, echo=echo)
        check_run(opt, task, ours)
        from yolov5.utils.general import LOGGER
        for line in echo:
            LOGGER.info(line)
        execute(task, opt, callbacks, getattr(ours, "sampler", None))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except AssertionError as e:  # YOLOv5 reports bad input with assert <condition>, '<message>'
        if not str(e).strip():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if trust_before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = trust_before
    return 0
