"""The registry refuses surprises: names YOLOv5 or another class hold already, listing, layer attribution."""
import pytest
import yaml
from torch import nn

import yolov5_dattn  # noqa: F401,I001  installs the integration when yolov5 is imported
import yolov5.models.yolo as yolo
from yolov5_dattn import RegistryConflict, register_module
from yolov5_dattn.hosts.yolov5 import registry
from yolov5_dattn.hosts.yolov5.blocks import C3_DAttention


def _module(name):
    return type(name, (nn.Module,), {"__init__": lambda self, c1, c2, *rest: nn.Module.__init__(self),
                                      "forward": lambda self, x: x})


def _built(name: str, args: list) -> nn.Module:
    """The layer YOLOv5's parse_model builds for `[-1, 1, name, args]` after a Conv (what a model YAML gets)."""
    d = {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
         "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, name, args]],
         "head": [[[1], 1, "Detect", ["nc", "anchors"]]]}
    return yolo.parse_model(d, ch=[3])[0][1]


@pytest.fixture
def clean_registry():
    """Remove what a test registers (the registry and the yolo globals) afterwards."""
    before = {e.name: e for e in registry.REGISTRY}
    yield
    for e in registry.REGISTRY.entries():
        if before.get(e.name) is not e:
            registry.REGISTRY.remove(e.name, notify=False)
            registry.patching.undo(where=lambda c: c.owner is yolo and c.name == e.name)
    for name, e in before.items():
        if name not in registry.REGISTRY:
            registry.REGISTRY.register_module(e.cls, name=name, channels=e.channels, repeats=e.repeats, force=True)
    registry.register(yolo)  # publish the restored registry


def test_a_yolov5_name_is_refused_with_where_it_is_defined(clean_registry):
    from yolov5.models.common import C3 as original_c3
    Mine = _module("Mine")
    with pytest.raises(RegistryConflict) as e:
        register_module(Mine, name="C3")
    message = str(e.value)
    assert "'C3' is YOLOv5's own" in message and "yolov5.models.common.C3" in message
    assert "models/common.py:" in message and "force=True" in message
    assert type(_built("C3", [32])) is original_c3 and "C3" not in registry.REGISTRY  # YAMLs keep YOLOv5's


def test_a_name_registered_by_another_class_is_refused(clean_registry):
    Other = _module("C3_DAttention")
    with pytest.raises(RegistryConflict, match=r"'C3_DAttention' is registered already, for "
                                               r"yolov5_dattn\.hosts\.yolov5\.blocks\.C3_DAttention \(.*blocks\.py:\d+\)"):
        register_module(Other)
    assert type(_built("C3_DAttention", [32, [4, 4]])) is C3_DAttention


def test_same_class_same_name_is_a_no_op():
    n = len(registry.patching.changes("yolov5.models.yolo"))
    assert register_module(C3_DAttention, repeats=True) is C3_DAttention
    assert len(registry.patching.changes("yolov5.models.yolo")) == n


def test_force_replaces_and_builds(clean_registry):
    from yolov5.models.common import C3 as original_c3
    C3Plain = _module("C3Plain")
    register_module(C3Plain, name="C3", force=True)
    assert type(_built("C3", [32])) is C3Plain
    # undoing the registration restores YOLOv5's own
    registry.REGISTRY.remove("C3", notify=False)
    registry.patching.undo(where=lambda c: c.owner is yolo and c.name == "C3")
    assert type(_built("C3", [32])) is original_c3


def test_registered_lists_name_class_flags_and_where():
    rows = {r.name: r for r in registry.REGISTRY.entries()}
    assert rows["C3_DAttention"].cls is C3_DAttention
    assert (rows["C3_DAttention"].channels, rows["C3_DAttention"].repeats) == (True, True)
    assert (rows["DAttention"].channels, rows["DAttention"].repeats) == (False, False)
    assert rows["Bottleneck_DAttention"].where.startswith("yolov5_dattn.hosts.yolov5.blocks.Bottleneck_DAttention (")
    assert rows["DAttention"].where.endswith(tuple(f"dattention.py:{i})" for i in range(1, 2000)))


def test_registry_command_lists_them(capsys):
    from yolov5_dattn.cli import main
    assert main(["registry"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "channels", "repeats", "defined", "at"]
    assert any(line.startswith("C3_DAttention ") and "blocks.py:" in line for line in out)


def test_parse_model_attributes_a_failure_to_its_layer(tmp_path):
    from pathlib import Path
    _failing_layer = registry.failing_layer
    d = yaml.safe_load(open(registry.__file__.replace("hosts/yolov5/registry.py", "configs/yolov5n_c3_dattn.yaml")))
    d["backbone"][8] = [-1, 3, "C3_DAttention", [1024, "not a size"]]
    with pytest.raises(Exception) as e:
        yolo.parse_model(d, ch=[3])
    layer = _failing_layer(e.value)
    assert layer is not None and layer.i == 8 and layer.m is C3_DAttention
    # the traceback still points at YOLOv5's own parse_model lines
    frames = [f for f in e.traceback if f.frame.code.name == "parse_model"]
    assert frames and str(frames[0].path) == yolo.__file__
    # at YOLOv5's own line: the one that reads the layer's arguments
    assert "args[j] = eval(a)" in Path(yolo.__file__).read_text().splitlines()[frames[0].lineno]
    d["backbone"][8] = [-1, 3, "NoSuchModule", [1024]]
    with pytest.raises(NameError) as e:
        yolo.parse_model(d, ch=[3])
    assert (_failing_layer(e.value).i, _failing_layer(e.value).m) == (8, "NoSuchModule")
    assert _failing_layer(ValueError("raised elsewhere")) is None
