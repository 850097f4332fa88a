"""The ultralytics host: blocks (shapes, parameters vs the stock block), parse_model registration, configs,
GFLOPs, the refusal of an unknown parse_model."""
import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import yolov5_dattn.hosts.ultralytics as host
from yolov5_dattn import patching
from yolov5_dattn.nn.dattention import DAttention
from ultralytics import RTDETR, YOLO
from ultralytics.nn import tasks
from ultralytics.nn.modules.block import C2PSA, C2f, C3k, C3k2, Attention, Bottleneck
from ultralytics.nn.modules.transformer import AIFI

host.use_policy()  # our commands' policy (safe loading, offline, checks first), as the CLI runs

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ultralytics"
FMAP = [4, 4]


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def shapes(output):
    """The nested structure of tensor shapes of a model's output (dicts by key, lists/tuples in order)."""
    if torch.is_tensor(output):
        return tuple(output.shape)
    if isinstance(output, dict):
        return {k: shapes(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return [shapes(o) for o in output]
    return output


def dattn_params(c: int, **kwargs) -> int:
    return params(DAttention(c, FMAP, **kwargs))


# ---- 1. blocks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ours,stock,extra", [
    (lambda: host.Bottleneck_DAttention(32, 32, FMAP), lambda: Bottleneck(32, 32), lambda: dattn_params(32)),
    (lambda: host.C2f_DAttention(32, 64, 2, FMAP, True), lambda: C2f(32, 64, 2, True), lambda: 2 * dattn_params(32)),
    (lambda: host.C3k_DAttention(32, 64, 2, FMAP), lambda: C3k(32, 64, 2), lambda: 2 * dattn_params(32)),
    (lambda: host.C3k2_DAttention(32, 64, 1, FMAP, False), lambda: C3k2(32, 64, 1, False),
     lambda: dattn_params(32)),
    (lambda: host.C3k2_DAttention(32, 64, 1, FMAP, True), lambda: C3k2(32, 64, 1, True),
     lambda: 2 * dattn_params(16)),  # C3k(c, c, 2) with e=0.5: two bottlenecks of c/2
    (lambda: host.C2PSA_DAttention(64, 64, 2, FMAP), lambda: C2PSA(64, 64, 2),
     lambda: 2 * (dattn_params(32) - params(Attention(32, num_heads=1, attn_ratio=0.5)))),
    (lambda: host.AIFI_DAttention(64, 128, 8, FMAP), lambda: AIFI(64, 128, 8),
     lambda: dattn_params(64) - params(torch.nn.MultiheadAttention(64, 8))),
])
def test_block_shape_and_parameters_are_the_stock_block_plus_dattention(ours, stock, extra):
    torch.manual_seed(0)
    block, base = ours(), stock()
    assert params(block) == params(base) + extra()
    c1 = next(block.parameters()).shape[1] if not isinstance(block, AIFI) else 64
    x = torch.randn(2, c1, 4, 6)  # not the declared 4x4: the default position term runs at any size
    y = block(x)
    assert y.shape == base(x).shape and torch.isfinite(y).all()
    assert sum(isinstance(m, DAttention) for m in block.modules()) >= 1


def test_convolutions_keep_the_stock_names():
    """A stock checkpoint's tensors land in the same keys (the attention adds keys, renames none)."""
    ours, stock = host.C3k2_DAttention(32, 64, 1, FMAP, True).state_dict(), C3k2(32, 64, 1, True).state_dict()
    assert set(stock) <= set(ours)
    assert all(ours[k].shape == v.shape for k, v in stock.items())


def test_fmapsize_mapping_and_missing_fmapsize():
    block = host.C2f_DAttention(32, 32, 1, {"q_size": [4, 4], "n_heads": 4, "n_groups": 2})
    attention = block.m[0].attention
    assert (attention.n_heads, attention.n_groups, attention.q_h) == (4, 2, 4)
    with pytest.raises(ValueError, match="C2f_DAttention: fmapsize is required"):
        host.C2f_DAttention(32, 32, 1)


# ---- 2. registration ---------------------------------------------------------------------------------
def _model_dict(layer, scale="n", nc=3, first=64):
    return {"nc": nc, "scale": scale, "scales": {"n": [0.5, 0.25, 1024], "m": [0.5, 1.0, 512]},
            "backbone": [[-1, 1, "Conv", [first, 3, 2]], layer], "head": []}


@pytest.mark.parametrize("name,stock", [("C2f_DAttention", "C2f"), ("C3k2_DAttention", "C3k2"),
                                        ("C2PSA_DAttention", "C2PSA")])
@pytest.mark.parametrize("scale", ["n", "m"])
def test_parse_model_scales_our_blocks_like_their_parents(name, stock, scale):
    c2 = 2048  # above max_channels (1024 at n, 512 at m): capped, then width-scaled
    # the first conv has the same width, so that C2PSA's c1 == c2 holds
    ours, _ = tasks.parse_model(_model_dict([-1, 4, name, [c2, [8, 8]]], scale, first=c2), 3, verbose=False)
    ref, _ = tasks.parse_model(_model_dict([-1, 4, stock, [c2]], scale, first=c2), 3, verbose=False)
    a, b = ours[1], ref[1]
    assert type(a).__name__ == name
    assert a.cv2.conv.out_channels == b.cv2.conv.out_channels == {"n": 256, "m": 512}[scale]
    assert len(a.m) == len(b.m) == 2  # depth 0.5 x 4 repeats, passed as n (not 2 stacked copies)
    assert [type(x).__name__.replace("_DAttention", "") for x in a.m] == [type(x).__name__ for x in b.m]


@pytest.mark.parametrize("scale,given,expected", [("n", [], False), ("n", [False], False), ("n", [True], True),
                                                  ("m", [], True), ("m", [False], True)])
def test_c3k_is_forced_for_m_l_x_at_our_argument_index(scale, given, expected):
    seq, _ = tasks.parse_model(_model_dict([-1, 2, "C3k2_DAttention", [256, [8, 8], *given]], scale), 3,
                               verbose=False)
    block = seq[1]
    assert all(isinstance(m, host.C3k_DAttention) == expected for m in block.m)
    attention = next(m for m in block.modules() if isinstance(m, DAttention))
    assert (attention.q_h, attention.q_w) == (8, 8)  # fmapsize was not overwritten by the c3k forcing


def test_aifi_branch_prepends_the_input_channels():
    d = {"nc": 3, "scales": {"l": [1.0, 1.0, 1024]}, "scale": "l",
         "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "AIFI_DAttention", [128, 8, [8, 8]]]], "head": []}
    seq, _ = tasks.parse_model(d, 3, verbose=False)
    assert isinstance(seq[1], host.AIFI_DAttention) and seq[1].attention.nc == 64 and seq[1].fc1.out_features == 128


def test_install_is_idempotent_and_goes_through_patching():
    before = len(patching.changes("ultralytics"))
    host.install()
    importlib.import_module("yolov5_dattn.hosts.ultralytics")  # again: nothing new
    from yolov5_dattn.hosts.ultralytics import registry
    assert registry.register() is False
    assert len(patching.changes("ultralytics")) == before
    seq, _ = tasks.parse_model(_model_dict([-1, 2, "C3k2_DAttention", [256, [8, 8]]], "n"), 3, verbose=False)
    assert isinstance(seq[1], host.C3k2_DAttention)  # parse_model still builds our blocks by name
    assert registry.in_tested_range(host.ultralytics_version())


def test_a_parse_model_of_another_shape_is_refused_naming_the_version(tmp_path, monkeypatch):
    (tmp_path / "fake_tasks.py").write_text(textwrap.dedent("""
        def parse_model(d, ch, verbose=True):
            base_modules = frozenset({1, 2})
            for m in d:
                if m is C3k2:
                    pass
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("fake_tasks")
    from yolov5_dattn.hosts.ultralytics import registry
    n = len(patching.changes())
    with pytest.raises(registry.UnsupportedUltralytics) as e:
        registry.register(fake)
    message = str(e.value)
    assert "\n" not in message and host.ultralytics_version() in message and "repeat_modules" in message
    assert len(patching.changes()) == n  # nothing changed before the refusal


# ---- 3. configs ---------------------------------------------------------------------------------------
CONFIG_PAIRS = [  # (our model= name, stock model= name, the stock block our block replaces: (layer, attribute))
    ("yolov8n-c2f-dattn.yaml", "yolov8n.yaml", None),
    ("yolov8n-seg-c2f-dattn.yaml", "yolov8n-seg.yaml", None),
    ("yolo11n-c3k2-dattn.yaml", "yolo11n.yaml", None),
    ("yolo11n-seg-c3k2-dattn.yaml", "yolo11n-seg.yaml", None),
    ("yolo26n-c3k2-dattn.yaml", "yolo26n.yaml", None),
    ("yolo26n-seg-c3k2-dattn.yaml", "yolo26n-seg.yaml", None),
    ("yolo11n-c2psa-dattn.yaml", "yolo11n.yaml", (10, "attn")),
    ("rtdetr-l-aifi-dattn.yaml", "rtdetr-l.yaml", (11, "ma")),
]


@pytest.mark.parametrize("ours,stock,replaced", CONFIG_PAIRS)
def test_config_builds_at_its_scale_and_adds_exactly_the_attention(ours, stock, replaced):
    make = RTDETR if ours.startswith("rtdetr") else YOLO
    model, base = make(str(CONFIGS / ours)).model, make(stock).model
    assert model.yaml["scale"] == ("" if ours.startswith("rtdetr") else "n")  # picked by name, as ultralytics'
    attention = [m for m in model.modules() if isinstance(m, DAttention)]
    assert attention and all((m.q_h, m.q_w) == (20, 20) for m in attention)  # P5/32 at 640
    removed = 0
    if replaced:
        layer, attr = replaced
        removed = sum(params(getattr(m, attr)) for m in base.model[layer].modules() if hasattr(m, attr)
                      and isinstance(getattr(m, attr), torch.nn.Module))
    assert params(model) - params(base) == sum(params(m) for m in attention) - removed
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 640, 640))
    with torch.no_grad():
        y0 = base.eval()(torch.zeros(1, 3, 640, 640))
    assert shapes(y) == shapes(y0) and torch.isfinite(y[0] if torch.is_tensor(y[0]) else y[0][0]).all()


# ---- 4. GFLOPs ----------------------------------------------------------------------------------------
def test_model_summary_gflops_count_the_attention_and_are_never_zero():
    from ultralytics.utils import torch_utils

    from yolov5_dattn.analysis.flops import count_flops, dattention_matmul_flops
    stock = YOLO("yolo11n.yaml").model
    ours = YOLO(str(CONFIGS / "yolo11n-c3k2-dattn.yaml")).model
    original = patching.patched(torch_utils, "get_flops").original
    assert original(stock, 640) == 0.0  # the thop clash this fixes (yolov5's thop has no stride=)
    g_stock, g_ours = torch_utils.get_flops(stock, 640), torch_utils.get_flops(ours, 640)
    assert 6.0 < g_stock < 7.5  # ultralytics' own table says 6.6 for yolo11n at 640
    report = count_flops(ours, 640, device="cpu")
    assert g_ours == pytest.approx(report.thop_with_attention / 1e9)
    attention = [m for m in ours.modules() if isinstance(m, DAttention)]
    matmuls = sum(dattention_matmul_flops(1, 20 * 20, 20 * 20, m.nc) for m in attention)
    extra = (g_ours - g_stock) * 1e9
    assert extra >= matmuls  # QK^T and AV at 20x20, which no thop sees
    assert extra == pytest.approx(report.attention, rel=0.01)  # and the attention is all that was added
    assert torch_utils.model_info(ours, imgsz=640)[3] == pytest.approx(g_ours)


# ---- 6. safe loading ----------------------------------------------------------------------------------
def test_checkpoints_load_restricted_with_our_classes_and_a_malicious_one_is_refused_unrun(tmp_path):
    import os

    from ultralytics.nn.tasks import torch_safe_load
    model = YOLO(str(CONFIGS / "yolo11n-c3k2-dattn.yaml")).model
    torch.save({"model": model, "train_args": {}}, tmp_path / "ours.pt")
    ckpt, _ = torch_safe_load(tmp_path / "ours.pt")
    assert type(ckpt["model"].model[8]) is host.C3k2_DAttention

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    from yolov5_dattn.hosts.ultralytics.checkpoints import CheckpointRefused
    with pytest.raises(CheckpointRefused, match="posix.system .*--trust-checkpoint"):
        torch_safe_load(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()
