"""Our flags in YOLOv5's own parsers (the pip scripts' and a clone's), in their own --help section."""
import argparse
from pathlib import Path

from .entrypoint import TRAIN_TASKS

__all__ = ["OUR_FLAGS", "add_our_flags"]

OUR_FLAGS = ("trust_checkpoint", "sampler")  # "sampler": export only (None elsewhere)


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
