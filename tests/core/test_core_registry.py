"""The one Registry type (yolov5_dattn/core/registry.py) and its two instances, one per host."""
import pytest
import yaml
from torch import nn

from yolov5_dattn.core.registry import Registry, RegistryConflict


def _module(name):
    return type(name, (nn.Module,), {"__init__": lambda self, c1=1, c2=1, *a: nn.Module.__init__(self),
                                      "forward": lambda self, x: x})


def test_register_get_contains_and_table():
    reg = Registry("demo")
    A = reg.register_module(_module("A"))

    @reg.register_module(name="Bee", repeats=True, note="a note")
    class B(nn.Module):
        pass

    assert reg.get("A") is A and reg.get("Bee") is B and "Bee" in reg and "B" not in reg and len(reg) == 2
    assert [e.name for e in reg] == ["A", "Bee"]
    lines = repr(reg).splitlines()
    assert lines[0] == "Registry(scope='demo', 2 modules)"
    assert lines[1].split() == ["name", "channels", "repeats", "defined", "at"]
    assert lines[3].startswith("Bee ") and " n " in lines[3] and lines[3].endswith("; a note")
    with pytest.raises(KeyError, match="'C' is not in the demo registry \\(A, Bee\\)"):
        reg.get("C")
    with pytest.raises(TypeError, match="expects an nn.Module class"):
        reg.register_module(int)


def test_a_duplicate_names_where_the_first_is_defined_unless_forced():
    reg = Registry("demo")

    @reg.register_module
    class Block(nn.Module):
        pass

    first = Block
    assert reg.register_module(first) is first and len(reg) == 1  # the same again: a no-op
    other = _module("Block")
    with pytest.raises(RegistryConflict, match=r"'Block' is registered already, for test_core_registry\.test_a_duplicate.*\.Block \("
                                               r".*test_core_registry\.py:\d+\); pass name= another name"):
        reg.register_module(other)
    assert reg.get("Block") is first
    reg.register_module(other, force=True)
    assert reg.get("Block") is other


def test_the_host_owner_and_a_refusing_host_leave_the_registry_unchanged():
    told = []

    def on_change(reg):
        told.append([e.name for e in reg])
        if "Refused" in reg:
            raise RegistryConflict("the host refused it")

    reg = Registry("yolov5", host_owner=lambda name: "yolov5.models.common.C3 (common.py:1)" if name == "C3" else None,
                   on_change=on_change)
    with pytest.raises(RegistryConflict, match="'C3' is YOLOv5's own, yolov5.models.common.C3"):
        reg.register_module(_module("Mine"), name="C3")
    with pytest.raises(RegistryConflict, match="the host refused it"):
        reg.register_module(_module("Refused"))
    assert len(reg) == 0 and told == [["Refused"]]
    reg.register_module(_module("Mine"), name="C3", force=True)
    assert "C3" in reg and told[-1] == ["C3"]


def test_a_user_module_registered_into_ultralytics_builds_from_a_yaml(tmp_path):
    """The ultralytics instance takes a user's block as YOLOv5's does: by name in a YAML, width-scaled."""
    import yolov5_dattn.hosts.ultralytics as host
    from ultralytics import YOLO
    from ultralytics.nn import tasks

    class TwiceConv(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 3, padding=1)

        def forward(self, x):
            return self.conv(x) * 2

    assert host.register_module(TwiceConv) is TwiceConv
    try:
        with pytest.raises(RegistryConflict, match="'C2f' is ultralytics' own"):
            host.register_module(_module("C2f"))
        cfg = {"nc": 2, "scales": {"n": [0.5, 0.25, 1024]},
               "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "TwiceConv", [128]], [-1, 1, "Conv", [128, 3, 2]]],
               "head": [[-1, 1, "Classify", [2]]]}
        path = tmp_path / "twice-cls.yaml"
        path.write_text(yaml.safe_dump(cfg))
        model = YOLO(str(path), task="classify").model
        layer = model.model[1]
        assert isinstance(layer, TwiceConv) and layer.conv.out_channels == 32  # 128 × width 0.25
    finally:
        host.REGISTRY.remove("TwiceConv")
    assert "TwiceConv" not in host.REGISTRY and TwiceConv not in getattr(tasks, host.registry.BASE_SET)
