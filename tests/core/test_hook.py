"""The parse_model hook: registration, idempotence, YAML forms, user modules, unsupported YOLOv5."""
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import yolov5_dattn  # noqa: F401,I001  first: installs the integration when yolov5 is imported
import yolov5.models.yolo as yolo
from yolov5_dattn import C3_DAttention, register, register_module
from yolov5_dattn import patching
from yolov5_dattn.hosts.yolov5.registry import UnsupportedYOLOv5

ROOT = Path(__file__).resolve().parents[2]


def build(tmp_path, cfg_dict, name="m.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    return yolo.Model(str(path))


def small_cfg(layer8, nc=3):
    d = yaml.safe_load((ROOT / "configs/yolov5n_c3_dattn.yaml").read_text())
    d["nc"] = nc
    d["backbone"][8] = layer8
    return d


def test_register_is_idempotent(tmp_path):
    """Registering again changes nothing more (the journal stays as it is) and models build as before."""
    before = len(patching.changes("yolov5.models.yolo"))
    register()
    register()
    assert len(patching.changes("yolov5.models.yolo")) == before
    m = build(tmp_path, small_cfg([-1, 3, "C3_DAttention", [1024, [20, 20]]]))
    assert isinstance(m.model[8], C3_DAttention) and len(m.model[8].m) == 1  # repeats passed as n, as for C3


def test_c3_dattention_is_treated_like_c3(tmp_path):
    m = build(tmp_path, small_cfg([-1, 3, "C3_DAttention", [1024, [20, 20]]]))
    block = m.model[8]
    assert isinstance(block, C3_DAttention)
    assert block.cv3.conv.out_channels == 256  # 1024 × width 0.25, divisible by 8
    assert len(block.m) == 1  # 3 × depth 0.33 repeats, passed as n (not stacked)
    assert block.cv1.conv.in_channels == 256  # c1 inserted from the previous layer


def test_mapping_fmapsize_selects_a_variant(tmp_path):
    layer = [-1, 3, "C3_DAttention", [1024, {"q_size": [4, 4], "fixed_pe": True, "dwc_pe": False, "n_heads": 4}]]
    m = build(tmp_path, small_cfg(layer))
    att = m.model[8].m[0].attention
    assert att.pe_kind == "fixed" and att.n_heads == 4
    assert att.rpe_table.shape == (4, 16, 16)
    out = m.eval()(torch.zeros(1, 3, 128, 128))[0]  # P5 4×4: the declared size
    assert torch.isfinite(out).all()


def test_bottleneck_and_plain_dattention_in_yaml(tmp_path):
    d = small_cfg([-1, 1, "Bottleneck_DAttention", [1024, [4, 4]]])
    d["backbone"].insert(9, [-1, 1, "DAttention", [256, [4, 4]]])  # plain: channels written out
    d["backbone"][10][0] = -1
    # one layer more: shift the head's absolute references past layer 9
    for layer in d["head"]:
        f = layer[0]
        layer[0] = [x + 1 if x > 8 else x for x in f] if isinstance(f, list) else f
    m = build(tmp_path, d)
    assert type(m.model[8]).__name__ == "Bottleneck_DAttention" and type(m.model[9]).__name__ == "DAttention"
    assert torch.isfinite(m.eval()(torch.zeros(1, 3, 128, 128))[0]).all()


def test_user_module_registration(tmp_path):
    @register_module
    class Scale2(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 1)

        def forward(self, x):
            return self.conv(x) * 2

    m = build(tmp_path, small_cfg([-1, 1, "Scale2", [1024]]))
    assert isinstance(m.model[8], Scale2) and m.model[8].conv.out_channels == 256

    @register_module(repeats=True, name="C3Twice")
    class C3Like(nn.Module):
        def __init__(self, c1, c2, n=1):
            super().__init__()
            self.m = nn.Sequential(*(nn.Conv2d(c1 if i == 0 else c2, c2, 1) for i in range(n)))

        def forward(self, x):
            return self.m(x)

    m = build(tmp_path, small_cfg([-1, 3, "C3Twice", [1024]]), name="m2.yaml")
    assert isinstance(m.model[8], C3Like) and len(m.model[8].m) == 1  # n = 3 × depth 0.33, inserted as argument


def test_unknown_parse_model_shape_is_refused():
    fake = types.ModuleType("fake_yolo")
    exec("def parse_model(d, ch):\n    return d\n", vars(fake))
    fake.__file__ = "<fake>"
    with pytest.raises(UnsupportedYOLOv5, match="yolov5"):
        register(fake)
    assert not patching.changes("fake_yolo")  # refused before changing anything


def test_flat_models_import_is_the_same_module(tmp_path):
    """attempt_load does `from models.yolo import Model`: that Model builds our blocks, and its models are the
    package's (a second copy of yolo.py would know neither)."""
    from models.yolo import Model as FlatModel  # noqa: E402  (yolov5 puts its folder on sys.path)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(small_cfg([-1, 3, "C3_DAttention", [1024, [20, 20]]]), sort_keys=False))
    m = FlatModel(str(path))
    assert isinstance(m, yolo.Model) and isinstance(m.model[8], C3_DAttention)
