"""PyTorch -> CoreML ML program through `torch.export`, for both hosts' CoreML exports.

coremltools 9.0's TorchScript frontend converts no YOLO model under NumPy 2.4 (its `aten::Int` converter calls int()
on a 1-element array; coremltools issue 2633), and both hosts' own CoreML exports trace with TorchScript. Its
`torch.export` frontend has no such step; it needs PyTorch's default decompositions (it has no converter for the
raw `__and__` node the Gather sampler's masks leave).

    mlmodel = to_ml_program(model, im, [ct.TensorType("images", shape=tuple(im.shape))])
"""
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["to_ml_program"]


def to_ml_program(model: nn.Module, im: torch.Tensor, inputs: Sequence, outputs: Optional[Sequence] = None):
    """`model` (eval, fixed shapes) exported at `im` (B, C, H, W) and converted to an fp32 ML program for iOS 17 /
    macOS 14; `inputs` / `outputs`: coremltools input and output types. Not loaded (that compiles the model,
    which needs macOS). Returns the `ct.models.MLModel`."""
    import coremltools as ct
    with torch.no_grad():
        program = torch.export.export(model, (im,)).run_decompositions()
    return ct.convert(program, inputs=list(inputs), outputs=list(outputs) if outputs else None,
                      convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                      compute_precision=ct.precision.FLOAT32, skip_model_load=True)
