"""The safe insertion: DAttention as a zero-scaled residual branch (`layerscale`) starts exactly as the baseline.

A stock yolov5n is trained for one epoch; the `_c3_dattn_ls` model built from its checkpoint the way train.py
transfers `--weights` gives bit-identical outputs on YOLOv5's own bus.jpg and the same validation metrics,
while the recipe block (even with shortcut on) does not. Also: the YAML mechanism, the parameter counts of
the shipped `_ls` configs, and that the recipe configs are untouched.
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, TRAIN_FLAGS, run_task
import yolov5_dattn  # noqa: F401,I001  first: applies the compat layer and registers C3_DAttention
from yolov5.models.yolo import Model, parse_model
from yolov5.utils.general import make_divisible

from yolov5_dattn.nn.layerscale import LayerScale, check_init
from yolov5_dattn.hosts.yolov5.blocks import Bottleneck_DAttention, C3_DAttention

YOLOV5 = Path(__import__("yolov5").__file__).parent
CONFIGS = REPO / "yolov5_dattn" / "configs"
LS_LINE = [-1, 3, "C3_DAttention", [1024, {"q_size": [20, 20], "layerscale": 0.0}, True]]


def _pairs():
    for s in "nsmlx":
        yield s, CONFIGS / f"yolov5{s}_c3_dattn_ls.yaml", CONFIGS / f"yolov5{s}_c3_dattn.yaml"
        yield f"{s}-seg", CONFIGS / f"segment/yolov5{s}-seg_c3_dattn_ls.yaml", \
            CONFIGS / f"segment/yolov5{s}-seg_c3_dattn.yaml"


def _n(model):
    return sum(p.numel() for p in model.parameters())


def test_layerscale_starts_at_zero_and_learns():
    ls = LayerScale(8)
    x = torch.randn(2, 8, 3, 5)
    y = ls(x)
    assert y.shape == x.shape and torch.equal(y, torch.zeros_like(x))
    y.mul(x).sum().backward()
    assert torch.allclose(ls.gamma.grad, (x * x).sum(dim=(0, 2, 3)))  # d/dgamma of sum(gamma·x·x)
    assert torch.equal(LayerScale(4, 0.5)(torch.ones(1, 4, 2, 2)), torch.full((1, 4, 2, 2), 0.5))


@pytest.mark.parametrize("bad", [True, "0", float("nan"), float("inf"), None, [0.0]])
def test_layerscale_init_must_be_a_finite_number(bad):
    with pytest.raises(ValueError, match="layerscale must be a finite number"):
        check_init(bad)


def test_recipe_blocks_are_unchanged_without_the_option():
    recipe = Bottleneck_DAttention(64, 64, [10, 10])
    assert not hasattr(recipe, "layer_scale") and not any("layer_scale" in k for k in recipe.state_dict())
    safe = Bottleneck_DAttention(64, 64, {"q_size": [10, 10], "layerscale": 0.0})
    assert _n(safe) - _n(recipe) == 64 and torch.equal(safe.layer_scale.gamma, torch.zeros(64))
    # the argument form is the same as the mapping key; the mapping key wins
    assert _n(Bottleneck_DAttention(64, 64, [10, 10], layerscale=1e-4)) == _n(safe)
    assert float(Bottleneck_DAttention(64, 64, {"q_size": [10, 10], "layerscale": 0.25}, layerscale=1.0)
                 .layer_scale.gamma[0]) == 0.25
    c3 = C3_DAttention(128, 128, 2, {"q_size": [10, 10], "layerscale": 0.0}, True)
    assert all(b.add and hasattr(b, "layer_scale") for b in c3.m)
    assert not C3_DAttention(128, 128, 2, [10, 10]).m[0].add  # the recipe's default: shortcut False


@pytest.mark.parametrize("name,ls_cfg,recipe_cfg", list(_pairs()), ids=[p[0] for p in _pairs()])
def test_shipped_ls_configs_differ_from_the_recipe_only_at_layer_8(name, ls_cfg, recipe_cfg):
    ours, recipe = yaml.safe_load(ls_cfg.read_text()), yaml.safe_load(recipe_cfg.read_text())
    assert ours["backbone"][8] == LS_LINE
    assert recipe["backbone"][8] == [-1, 3, "C3_DAttention", [1024, [20, 20]]]
    ours["backbone"][8] = recipe["backbone"][8]
    assert ours == recipe
    repeats = max(round(3 * ours["depth_multiple"]), 1)
    c_ = make_divisible(1024 * ours["width_multiple"], 8) // 2
    built = parse_model(yaml.safe_load(ls_cfg.read_text()), ch=[3])[0]
    assert _n(built) - _n(parse_model(recipe, ch=[3])[0]) == repeats * c_  # one gamma per channel per bottleneck
    assert all(b.add for b in built[8].m)


def _bus(imgsz: int) -> torch.Tensor:
    """YOLOv5's shipped data/images/bus.jpg, letterboxed as detect.py does: (1, 3, h, w) in [0, 1]."""
    import cv2
    from yolov5.utils.augmentations import letterbox
    image = cv2.imread(str(YOLOV5 / "data" / "images" / "bus.jpg"))
    assert image is not None
    image = letterbox(image, imgsz, stride=32, auto=True)[0][:, :, ::-1].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(image)).float()[None] / 255


def _transferred(cfg: Path, ckpt: dict, nc: int):
    """A model built from `cfg` and filled from a checkpoint exactly as YOLOv5's train.py does for --weights."""
    from yolov5.utils.general import intersect_dicts
    model = Model(str(cfg), ch=3, nc=nc)
    csd = intersect_dicts(ckpt["model"].float().state_dict(), model.state_dict(), exclude=["anchor"])
    model.load_state_dict(csd, strict=False)
    fresh = sorted(set(model.state_dict()) - set(csd))
    return model, fresh


@pytest.fixture(scope="module")
def stock(demo, network_attempts, tmp_path_factory):
    """A stock yolov5n trained 1 epoch on the demo data (YAML anchors kept: --noautoanchor)."""
    project = tmp_path_factory.mktemp("stock")
    assert run_task("train", "--cfg", "yolov5n.yaml", "--data", demo["det_yaml"], "--epochs", "1", *TRAIN_FLAGS,
                    "--noplots", "--noautoanchor", "--project", project, "--name", "exp") == 0
    best = project / "exp" / "weights" / "best.pt"
    return best, torch.load(best, map_location="cpu", weights_only=False)


def test_safe_insertion_from_a_baseline_checkpoint_is_exact(stock, demo, tmp_path):
    best, ckpt = stock
    nc = ckpt["model"].nc
    base = ckpt["model"].float().eval()
    ls, fresh = _transferred(CONFIGS / "yolov5n_c3_dattn_ls.yaml", ckpt, nc)
    # only the attention and its scale start fresh (the anchors come from the same YAML values)
    assert fresh and all(".attention." in k or k.endswith(".layer_scale.gamma") or k.endswith("anchors")
                         for k in fresh)
    assert torch.equal(ls.model[-1].anchors, base.model[-1].anchors)
    # the what-was-transferred table counts the scales with the attention, not as unexplained missing names
    from yolov5_dattn.hosts.yolov5 import transfer
    sd = ckpt["model"].float().state_dict()
    report = transfer.summarise(sd, ls.state_dict(), {k: v for k, v in ls.state_dict().items() if k not in fresh},
                               exclude=["anchor"])
    assert any(k.endswith(".layer_scale.gamma") for k in report.keys["attention"]) and not report.keys["missing"]
    x = _bus(160)
    with torch.no_grad():
        ref = base(x)[0]
        assert float((ls.eval()(x)[0] - ref).abs().max()) == 0.0
        # control: the recipe block with shortcut on, from the same checkpoint, does not start as the baseline
        recipe_cfg = yaml.safe_load((CONFIGS / "yolov5n_c3_dattn.yaml").read_text())
        recipe_cfg["backbone"][8][3] = [1024, [20, 20], True]
        (tmp_path / "recipe_shortcut.yaml").write_text(yaml.safe_dump(recipe_cfg))
        recipe, _ = _transferred(tmp_path / "recipe_shortcut.yaml", ckpt, nc)
        assert float((recipe.eval()(x)[0] - ref).abs().max()) > 1e-3

    # the first validation (before any step) of the transferred model gives the baseline's metrics
    ls_ckpt = tmp_path / "ls_start.pt"
    for attr in ("nc", "names", "hyp"):  # what train.py attaches to the model it trains
        setattr(ls, attr, getattr(base, attr))
    torch.save({**{k: v for k, v in ckpt.items() if k not in ("model", "ema")}, "model": copy.deepcopy(ls).half(),
                "ema": None}, ls_ckpt)
    from yolov5_dattn.hosts.yolov5 import compat
    compat.apply_entrypoints()  # val.run loads checkpoints through the safe loader, offline
    import yolov5.val
    results, predictions = [], []
    for i, weights in enumerate((best, ls_ckpt)):
        # a low confidence threshold: a 1-epoch detector's boxes are faint, and every one of them is compared
        (mp, mr, map50, map_, *_), maps, *_ = yolov5.val.run(
            data=demo["det_yaml"], weights=str(weights), imgsz=64, batch_size=4, device="cpu", workers=0,
            conf_thres=1e-5, plots=False, save_txt=True, save_conf=True, project=tmp_path / "val", name=f"v{i}")
        results.append((mp, mr, map50, map_, tuple(maps)))
        labels = sorted((tmp_path / "val" / f"v{i}" / "labels").glob("*.txt"))
        predictions.append({f.name: f.read_text() for f in labels})
    assert sum(text.count("\n") for text in predictions[0].values()) > 0  # boxes were predicted and compared
    assert predictions[0] == predictions[1]
    assert results[0] == results[1]


def test_segmentation_ls_model_matches_its_baseline_exactly():
    torch.manual_seed(0)
    base = Model(str(YOLOV5 / "models" / "segment" / "yolov5n-seg.yaml"), ch=3, nc=3).eval()
    ls = Model(str(CONFIGS / "segment" / "yolov5n-seg_c3_dattn_ls.yaml"), ch=3, nc=3).eval()
    missing = ls.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(".attention." in k or k.endswith("layer_scale.gamma") for k in missing)
    x = _bus(160)
    with torch.no_grad():
        (p0, protos0), (p1, protos1) = base(x)[:2], ls(x)[:2]
    assert float((p0 - p1).abs().max()) == 0.0 and float((protos0 - protos1).abs().max()) == 0.0
