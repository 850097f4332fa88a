"""The classes of ours both hosts' weights-only loaders allow (`yolov5_dattn.core.checkpoint_allowlist`)."""
import types

from torch import nn

from yolov5_dattn.core.checkpoint_allowlist import module_classes, our_classes


def _blocks_module() -> types.ModuleType:
    """A host's blocks module: one block defined there, one class it imports, one plain helper class."""
    module = types.ModuleType("fake_host.blocks")
    block = type("Block_DAttention", (nn.Conv2d,), {"__module__": module.__name__})
    helper = type("Helper", (), {"__module__": module.__name__})
    module.Block_DAttention, module.Conv2d, module.Helper = block, nn.Conv2d, helper
    return module


def test_our_classes_are_the_attention_parts_and_the_blocks_defined_there():
    names = [f"{c.__module__}.{c.__qualname__}" for c in our_classes(_blocks_module())]
    assert names == ["yolov5_dattn.nn.dattention.DAttention", "yolov5_dattn.nn.layernorm.LayerNormProxy",
                     "yolov5_dattn.nn.layerscale.LayerScale", "yolov5_dattn.nn.query_selection.QueryScorer",
                     "fake_host.blocks.Block_DAttention"]


def test_module_classes_leave_out_imported_and_non_module_classes():
    assert [c.__name__ for c in module_classes(_blocks_module())] == ["Block_DAttention"]
    assert module_classes(nn) == []  # torch.nn defines its modules in submodules, not in the package itself
