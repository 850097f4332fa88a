"""The classes of ours that a checkpoint may hold: what both hosts' weights-only loaders add to their allowlist.

A checkpoint pickles whole modules, so a weights-only load must name each class it may restore: DAttention and
its parts (`yolov5_dattn.nn`), and the host's blocks built on them. Each host adds its own classes (YOLOv5's model
modules, ultralytics' allowlist) and decides how the classes are handed to torch.
"""
import inspect
import types
from typing import List

from torch import nn

__all__ = ["module_classes", "our_classes"]


def module_classes(module: types.ModuleType) -> List[type]:
    """The nn.Module subclasses defined in `module` (not the ones it merely imports), in name order."""
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, nn.Module) and obj.__module__ == module.__name__]


def our_classes(blocks: types.ModuleType) -> List[type]:
    """DAttention, LayerNormProxy, LayerScale and QueryScorer, then the nn.Module classes of a host's `blocks`
    module (`Bottleneck_DAttention`, ...)."""
    from yolov5_dattn.nn import dattention, layernorm, layerscale, query_selection
    return [cls for module in (dattention, layernorm, layerscale, query_selection, blocks)
            for cls in module_classes(module)]
