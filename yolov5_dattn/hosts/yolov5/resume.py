"""Checks of a `--resume` checkpoint before any work: every way YOLOv5's resume would crash is one line.

YOLOv5 7.0.14 (train.py and segment/train.py `main`) resumes by replacing *all* command-line options with
the run's `opt.yaml` (next to `weights/`), or with the checkpoint's own `opt` when that file is missing, then
continues from `epoch + 1` up to the `epochs` recorded there; `--epochs` and the other flags given with
`--resume` are ignored. It cannot continue a run that is done: a stripped `last.pt` (epoch -1, no optimizer)
fails an assert, and an unstripped one of the final epoch (the process died between the last save and the
stripping) crashes with `UnboundLocalError: ... 'epoch'` because no epoch is left to run.
"""
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import yaml
from torch import nn

from yolov5_dattn.errors import UserError

SCRIPTS = {"train": "scripts/train.py", "segment-train": "scripts/segment/train.py"}


def latest_last(search_dir: str = ".") -> Path:
    """The most recent `last*.pt` under `search_dir` (what a bare `--resume` continues, as YOLOv5 picks it)."""
    from yolov5.utils.general import get_latest_run
    last = get_latest_run(search_dir)
    if not last:
        raise UserError(f"--resume: no last.pt under {Path(search_dir).resolve()} to resume: pass the "
                        f"checkpoint, e.g. --resume runs/train/exp/weights/last.pt")
    return Path(last)


def _load(last: Path) -> Any:
    """The checkpoint, or UserError; a truncated file is named as such (the generic message says re-save)."""
    from .checkpoints import load
    try:
        return load(last, map_location="cpu")
    except UserError:
        if last.stat().st_size == 0 or not zipfile.is_zipfile(last):
            raise UserError(f"--resume {last} is truncated or not a PyTorch checkpoint (e.g. a copy or save "
                            f"that was cut short), so there is nothing to resume: start the run again") from None
        raise


def _is_segmentation(model: nn.Module) -> bool:
    from yolov5.models.yolo import Segment
    return any(isinstance(m, Segment) for m in model.modules())


def _run_options(last: Path, ckpt: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    """The options YOLOv5 will resume with and where they come from: `<run>/opt.yaml`, else the checkpoint's."""
    opt_yaml = last.parent.parent / "opt.yaml"
    if opt_yaml.is_file():
        try:
            options = yaml.safe_load(opt_yaml.read_text(errors="ignore"))
        except yaml.YAMLError as e:
            raise UserError(f"--resume {last}: {opt_yaml} is not valid YAML ({' '.join(str(e).split())[:120]}): "
                            f"restore it, or delete it to resume with the options stored in the "
                            f"checkpoint") from None
        if not isinstance(options, dict):
            raise UserError(f"--resume {last}: {opt_yaml} holds no training options: restore it, or delete it to "
                            f"resume with the options stored in the checkpoint")
        return options, str(opt_yaml)
    options = ckpt.get("opt")
    if not isinstance(options, dict):
        raise UserError(f"--resume {last}: there is no {opt_yaml} and the checkpoint stores no training options, "
                        f"so YOLOv5 cannot tell how to continue it: start a new run with --weights {last}")
    return options, f"the options stored in {last}"


def check_resume(opt, task: str) -> nn.Module:
    """UserError (one line) unless YOLOv5 can resume `opt.resume`; sets `opt.resume` to the path checked.

    Checks, without writing anything: the file loads and is a YOLOv5 training checkpoint of this task
    (detection vs segmentation), the run's options (opt.yaml, else the checkpoint's) exist and were written
    by this task's trainer, epochs are left to run, and the run's dataset is on disk.
    Returns: the checkpoint's model ('ema' else 'model'), for later checks.
    """
    from yolov5.utils import general
    last = Path(opt.resume) if isinstance(opt.resume, str) else latest_last()
    if not last.is_file():
        raise UserError(f"--resume {last} not found: pass the last.pt of an interrupted run "
                        f"(e.g. runs/train/exp/weights/last.pt)")
    opt.resume = str(last)  # YOLOv5 continues exactly the file checked here
    script = SCRIPTS[task]
    ckpt = _load(last)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    is_model = (isinstance(model, nn.Module) and hasattr(model, "stride")
                and isinstance(getattr(model, "yaml", None), dict))  # train.py rebuilds the model from .yaml
    if not is_model or not isinstance(ckpt.get("epoch"), int) or "optimizer" not in ckpt:
        found = f"a dict with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"--resume {last} is not a YOLOv5 training checkpoint (found {found}; expected "
                        f"model/epoch/optimizer): pass the weights/last.pt of a run of {script}")
    segmentation = _is_segmentation(model)
    if segmentation != (task == "segment-train"):
        kind, other = ("segmentation", "segment-train") if segmentation else ("detection", "train")
        raise UserError(f"--resume {last} is a {kind} checkpoint: resume it with {SCRIPTS[other]} --resume {last}")

    options, source = _run_options(last, ckpt)
    missing = sorted(k for k in vars(opt) if k not in options)
    if missing:
        raise UserError(f"--resume {last}: {source} lacks options of {script} ({', '.join(missing[:5])}), so it "
                        f"was written by another trainer or version: start a new run with --weights {last}")
    epochs, data = options["epochs"], str(options["data"])
    done = ckpt["epoch"] + 1  # epochs completed
    if ckpt["epoch"] < 0 or ckpt["optimizer"] is None or done >= epochs:
        state = ("was finished and stripped by YOLOv5" if ckpt["epoch"] < 0 or ckpt["optimizer"] is None
                 else "stopped after its last epoch, before YOLOv5 finalized it")
        raise UserError(f"--resume {last}: the run already trained all {epochs} epoch{'s' * (epochs != 1)} "
                        f"({state}), so there is nothing to resume, and --resume cannot extend a run (it ignores "
                        f"--epochs): to train more, start a new run from it: {script} --weights {last} --data {data} "
                        f"--epochs N")

    from .run_checks import is_remote
    if not is_remote(data):
        if not Path(data).is_file():
            raise UserError(f"--resume {last}: the run's dataset {data} (from {source}) is not found from "
                            f"{Path.cwd()}: run from the folder the training started in, or fix 'data' there")
        general.check_dataset(data)  # UserError when the images are not on disk
    return model
