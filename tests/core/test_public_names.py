"""The adapters live under `yolov5_dattn/hosts/`; users and checkpoints name them `yolov5_dattn.yolov5` and
`yolov5_dattn.ultralytics`. Each name gives the same module object, and a checkpoint that pickled our blocks
under either spelling loads weights-only."""
import contextlib
import importlib

import torch

from yolov5_dattn.hosts import public_names


@contextlib.contextmanager
def pickled_as(module_name, *classes):
    """While the block runs, `classes` pickle under `module_name` (as a checkpoint written before the move)."""
    before = [c.__module__ for c in classes]
    for c in classes:
        c.__module__ = module_name
    try:
        yield
    finally:
        for c, m in zip(classes, before):
            c.__module__ = m


def test_public_names_are_the_same_modules():
    for public, real in public_names.PUBLIC.items():
        assert importlib.import_module(public) is importlib.import_module(real)
    blocks = importlib.import_module("yolov5_dattn.ultralytics.blocks")
    assert blocks is importlib.import_module("yolov5_dattn.hosts.ultralytics.blocks")
    assert not hasattr(blocks, "__path__")  # a module stays a module, not a package
    assert public_names.real_name("yolov5_dattn.nn") is None
    assert public_names.public_name("yolov5_dattn.hosts.yolov5.blocks") == "yolov5_dattn.yolov5.blocks"


def test_yolov5_checkpoint_with_the_public_module_name_loads_weights_only(tmp_path):
    from yolov5.models.yolo import DetectionModel

    from yolov5_dattn.hosts.yolov5 import checkpoints
    from yolov5_dattn.hosts.yolov5.blocks import Bottleneck_DAttention, C3_DAttention
    model = DetectionModel("yolov5n_c3_dattn.yaml", ch=3, nc=3).eval()
    path = tmp_path / "public.pt"
    with pickled_as("yolov5_dattn.yolov5.blocks", C3_DAttention, Bottleneck_DAttention):
        torch.save({"model": model}, path)
    assert "yolov5_dattn.yolov5.blocks.C3_DAttention" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    loaded = checkpoints.check_model_checkpoint(path, trust=False)
    assert any(type(m) is C3_DAttention for m in loaded.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_ultralytics_allowlist_names_both_spellings():
    from yolov5_dattn.hosts.ultralytics import checkpoints
    from yolov5_dattn.hosts.ultralytics.blocks import C3k2_DAttention
    names = checkpoints.allowed_classes()
    assert names["yolov5_dattn.ultralytics.blocks.C3k2_DAttention"] is C3k2_DAttention
    assert names["yolov5_dattn.hosts.ultralytics.blocks.C3k2_DAttention"] is C3k2_DAttention
