"""`yolov5-dattn yolo <mode> key=value ...`: ultralytics' own `yolo` command with the DAttention blocks.

    yolov5-dattn yolo train model=configs/ultralytics/yolo11n-c3k2-dattn.yaml data=shapes.yaml epochs=1 imgsz=160
    yolov5-dattn yolo val model=runs/detect/train/weights/best.pt data=shapes.yaml
    yolov5-dattn yolo predict model=best.pt source=images/          # images, a folder, a video
    yolov5-dattn yolo export model=best.pt format=onnx               # or openvino
    yolov5-dattn yolo export model=best.pt format=onnx sampler=gather   # no GridSample node (TensorRT, ...)
    yolov5-dattn yolo export model=best.pt format=ncnn               # or format=openvino int8=True data=...
    python scripts/yolo.py train model=...                            # the same, from a checkout

Everything after `yolo` is ultralytics' CLI syntax, unchanged (`yolov5-dattn yolo help` prints ultralytics'
help). Before it runs, `yolov5_dattn.hosts.ultralytics` is installed (the blocks registered, ultralytics offline,
GFLOPs that count the attention). `model=` also takes a shipped config by file name
(`model=yolo11n-c3k2-dattn.yaml`, scale letter included). Bad input (an unknown key, a missing file) is one
`error:` line and exit status 2.

Checkpoints load weights-only with an allowlist: a file that needs a full pickle (classes outside it, a YOLO-NAS
model) is refused in one line unless `--trust-checkpoint` is given (anywhere among the arguments; only for files
whose source you trust: a pickle can run code). A data YAML's `download:` line is never run.
"""
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from yolov5_dattn.errors import UserError

PROG = "yolov5-dattn yolo"
# exceptions ultralytics raises for bad input (an unknown or malformed key, a missing file, a bad value)
USER_ERRORS = (UserError, SyntaxError, FileNotFoundError, ValueError)


def shipped_model(value: str) -> str:
    """`value` of `model=`, or the shipped `configs/ultralytics/` path when it names one of ours by file name
    (`yolo11n-c3k2-dattn.yaml`: the scale letter is kept in the path, ultralytics reads it from there). An
    existing path always wins."""
    from yolov5_dattn.hosts.ultralytics.baseline import shipped_dir, yaml_file
    if not value or Path(value).exists() or "/" in value or "\\" in value:
        return value
    ours = shipped_dir() / value
    return str(ours) if yaml_file(ours) is not None else value  # the file, or its scale-less name beside it


def _arguments(argv: Sequence[str]) -> List[str]:
    out = []
    for a in argv:
        key, sep, value = a.partition("=")
        out.append(f"{key}={shipped_model(value)}" if sep and key == "model" else a)
    return out


def export_sampler_of(argv: Sequence[str]):
    """`argv` without our `sampler=` key, and the sampler DAttention exports with (`export_sampler`: the key, else
    the format's default), or None when the mode is not export. Raises UserError for a bad or misplaced key."""
    from yolov5_dattn.export_sampler import CHOICES, export_sampler
    keys = dict(a.partition("=")[::2] for a in argv if "=" in a)
    rest = [a for a in argv if a.partition("=")[0] != "sampler"]
    if "export" not in [a for a in argv if "=" not in a] + [keys.get("mode")]:
        if "sampler" in keys:
            raise UserError("sampler= applies to `yolo export` only: remove it")
        return rest, None
    chosen = keys.get("sampler")
    if chosen is not None and chosen not in CHOICES:
        raise UserError(f"sampler={chosen}: choose one of {', '.join(CHOICES)} (gather: no GridSample node)")
    if chosen == "gather" and str(keys.get("format", "")).lower() == "ncnn":
        raise UserError("sampler=gather: NCNN has no layer for the Gather sampler's index arithmetic; format=ncnn "
                        "uses NCNN's own GridSample layer: remove sampler=")
    return rest, export_sampler([keys.get("format", "torchscript")], chosen)


def run(argv: Sequence[str]) -> None:
    """Run ultralytics' `yolo` entry point on `argv` (its key=value syntax) with our blocks installed; an export
    samples DAttention's keys with `sampler=` (our key, not passed on) or the format's default.
    Raises what ultralytics raises."""
    import contextlib

    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    argv, sampler = export_sampler_of(argv)
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (installs the host)
    import ultralytics.cfg as cfg

    from yolov5_dattn import patching
    import ultralytics.engine.model as model
    argv = ["yolo", *_arguments(argv)]
    with patching.temporarily(cfg, "ARGV", argv, why="ultralytics' entry point reads its arguments from ARGV"), \
            patching.temporarily(model, "ARGV", argv, why="Model.predict tells a `yolo predict` run (save=True, "
                                 "streamed video) from ARGV"), \
            (sampler_set_to(sampler) if sampler else contextlib.nullcontext()):
        cfg.entrypoint()


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """`yolov5-dattn yolo ...` (default sys.argv[1:]); returns the exit status: 0, or 2 with one `error:` line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    from yolov5_dattn.core.trust import command_line_trust
    from yolov5_dattn.hosts.ultralytics.pretrained_check import message
    try:
        with command_line_trust(argv) as argv:  # --trust-checkpoint: full-pickle loads for this run
            run(argv)
    except USER_ERRORS as e:
        from yolov5_dattn.hosts.ultralytics.checkpoints import refusal_in
        print(f"error: {prog}: {message(refusal_in(e))}", file=sys.stderr)
        return 2
    except TypeError as e:  # ultralytics' refusal of a checkpoint (unsafe, damaged) is a TypeError marked ERROR
        if not str(e).startswith("ERROR"):
            raise
        print(f"error: {prog}: {message(e)}", file=sys.stderr)
        return 2
    return 0
