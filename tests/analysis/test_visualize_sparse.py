"""`visualize` on a layer with sparse queries (query_ratio < 1): the JSON lists exactly the k = ceil(ρ·H·W) query
positions the module itself selected (in its order), their cells and pixel centres, the weights averaged over the
queries that attend; the points figure lightens exactly the selected cells and says 'k of H·W queries attend'."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import DET_CFG
from model_forwards import recorded_attention

IMGSZ = 160  # P5 map 5x5: 25 queries
RATIO = 0.3  # 8 of them attend
W, H = 96, 64  # letterboxed to 160: scaled about 5/3, padded top and bottom


@pytest.fixture(scope="module")
def sparse_weights(tmp_path_factory) -> Path:
    """A random-init yolov5n_c3_dattn whose P5 layer has query_ratio 0.3 (the scorer ranks from random weights)."""
    from yolov5.models.yolo import Model
    cfg = yaml.safe_load(Path(DET_CFG).read_text())
    cfg["backbone"][8][3] = [1024, {"q_size": [20, 20], "query_ratio": RATIO}]
    torch.manual_seed(0)
    model = Model(cfg, nc=3).eval()
    model.names = {0: "a", 1: "b", 2: "c"}
    path = tmp_path_factory.mktemp("viz-sparse") / "sparse.pt"
    torch.save({"model": model, "epoch": -1}, path)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 3)
    path = tmp_path_factory.mktemp("viz-sparse-src") / "noise.png"
    cv2.imwrite(str(path), img)
    return path


def _module_selection(weights: Path, img: np.ndarray) -> torch.Tensor:
    """The (k,) positions the sparse DAttention selects on `img`, letterboxed as YOLOv5 does, from its own record."""
    _, recorded = recorded_attention(weights, img, IMGSZ)
    return recorded["selected"][0], recorded["attn"][0]


def test_json_lists_the_modules_own_selection_and_the_figure_marks_it(sparse_weights, image, tmp_path, capsys):
    from yolov5_dattn.cli.visualize import main
    assert main([str(a) for a in ("--weights", sparse_weights, "--source", image, "--imgsz", IMGSZ, "--project",
                                  tmp_path, "--name", "viz")]) == 0
    assert "model.8.m.0.attention (4 groups, 8 heads, query_ratio 0.3)" in capsys.readouterr().out
    result = json.loads((tmp_path / "viz" / "noise.json").read_text())
    (layer,) = result["layers"]
    assert layer["map_hw"] == [5, 5]
    k = math.ceil(RATIO * 25)
    selected, attn = _module_selection(sparse_weights, cv2.imread(str(image)))
    queries = layer["queries"]
    assert queries["ratio"] == RATIO and queries["selected"] == k == 8 and queries["of"] == 25
    assert queries["index"] == selected.tolist() and len(set(queries["index"])) == k
    assert queries["cells"] == [[i // 5, i % 5] for i in queries["index"]]
    # cell centres in image pixels: input centre (c + 0.5)·32, letterbox undone
    (sx, sy), (left, top) = result["letterbox"]["scale_xy"], result["letterbox"]["pad_xy"]
    assert left == 0 and top > 20  # padded top and bottom
    expected = [[((c + 0.5) * 32 - left) / sx - 0.5, ((r + 0.5) * 32 - top) / sy - 0.5] for r, c in queries["cells"]]
    np.testing.assert_allclose(queries["pixels"], expected, atol=2e-3)
    # the dots' weights are the mean over the k queries that attend (each row sums to 1), not over all 25
    for group in layer["groups"]:
        assert sum(group["weight"]) == pytest.approx(1.0, abs=1e-4)
    heads = attn.shape[0] // len(layer["groups"])
    per_group = attn.double().reshape(len(layer["groups"]), heads, 25, -1).mean(1)[:, selected].mean(1)
    np.testing.assert_allclose([g["weight"] for g in layer["groups"]], per_group.numpy(), atol=2e-6)
    assert layer["query"]["selected"] == ((layer["query"]["cell"][0] * 5 + layer["query"]["cell"][1])
                                          in queries["index"])
    points = cv2.imread(str(tmp_path / "viz" / "noise_layer0_points.png"))
    assert points.shape == (H, W, 3)


def test_draw_selected_lightens_exactly_the_selected_cells_and_says_k_of_n():
    from yolov5_dattn.analysis.attention_viz import Letterbox, draw_points, draw_selected, queries_caption
    box = Letterbox(sx=1.0, sy=1.0, left=0, top=0, in_w=160, in_h=160, w=160, h=160)  # no letterbox: 32-px cells
    layer = {"map_hw": [5, 5], "queries": {"ratio": 0.12, "selected": 3, "of": 25, "index": [0, 7, 24],
                                           "cells": [[0, 0], [1, 2], [4, 4]], "pixels": []}}
    canvas = np.full((160, 160, 3), 40, np.uint8)
    out = draw_selected(np.full((320, 320, 3), 40, np.uint8), layer, box, scale=2.0)
    assert queries_caption(layer) == "3 of 25 queries attend (query_ratio 0.12)"
    lit = (out == 136).all(-1)  # lightened: 40·0.55 + 255·0.45 = 136
    expected = np.zeros((320, 320), bool)
    for row, col in layer["queries"]["cells"]:  # 32-px cells drawn 2x: 64 px
        expected[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64] = True
    assert (lit == expected).all() and (out[~expected] == 40).all()
    dense = {"map_hw": [5, 5], "queries": {"ratio": 1.0, "selected": 25, "of": 25}}
    assert (draw_selected(canvas, dense, box) == canvas).all() and queries_caption(dense) == ""
    # the count is written over the points (white text in the top-left corner); a dense layer gets none
    groups = [{"group": 0, "reference": [[150.0, 150.0]], "sampling": [[152.0, 152.0]], "weight": [1.0]}]
    corner = (slice(0, 20), slice(0, 150))
    assert (draw_points(canvas, {**layer, "groups": groups})[corner] == 255).all(-1).any()
    assert not (draw_points(canvas, {**dense, "groups": groups})[corner] == 255).all(-1).any()
