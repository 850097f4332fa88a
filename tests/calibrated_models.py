"""Freshly built models whose output depends on the image, for tests that compare an export with PyTorch.

A freshly built model's default BatchNorm statistics (mean 0, variance 1) shrink every activation layer after
layer (to about 1e-7 by the seventh on the n-scale models), so its output hardly depends on the image and an
export that dropped a block (the attention, say) would still match. `calibrated` takes the statistics from random
images instead; `assert_varies` checks that the output then moves with the image."""
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import torch

__all__ = ("calibrated", "assert_varies", "calibrated_ultralytics_checkpoint", "calibrated_yolov5_checkpoint", "copy_into")


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its BatchNorm statistics taken from random images (4 batches of 4, 3×64×64), in eval mode.

    Runs `model` in train mode on those images; returns the same object."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(4, 3, 64, 64, generator=g))
    return model.eval()


def assert_varies(forward: Callable[[torch.Tensor], np.ndarray], b: int, h: int, w: int,
                  more_than: float = 1.0) -> float:
    """Asserts that `forward` of two different random image batches (b, 3, h, w) differs somewhere by more than
    `more_than` (choose it far above the comparison's tolerance); returns that largest difference."""
    a, c = (forward(torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(s))) for s in (10, 11))
    spread = float(np.abs(a - c).max())
    assert spread > more_than, f"the output hardly depends on the image: {spread:.2e}"
    return spread


def calibrated_ultralytics_checkpoint(path: Path) -> Tuple[Path, Callable[[torch.Tensor], np.ndarray]]:
    """A random-init, calibrated yolo11n-c3k2-dattn (the shipped config) saved by ultralytics at `path`, and its
    fused eval forward: (B, 3, H, W) -> the first output as an array."""
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (registers the blocks)
    from ultralytics import YOLO

    from yolov5_dattn.cli.yolo import shipped_model
    torch.manual_seed(0)
    model = YOLO(shipped_model("yolo11n-c3k2-dattn.yaml"))
    calibrated(model.model)
    model.save(str(path))
    fused = YOLO(str(path)).model.fuse().eval()

    def forward(x):
        with torch.no_grad():
            return fused(x)[0].numpy()
    return path, forward


def calibrated_yolov5_checkpoint(path: Path, cfg: Path) -> Tuple[Path, Callable[[torch.Tensor], np.ndarray]]:
    """A random-init, calibrated YOLOv5 model of `cfg` (3 classes) saved at `path` as YOLOv5 saves one, and its
    fused eval forward (the default sampler, grid_sample): (B, 3, H, W) -> the first output as an array."""
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Model
    torch.manual_seed(0)
    model = calibrated(Model(str(cfg), ch=3, nc=3))
    torch.save({"model": model, "epoch": -1}, path)
    fused = attempt_load(str(path), device="cpu", fuse=True).eval()

    def forward(x):
        with torch.no_grad():
            return fused(x)[0].numpy()
    return path, forward


def copy_into(path: Path, folder: Path) -> Path:
    """A byte copy of `path` in `folder` (an export writes beside its checkpoint)."""
    (folder / path.name).write_bytes(path.read_bytes())
    return folder / path.name


def export_copy(checkpoint: Path, folder: Path, *flags) -> Path:
    """Copy the YOLOv5 `checkpoint` into a new `folder` and export it there on the CPU with `yolov5-dattn export`
    `flags`; asserts exit 0 and that the export's sampler was for its run only. Returns the folder."""
    from conftest import run_task
    from yolov5_dattn.nn.sampler_switch import sampler
    folder.mkdir()
    weights = copy_into(checkpoint, folder)
    assert run_task("export", "--weights", weights, "--device", "cpu", *flags) == 0
    assert sampler() == "grid_sample"
    return folder
