"""The shared runner behind `scripts/*.py`: YOLOv5's own entry points, with our modules, offline.

`main(task)` does, in order:
1. apply the compatibility layer (`compat.apply_entrypoints`);
2. parse the command line with YOLOv5's own parser for the task (its `parse_opt`), to which we add our
   few flags (`--trust-checkpoint`), so `--help` lists both and every YOLOv5 flag keeps its meaning;
3. check the files the run needs (weights, checkpoints, data, cfg, source) and call
   `yolov5_dattn.preflight.preflight(opt, task)`, all before anything is written;
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

from .errors import UserError

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
OUR_FLAGS = ("trust_checkpoint",)
MIN_ONNX_OPSET = 16  # grid_sample (DAttention's key sampling) needs opset 16


def add_our_flags(parser: argparse.ArgumentParser, task: str) -> None:
    """Our flags, in their own --help section. Train tasks default to `--weights ''` (from scratch):
    YOLOv5's default `yolov5s.pt` would need a download and does not match a DAttention config."""
    group = parser.add_argument_group("yolov5-dattn")
    group.add_argument("--trust-checkpoint", action="store_true",
                       help="load --weights/--resume checkpoints with full pickle even if they name classes "
                            "outside the safe allowlist (only for files whose source you trust: a pickle can "
                            "run code)")
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

    This lets YOLOv5's `parse_opt` build its parser and post-process the result as it always does.
    """
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        if not getattr(self, "_yolov5_dattn_extended", False):
            self._yolov5_dattn_extended = True
            self.prog = prog
            extend(self)
        opt, rest = real(self, list(argv) if args is None else args, namespace)
        # bare shipped names (--cfg yolov5l_c3_dattn.yaml) -> their paths here, not in check_inputs:
        # some parse_opt check --data themselves (val: check_yaml) before returning
        from .shipped import resolve_options
        resolve_options(opt)
        return opt, rest

    argparse.ArgumentParser.parse_known_args = parse_known_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = real


def parse(task: str, argv: Sequence[str], prog: Optional[str] = None):
    """Parse `argv` for `task` with YOLOv5's parser plus ours.

    Returns: (opt, ours) — YOLOv5's namespace (our flags removed, so it can go to YOLOv5's run(**vars))
    and a namespace of our flags.
    """
    module = importlib.import_module(TASKS[task])
    with parsing(argv, prog or f"scripts/{task.replace('-', '/')}.py", lambda p: add_our_flags(p, task)):
        try:
            opt = module.parse_opt()
        except AssertionError as e:  # some parse_opt check files themselves (val: check_yaml(--data))
            missing = str(e).partition("File not found: ")[2].strip()
            if not missing:
                raise
            flag = next((a for a, v in zip(argv, argv[1:]) if a.startswith("--") and v == missing), "a path")
            raise UserError(f"{flag} {missing} not found: check the path") from None
    ours = argparse.Namespace(**{k: opt.__dict__.pop(k) for k in OUR_FLAGS})
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
    models = []
    for w in paths:
        if _is_remote(w):
            continue
        path = Path(w)
        flag = "--resume" if task in TRAIN_TASKS and resume else "--weights"
        if not path.exists():
            raise UserError(f"{flag} {w} not found: pass an existing .pt, .onnx or .torchscript file "
                            f"(this plugin never downloads weights)")
        if path.suffix == ".pt":
            models.append(check_model_checkpoint(path))
    return models


def check_inputs(opt, task: str) -> None:
    """--data / --cfg / --source name things that exist (before YOLOv5 creates its output folder)."""
    from yolov5.utils import general
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
            general.check_dataset(data)  # raises UserError when the images are not on disk
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


def export_formats_requested(opt) -> List[str]:
    """--include as a lower-case list; YOLOv5 also accepts one comma-separated word ('torchscript,onnx')."""
    include = opt.include if isinstance(opt.include, (list, tuple)) else [opt.include]
    return [x.strip().lower() for item in include for x in str(item).split(",") if x.strip()]


def check_export(opt, models) -> None:
    """ONNX export of DAttention needs opset >= 16 (grid_sample)."""
    from .dattention import DAttention
    include = export_formats_requested(opt)
    has_dattention = any(isinstance(m, DAttention) for model in models for m in model.modules())
    if "onnx" in include and has_dattention and opt.opset < MIN_ONNX_OPSET:
        raise UserError(f"--opset {opt.opset} cannot express grid_sample (used by DAttention): "
                        f"use --opset {MIN_ONNX_OPSET} or higher (default 17)")


# ---- running --------------------------------------------------------------------------------------
def run_export(module, opt) -> None:
    """YOLOv5's export.main loop, but failing (UserError) when a requested format was not written.

    A format that failed after writing part of its output (e.g. an .onnx that then failed its check) has
    that file removed, so nothing half-written is left behind.
    """
    include = export_formats_requested(opt)
    for weights in _weights_list(opt):
        start = time.time()
        written = module.run(**{**vars(opt), "weights": weights, "include": include})
        missing = [fmt for fmt in include if not any(_is_format(f, fmt) for f in written)]
        for fmt in missing:
            partial = Path(weights).with_suffix(_suffix(fmt))
            if partial.is_file() and partial.stat().st_mtime >= start:
                partial.unlink()
        if missing:
            raise UserError(f"--include {' '.join(missing)}: export of {weights} failed and wrote no file "
                            f"(see the 'export failure' line above)")


def _suffix(fmt: str) -> str:
    """The file suffix (or folder ending) YOLOv5 gives an export format, e.g. 'onnx' -> '.onnx'."""
    from yolov5.export import export_formats
    table = export_formats()
    return table.loc[table["Argument"] == fmt, "Suffix"].iloc[0]


def _is_format(path: str, fmt: str) -> bool:
    return str(path).endswith(_suffix(fmt)) and Path(path).exists()


def execute(task: str, opt, callbacks=None) -> None:
    """Call the package's own entry point for `task` with a parsed, checked `opt`."""
    module = importlib.import_module(TASKS[task])
    if task in TRAIN_TASKS:
        from yolov5.utils.callbacks import Callbacks
        module.main(opt, callbacks if callbacks is not None else Callbacks())
    elif task == "export":
        run_export(module, opt)
    elif task in ("val", "detect"):
        # their main() re-parses the command line; hand it the namespace we already checked
        parse_opt, module.parse_opt = module.parse_opt, lambda: opt
        try:
            module.main()
        finally:
            module.parse_opt = parse_opt
    else:  # segment val / predict take opt
        module.main(opt)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def main(task: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None, callbacks=None) -> int:
    """Run `task` ('train', 'val', 'detect', 'export', 'segment-train', 'segment-val',
    'segment-predict') with command-line `argv` (default sys.argv[1:]).

    Returns the exit status: 0 on success, 2 with `error: <one line>` on stderr for bad input.
    `callbacks` (train tasks): a yolov5 `Callbacks` to use instead of a fresh one.
    """
    from . import compat
    compat.apply_entrypoints()
    from . import data_yaml
    from .preflight import preflight

    data_yaml.install()

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opt, ours = parse(task, argv, prog)
        if ours.trust_checkpoint:  # an env var, so DDP workers and YOLOv5's own loads see it too
            os.environ["YOLOV5_DATTN_TRUST_CHECKPOINT"] = "1"
        models = check_weights(opt, task)
        check_inputs(opt, task)
        if task == "export":
            check_export(opt, models)
        preflight(opt, task, models=models)
        execute(task, opt, callbacks)
    except UserError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except AssertionError as e:  # YOLOv5 reports bad input with assert <condition>, '<message>'
        if not str(e).strip():
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0
