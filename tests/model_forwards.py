"""What each forward of a whole model ran: its input, its raw output and the attention kernels its DAttention layers
chose (from `kernel_choice.chosen_kernels`), and what a DAttention recorded. Lets a test check that two code paths
run the same forward, or hold a figure to the module's own numbers."""
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from torch import nn


def watch(model: nn.Module, chosen: List[str]) -> List[dict]:
    """Hook `model`; returns the list that each forward of it appends {"input", "out", "kernels"} to.

    The hooks are plain functions, so a `deepcopy` of the model (ultralytics' predictor runs one) reports into the
    same list. `out` is the first tensor of the output ((B, no, anchors) for a detection head); `kernels` is the
    slice of `chosen` that forward added.
    """
    runs: List[dict] = []

    def start(mod, args):
        runs.append({"input": args[0], "first": len(chosen)})

    def end(mod, args, out):
        run = runs[-1]
        run["kernels"] = chosen[run.pop("first"):]
        run["out"] = out[0] if isinstance(out, (list, tuple)) else out

    model.register_forward_pre_hook(start)
    model.register_forward_hook(end)
    return runs


def recorded_attention(weights: Path, img: np.ndarray, imgsz: int) -> Tuple[nn.Module, dict]:
    """The one DAttention of a YOLOv5 checkpoint and its own record (positions, attention, selected queries)
    after a forward of `img` (H, W, 3 BGR), letterboxed to `imgsz` as YOLOv5 does."""
    from yolov5.utils.augmentations import letterbox

    from yolov5_dattn.hosts.yolov5.checkpoints import check_model_checkpoint
    from yolov5_dattn.nn.dattention import DAttention
    model = check_model_checkpoint(weights).float().eval()
    (m,) = [m for m in model.modules() if isinstance(m, DAttention)]
    padded, _, _ = letterbox(img, imgsz, auto=False)
    x = torch.from_numpy(padded[..., ::-1].transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
    m.record = True
    with torch.no_grad():
        model(x)
    return m, m.recorded
