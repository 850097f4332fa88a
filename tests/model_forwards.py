"""What each forward of a whole model ran: its input, its raw output and the attention kernels its DAttention layers
chose (from `kernel_choice.chosen_kernels`). Lets a test check that two code paths run the same forward."""
from typing import List

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
