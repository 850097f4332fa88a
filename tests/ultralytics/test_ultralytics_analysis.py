"""`compare` and `visualize` on the ultralytics host: the stock baseline each config is measured against, the
numbers of one real comparison (parameters, GFLOPs that count the attention, latency, memory), and the
attention drawn from a checkpoint `yolov5-dattn yolo train` wrote, on the input ultralytics' predict makes."""
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import load_script
from yolov5_dattn.analysis import stamp as stamp_mod
from yolov5_dattn.analysis.comparison import host_pairs, model_host
from yolov5_dattn.errors import UserError
from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.hosts.ultralytics import baseline

REPO = Path(__file__).resolve().parents[2]
ULTRA = REPO / "configs" / "ultralytics"


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def run(capsys, monkeypatch):
    """Run scripts/<name>.py's main() in this process: (rc, stdout, stderr)."""
    monkeypatch.chdir(REPO)

    def go(name, *args):
        rc = load_script(f"{name}.py").main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return go


# ---- which stock model, which host -------------------------------------------------------------------
@pytest.mark.parametrize("cfg, stock", [
    ("configs/ultralytics/yolo11n-c3k2-dattn.yaml", "11/yolo11n.yaml"),
    ("yolov8s-seg-c2f-dattn.yaml", "v8/yolov8s-seg.yaml"),
    ("yolo26n-c3k2-dattn.yaml", "26/yolo26n.yaml"),
    ("yolo11n-c2psa-dattn.yaml", "11/yolo11n.yaml"),
    ("yolo11x-seg-c3k2-dattn", "11/yolo11x-seg.yaml"),
    ("rtdetr-l-aifi-dattn.yaml", "rt-detr/rtdetr-l.yaml"),
])
def test_the_baseline_is_ultralytics_own_yaml_of_the_same_family_scale_and_task(cfg, stock):
    host, ((path, base),) = host_pairs([cfg], None)
    assert host.name == "ultralytics" and path.stem == Path(cfg).name.removesuffix(".yaml")  # the scale kept
    assert base == baseline.models_dir() / stock
    # the file ultralytics reads for it is the packaged scale-less YAML, and it builds at our scale
    assert baseline.yaml_file(base).parent == baseline.models_dir() / Path(stock).parent
    ours, theirs = baseline.read_yaml(path), baseline.read_yaml(base)
    assert baseline.model_scale(path, ours) == baseline.model_scale(base, theirs)
    assert baseline._task(ours) == baseline._task(theirs)


def test_the_baseline_comes_from_the_layers_not_the_name(tmp_path):
    renamed = tmp_path / "yolov8m-mine.yaml"  # a name no stock model starts with but yolov8m; seg layers
    renamed.write_text((ULTRA / "yolov8-seg-c2f-dattn.yaml").read_text())
    _, ((_, base),) = host_pairs([str(renamed)], None)
    assert base == baseline.models_dir() / "v8" / "yolov8m-seg.yaml"


def test_yolov5_configs_stay_yolov5():
    assert model_host("configs/yolov5n_c3_dattn.yaml")[0] == "yolov5"
    assert model_host("yolov5s.yaml")[0] == "yolov5"  # yolov5's package wins over ultralytics' v5/yolov5.yaml
    assert model_host("yolo11n.yaml")[0] == "ultralytics"


def test_segmentation_baseline_builds_as_the_stock_model_plus_the_attention():
    from ultralytics import YOLO
    _, ((cfg, base),) = host_pairs(["yolov8n-seg-c2f-dattn.yaml"], None)
    ours, stock = baseline.build_model(cfg), baseline.build_model(base)
    assert type(ours.host).__name__ == type(stock.host).__name__ == "SegmentationModel"
    assert params(stock) == params(YOLO("yolov8n-seg.yaml").model)  # ultralytics' own build of it
    attention = [m for m in ours.modules() if isinstance(m, DAttention)]
    assert params(ours) - params(stock) == sum(params(m) for m in attention) > 0
    # the measured forward returns flat tensors in both modes (ultralytics returns dicts when training)
    for train in (True, False):
        out = ours.train(train)(torch.zeros(1, 3, 64, 64))
        assert out and all(torch.is_tensor(t) for t in out)


# ---- one real comparison -----------------------------------------------------------------------------
@pytest.mark.slow  # two models built, counted, timed and measured in fresh processes
def test_compare_cli_against_yolo11n_json_plot_table(run, tmp_path):
    out_json, out_png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    rc, out, err = run("compare", "--cfg", "configs/ultralytics/yolo11n-c3k2-dattn.yaml", "--imgsz", 64,
                       "--runs", 1, "--warmup", 0, "--train-step", "--json", out_json, "--plot", out_png)
    assert rc == 0, err
    result = json.loads(out_json.read_text())
    assert result["commit"] == stamp_mod.code_version() and result["host"] == "ultralytics"
    assert timedelta(0) <= datetime.now(timezone.utc) - datetime.fromisoformat(result["date"]) < timedelta(hours=1)
    assert result["imgsz"] == [64, 64]
    base, ours = result["models"]  # the baseline first
    assert (base["name"], ours["name"]) == ("yolo11n", "yolo11n-c3k2-dattn")
    assert base["baseline"] is None and ours["baseline"] == "yolo11n" and base["layers"] == []

    # parameters: n scale, C3k2_DAttention(256, c3k=True) at layer 8 holds C3k_DAttention(128, 128, 2), whose two
    # bottlenecks (c_ = 64) each end in DAttention(64, [20, 20]); the stock yolo11n is ultralytics' own
    from ultralytics import YOLO
    assert base["params"] == params(YOLO("yolo11n.yaml").model)
    assert ours["params"] - base["params"] == 2 * params(DAttention(64, [20, 20]))

    # GFLOPs count the attention: at 64 px P5 is 2x2, so each DAttention has HW = Ns = 4, C = 64
    assert ours["gflops"] > base["gflops"] > 0 and ours["gflops_attention"] > 0
    assert [layer["name"] for layer in ours["layers"]] == ["model.8.m.0.m.0.attention", "model.8.m.0.m.1.attention"]
    for layer in ours["layers"]:
        assert layer["layer"] == 8 and layer["gflops_attention_matmuls"] * 1e9 == pytest.approx(2 * 2 * 4 * 4 * 64)
    assert ours["gflops_attention"] == pytest.approx(sum(layer["gflops"] for layer in ours["layers"]))
    assert ours["gflops_thop_missed"] > 0  # what thop cannot see

    for m in (base, ours):
        assert m["latency_ms"] > 0 and m["train_step_ms"] > 0
        assert m["train_peak_mem_mb"] >= m["params"] * 4 / 2 ** 20  # every gradient, fp32
        assert 0 < m["peak_mem_mb"] < m["train_peak_mem_mb"]
    assert f"ultralytics {result['ultralytics']}" in out and "train step" in out and "model.8.m.0.m.1.attention" in out
    assert f"{ours['train_step_ms'] / base['train_step_ms']:.2f}x" in out
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def _yaml_with_scales(path: Path, scales: str) -> Path:
    text = (ULTRA / "yolo11-c3k2-dattn.yaml").read_text()
    start, end = text.index("scales:"), text.index("\n\n", text.index("scales:"))
    path.write_text(text[:start] + scales + text[end:])
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nope.yaml", "no such file, and no model of that name"),
    (lambda d: (d / "data.yaml").write_text("train: images\nnames: [a]\n") and d / "data.yaml",
     "not a YOLOv5 model YAML"),
    (lambda d: _yaml_with_scales(d / "yolo11x-mine.yaml", "scales:\n  n: [0.5, 0.25, 1024]\n  s: [0.5, 0.5, 1024]"),
     "scale 'x' (from the file name) is not one of the YAML's scales (n, s)"),
    (lambda d: ULTRA / "yolo11-c3k2-dattn.yaml", "no scale letter in the file name"),
    (lambda d: "configs/yolov5n_c3_dattn.yaml configs/ultralytics/yolo11n-c3k2-dattn.yaml",
     "mix YOLOv5 and ultralytics models"),
])
def test_bad_cfg_is_one_error_line_exit_2_nothing_written(run, tmp_path, make, message):
    cfg = make(tmp_path)
    out_json = tmp_path / "out" / "x.json"
    rc, out, err = run("compare", "--cfg", *str(cfg).split(), "--runs", 1, "--json", out_json)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --cfg") and message in err
    assert not (tmp_path / "out").exists()


# ---- the attention visualiser on an ultralytics checkpoint -------------------------------------------------
IMGSZ = 128
W, H = 64, 40  # predict's letterbox: long side 64 -> 128 (x2), short side 80 padded to 96 (8 px top and bottom)
DRAW = 2


@pytest.fixture(scope="module")
def best(trained_u) -> Path:
    return trained_u / "weights" / "best.pt"


@pytest.fixture(scope="module")
def crop(udata, tmp_path_factory) -> Path:
    val = sorted(Path(udata["val_images"]).glob("*.png"))[0]
    path = tmp_path_factory.mktemp("uviz_src") / "crop.png"
    cv2.imwrite(str(path), cv2.imread(str(val))[12:12 + H, :W])
    return path


def to_pixels(coords: np.ndarray, Hm: int, Wm: int) -> np.ndarray:
    """Normalised (y, x) on an Hm x Wm map of the 96x128 input -> (x, y) pixels of the 40x64 crop, long-hand:
    cell c covers input pixels [c*32, (c+1)*32); the crop was scaled 2x and moved 8 px down."""
    cx, cy = (coords[..., 1] + 1) / 2 * (Wm - 1), (coords[..., 0] + 1) / 2 * (Hm - 1)
    x_in, y_in = (cx + 0.5) * 32, (cy + 0.5) * 32
    return np.stack([x_in / 2 - 0.5, (y_in - 8) / 2 - 0.5], -1)


def test_visualize_an_ultralytics_checkpoint(run, best, crop, tmp_path):
    rc, out, err = run("visualize_attention", "--weights", best, "--source", crop, "--imgsz", IMGSZ,
                       "--conf-thres", 0.0001, "--draw-scale", DRAW, "--project", tmp_path, "--name", "viz")
    assert rc == 0, err
    folder = tmp_path / "viz"
    assert sorted(p.name for p in folder.iterdir()) == [
        "crop.json", "crop_layer0_points.png", "crop_layer0_query.png", "crop_layer1_points.png",
        "crop_layer1_query.png"]
    for p in folder.glob("*.png"):
        assert cv2.imread(str(p)).shape == (H * DRAW, W * DRAW, 3)
    result = json.loads((folder / "crop.json").read_text())
    assert result["host"] == "ultralytics" and result["image_hw"] == [H, W]
    assert result["letterbox"] == {"input_hw": [96, 128], "scale_xy": [2.0, 2.0], "pad_xy": [0, 8]}

    # the module's own positions on the input made by hand (resize x2, pad 114 above and below)
    model = baseline.load_checkpoint(best)
    img = cv2.resize(cv2.imread(str(crop)), (128, 80), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(img, 8, 8, 0, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = torch.from_numpy(padded[..., ::-1].transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
    modules = [m for m in model.modules() if isinstance(m, DAttention)]
    for m in modules:
        m.record = True
    with torch.no_grad():
        model(x)
    assert len(result["layers"]) == len(modules) == 2
    for layer, m in zip(result["layers"], modules):
        assert layer["map_hw"] == [3, 4]  # the 96x128 input at stride 32: not square
        pos = m.recorded["pos"][0].double().numpy()
        for g, group in enumerate(layer["groups"]):
            np.testing.assert_allclose(group["sampling"], to_pixels(pos[g], 3, 4).reshape(-1, 2), atol=2e-3)

    # the detections are those of ultralytics' own predict at the same size and thresholds, compared where they are
    # stable (see `assert_same_strong_detections`)
    from ultralytics import YOLO
    shapes = []
    stock = YOLO(str(best))
    stock.model.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    found = stock.predict(str(crop), imgsz=IMGSZ, conf=0.0001, iou=0.45, verbose=False)[0].boxes
    assert shapes[-1] == (1, 3, 96, 128)
    detections = result["detections"]
    assert [d["conf"] for d in detections] == sorted((d["conf"] for d in detections), reverse=True)
    assert_same_strong_detections(detections, found)


def as_detections(boxes) -> list:
    """ultralytics' `Boxes` -> [{xyxy, conf, cls}], most confident first."""
    rows = zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist())
    return sorted(({"xyxy": b, "conf": c, "cls": int(k)} for b, c, k in rows), key=lambda d: -d["conf"])


def assert_same_strong_detections(ours: list, boxes) -> None:
    """Every detection of either side with at least half the top confidence has its match on the other side (same
    class, box within 0.05 px, confidence within 1e-3; the visualiser's JSON rounds to 0.01 px and 1e-4).

    Below that, a barely trained model gives runs of boxes with tied scores: which of them NMS keeps is its
    implementation's choice. The strong ones NMS keeps whatever the tie order."""
    theirs = as_detections(boxes)
    assert ours and theirs
    for mine, other in ((ours, theirs), (theirs, ours)):
        top = mine[0]["conf"]
        strong = [d for d in mine if d["conf"] >= top / 2]
        for d in strong:
            assert any(o["cls"] == d["cls"] and abs(o["conf"] - d["conf"]) < 1e-3
                       and np.abs(np.subtract(o["xyxy"], d["xyxy"])).max() < 0.05 for o in other), (d, other)


def test_the_visualiser_detects_with_predicts_forward(best, crop):
    """The visualiser's detections come from the forward ultralytics' predict runs (the fused model, the same
    attention kernel, the same input); its attention is recorded from that forward's layer inputs afterwards."""
    from ultralytics import YOLO

    from kernel_choice import chosen_kernels
    from model_forwards import watch
    from yolov5_dattn.analysis.attention_viz import analyse_ultralytics, dattention_layers
    img = cv2.imread(str(crop))
    model = baseline.load_checkpoint(best)
    layers = dattention_layers(model)
    stock = YOLO(str(best))
    with chosen_kernels() as chosen:
        ours, theirs = watch(model, chosen), watch(stock.model, chosen)
        result = analyse_ultralytics(model, img, IMGSZ, layers, conf_thres=0.0001)
        found = stock.predict(str(crop), imgsz=IMGSZ, conf=0.0001, iou=0.45, verbose=False)[0].boxes
    (run,) = ours  # one forward of the whole model; the recording runs the layers alone
    predict = theirs[-1]  # predict's forward of the image (any before it are our feature-map probe)
    assert run["input"].shape == predict["input"].shape == (1, 3, 96, 128)
    torch.testing.assert_close(run["input"], predict["input"], rtol=0, atol=0)  # the same pixels
    assert run["kernels"] == predict["kernels"] and len(run["kernels"]) == len(layers) == 2
    assert "explicit" not in run["kernels"]  # the recording path is not the one that detects
    torch.testing.assert_close(run["out"], predict["out"], rtol=1e-5, atol=1e-4)  # raw head outputs
    assert_same_strong_detections(result["detections"], found)
    # what was recorded is that forward's: the layer's positions from its own input, weights that sum to 1
    for layer in result["layers"]:
        assert layer["map_hw"] == [3, 4]
        np.testing.assert_allclose(np.sum(layer["query"]["weight"], 1), 1.0, atol=1e-4)


def test_visualize_bad_input_and_an_unsafe_ultralytics_checkpoint(run, best, crop, tmp_path):
    rc, _, err = run("visualize_attention", "--weights", best, "--source", crop, "--layer", 2,
                     "--project", tmp_path, "--name", "bad")
    assert rc == 2 and err.strip().splitlines() == [
        "error: --layer 2 is out of range: this model has 2 DAttention layer(s), 0..1"]
    assert not (tmp_path / "bad").exists()

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)
    evil = tmp_path / "evil.pt"
    torch.save({"model": baseline.load_checkpoint(best), "train_args": {}, "x": Evil()}, evil)
    rc, _, err = run("visualize_attention", "--weights", evil, "--source", crop, "--project", tmp_path,
                     "--name", "evil")
    assert not (tmp_path / "ran").exists()  # restricted loading: nothing in the file ran
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --weights {evil}: not loaded") and "--trust-checkpoint" in err
    assert not (tmp_path / "evil").exists()


def test_load_checkpoint_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--weights .*nowhere.pt: no such file"):
        baseline.load_checkpoint(tmp_path / "nowhere.pt")
