"""The shipped configs: parameter counts against YOLOv5's baselines, forward shapes, the model summary."""
import logging
from pathlib import Path

import pytest
import torch
import yaml

import yolov5_dattn  # noqa: F401,I001  first: applies the compat layer and registers C3_DAttention
from yolov5.models.yolo import Model, parse_model
from yolov5.utils.general import make_divisible

ROOT = Path(__file__).resolve().parents[2]
YOLOV5_MODELS = Path(__import__("yolov5").__file__).parent / "models"
SCALES = "nsmlx"


def dattention_params(c, heads=8, groups=4, ksize=3):
    """Analytic parameter count of DAttention(c) with the default (dwc_pe) variant."""
    gc = c // groups
    offset_net = gc * ksize * ksize + gc + 2 * gc + 2 * gc  # depthwise conv, LayerNorm, 1×1 to (dy, dx)
    projections = 4 * (c * c + c)  # q, k, v, out
    lepe = c * 9 + c  # depthwise 3×3 on q
    return offset_net + projections + lepe


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def layers(cfg):
    """The model's layers as parse_model builds them (no stride probe: counting needs no forward)."""
    return parse_model(yaml.safe_load(Path(cfg).read_text()), ch=[3])[0]


def pairs():
    for s in SCALES:
        yield s, ROOT / f"configs/yolov5{s}_c3_dattn.yaml", YOLOV5_MODELS / f"yolov5{s}.yaml"
        yield f"{s}-seg", ROOT / f"configs/segment/yolov5{s}-seg_c3_dattn.yaml", YOLOV5_MODELS / f"segment/yolov5{s}-seg.yaml"


@pytest.mark.parametrize("name,cfg,baseline", list(pairs()), ids=[p[0] for p in pairs()])
def test_config_differs_from_baseline_only_at_layer_8(name, cfg, baseline):
    ours, theirs = yaml.safe_load(cfg.read_text()), yaml.safe_load(baseline.read_text())
    assert ours["backbone"][8] == [-1, 3, "C3_DAttention", [1024, [20, 20]]]  # the recipe's line, verbatim
    assert theirs["backbone"][8] == [-1, 3, "C3", [1024]]
    ours["backbone"][8] = theirs["backbone"][8]
    assert ours == theirs
    assert ours["head"][-1][2] == ("Segment" if "seg" in name else "Detect")


@pytest.mark.parametrize("name,cfg,baseline", list(pairs()), ids=[p[0] for p in pairs()])
def test_parameter_count_is_baseline_plus_attention(name, cfg, baseline):
    d = yaml.safe_load(cfg.read_text())
    repeats = max(round(3 * d["depth_multiple"]), 1)
    c_ = make_divisible(1024 * d["width_multiple"], 8) // 2
    ours, base = layers(cfg), layers(baseline)
    assert n_params(ours) - n_params(base) == repeats * dattention_params(c_)
    assert n_params(ours[8]) - n_params(base[8]) == repeats * dattention_params(c_)


def test_yolov5l_matches_the_published_summary():
    ours, base = layers(ROOT / "configs/yolov5l_c3_dattn.yaml"), layers(YOLOV5_MODELS / "yolov5l.yaml")
    assert n_params(ours) == 49_736_317
    assert n_params(base) == 46_563_709
    assert n_params(ours[8]) == 13_144_320


@pytest.fixture(scope="module")
def yolov5n_dattn():
    return Model(str(ROOT / "configs/yolov5n_c3_dattn.yaml")).eval()


@pytest.mark.parametrize("h,w", [(640, 640), (640, 672), (320, 320)])
def test_forward_shapes(yolov5n_dattn, h, w):
    with torch.no_grad():
        pred, feats = yolov5n_dattn(torch.zeros(1, 3, h, w))
    cells = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert pred.shape == (1, 3 * cells, 85)
    assert [tuple(f.shape[2:4]) for f in feats] == [(h // s, w // s) for s in (8, 16, 32)]
    assert torch.isfinite(pred).all()


def test_model_summary_prints_gflops(yolov5n_dattn):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("yolov5")
    logger.addHandler(handler)
    try:
        yolov5n_dattn.info()
    finally:
        logger.removeHandler(handler)
    summary = [r.getMessage() for r in records if "summary" in r.getMessage()]
    assert summary and "GFLOPs" in summary[-1], summary
