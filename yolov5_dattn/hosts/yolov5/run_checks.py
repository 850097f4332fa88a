"""The checks of a YOLOv5 run's files before anything is written: --weights / --resume, --data / --cfg / --hyp /
--source, and the export formats. Each raises `UserError` (one line naming the flag) for bad input; `error_line` turns
such an error, or one of YOLOv5's own input assertions, into what the user sees.
"""
import os
import sys
from pathlib import Path
from typing import List, Optional

from yolov5_dattn.core.onnx_opset import MIN_ONNX_OPSET
from yolov5_dattn.errors import UserError, one_line

from .entrypoint import TRAIN_TASKS

__all__ = ["check_export", "check_inputs", "check_run", "check_weights", "error_line", "export_formats_requested", "is_remote",
           "weights_list"]


def weights_list(opt) -> List[str]:
    """--weights as a list of non-empty strings (YOLOv5 takes one path or several)."""
    weights = getattr(opt, "weights", None)
    weights = weights if isinstance(weights, (list, tuple)) else [weights]
    return [str(w) for w in weights if w not in (None, "")]


def is_remote(name: str) -> bool:
    """A URL or stream that YOLOv5 reads itself (nothing on disk to check)."""
    return name.lower().startswith(("http://", "https://", "rtsp://", "rtmp://", "grpc://", "triton:"))


def error_line(e: BaseException) -> Optional[str]:
    """`error: <one line>` for bad input: a `UserError`, or one of YOLOv5's own `assert <condition>, '<message>'`
    checks; None for anything else (an assertion without a message is a bug, not bad input)."""
    if isinstance(e, UserError) or (isinstance(e, AssertionError) and str(e).strip()):
        return f"error: {one_line(e)}"
    return None


def check_weights(opt, task: str):
    """Every --weights (and --resume) file exists; .pt files load safely and hold a YOLOv5 model; a --resume
    checkpoint can be resumed (`resume.check_resume`).

    Returns: the loaded PyTorch models (for later checks), possibly empty.
    """
    from .checkpoints import check_model_checkpoint
    paths = weights_list(opt)
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
        if is_remote(w):
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
        if not is_remote(data):
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
    if task in TRAIN_TASKS and not opt.cfg and not weights_list(opt):
        raise UserError("nothing to build: pass --cfg <model.yaml> (e.g. configs/yolov5n_c3_dattn.yaml) "
                        "or --weights <checkpoint.pt>")
    if task in ("detect", "segment-predict"):
        source = str(opt.source)
        if not (source.isnumeric() or is_remote(source) or source.endswith(".streams") or source == "screen"
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
    for fmt in ("tflite", "coreml"):
        if fmt in include and (getattr(opt, "dynamic", False) or getattr(opt, "int8", False)):
            flag = "--dynamic" if getattr(opt, "dynamic", False) else "--int8"
            raise UserError(f"--include {fmt} {flag}: the {'LiteRT' if fmt == 'tflite' else 'CoreML'} export is fp32 "
                            f"at a fixed batch and size: remove {flag}" + (
                                " (int8 LiteRT: the ultralytics host's yolov5-dattn yolo export format=litert "
                                "quantize=8)" if fmt == "tflite" else ""))
    check_formats(opt, include, has_dattention, models)


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
